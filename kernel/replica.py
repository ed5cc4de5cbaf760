"""A replicated team: the one shape in which a service keeps another service's team.

Every consuming service (transfers, fixtures) keeps a replica of the teams service's teams,
built from ``team.created`` / ``team.renamed`` / ``team.deleted`` (and, for transfers,
snapshots and player events). ``ReplicatedTeam`` is the abstract model they share;
``apply_created``, ``apply_renamed`` and ``apply_deleted`` apply those events to any concrete
subclass.

Guarantee: applied in any order, any number of times, the events leave the row as the
teams service's state (the replica converges):

- every fact carries the team's per-aggregate ``sequence`` (the envelope's ``sequence``
  of subject ``team:<id>``); the row keeps the newest fact per element: the name with
  ``name_sequence`` (an event applies if strictly newer; a snapshot, which reads its
  sequence no later than its data, also on a tie: ``snapshot=True``), and ``sequence``, the
  highest team sequence seen from any source;
- deletion is final: team ids are never reused, so a deleted team keeps its row as a
  tombstone (``deleted_at``; old fixtures and transfers still name it) and every fact
  arriving after it, newer or older, is ignored;
- a row may exist before its name is known (a stub: ``name_sequence == 0``), when a fact
  about the team (a player event) overtook its ``team.created``;
- a replica that keeps the team's short name (a ``short_name`` column: fixtures') takes it
  with the name, as one element under ``name_sequence``; one that does not (transfers')
  ignores it (tolerant reader). Callers pass it only to a model that has the column.

The functions write the database only and must run inside a transaction (the consumer's,
with its inbox row): they lock the team's row (``select_for_update``), so two handlers of
the same team serialize. ``apply_many`` runs such rules on many teams at once, set-based
(a consumer's batch): the same rows, locks and outcome as one team at a time, in at most
three statements whatever the number of teams. Team ids are stored as plain integers: no foreign key crosses a
service boundary. This module lives in ``events`` because it is the one package every
service may import; it imports no service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from django.contrib import admin
from django.core.validators import MinValueValidator
from django.db import connection, models
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import serializers


class ReplicatedTeamQuerySet(models.QuerySet):
    def live(self) -> ReplicatedTeamQuerySet:
        """Teams not deleted (stubs included)."""
        return self.filter(deleted_at__isnull=True)

    def visible(self) -> ReplicatedTeamQuerySet:
        """Teams that exist as far as we know: not deleted and with a known name."""
        return self.filter(deleted_at__isnull=True, name_sequence__gt=0)


class ReplicatedTeam(models.Model):
    team_id = models.PositiveBigIntegerField(
        unique=True, validators=[MinValueValidator(1)], help_text="The team's id in the teams service."
    )
    name = models.CharField(max_length=100, blank=True)
    # The highest team sequence this replica has seen, from any source.
    sequence = models.PositiveBigIntegerField(default=0)
    # The sequence of the fact that set ``name``; 0: not known yet (a stub).
    name_sequence = models.PositiveBigIntegerField(default=0)
    # When the team was deleted at the teams service; the row stays as a tombstone.
    deleted_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ReplicatedTeamQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["name", "team_id"]
        verbose_name = "team (replica)"
        verbose_name_plural = "teams (replica)"

    def __str__(self) -> str:
        label = self.name or "(name unknown)"
        return f"{label} #{self.team_id}" + (" (deleted)" if self.deleted else "")

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.derive()
        super().save(*args, **kwargs)

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def derive(self) -> None:
        """Set the columns computed from others (none here); ``save`` and ``apply_many``
        call it before every write."""


Team = TypeVar("Team", bound=ReplicatedTeam)


# ---------------------------------------------------------------------------------------
# Elements: each returns True when it changed the row (the caller saves).
# ---------------------------------------------------------------------------------------


Fact = TypeVar("Fact")


def apply_many(model: type[Team], facts: Mapping[int, Fact], rules: Callable[[Team, Fact], bool]) -> dict[int, Team]:
    """For each team id, ``rules(row, fact)`` on its row locked for this transaction, as
    ``lock`` then the rules one team at a time would (``rules`` says whether it changed the
    row, and is not called on a tombstone), set-based: the new teams' rows are stubs in
    Python, the rules run on them and they go in whole with one insert (``ON CONFLICT DO
    NOTHING``: a row another transaction made meanwhile counts as existing); the existing
    rows are locked with one statement in team id order, and the ones the rules changed are
    written with one. Returns every row by team id, tombstones included."""
    now = timezone.now()
    fresh = []
    for team_id in sorted(facts):
        stub = model(team_id=team_id)
        for f in model._meta.concrete_fields:
            if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
                setattr(stub, f.attname, now)
        rules(stub, facts[team_id])
        fresh.append(stub)
    inserted = _write_many(model, fresh, insert=True)
    teams: dict[int, Team] = {}
    for stub in fresh:
        if stub.team_id in inserted:
            stub.pk = inserted[stub.team_id]
            teams[stub.team_id] = stub
    existing = sorted(set(facts) - set(inserted))
    if existing:
        changed = []
        for team in model.objects.select_for_update().filter(team_id__in=existing).order_by("team_id"):
            teams[team.team_id] = team
            if not team.deleted and rules(team, facts[team.team_id]):
                team.updated_at = now
                changed.append(team)
        _write_many(model, changed, insert=False)
    return teams


def _write_many(model: type[Team], teams: Sequence[Team], *, insert: bool) -> dict[int, int]:
    """Rows in one statement, an insert keyed on ``team_id``. ``insert``: only the teams
    not there yet go in; returns their primary keys by team id. Else the rows exist (locked)
    and every column but ``team_id`` and the creation time is written, as ``save`` writes
    it (Django's ``bulk_update`` builds a CASE per column and row, which costs more CPU than
    the statements it saves)."""
    if not teams:
        return {}
    meta = model._meta
    q = connection.ops.quote_name
    columns = [f for f in meta.concrete_fields if not f.primary_key]
    values: list[Any] = []
    for team in teams:
        team.derive()
        values += [f.get_db_prep_save(getattr(team, f.attname), connection) for f in columns]
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    key = q(next(str(f.column) for f in columns if f.name == "team_id"))
    names = ", ".join(q(str(f.column)) for f in columns)
    sql = f"INSERT INTO {q(meta.db_table)} ({names}) VALUES {', '.join([row] * len(teams))} ON CONFLICT ({key}) "
    if insert:
        sql += f"DO NOTHING RETURNING {key}, {q(str(meta.pk.column))}"
    else:
        kept = [q(str(f.column)) for f in columns if f.name != "team_id" and not getattr(f, "auto_now_add", False)]
        sql += "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in kept)
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        return dict(cursor.fetchall()) if insert else {}


def lock(model: type[Team], team_id: int) -> tuple[Team, bool]:
    """The team's row, locked for this transaction; a stub (name unknown) if new."""
    return model.objects.select_for_update().get_or_create(team_id=team_id)


def bump(team: ReplicatedTeam, sequence: int) -> bool:
    if sequence > team.sequence:
        team.sequence = sequence
        return True
    return False


def set_name(
    team: ReplicatedTeam, name: str, sequence: int, *, snapshot: bool = False, short_name: str | None = None
) -> bool:
    """Take ``name`` (and ``short_name``, if given) if the fact is newer than the one that
    set the current name."""
    newer = sequence >= team.name_sequence if snapshot else sequence > team.name_sequence
    same_short = short_name is None or getattr(team, "short_name", None) == short_name
    if not newer or (team.name == name and same_short and team.name_sequence == sequence):
        return False
    changed = team.name != name or not same_short or team.name_sequence == 0
    team.name = name
    if short_name is not None:
        team.short_name = short_name  # type: ignore[attr-defined]
    team.name_sequence = sequence
    return changed


def mark_deleted(team: ReplicatedTeam, *, name: str, sequence: int, at: datetime | None = None) -> bool:
    """Make ``team`` a tombstone; False if it already was. The event's name (the team's
    last) is kept if newer than the one held, so the tombstone shows the last name."""
    if team.deleted:
        return False
    team.deleted_at = at or timezone.now()
    set_name(team, name, sequence)
    bump(team, sequence)
    return True


# ---------------------------------------------------------------------------------------
# The team.* events. Each returns the row if the event changed it, else None (stale, a
# duplicate, or about a deleted team).
# ---------------------------------------------------------------------------------------


def apply_created(
    model: type[Team], *, team_id: int, name: str, sequence: int, short_name: str | None = None
) -> Team | None:
    return _apply_name(model, team_id=team_id, name=name, sequence=sequence, short_name=short_name)


def apply_renamed(
    model: type[Team], *, team_id: int, name: str, sequence: int, short_name: str | None = None
) -> Team | None:
    """Also creates the row when the rename overtook the creation."""
    return _apply_name(model, team_id=team_id, name=name, sequence=sequence, short_name=short_name)


def apply_deleted(
    model: type[Team], *, team_id: int, name: str, sequence: int, at: datetime | None = None
) -> Team | None:
    team, _ = lock(model, team_id)
    if not mark_deleted(team, name=name, sequence=sequence, at=at):
        return None
    team.save()
    return team


def _apply_name(
    model: type[Team], *, team_id: int, name: str, sequence: int, short_name: str | None = None
) -> Team | None:
    team, created = lock(model, team_id)
    if team.deleted:
        return None
    changed = set_name(team, name, sequence, short_name=short_name)
    changed = bump(team, sequence) or changed
    if not (changed or created):
        return None
    team.save()
    return team


# ---------------------------------------------------------------------------------------
# The API shape of a replicated team, the same in every service.
# ---------------------------------------------------------------------------------------


class ReplicatedTeamSerializer(serializers.Serializer):
    """``id`` is the team's id (as in the teams API), not the replica row's."""

    id = serializers.IntegerField(source="team_id")
    name = serializers.CharField()
    sequence = serializers.IntegerField()
    deleted = serializers.BooleanField()
    updated_at = serializers.DateTimeField()


# ---------------------------------------------------------------------------------------
# The admin pieces of a replicated team, the same in every service.
# ---------------------------------------------------------------------------------------


class DeletedFilter(admin.SimpleListFilter):
    title = "deleted"
    parameter_name = "deleted"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Deleted"), ("no", "Active")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() in ("yes", "no"):
            return queryset.filter(deleted_at__isnull=self.value() == "no")
        return queryset


@admin.display(boolean=True, description="deleted")
def deleted_column(model_admin: Any, team: ReplicatedTeam) -> bool:
    return team.deleted
