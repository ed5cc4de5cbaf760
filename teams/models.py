"""Teams and their squads. The teams service owns these rows; other services see them
only through events and the REST API."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Lower


class Position(models.TextChoices):
    GOALKEEPER = "GK", "Goalkeeper"
    DEFENDER = "DEF", "Defender"
    MIDFIELDER = "MID", "Midfielder"
    STRIKER = "ST", "Striker"


POSITION_ERROR = f"Position must be one of {', '.join(Position.values)}."


class Team(models.Model):
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                Lower("name"),
                name="team_name_unique_ci",
                violation_error_message="A team with this name already exists (names are compared ignoring case).",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Player(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="players")
    name = models.CharField(max_length=100)
    position = models.CharField(max_length=3, choices=Position.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                "team",
                Lower("name"),
                name="player_name_unique_in_team_ci",
                violation_error_message="This team already has a player with this name (names are compared ignoring case).",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.position})"


class MoveOutcome(models.TextChoices):
    MOVED = "moved", "moved"
    REFUSED = "refused", "refused"
    CANCELLED = "cancelled", "cancelled"


class Move(models.Model):
    """What the teams service decided about one transfer, keyed by the transfer's id.

    Teams is the authority on whether a player moved. The first message about a transfer
    that reaches teams (``transfer.requested`` or ``transfer.cancellation_requested``)
    decides it for good; every later message about the same transfer is answered from this
    row, so a late request after a cancellation moves nobody, and a cancellation after the
    move is answered "moved". The team and player ids are plain values: the row outlives
    them.
    """

    transfer_id = models.PositiveBigIntegerField(unique=True, help_text="The transfer's id in the transfers service.")
    player_id = models.PositiveBigIntegerField()
    from_team_id = models.PositiveBigIntegerField()
    to_team_id = models.PositiveBigIntegerField()
    outcome = models.CharField(max_length=10, choices=MoveOutcome.choices)
    reason = models.TextField(blank=True)
    decided_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-decided_at", "-id"]

    def __str__(self) -> str:
        return f"transfer {self.transfer_id}: {self.outcome}"
