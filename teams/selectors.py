"""Selectors of the teams app: reads, including the snapshot the transfers replica loads.

A snapshot states each team's ``sequence`` (the last event sequence of ``team:<id>``).
The sequence is read in the same statement as the team row and before its players, so a
snapshot never claims a sequence newer than its data: a consumer that applies every event
with a higher sequence on top of it converges.
"""

from __future__ import annotations

from django.db.models import CharField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Cast, Coalesce, Concat

from events.models import SubjectSequence

from .models import Player, Team


def team_list() -> QuerySet[Team]:
    """Every team, with ``sequence`` annotated and players prefetched."""
    last = SubjectSequence.objects.filter(
        key=Concat(Value("team:"), Cast(OuterRef("id"), CharField()), output_field=CharField())
    ).values("last")[:1]
    return Team.objects.annotate(sequence=Coalesce(Subquery(last), Value(0))).prefetch_related("players")


def team_get(*, team_id: int) -> Team | None:
    """One team like ``team_list`` gives it, or ``None``."""
    return team_list().filter(pk=team_id).first()


def team_export() -> QuerySet[Team]:
    """All teams with players and ``sequence`` for a snapshot, to read a page at a time
    (by id): per page, the teams and their sequences in one statement, then their players."""
    return team_list()


def player_list(*, team: Team) -> QuerySet[Player]:
    return team.players.all()


def player_get(*, team: Team, player_id: int) -> Player | None:
    return team.players.filter(pk=player_id).first()
