"""Transfers and the local replica of the teams service's data.

The replica is a cache built from ``team.*``/``player.*`` events, full snapshots
(``manage.py sync_teams``) and single-team fetches on a miss. Those three sources arrive
in any order, so every fact is stamped with the team's ``sequence`` it came from and the
replica keeps the newest fact per element (last writer wins by sequence, not by arrival):

- the team itself is the shared replicated team (kernel/replica.py): its name carries
  ``name_sequence``; a deleted team stays as a tombstone (``deleted_at``): team ids are
  never reused, so deletion is final and every later-arriving fact about it is ignored;
- each (team, player) membership carries ``sequence`` and ``present`` (``False`` is a
  tombstone: "not in this team as of that sequence", so an older "added" cannot revive it).

There are no foreign keys to the teams service: its ids are stored as plain integers.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Q

from kernel.replica import ReplicatedTeam


class TeamReplica(ReplicatedTeam):
    """The shared replicated team (kernel/replica.py; ``objects.visible()``: known, live
    teams), plus this replica's clock: when it first heard of the team (the snapshot's
    absence rule) and when a snapshot or fetch last confirmed it."""

    created_at = models.DateTimeField(auto_now_add=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    # Set when a fact showed the replica missing something of this team (a sequence gap, a
    # player it does not hold); the replica's healing fetches the team and clears it.
    heal_wanted_at = models.DateTimeField(null=True, blank=True)
    heal_cause = models.CharField(max_length=200, blank=True)
    # The sequences whose events the gap is waiting for (arriving, each one is taken off; 0:
    # none can clear the mark, only a fetch).
    heal_missing = models.JSONField(default=list, blank=True)

    class Meta(ReplicatedTeam.Meta):
        pass


class PlayerReplica(models.Model):
    """A player's membership of a team, as of the team's ``sequence``.

    Unique per (team, player): a transfer is a removal from one team and an addition to
    another, each ordered by its own team's sequence. ``present=False`` rows are
    tombstones; selectors read ``present=True`` only.
    """

    team = models.ForeignKey(TeamReplica, on_delete=models.CASCADE, related_name="players")
    player_id = models.PositiveBigIntegerField(help_text="The player's id in the teams service.")
    name = models.CharField(max_length=100)
    position = models.CharField(max_length=3)
    present = models.BooleanField(default=True)
    sequence = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team", "name", "player_id"]
        constraints = [models.UniqueConstraint(fields=["team", "player_id"], name="player_replica_once_per_team")]
        indexes = [models.Index(fields=["player_id"], name="player_replica_player")]
        verbose_name = "player (replica)"
        verbose_name_plural = "players (replica)"

    def __str__(self) -> str:
        return f"{self.name} #{self.player_id}" + ("" if self.present else " (left)")


class RepairCause(models.TextChoices):
    GAP = "gap", "sequence gap"
    UNKNOWN = "unknown", "event about state the replica lacks"
    RECONCILIATION = "reconciliation", "periodic reconciliation"


class ReplicaRepair(models.Model):
    """One team the replica found drifted from the teams service and repaired
    (transfers/replica.py, "Healing"): what showed it, and the team before and after."""

    team_id = models.PositiveBigIntegerField(help_text="The team's id in the teams service.")
    cause = models.CharField(max_length=20, choices=RepairCause.choices)
    detail = models.CharField(max_length=300, blank=True)
    action = models.CharField(max_length=20, help_text="What the repair did (created, updated, deleted).")
    sequence_before = models.PositiveBigIntegerField(default=0)
    sequence_after = models.PositiveBigIntegerField(default=0)
    players_before = models.PositiveIntegerField(default=0)
    players_after = models.PositiveIntegerField(default=0)
    found_at = models.DateTimeField(help_text="When the drift was first seen.")
    repaired_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-repaired_at", "-id"]
        verbose_name = "replica repair"

    def __str__(self) -> str:
        return f"team {self.team_id}: {self.action} ({self.cause})"


class TeamsSync(models.Model):
    """One full snapshot applied by ``sync_teams`` (the consumer re-syncs when the latest
    is older than ``TEAMS_CACHE_MAX_AGE``)."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(auto_now_add=True)
    teams = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    stale = models.PositiveIntegerField(default=0)
    deleted = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-finished_at"]
        verbose_name = "teams sync"

    def __str__(self) -> str:
        return f"sync at {self.finished_at:%Y-%m-%d %H:%M:%S} ({self.teams} teams)"


class TransferState(models.TextChoices):
    REQUESTED = "requested", "requested"
    CANCELLING = "cancelling", "cancelling"  # asked teams to cancel; teams' answer decides
    COMPLETED = "completed", "completed"
    REJECTED = "rejected", "rejected"
    CANCELLED = "cancelled", "cancelled"


# Not finished: the teams service may still move the player.
IN_FLIGHT = (TransferState.REQUESTED, TransferState.CANCELLING)


class TransferQuerySet(models.QuerySet):
    def in_flight(self) -> TransferQuerySet:
        return self.filter(state__in=IN_FLIGHT)

    def overdue(self, now: datetime) -> TransferQuerySet:
        """In flight past the deadline: teams has not answered in time."""
        return self.in_flight().filter(expires_at__lte=now)


class Transfer(models.Model):
    """One transfer saga, as the transfers service sees it.

    ``requested`` -> ``completed`` / ``rejected`` by the teams service's answer. When no
    answer came by ``expires_at`` (``TRANSFER_TIMEOUT_SECONDS``), or a person cancels, the
    transfer is ``cancelling``: transfers has asked teams to cancel, and teams' answer
    decides (``cancelled`` if the player had not moved, ``completed`` if he had). A
    transfer past its deadline and not finished is *overdue*.
    """

    player_id = models.PositiveBigIntegerField()
    # The player's name when the transfer was requested (the replica may change later).
    player_name = models.CharField(max_length=100)
    from_team_id = models.PositiveBigIntegerField()
    to_team_id = models.PositiveBigIntegerField()
    fee = models.DecimalField(max_digits=12, decimal_places=2)
    state = models.CharField(max_length=10, choices=TransferState.choices, default=TransferState.REQUESTED)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # The deadline for the teams service's answer, set when the transfer is requested.
    expires_at = models.DateTimeField(null=True, blank=True)
    # When transfers last asked teams to cancel (the sweeper asks again after a timeout).
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    objects = TransferQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("cancel_transfer", "Can cancel a transfer in flight")]
        constraints = [
            # At most one transfer of a player in flight: the database backs up the check
            # in transfer_request when two requests race.
            models.UniqueConstraint(
                fields=["player_id"],
                condition=Q(state__in=["requested", "cancelling"]),
                name="transfer_one_in_flight_per_player",
                violation_error_message="This player already has a transfer in progress.",
            ),
            models.CheckConstraint(condition=Q(fee__gte=0), name="transfer_fee_not_negative"),
            models.CheckConstraint(
                condition=~Q(from_team_id=models.F("to_team_id")), name="transfer_between_two_teams"
            ),
        ]
        indexes = [
            models.Index(fields=["state", "created_at"], name="transfer_state_created"),
            models.Index(fields=["state", "expires_at"], name="transfer_state_expires"),
        ]

    def __str__(self) -> str:
        return f"Transfer #{self.pk}: {self.player_name} {self.from_team_id} -> {self.to_team_id} ({self.state})"

    @property
    def overdue(self) -> bool:
        from django.utils import timezone

        return self.state in IN_FLIGHT and self.expires_at is not None and self.expires_at <= timezone.now()
