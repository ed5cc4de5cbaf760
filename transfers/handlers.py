"""Event handlers of this service (registered in ``TransfersConfig.ready``).

Each handler parses the event and calls one service; the consumer runs it inside
``transaction.atomic()`` with an inbox row, so it is handled effectively once. Ordering is
the replica's business (``transfers/replica.py``): events may arrive in any order.

The transfers replica keeps no short name: ``team.created`` / ``team.renamed`` v2 carry one,
and these handlers read only the fields they need (tolerant reader), so its digest over
teams (events/antientropy.py) covers what it did before.
"""

from __future__ import annotations

from collections.abc import Sequence

import events
from events.envelope import Event
from events.registry import on_consumer_start

from . import replica, services

SERVICE = "transfers"


def _created(event: Event) -> replica.Created:
    d = event.data
    return replica.Created(team_id=d["id"], name=d["name"], players=d.get("players", []), sequence=event.sequence)


def on_teams_created(many: Sequence[Event]) -> None:
    """The set-based form: a batch's new teams in a few statements, whatever their number."""
    replica.teams_created([_created(e) for e in many])


@events.handler("team.created", service=SERVICE, many=on_teams_created)
def on_team_created(event: Event) -> None:
    c = _created(event)
    replica.team_created(team_id=c.team_id, name=c.name, players=c.players, sequence=c.sequence)


@events.handler("team.renamed", service=SERVICE)
def on_team_renamed(event: Event) -> None:
    d = event.data
    replica.team_renamed(team_id=d["id"], name=d["name"], sequence=event.sequence)


@events.handler("team.deleted", service=SERVICE)
def on_team_deleted(event: Event) -> None:
    d = event.data
    replica.team_deleted(team_id=d["id"], name=d["name"], sequence=event.sequence, at=event.time)


@events.handler("player.added", service=SERVICE)
def on_player_added(event: Event) -> None:
    d = event.data
    replica.player_added(
        team_id=d["team_id"], player_id=d["id"], name=d["name"], position=d["position"], sequence=event.sequence
    )


@events.handler("player.removed", service=SERVICE)
def on_player_removed(event: Event) -> None:
    d = event.data
    replica.player_removed(team_id=d["team_id"], player_id=d["id"], name=d["name"], sequence=event.sequence)


@events.handler("player.transferred", service=SERVICE)
def on_player_transferred(event: Event) -> None:
    # The subject is the player: event.sequence counts the player's events. The teams'
    # own sequences travel in the data.
    d = event.data
    services.player_transferred(
        transfer_id=d["transfer_id"],
        player_id=d["id"],
        name=d["name"],
        position=d["position"],
        from_team_id=d["from_team_id"],
        to_team_id=d["to_team_id"],
        from_team_sequence=d["from_team_sequence"],
        to_team_sequence=d["to_team_sequence"],
    )


@events.handler("move.refused", service=SERVICE)
def on_move_refused(event: Event) -> None:
    d = event.data
    services.transfer_reject(transfer_id=d["transfer_id"], reason=d["reason"])


@events.handler("move.cancelled", service=SERVICE)
def on_move_cancelled(event: Event) -> None:
    d = event.data
    services.transfer_cancelled(transfer_id=d["transfer_id"], reason=d["reason"])


@events.handler("move.confirmed", service=SERVICE)
def on_move_confirmed(event: Event) -> None:
    services.transfer_complete(transfer_id=event.data["transfer_id"])


@on_consumer_start(service=SERVICE)
def sync_teams_if_stale() -> None:
    """Snapshot the teams when the replica is empty or older than TEAMS_CACHE_MAX_AGE."""
    services.teams_sync_if_stale()
