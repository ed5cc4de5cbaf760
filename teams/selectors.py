"""Selectors of the teams app: reads, including the snapshot the transfers replica loads.

A snapshot states each team's ``sequence`` (the last event sequence of ``team:<id>``).
The sequence is read in the same statement as the team row and before its players, so a
snapshot never claims a sequence newer than its data: a consumer that applies every event
with a higher sequence on top of it converges.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from django.db.models import CharField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Cast, Coalesce, Concat

from events import antientropy
from events.models import SubjectSequence

from .models import Player, Team

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class Sequenced(TypedDict):
    """What ``team_list`` annotates on each team."""

    sequence: int


def team_list() -> QuerySet[WithAnnotations[Team, Sequenced]]:
    """Every team, with ``sequence`` annotated and players prefetched."""
    last = SubjectSequence.objects.filter(
        key=Concat(Value("team:"), Cast(OuterRef("id"), CharField()), output_field=CharField())
    ).values("last")[:1]
    return Team.objects.annotate(sequence=Coalesce(Subquery(last), Value(0))).prefetch_related("players")


def team_get(*, team_id: int) -> Team | None:
    """One team like ``team_list`` gives it, or ``None``."""
    return team_list().filter(pk=team_id).first()


def team_export(*, id_after: int | None = None, id_upto: int | None = None) -> QuerySet[Team]:
    """All teams with players and ``sequence`` for a snapshot, to read a page at a time
    (by id): per page, the teams and their sequences in one statement, then their players.
    ``id_after`` / ``id_upto`` keep the ids in ``(id_after, id_upto]`` (a digest's bucket)."""
    teams = team_list()
    if id_after is not None:
        teams = teams.filter(id__gt=id_after)
    if id_upto is not None:
        teams = teams.filter(id__lte=id_upto)
    return teams


def team_digest(*, size: int, content: str = antientropy.FULL) -> list[antientropy.Bucket]:
    """The digest of every team (events/antientropy.py) over ``content``: two statements, ids
    and sequences of the teams, then the ids of their players; no row leaves this service."""
    teams = list(team_list().order_by("id").values_list("id", "sequence", "name"))
    squads: dict[int, list[int]] = {}
    for team_id, player_id in Player.objects.values_list("team_id", "id"):
        squads.setdefault(team_id, []).append(player_id)
    facts = [antientropy.TeamFacts(i, seq, name, tuple(squads.get(i, ()))).only(content) for i, seq, name in teams]
    return antientropy.buckets(facts, size=size)


def player_list(*, team: Team) -> QuerySet[Player]:
    return team.players.all()


def player_get(*, team: Team, player_id: int) -> Player | None:
    return team.players.filter(pk=player_id).first()
