"""Services of the teams app: every change to a team or a squad goes through here.

Guarantee: each function is one ``transaction.atomic`` block that writes the domain rows
and records exactly one event with ``events.publish`` (none when nothing changed), so an
event exists if and only if the change committed. Bad input raises Django's
``ValidationError`` with field messages; a refusal by the current state (a name taken, a
full squad) has the code ``"conflict"`` (the API answers 409, otherwise 422: kernel/api.py). The functions nest
in an outer transaction (admin, the event consumer), so they are not ``durable``.

Races: a caller may hold a ``Team`` loaded before the transaction (a view, the admin).
Every function locks what it decides on (``SELECT ... FOR UPDATE``: the teams, always in
id order, before any player) and re-reads it inside the transaction, so a request that lost
a race raises ``TeamNotFound`` / ``PlayerNotFound`` (a 404) and writes nothing. Every write
to a squad locks its team first, so a team's delete sees every player that joined it.

The transfer saga: teams decides whether a player moves, once per transfer, and records
the decision in ``Move`` (``move_apply``, ``move_cancel``); any later message about
the same transfer is answered from that record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

import events
from events import retention
from kernel.names import derive_short_name, name_key

from .models import (
    POSITION_ERROR,
    Move,
    MoveOutcome,
    Player,
    Position,
    Team,
    _clean,
    player_name_taken,
    team_name_taken,
)

TEAM_NAME = "Team name"
PLAYER_NAME = "Player name"


class TeamNotFound(LookupError):
    """The team does not exist (any more): the API answers 404."""

    def __init__(self, team_id: int) -> None:
        super().__init__(f"Team {team_id} does not exist.")


class PlayerNotFound(LookupError):
    """The player is not in that team (any more): the API answers 404."""

    def __init__(self, player_id: int, team_id: int) -> None:
        super().__init__(f"Player {player_id} is not in team {team_id}.")


def _lock_team(team_id: int) -> Team:
    team = Team.objects.select_for_update().filter(pk=team_id).first()
    if team is None:
        raise TeamNotFound(team_id)
    return team


@transaction.atomic
def team_create(
    *, name: str, players: Iterable[Mapping[str, str]] | None = None, short_name: str | None = None
) -> Team:
    """Create a team, optionally with its squad (``[{"name": ..., "position": ...}]``) and
    its short name (derived from the name when absent or empty: kernel/names.py).

    One ``team.created`` event carries the team, its short name and its players."""
    name = _clean_team_name(name)
    team = Team(name=name, short_name=short_name or "")
    team.full_clean()
    _save_unique(team, field="name", message=team_name_taken(name))

    squad = list(players or [])
    limit = settings.SQUAD_LIMIT
    if len(squad) > limit:
        raise ValidationError({"players": [f"A squad has at most {limit} players; got {len(squad)}."]})
    created: list[Player] = []
    for entry in squad:
        try:
            created.append(_player_build(team=team, name=entry.get("name", ""), position=entry.get("position", "")))
        except ValidationError as exc:
            raise ValidationError({"players": _with_codes(exc)}) from None

    events.publish(
        "team.created",
        subject=team.id,
        data={
            "id": team.id,
            "name": team.name,
            "short_name": team.short_name,
            "players": [_player_data(p) for p in created],
        },
    )
    return team


@transaction.atomic
def team_rename(*, team: Team, name: str | None = None, short_name: str | None = None) -> Team:
    """Change ``team``'s name, its short name, or both; no event when neither changes.

    A new name without a short name re-derives the short name if the team had the one
    derived from its old name; a short name someone chose is kept. One ``team.renamed``
    carries the name (``old_name`` equal to it when only the short name changed) and the
    short name."""
    team = _lock_team(team.pk)
    old_name, old_short = team.name, team.short_name
    new_name = old_name if name is None else _clean_team_name(name)
    if short_name:
        team.short_name = short_name
    elif new_name != old_name and old_short == derive_short_name(old_name):
        team.short_name = ""  # full_clean derives it from the new name
    team.name = new_name
    team.full_clean()
    if (team.name, team.short_name) == (old_name, old_short):
        return team
    _save_unique(team, field="name", message=team_name_taken(team.name))
    events.publish(
        "team.renamed",
        subject=team.id,
        data={"id": team.id, "name": team.name, "old_name": old_name, "short_name": team.short_name},
    )
    return team


@transaction.atomic
def team_delete(*, team: Team) -> None:
    """Delete ``team`` and its squad with one ``team.deleted`` event."""
    # With the team locked no player can join it before the delete collects the squad
    # (a player added meanwhile would fail the deferred foreign-key check at COMMIT).
    team = _lock_team(team.pk)
    team_id, name = team.id, team.name
    team.delete()
    events.publish("team.deleted", subject=team_id, data={"id": team_id, "name": name})


@transaction.atomic
def player_add(*, team: Team, name: str, position: str) -> Player:
    """Add a player to ``team``'s squad (at most ``settings.SQUAD_LIMIT`` players)."""
    # Lock the team row so two concurrent adds cannot both pass the squad limit, and a
    # concurrent delete either sees the new player or runs first (then: TeamNotFound).
    team = _lock_team(team.pk)
    limit = settings.SQUAD_LIMIT
    if team.players.count() >= limit:
        raise ValidationError(f"Team {team.name} has a full squad ({limit} players).", code="conflict")
    player = _player_build(team=team, name=name, position=position)
    events.publish("player.added", subject=team.id, data={"team_id": team.id, **_player_data(player)})
    return player


@transaction.atomic
def player_remove(*, team_id: int, player_id: int) -> None:
    """Remove player ``player_id`` from team ``team_id``'s squad.

    The ids are what the request names: the team and the player are locked and re-read
    here, so a player who moved to another team meanwhile (the transfer saga) is not
    removed from his new team (``PlayerNotFound``)."""
    _lock_team(team_id)
    player = Player.objects.select_for_update().filter(pk=player_id, team_id=team_id).first()
    if player is None:
        raise PlayerNotFound(player_id, team_id)
    name = player.name
    player.delete()
    events.publish("player.removed", subject=team_id, data={"id": player_id, "team_id": team_id, "name": name})


@transaction.atomic
def move_apply(*, transfer_id: int, player_id: int, from_team_id: int, to_team_id: int) -> Move:
    """The teams step of the transfer saga: move the player, or refuse with a reason.

    The first decision about ``transfer_id`` is final and recorded in ``Move``. A move
    publishes ``player.transferred`` (subject: the player) with both teams' sequences
    bumped in this transaction; a refusal publishes ``move.refused`` (subject: the
    transfer, aggregate ``move``, owned by teams) with a reason a person can read. A
    transfer already decided (cancelled before this request arrived, or a request
    redelivered after its inbox row was purged) is only answered again: nobody moves.
    """
    _lock_saga(from_team_id, to_team_id)
    decided = _decided(transfer_id)
    if decided is not None:
        _answer(decided)
        return decided

    player = Player.objects.select_for_update().filter(pk=player_id, team_id=from_team_id).first()
    to_team = Team.objects.filter(pk=to_team_id).first()
    limit = settings.SQUAD_LIMIT

    if player is None:
        reason = f"Player {player_id} is no longer in team {from_team_id}."
    elif from_team_id == to_team_id:
        reason = f"Player {player_id} already plays for team {to_team_id}."
    elif to_team is None:
        reason = f"Team {to_team_id} does not exist."
    elif to_team.players.count() >= limit:
        reason = f"Team {to_team_id} has a full squad ({limit} players)."
    elif _player_name_taken(team=to_team, name=player.name):
        reason = f"Team {to_team_id} already has a player named {player.name}."
    else:
        reason = ""

    move = Move(
        transfer_id=transfer_id,
        player_id=player_id,
        from_team_id=from_team_id,
        to_team_id=to_team_id,
        outcome=MoveOutcome.REFUSED if reason else MoveOutcome.MOVED,
        reason=reason,
    )
    move.full_clean(validate_unique=False)  # the lock above serialises the deciders
    move.save()
    if reason:
        _answer(move)
        return move

    assert player is not None and to_team is not None
    player.team = to_team
    player.full_clean()
    player.save()
    # The move changes both squads: bump both teams' sequences so replicas that track a
    # team by sequence see it as newer than any snapshot taken before it.
    from_sequence = events.next_sequence(f"team:{from_team_id}")
    to_sequence = events.next_sequence(f"team:{to_team_id}")
    events.publish(
        "player.transferred",
        subject=player.id,
        data={
            **_player_data(player),
            "from_team_id": from_team_id,
            "to_team_id": to_team_id,
            "transfer_id": transfer_id,
            "from_team_sequence": from_sequence,
            "to_team_sequence": to_sequence,
        },
    )
    return move


@transaction.atomic
def move_cancel(*, transfer_id: int, player_id: int, from_team_id: int, to_team_id: int, reason: str) -> Move:
    """The transfers service asks to cancel a transfer (its deadline passed, or a person
    cancelled it). Teams answers from its decision: a transfer not decided yet is decided
    now as cancelled (``move.cancelled``; a ``transfer.requested`` arriving later moves
    nobody); one already decided is answered again (``move.confirmed`` when the player
    moved, ``move.refused`` / ``move.cancelled`` otherwise)."""
    _lock_saga(from_team_id, to_team_id)
    decided = _decided(transfer_id)
    if decided is None:
        # No decision, yet the player is in the to-team: he moved for this transfer before
        # teams recorded decisions (a transfer in flight across the upgrade that added Move).
        # While a transfer is in flight no other transfer of him can be requested, so no
        # other move put him there; answering "cancelled" would contradict the squads.
        moved = Player.objects.filter(pk=player_id, team_id=to_team_id).exists()
        decided = Move(
            transfer_id=transfer_id,
            player_id=player_id,
            from_team_id=from_team_id,
            to_team_id=to_team_id,
            outcome=MoveOutcome.MOVED if moved else MoveOutcome.CANCELLED,
            reason="" if moved else reason or f"Transfer {transfer_id} was cancelled before the player moved.",
        )
        decided.full_clean(validate_unique=False)
        decided.save()
    _answer(decided)
    return decided


def _lock_saga(from_team_id: int, to_team_id: int) -> None:
    # Lock both teams in id order (no deadlock between opposite transfers, and the same
    # order as every other squad write) so the squad limit and the name check hold until
    # commit, and two messages about one transfer decide one after the other.
    list(Team.objects.select_for_update().filter(pk__in=[from_team_id, to_team_id]).order_by("pk"))


def _decided(transfer_id: int) -> Move | None:
    """The decision about ``transfer_id``, locked; a message about it arrived, so the row is
    kept the redelivery window from now (``moves_purge``)."""
    move = Move.objects.select_for_update().filter(transfer_id=transfer_id).first()
    if move is not None:
        move.asked_at = timezone.now()
        move.save(update_fields=["asked_at"])
    return move


def moves_purge(cutoff: datetime) -> int:
    """Delete the decisions no message has asked about since ``cutoff`` (events/retention.py
    gives it: the redelivery window), and the sequences of their answers (``move:<id>``)."""
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(
                Move.objects.select_for_update(skip_locked=True)
                .filter(asked_at__lt=cutoff)
                .values_list("transfer_id", flat=True)[:1000]
            )
            if not ids:
                return deleted
            deleted += Move.objects.filter(transfer_id__in=ids).delete()[0]
            retention.purge_sequences("move", ids)


def _answer(move: Move) -> None:
    """Publish teams' answer about ``move`` (subject: the transfer, aggregate ``move``).
    A first move is answered by ``player.transferred`` itself; this is the answer to
    every other message."""
    data: dict[str, Any] = {"transfer_id": move.transfer_id, "player_id": move.player_id}
    if move.outcome == MoveOutcome.MOVED:
        events.publish(
            "move.confirmed",
            subject=move.transfer_id,
            data={**data, "from_team_id": move.from_team_id, "to_team_id": move.to_team_id},
        )
    else:
        kind = "move.refused" if move.outcome == MoveOutcome.REFUSED else "move.cancelled"
        events.publish(kind, subject=move.transfer_id, data={**data, "reason": move.reason})


# ---------------------------------------------------------------------------------------
# Helpers: validation shared by the services above.
# ---------------------------------------------------------------------------------------


def _clean_team_name(name: Any) -> str:
    """The stored form of a team name (kernel.names), or a ValidationError on ``name``;
    the model's ``clean`` applies the same rule and the uniqueness check."""
    return _clean(name, TEAM_NAME)


def _player_name_taken(*, team: Team, name: str) -> bool:
    return team.players.filter(name_key=name_key(name)).exists()


def _player_build(*, team: Team, name: Any, position: Any) -> Player:
    name = _clean(name, PLAYER_NAME)
    if position not in Position.values:
        raise ValidationError({"position": [POSITION_ERROR]})
    taken = player_name_taken(team.name, name)
    player = Player(team=team, name=name, position=position)
    player.full_clean()
    _save_unique(player, field="name", message=taken)
    return player


def _save_unique(obj: Team | Player, *, field: str, message: str) -> None:
    """Save ``obj``; a unique-constraint race lost to a concurrent writer becomes the same
    ValidationError the check before it would have raised (never a 500)."""
    try:
        with transaction.atomic():  # a savepoint, so the outer transaction stays usable
            obj.save()
    except IntegrityError:
        raise ValidationError({field: [ValidationError(message, code="conflict")]}) from None


def _with_codes(exc: ValidationError) -> list[ValidationError]:
    """Every message of ``exc``, each keeping its code (``messages`` keeps only the text)."""
    if hasattr(exc, "error_dict"):
        return [error for errors in exc.error_dict.values() for error in errors]
    return exc.error_list


def _player_data(player: Player) -> dict[str, Any]:
    return {"id": player.id, "name": player.name, "position": player.position}
