"""Reads. ``team_get`` is the replica's read-through: the one read that may write (it
stores what a miss fetched), and the one that may call the teams service over HTTP."""

from __future__ import annotations

from django.db import connection, transaction
from django.db.models import Prefetch, Q, QuerySet

from . import replica, teams_client
from .models import PlayerReplica, TeamReplica, Transfer
from .teams_client import TeamNotFound


class TeamFetchInsideTransaction(RuntimeError):
    """``team_get`` would call the teams service while a transaction is open."""


def team_get(team_id: int) -> TeamReplica:
    """The team from the replica; on a miss, exactly one ``GET /api/teams/{id}/``, stored
    and returned.

    Raises ``TeamNotFound`` for a team the replica knows was deleted or the teams service
    does not know, and ``TeamsServiceUnavailable`` when the service cannot answer (nothing
    is written then). A miss must be resolved outside ``transaction.atomic()``: the HTTP
    call (with its retries) would otherwise hold the transaction open.
    """
    team = TeamReplica.objects.filter(team_id=team_id).first()
    if team is not None and team.deleted:
        raise TeamNotFound(team_id)
    if team is not None and team.name_sequence > 0:
        return team
    if connection.in_atomic_block:
        raise TeamFetchInsideTransaction(
            f"team_get({team_id}) missed the replica inside transaction.atomic(); resolve teams "
            "before opening the transaction so the HTTP call does not hold it open."
        )
    state = teams_client.fetch_team(team_id)
    with transaction.atomic():
        replica.apply_team_state(state)
    team = TeamReplica.objects.visible().filter(team_id=team_id).first()
    if team is None:  # deleted by an event handled meanwhile
        raise TeamNotFound(team_id)
    return team


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
