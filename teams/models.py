"""Teams and their squads. The teams service owns these rows; other services see them
only through events and the REST API."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from kernel.names import SHORT_NAME_MAX, clean_name, clean_short_name, derive_short_name, name_key

# Case folding can lengthen a name (ß -> ss): room for three characters per character.
NAME_KEY_LENGTH = 300


class Position(models.TextChoices):
    GOALKEEPER = "GK", "Goalkeeper"
    DEFENDER = "DEF", "Defender"
    MIDFIELDER = "MID", "Midfielder"
    STRIKER = "ST", "Striker"


POSITION_ERROR = f"Position must be one of {', '.join(Position.values)}."


class Team(models.Model):
    name = models.CharField(max_length=100)
    # What uniqueness compares (kernel.names.name_key): NFC, case-folded. Set by save().
    name_key = models.CharField(max_length=NAME_KEY_LENGTH, editable=False)
    # A label for where space is short (kernel/names.py): 2 to 5 letters or digits,
    # upper-cased; derived from the name when none is given. Not unique.
    short_name = models.CharField(
        max_length=SHORT_NAME_MAX,
        blank=True,
        # The release before short names inserts rows without the column while the next one
        # is rolling out: a database default. Python's default stays "" so save() derives it.
        default="",
        db_default="",
        help_text="2 to 5 letters or digits (upper-cased), e.g. RED; left empty, it is derived from the name.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        # For GET /api/teams/export/, used service to service (the transfers bootstrap).
        permissions = [("export_team", "Can export every team with its players")]
        constraints = [
            models.UniqueConstraint(
                fields=["name_key"],
                name="team_name_key_unique",
                violation_error_message="A team with this name already exists (names are compared ignoring case).",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        self.name_key = name_key(self.name)
        if not self.short_name:
            self.short_name = derive_short_name(self.name)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        """The name rule of every writer (services, admin): a clean name (kernel.names)
        that no other team has, compared on the key the unique constraint holds."""
        self.name = _clean(self.name, "Team name")
        self.name_key = name_key(self.name)
        try:
            self.short_name = clean_short_name(self.short_name) if self.short_name else derive_short_name(self.name)
        except ValidationError as exc:
            raise ValidationError({"short_name": exc.messages}) from None
        if Team.objects.filter(name_key=self.name_key).exclude(pk=self.pk).exists():
            raise ValidationError({"name": [ValidationError(team_name_taken(self.name), code="conflict")]})

    def validate_constraints(self, exclude=None) -> None:
        # clean() checks the name key with a message on "name"; the database constraint
        # backs it up against a racing writer.
        super().validate_constraints(exclude={*(exclude or ()), "name_key"})


class Player(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="players")
    name = models.CharField(max_length=100)
    name_key = models.CharField(max_length=NAME_KEY_LENGTH, editable=False)
    position = models.CharField(max_length=3, choices=Position.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "name_key"],
                name="player_name_key_unique_in_team",
                violation_error_message="This team already has a player with this name (names are compared ignoring case).",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.position})"

    def save(self, *args, **kwargs) -> None:
        self.name_key = name_key(self.name)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        """A clean name (kernel.names) that no other player of the team has."""
        self.name = _clean(self.name, "Player name")
        self.name_key = name_key(self.name)
        if self.team_id and Player.objects.filter(team_id=self.team_id, name_key=self.name_key).exclude(pk=self.pk).exists():
            raise ValidationError(
                {"name": [ValidationError(player_name_taken(self.team.name, self.name), code="conflict")]}
            )

    def validate_constraints(self, exclude=None) -> None:
        super().validate_constraints(exclude={*(exclude or ()), "name_key"})


def team_name_taken(name: str) -> str:
    return f"A team named {name} already exists."


def player_name_taken(team: str, name: str) -> str:
    return f"Team {team} already has a player named {name}."


def _clean(name: object, label: str) -> str:
    try:
        return clean_name("" if name is None else name, label=label)
    except ValidationError as exc:
        raise ValidationError({"name": exc.messages}) from None

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
    them. ``asked_at`` is when the last message about the transfer reached teams: the row is
    kept the redelivery window after it (events/retention.py), then purged.
    """

    transfer_id = models.PositiveBigIntegerField(unique=True, help_text="The transfer's id in the transfers service.")
    player_id = models.PositiveBigIntegerField()
    from_team_id = models.PositiveBigIntegerField()
    to_team_id = models.PositiveBigIntegerField()
    outcome = models.CharField(max_length=10, choices=MoveOutcome.choices)
    reason = models.TextField(blank=True)
    decided_at = models.DateTimeField(auto_now_add=True)
    asked_at = models.DateTimeField(default=timezone.now, db_index=True, help_text="When the last message about it arrived.")

    class Meta:
        ordering = ["-decided_at", "-id"]

    def __str__(self) -> str:
        return f"transfer {self.transfer_id}: {self.outcome}"
