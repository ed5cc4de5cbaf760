"""Reads: they write nothing and call nobody. The replica's read-through (a miss fetched
from the teams service and stored) is a service: ``services.team_get_or_fetch``."""

from __future__ import annotations

from django.db.models import Prefetch, Q, QuerySet

from .models import PlayerReplica, TeamReplica, Transfer


def team_list() -> QuerySet[TeamReplica]:
    """Known, live teams with their current players (prefetched)."""
    players = PlayerReplica.objects.filter(present=True).order_by("name", "player_id")
    return TeamReplica.objects.visible().prefetch_related(Prefetch("players", queryset=players, to_attr="squad"))


def team_players(*, team: TeamReplica) -> QuerySet[PlayerReplica]:
    return team.players.filter(present=True)


def player_in_team(*, player_id: int, team: TeamReplica) -> PlayerReplica | None:
    return team.players.filter(player_id=player_id, present=True).first()


def transfer_list(
    *, state: str | None = None, player_id: int | None = None, team_id: int | None = None
) -> QuerySet[Transfer]:
    qs = Transfer.objects.all()
    if state:
        qs = qs.filter(state=state)
    if player_id is not None:
        qs = qs.filter(player_id=player_id)
    if team_id is not None:
        qs = qs.filter(Q(from_team_id=team_id) | Q(to_team_id=team_id))
    return qs


def transfers_recent(*, limit: int) -> list[Transfer]:
    """The newest ``limit`` transfers, in any state, newest first."""
    return list(Transfer.objects.order_by("-created_at", "-id")[:limit])


def team_names(team_ids: set[int]) -> dict[int, str]:
    """The replica's names of ``team_ids`` (a team it does not hold is left out)."""
    return dict(TeamReplica.objects.filter(team_id__in=team_ids).values_list("team_id", "name"))
