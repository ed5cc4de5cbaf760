"""Writes: the transfer saga and the replica's upkeep.

The saga is choreographed: ``transfer_request`` validates against the replica and records
``transfer.requested``; the teams service moves the player (``player.transferred``) or
refuses (``transfer.rejected``); ``player_transferred`` / ``transfer_reject`` finish the
transfer. State changes are idempotent: a transfer leaves ``requested`` once, and an event
about a finished transfer leaves it alone (events arrive at least once).

No transaction is open during an HTTP call: ``team_get`` and ``teams_sync`` call the teams
service first, then write in a transaction of their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

import events

from . import replica, selectors, teams_client
from .models import TeamReplica, TeamsSync, Transfer, TransferState
from .teams_client import TeamNotFound

log = logging.getLogger("transfers.services")

CENT = Decimal("0.01")
IN_FLIGHT_MESSAGE = "Player {player_id} already has a transfer in progress (#{transfer_id})."


# ---------------------------------------------------------------------------------------
# The saga
# ---------------------------------------------------------------------------------------


def _fee(fee: Any) -> Decimal:
    try:
        value = Decimal(str(fee))
    except (InvalidOperation, ValueError):
        raise ValidationError({"fee": "The fee must be a decimal amount such as 1500000.00."}) from None
    if not value.is_finite():
        raise ValidationError({"fee": "The fee must be a decimal amount such as 1500000.00."})
    if value < 0:
        raise ValidationError({"fee": "The fee cannot be negative."})
    if value != value.quantize(CENT, rounding=ROUND_HALF_UP):
        raise ValidationError({"fee": "The fee has at most 2 decimal places."})
    return value.quantize(CENT)


def _window_error() -> str | None:
    opens, closes = settings.TRANSFER_WINDOW_OPENS, settings.TRANSFER_WINDOW_CLOSES
    today = timezone.localdate()
    if opens and today < opens:
        return f"The transfer window is closed: it opens on {opens.isoformat()}."
    if closes and today > closes:
        return f"The transfer window is closed: it closed on {closes.isoformat()}."
    return None


def _in_flight(player_id: int) -> Transfer | None:
    return Transfer.objects.filter(player_id=player_id, state=TransferState.REQUESTED).first()


def transfer_request(*, player_id: int, from_team_id: int, to_team_id: int, fee: Decimal | str) -> Transfer:
    """Validate a transfer against the replica and record it with ``transfer.requested``.

    Raises ``ValidationError`` (field messages) for bad input, ``TeamsServiceUnavailable``
    when a team missing from the replica cannot be fetched; nothing is written then.
    """
    errors: dict[str, list[str]] = {}
    try:
        amount = _fee(fee)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if from_team_id == to_team_id:
        errors.setdefault("to_team_id", []).append("The destination team must differ from the current team.")
    window = _window_error()
    if window:
        errors.setdefault(NON_FIELD_ERRORS, []).append(window)
    if errors:
        raise ValidationError(errors)

    # Outside any transaction: a miss calls the teams service.
    for field, team_id in (("from_team_id", from_team_id), ("to_team_id", to_team_id)):
        try:
            selectors.team_get(team_id)
        except TeamNotFound:
            errors.setdefault(field, []).append(f"Team {team_id} does not exist.")
    if errors:
        raise ValidationError(errors)

    with transaction.atomic(durable=True):
        return _transfer_create(player_id=player_id, from_team_id=from_team_id, to_team_id=to_team_id, fee=amount)


def _transfer_create(*, player_id: int, from_team_id: int, to_team_id: int, fee: Decimal) -> Transfer:
    errors: dict[str, list[str]] = {}
    teams = {t.team_id: t for t in TeamReplica.objects.visible().filter(team_id__in=[from_team_id, to_team_id])}
    for field, team_id in (("from_team_id", from_team_id), ("to_team_id", to_team_id)):
        if team_id not in teams:  # deleted since team_get
            errors.setdefault(field, []).append(f"Team {team_id} does not exist.")
    if errors:
        raise ValidationError(errors)
    source, target = teams[from_team_id], teams[to_team_id]

    player = selectors.player_in_team(player_id=player_id, team=source)
    if player is None:
        errors.setdefault("player_id", []).append(
            f"Player {player_id} is not in {source.name} (team {source.team_id})."
        )
    elif (other := _in_flight(player_id)) is not None:
        errors.setdefault("player_id", []).append(IN_FLIGHT_MESSAGE.format(player_id=player_id, transfer_id=other.pk))
    if selectors.team_players(team=target).count() >= settings.SQUAD_LIMIT:
        errors.setdefault("to_team_id", []).append(
            f"{target.name} (team {target.team_id}) already has {settings.SQUAD_LIMIT} players, the squad limit."
        )
    if errors:
        raise ValidationError(errors)

    transfer = Transfer(
        player_id=player_id,
        player_name=player.name,
        from_team_id=from_team_id,
        to_team_id=to_team_id,
        fee=fee,
    )
    transfer.full_clean()
    try:
        with transaction.atomic():
            transfer.save()
    except IntegrityError:  # a concurrent request for the same player won the race
        other = _in_flight(player_id)
        raise ValidationError(
            {"player_id": IN_FLIGHT_MESSAGE.format(player_id=player_id, transfer_id=other.pk if other else "?")}
        ) from None
    events.publish("transfer.requested", subject=transfer.pk, data=_transfer_data(transfer))
    return transfer


def _transfer_data(transfer: Transfer) -> dict[str, Any]:
    return {
        "id": transfer.pk,
        "player_id": transfer.player_id,
        "from_team_id": transfer.from_team_id,
        "to_team_id": transfer.to_team_id,
        "fee": f"{transfer.fee:.2f}",
    }


def transfer_complete(*, transfer_id: int) -> Transfer | None:
    """Mark a requested transfer completed and record ``transfer.completed``; a finished
    (or unknown) transfer is left alone. Runs inside the caller's transaction."""
    transfer = Transfer.objects.select_for_update().filter(pk=transfer_id).first()
    if transfer is None:
        log.warning("transfer %s completed at the teams service but is unknown here", transfer_id)
        return None
    if transfer.state != TransferState.REQUESTED:
        return transfer
    transfer.state = TransferState.COMPLETED
    transfer.completed_at = timezone.now()
    transfer.full_clean()
    transfer.save()
    events.publish("transfer.completed", subject=transfer.pk, data=_transfer_data(transfer))
    return transfer


def transfer_reject(*, transfer_id: int, reason: str) -> Transfer | None:
    """Mark a requested transfer rejected with the teams service's reason (idempotent)."""
    transfer = Transfer.objects.select_for_update().filter(pk=transfer_id).first()
    if transfer is None:
        log.warning("transfer %s rejected at the teams service but is unknown here", transfer_id)
        return None
    if transfer.state != TransferState.REQUESTED:
        return transfer
    transfer.state = TransferState.REJECTED
    transfer.reason = reason
    transfer.full_clean()
    transfer.save()
    return transfer


def player_transferred(
    *,
    transfer_id: int,
    player_id: int,
    name: str,
    position: str,
    from_team_id: int,
    to_team_id: int,
    from_team_sequence: int,
    to_team_sequence: int,
) -> Transfer | None:
    """The teams service moved the player: update the replica, complete the transfer."""
    replica.player_transferred(
        player_id=player_id,
        name=name,
        position=position,
        from_team_id=from_team_id,
        to_team_id=to_team_id,
        from_team_sequence=from_team_sequence,
        to_team_sequence=to_team_sequence,
    )
    return transfer_complete(transfer_id=transfer_id)


# ---------------------------------------------------------------------------------------
# The replica's snapshot
# ---------------------------------------------------------------------------------------


@dataclass
class SyncResult:
    sync: TeamsSync
    outcomes: list[replica.TeamOutcome]


def teams_sync() -> SyncResult:
    """Load all teams with one ``GET /api/teams/export/`` and merge them into the replica.

    The HTTP call happens before the transaction opens; ``TeamsServiceUnavailable`` leaves
    the replica untouched.
    """
    requested_at = timezone.now()
    teams = teams_client.fetch_export()
    with transaction.atomic():
        outcomes = replica.apply_export(teams=teams, requested_at=requested_at)
        counts = {
            a: sum(1 for o in outcomes if o.action == a)
            for a in ("created", "updated", "unchanged", "stale", "deleted")
        }
        sync = TeamsSync.objects.create(started_at=requested_at, teams=len(teams), **counts)
    return SyncResult(sync=sync, outcomes=outcomes)


def teams_sync_needed() -> bool:
    """The replica is empty, was never fully synced, or its last sync is older than
    ``TEAMS_CACHE_MAX_AGE``."""
    if not TeamReplica.objects.exists():
        return True
    last = TeamsSync.objects.order_by("-finished_at").values_list("finished_at", flat=True).first()
    return last is None or last < timezone.now() - settings.TEAMS_CACHE_MAX_AGE


def teams_sync_if_stale() -> SyncResult | None:
    """The consumer's start hook: re-sync when ``teams_sync_needed``. Runs after the
    consumer's subscriptions exist, so events written during the sync wait in the queue
    and converge with it."""
    if not teams_sync_needed():
        log.info("teams replica is fresh; no sync")
        return None
    result = teams_sync()
    log.info("teams replica synced: %s teams", result.sync.teams)
    return result
