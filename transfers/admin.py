from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Q
from django.utils import timezone

from kernel.replica import DeletedFilter, deleted_column

from . import services
from .models import IN_FLIGHT, PlayerReplica, ReplicaRepair, TeamReplica, TeamsSync, Transfer


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


class OverdueFilter(admin.SimpleListFilter):
    """In flight past the deadline: the teams service has not answered in time."""

    title = "overdue"
    parameter_name = "overdue"

    def lookups(self, request, model_admin):
        return [("yes", "Overdue (no answer by the deadline)"), ("no", "Not overdue")]

    def queryset(self, request, queryset):
        overdue = Transfer.objects.overdue(timezone.now()).values("pk")
        if self.value() == "yes":
            return queryset.filter(pk__in=overdue)
        if self.value() == "no":
            return queryset.exclude(pk__in=overdue)
        return queryset


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
        "is_overdue",
        "created_at",
        "expires_at",
        "completed_at",
    ]
    list_filter = ["state", OverdueFilter, FromTeamFilter, ToTeamFilter, "created_at"]
    search_fields = ["player_name", "reason", "=player_id", "=from_team_id", "=to_team_id"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "state",
        "reason",
        "created_at",
        "updated_at",
        "completed_at",
        "expires_at",
        "cancel_requested_at",
    ]
    actions = ["cancel_transfers"]

    @admin.display(description="overdue", boolean=True)
    def is_overdue(self, obj: Transfer) -> bool:
        return obj.overdue

    @admin.action(description="Cancel the selected transfers (the teams service decides)", permissions=["cancel"])
    def cancel_transfers(self, request, queryset):
        asked, finished = 0, []
        reason = f"Cancelled by {request.user.get_username()} (admin)."
        for transfer in queryset.order_by("pk"):
            if transfer.state not in IN_FLIGHT:
                finished.append(f"#{transfer.pk} ({transfer.state})")
                continue
            try:
                services.transfer_cancel(transfer_id=transfer.pk, reason=reason)
            except (services.TransferNotFound, services.TransferFinished) as exc:
                finished.append(f"#{transfer.pk}: {exc}")
                continue
            asked += 1
        if asked:
            self.message_user(
                request,
                f"Asked the teams service to cancel {asked} transfer(s); each ends cancelled, or completed if "
                "the player had already moved.",
                messages.SUCCESS,
            )
        if finished:
            self.message_user(request, f"Not in flight, left alone: {', '.join(finished)}.", messages.WARNING)

    def has_cancel_permission(self, request) -> bool:
        return request.user.has_perm("transfers.cancel_transfer")

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

    def has_delete_permission(self, request, obj=None):
        # Deleting a transfer in flight would free its player here while teams may still
        # move him: cancel it instead (the action above), and teams decides.
        return False


class PlayerReplicaInline(admin.TabularInline):
    model = PlayerReplica
    readonly_fields = ("player_id", "name", "position", "present", "sequence", "updated_at")
    fields = readonly_fields
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
    list_display = ["team_id", "name", "sequence", "deleted", "synced_at", "heal_wanted_at", "updated_at"]
    list_filter = [DeletedFilter]  # kernel/replica.py
    deleted = deleted_column
    search_fields = ["name", "=team_id"]
    inlines = [PlayerReplicaInline]


@admin.register(TeamsSync)
class TeamsSyncAdmin(_ReadOnly):
    list_display = ["finished_at", "started_at", "teams", "created", "updated", "unchanged", "stale", "deleted"]


@admin.register(ReplicaRepair)
class ReplicaRepairAdmin(_ReadOnly):
    """Drift the replica's healing found and repaired (transfers/replica.py, "Healing")."""

    list_display = [
        "repaired_at",
        "team_id",
        "cause",
        "action",
        "sequence_before",
        "sequence_after",
        "players_before",
        "players_after",
        "found_at",
        "detail",
    ]
    list_filter = ["cause", "action"]
    search_fields = ["=team_id"]
    date_hierarchy = "repaired_at"
