"""Admin for teams and squads. Every save and delete goes through the services, so the
admin records the same events as the API."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from kernel.names import name_key

from . import services
from .models import Move, Player, Team


class SquadInline(admin.TabularInline):
    """The current squad: read-only (there is no "player changed" event), removable."""

    model = Player
    fields = ("name", "position")
    readonly_fields = ("name", "position")
    extra = 0
    verbose_name_plural = "squad"
    # Without the label Django puts above each row's fields ("Ann Smith (GK)" twice).
    template = "admin/edit_inline/tabular_unlabelled.html"

    def has_add_permission(self, request: HttpRequest, obj: Team | None = None) -> bool:
        return False


class NewPlayersFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        # The key the API and the database compare (kernel.names): "Straße" is "STRASSE".
        names = [
            name_key(f.cleaned_data["name"])
            for f in self.forms
            if f.cleaned_data and not f.cleaned_data.get("DELETE") and f.cleaned_data.get("name")
        ]
        if len(names) != len(set(names)):
            raise ValidationError("Two new players have the same name.")
        existing = self.instance.players.count() if self.instance.pk else 0
        if existing + len(names) > settings.SQUAD_LIMIT:
            raise ValidationError(f"A squad has at most {settings.SQUAD_LIMIT} players.")


class NewPlayerInline(admin.TabularInline):
    """Rows to add players; saved through ``services.player_add``."""

    model = Player
    formset = NewPlayersFormSet
    fields = ("name", "position")
    extra = 3
    can_delete = False
    verbose_name = "new player"
    verbose_name_plural = "add players"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Player]:
        return super().get_queryset(request).none()


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "short_name", "squad_size", "created_at", "updated_at")
    search_fields = ("name", "players__name")
    list_filter = ("created_at", "updated_at", "players__position")
    date_hierarchy = "created_at"
    readonly_fields = ("created_at", "updated_at")
    inlines = (SquadInline, NewPlayerInline)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        return super().get_queryset(request).annotate(squad_size=Count("players", distinct=True))

    @admin.display(description="players", ordering="squad_size")
    def squad_size(self, obj: Team) -> int:
        return obj.squad_size  # type: ignore[attr-defined]

    def save_model(self, request: HttpRequest, obj: Team, form, change: bool) -> None:
        if change:
            # A short name left as it was follows the service's rule (re-derived with the name).
            short_name = obj.short_name if "short_name" in form.changed_data else None
            services.team_rename(team=Team.objects.get(pk=obj.pk), name=obj.name, short_name=short_name)
            obj.refresh_from_db()
            return
        team = services.team_create(name=obj.name, short_name=obj.short_name)
        # The inline formsets hold ``obj``: make it the row the service created.
        obj.pk = team.pk
        obj._state.adding = False
        obj._state.db = team._state.db
        obj.refresh_from_db()

    def delete_model(self, request: HttpRequest, obj: Team) -> None:
        services.team_delete(team=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        for team in queryset:
            services.team_delete(team=team)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if formset.model is not Player:
            return super().save_formset(request, form, formset, change)
        formset.save(commit=False)  # fills new_objects and deleted_objects, writes nothing
        for player in formset.deleted_objects:
            services.player_remove(team_id=player.team_id, player_id=player.pk)
        for player in formset.new_objects:
            services.player_add(team=form.instance, name=player.name, position=player.position)


@admin.register(Player)
class PlayerAdmin(admin.ModelAdmin):
    """Players are read here; they are added and removed (with events) on their team's page."""

    list_display = ("name", "position", "team", "created_at")
    list_select_related = ("team",)
    search_fields = ("name", "team__name")
    list_filter = ("position", "team")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Player | None = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: Player) -> None:
        services.player_remove(team_id=obj.team_id, player_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Player]) -> None:
        for player in queryset:
            services.player_remove(team_id=player.team_id, player_id=player.pk)


@admin.register(Move)
class MoveAdmin(admin.ModelAdmin):
    """What teams decided for each transfer (read-only: the saga writes it)."""

    list_display = ("transfer_id", "outcome", "player_id", "from_team_id", "to_team_id", "reason", "decided_at")
    list_filter = ("outcome", "decided_at")
    search_fields = ("=transfer_id", "=player_id", "reason")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Move | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Move | None = None) -> bool:
        return False
