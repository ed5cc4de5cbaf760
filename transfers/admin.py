from __future__ import annotations

from django.contrib import admin
from django.db.models import Q

from .models import PlayerReplica, TeamReplica, TeamsSync, Transfer


class _TeamFilter(admin.SimpleListFilter):
    """Filter by a team id field, labelled with the replica's team names."""

    field = ""

    def lookups(self, request, model_admin):
        ids = model_admin.get_queryset(request).values_list(self.field, flat=True).distinct()
        names = dict(TeamReplica.objects.filter(team_id__in=ids).values_list("team_id", "name"))
        return sorted(((str(i), f"{names.get(i) or '?'} (#{i})") for i in ids), key=lambda x: x[1])

    def queryset(self, request, queryset):
        return queryset.filter(**{self.field: self.value()}) if self.value() else queryset


class FromTeamFilter(_TeamFilter):
    title = "from team"
    parameter_name = "from_team"
    field = "from_team_id"


class ToTeamFilter(_TeamFilter):
    title = "to team"
    parameter_name = "to_team"
    field = "to_team_id"


@admin.register(Transfer)
class TransferAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "player_name",
        "player_id",
        "from_team_id",
        "to_team_id",
        "fee",
        "state",
        "created_at",
        "completed_at",
    ]
    list_filter = ["state", FromTeamFilter, ToTeamFilter, "created_at"]
    search_fields = ["player_name", "reason", "=player_id", "=from_team_id", "=to_team_id"]
    date_hierarchy = "created_at"
    readonly_fields = ["state", "reason", "created_at", "updated_at", "completed_at"]

    def get_search_results(self, request, queryset, search_term):
        # Search by team name too, through the replica.
        queryset, distinct = super().get_search_results(request, queryset, search_term)
        if search_term:
            ids = TeamReplica.objects.filter(name__icontains=search_term).values_list("team_id", flat=True)
            queryset |= self.model.objects.filter(Q(from_team_id__in=ids) | Q(to_team_id__in=ids))
        return queryset, distinct

    def has_add_permission(self, request):
        return False  # transfers are requested through the API, which records the event

    def has_change_permission(self, request, obj=None):
        return False


class PlayerReplicaInline(admin.TabularInline):
    model = PlayerReplica
    fields = ["player_id", "name", "position", "present", "sequence", "updated_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(TeamReplica)
class TeamReplicaAdmin(_ReadOnly):
    list_display = ["team_id", "name", "sequence", "deleted", "synced_at", "updated_at"]
    list_filter = ["deleted"]
    search_fields = ["name", "=team_id"]
    inlines = [PlayerReplicaInline]


@admin.register(TeamsSync)
class TeamsSyncAdmin(_ReadOnly):
    list_display = ["finished_at", "started_at", "teams", "created", "updated", "unchanged", "stale", "deleted"]
