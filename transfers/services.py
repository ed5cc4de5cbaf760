"""Writes: the transfer saga and the replica's upkeep.

The saga is choreographed: ``transfer_request`` validates against the replica and records
``transfer.requested`` with a deadline (``TRANSFER_TIMEOUT_SECONDS``); the teams service
moves the player (``player.transferred``) or refuses (``move.refused``);
``player_transferred`` / ``transfer_reject`` finish the transfer.

The saga has a clock: ``transfers_expire`` (Celery beat, or ``manage.py expire_transfers``)
finds transfers past their deadline and asks teams to cancel them
(``transfer.cancellation_requested``, state ``cancelling``); a person can do the same
(``transfer_cancel``). Teams decides: it answers ``move.cancelled`` if it had not moved
the player, ``move.confirmed`` if it had, and transfers follows the answer. Transfers never
finishes a transfer on its own, so the two services cannot disagree about a move. A
``cancelling`` transfer without an answer is asked again every ``TRANSFER_TIMEOUT_SECONDS``
(the question or its answer may have been dead-lettered), so once the bus is healthy the
player is freed with nobody acting.

State changes are idempotent: a transfer leaves the in-flight states once, and an answer
about a finished transfer leaves it alone (events arrive at least once).

No transaction is open during an HTTP call: ``team_get_or_fetch`` and ``teams_sync`` call the teams
service first, then write in a transaction of their own.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

import events
from events import antientropy, gate, retention

from . import metrics, replica, selectors, teams_client
from .models import (
    IN_FLIGHT,
    PlayerReplica,
    RepairCause,
    ReplicaRepair,
    TeamReplica,
    TeamsSync,
    Transfer,
    TransferState,
)
from .teams_client import TeamNotFound

log = logging.getLogger("transfers.services")


class TransferNotFound(LookupError):
    """No transfer with that id: the API answers 404."""

    def __init__(self, transfer_id: int) -> None:
        super().__init__(f"Transfer {transfer_id} does not exist.")


class TransferFinished(Exception):
    """The transfer is no longer in flight, so it cannot be cancelled: the API answers 409."""

    def __init__(self, transfer: Transfer) -> None:
        super().__init__(
            f"Transfer {transfer.pk} is already {transfer.state}; only a transfer in flight "
            "(requested or cancelling) can be cancelled."
        )


CENT = Decimal("0.01")
IN_FLIGHT_MESSAGE = "Player {player_id} already has a transfer in progress (#{transfer_id})."


# ---------------------------------------------------------------------------------------
# The saga
# ---------------------------------------------------------------------------------------


class TeamFetchInsideTransaction(RuntimeError):
    """``team_get_or_fetch`` would call the teams service while a transaction is open."""


def team_get_or_fetch(team_id: int) -> TeamReplica:
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
            f"team_get_or_fetch({team_id}) missed the replica inside transaction.atomic(); resolve teams "
            "before opening the transaction so the HTTP call does not hold it open."
        )
    state = teams_client.fetch_team(team_id)
    with transaction.atomic():
        replica.apply_team_state(state)
    team = TeamReplica.objects.visible().filter(team_id=team_id).first()
    if team is None:  # deleted by an event handled meanwhile
        raise TeamNotFound(team_id)
    return team


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


def _conflict(message: str) -> ValidationError:
    """A refusal by the current state: the API answers 409 (kernel/api.py)."""
    return ValidationError(message, code="conflict")


def _window_error() -> str | None:
    opens, closes = settings.TRANSFER_WINDOW_OPENS, settings.TRANSFER_WINDOW_CLOSES
    today = timezone.localdate()
    if opens and today < opens:
        return f"The transfer window is closed: it opens on {opens.isoformat()}."
    if closes and today > closes:
        return f"The transfer window is closed: it closed on {closes.isoformat()}."
    return None


def _in_flight(player_id: int) -> Transfer | None:
    return Transfer.objects.in_flight().filter(player_id=player_id).first()


def transfer_request(*, player_id: int, from_team_id: int, to_team_id: int, fee: Decimal | str) -> Transfer:
    """Validate a transfer against the replica and record it with ``transfer.requested``.

    Raises ``ValidationError`` (field messages) for bad input, with the code ``"conflict"``
    when the current state refuses it (the window closed, a team unknown, the player not in
    the team, already in the destination or in a transfer, a full squad: the API answers
    409, otherwise 422), and
    ``TeamsServiceUnavailable`` when a team missing from the replica cannot be fetched;
    nothing is written then.
    """
    errors: dict[str, list[Any]] = {}
    try:
        amount = _fee(fee)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if from_team_id == to_team_id:
        # The player is in from_team or not: either way the request conflicts with where he plays.
        errors.setdefault("to_team_id", []).append(_conflict("The destination team must differ from the current team."))
    window = _window_error()
    if window:
        errors.setdefault(NON_FIELD_ERRORS, []).append(_conflict(window))
    if errors:
        raise ValidationError(errors)

    # Outside any transaction: a miss calls the teams service.
    for field, team_id in (("from_team_id", from_team_id), ("to_team_id", to_team_id)):
        try:
            team_get_or_fetch(team_id)
        except TeamNotFound:
            errors.setdefault(field, []).append(_conflict(f"Team {team_id} does not exist."))
    if errors:
        raise ValidationError(errors)

    with transaction.atomic(durable=True):
        return _transfer_create(player_id=player_id, from_team_id=from_team_id, to_team_id=to_team_id, fee=amount)


def _transfer_create(*, player_id: int, from_team_id: int, to_team_id: int, fee: Decimal) -> Transfer:
    errors: dict[str, list[Any]] = {}
    teams = {t.team_id: t for t in TeamReplica.objects.visible().filter(team_id__in=[from_team_id, to_team_id])}
    for field, team_id in (("from_team_id", from_team_id), ("to_team_id", to_team_id)):
        if team_id not in teams:  # deleted since team_get_or_fetch
            errors.setdefault(field, []).append(_conflict(f"Team {team_id} does not exist."))
    if errors:
        raise ValidationError(errors)
    source, target = teams[from_team_id], teams[to_team_id]

    player = selectors.player_in_team(player_id=player_id, team=source)
    if player is None:
        errors.setdefault("player_id", []).append(
            _conflict(f"Player {player_id} is not in {source.name} (team {source.team_id}).")
        )
    elif (other := _in_flight(player_id)) is not None:
        errors.setdefault("player_id", []).append(
            _conflict(IN_FLIGHT_MESSAGE.format(player_id=player_id, transfer_id=other.pk))
        )
    if selectors.team_players(team=target).count() >= settings.SQUAD_LIMIT:
        errors.setdefault("to_team_id", []).append(
            _conflict(f"{target.name} (team {target.team_id}) already has {settings.SQUAD_LIMIT} players, the squad limit.")
        )
    if errors:
        raise ValidationError(errors)
    assert player is not None  # errors["player_id"] said so otherwise

    transfer = Transfer(
        player_id=player_id,
        player_name=player.name,
        from_team_id=from_team_id,
        to_team_id=to_team_id,
        fee=fee,
        expires_at=timezone.now() + timedelta(seconds=settings.TRANSFER_TIMEOUT_SECONDS),
    )
    transfer.full_clean()
    try:
        with transaction.atomic():
            transfer.save()
    except IntegrityError:  # a concurrent request for the same player won the race
        other = _in_flight(player_id)
        raise ValidationError(
            {"player_id": _conflict(IN_FLIGHT_MESSAGE.format(player_id=player_id, transfer_id=other.pk if other else "?"))}
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


def _answered(transfer_id: int, answer: str) -> Transfer | None:
    """The transfer teams answered about, locked; ``None`` when it is unknown here."""
    transfer = Transfer.objects.select_for_update().filter(pk=transfer_id).first()
    if transfer is None:
        log.warning("teams answered %s for transfer %s, which is unknown here", answer, transfer_id)
    return transfer


def _disagrees(transfer: Transfer, answer: str) -> None:
    # Cannot happen by construction (teams decides once per transfer, and transfers never
    # finishes a transfer without teams' answer); say so loudly if it ever does.
    log.error("teams answered %s for transfer %s, which is %s here", answer, transfer.pk, transfer.state)


def transfer_complete(*, transfer_id: int) -> Transfer | None:
    """Teams moved the player: mark an in-flight transfer completed and record
    ``transfer.completed``; a finished (or unknown) transfer is left alone. Runs inside the
    caller's transaction."""
    transfer = _answered(transfer_id, "moved")
    if transfer is None:
        return None
    if transfer.state not in IN_FLIGHT:
        if transfer.state != TransferState.COMPLETED:
            _disagrees(transfer, "moved")
        return transfer
    if transfer.state == TransferState.CANCELLING:
        transfer.reason = "The player had moved before the cancellation reached the teams service."
    transfer.state = TransferState.COMPLETED
    transfer.completed_at = timezone.now()
    transfer.full_clean()
    transfer.save()
    events.publish("transfer.completed", subject=transfer.pk, data=_transfer_data(transfer))
    return transfer


def transfer_reject(*, transfer_id: int, reason: str) -> Transfer | None:
    """Teams refused the move: mark an in-flight transfer rejected with its reason
    (idempotent)."""
    return _finish_unmoved(transfer_id, TransferState.REJECTED, reason)


def transfer_cancelled(*, transfer_id: int, reason: str) -> Transfer | None:
    """Teams cancelled the transfer before moving the player: mark it cancelled
    (idempotent). The player is free for another transfer."""
    return _finish_unmoved(transfer_id, TransferState.CANCELLED, reason)


def _finish_unmoved(transfer_id: int, state: TransferState, reason: str) -> Transfer | None:
    transfer = _answered(transfer_id, state)
    if transfer is None:
        return None
    if transfer.state not in IN_FLIGHT:
        if transfer.state != state:
            _disagrees(transfer, state)
        return transfer
    transfer.state = state
    transfer.reason = reason
    transfer.full_clean()
    transfer.save()
    return transfer


def transfer_cancel(*, transfer_id: int, reason: str) -> Transfer:
    """Ask the teams service to cancel a transfer in flight (a person, through the API or
    the admin). The transfer becomes ``cancelling``; teams' answer finishes it. Cancelling
    a ``cancelling`` transfer asks again.

    Raises ``TransferNotFound`` (404) and ``TransferFinished`` (409).
    """
    with transaction.atomic():
        transfer = Transfer.objects.select_for_update().filter(pk=transfer_id).first()
        if transfer is None:
            raise TransferNotFound(transfer_id)
        if transfer.state not in IN_FLIGHT:
            raise TransferFinished(transfer)
        _ask_to_cancel(transfer, reason=reason, now=timezone.now())
    return transfer


def _ask_to_cancel(transfer: Transfer, *, reason: str, now: datetime) -> None:
    transfer.state = TransferState.CANCELLING
    transfer.reason = reason
    transfer.cancel_requested_at = now
    transfer.full_clean()
    transfer.save()
    events.publish(
        "transfer.cancellation_requested",
        subject=transfer.pk,
        data={
            "id": transfer.pk,
            "player_id": transfer.player_id,
            "from_team_id": transfer.from_team_id,
            "to_team_id": transfer.to_team_id,
            "reason": reason,
        },
    )


@dataclass
class ExpireResult:
    expired: list[int]  # requested transfers past their deadline, now cancelling
    asked_again: list[int]  # cancelling transfers without an answer, asked again


def transfers_expire(*, now: datetime | None = None, limit: int = 200) -> ExpireResult:
    """The saga's clock (run by Celery beat): ask teams to cancel every ``requested``
    transfer past its deadline, and ask again for every ``cancelling`` transfer that got
    no answer within ``TRANSFER_TIMEOUT_SECONDS``. One short transaction per transfer;
    a transfer a handler holds is skipped and seen on the next run."""
    now = now or timezone.now()
    timeout = settings.TRANSFER_TIMEOUT_SECONDS
    result = ExpireResult(expired=[], asked_again=[])
    due = list(
        Transfer.objects.filter(state=TransferState.REQUESTED, expires_at__lte=now)
        .order_by("expires_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    for pk in due:
        with transaction.atomic():
            transfer = (
                Transfer.objects.select_for_update(skip_locked=True)
                .filter(pk=pk, state=TransferState.REQUESTED)
                .first()
            )
            if transfer is None:
                continue
            _ask_to_cancel(
                transfer,
                reason=f"No answer from the teams service within {timeout} s: cancellation requested.",
                now=now,
            )
        result.expired.append(pk)
        metrics.transfer_expired()
        log.warning("transfer %s expired (no answer within %s s): asked the teams service to cancel it", pk, timeout)

    silent = list(
        Transfer.objects.filter(
            state=TransferState.CANCELLING, cancel_requested_at__lte=now - timedelta(seconds=timeout)
        )
        .order_by("cancel_requested_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    for pk in silent:
        with transaction.atomic():
            transfer = (
                Transfer.objects.select_for_update(skip_locked=True)
                .filter(pk=pk, state=TransferState.CANCELLING)
                .first()
            )
            if transfer is None:
                continue
            _ask_to_cancel(transfer, reason=transfer.reason or "Cancellation requested.", now=now)
        result.asked_again.append(pk)
        log.warning("transfer %s: no answer to its cancellation within %s s: asked again", pk, timeout)
    return result


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
    """Load all teams from ``GET /api/teams/export/`` (every page) and merge them into the
    replica.

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


# ---------------------------------------------------------------------------------------
# Healing the replica (transfers/replica.py, "Healing")
# ---------------------------------------------------------------------------------------

SERVICE = "transfers"
CHANGED = (replica.Action.CREATED, replica.Action.UPDATED, replica.Action.DELETED)


def _figures(team_ids: list[int]) -> dict[int, tuple[int, int]]:
    """(sequence, players present) per team id, as the replica holds them now."""
    sequences = dict(TeamReplica.objects.filter(team_id__in=team_ids).values_list("team_id", "sequence"))
    players: dict[int, int] = {}
    for team_id in PlayerReplica.objects.filter(team__team_id__in=team_ids, present=True).values_list(
        "team__team_id", flat=True
    ):
        players[team_id] = players.get(team_id, 0) + 1
    return {t: (sequences.get(t, 0), players.get(t, 0)) for t in team_ids}


def _record(
    outcome: replica.TeamOutcome, *, cause: str, detail: str, found_at: datetime, before: tuple[int, int]
) -> ReplicaRepair | None:
    if outcome.action not in CHANGED:
        return None
    repair = ReplicaRepair.objects.create(
        team_id=outcome.team_id,
        cause=cause,
        detail=detail[:300],
        action=outcome.action,
        sequence_before=before[0],
        sequence_after=outcome.sequence,
        players_before=before[1],
        players_after=outcome.players,
        found_at=found_at,
    )
    transaction.on_commit(lambda: antientropy.repaired(SERVICE, cause))
    log.warning("replica: team %s repaired (%s, %s): %s", outcome.team_id, cause, outcome.action, detail)
    return repair


def teams_heal(*, limit: int = 100, max_seconds: float = 2.0) -> list[ReplicaRepair]:
    """Fetch the teams the replica marked (a gap, or an event about state it lacks) at least
    ``TEAMS_HEAL_GRACE_SECONDS`` ago (an event still on its way may clear a mark first) and
    apply each as a snapshot; a 404 makes it a tombstone. One HTTP call per team, each
    applied in its own transaction, none open during a call, each short
    (``teams_client.healing``); the round stops after ``max_seconds`` (the worker also runs
    the relay), the rest waits for the next; nothing is fetched while the service is being
    moved (its gate is not open).
    ``TeamsServiceUnavailable`` stops the round (the marks stay for the next)."""
    started = time.monotonic()
    if gate.current(SERVICE) != gate.OPEN:  # being moved: the replica waits, the relay goes first
        return []
    grace = timedelta(seconds=settings.TEAMS_HEAL_GRACE_SECONDS)
    marked = list(
        TeamReplica.objects.live()
        .filter(heal_wanted_at__lte=timezone.now() - grace)
        .order_by("heal_wanted_at")
        .values_list("team_id", "heal_wanted_at", "heal_cause")[:limit]
    )
    repairs = []
    for team_id, found_at, detail in marked:
        if time.monotonic() - started > max_seconds:
            break
        before = _figures([team_id])[team_id]
        try:
            with teams_client.healing():
                state: dict[str, Any] | None = teams_client.fetch_team(team_id)
        except TeamNotFound:
            state = None
        cause = RepairCause.GAP if "gap" in detail else RepairCause.UNKNOWN
        with transaction.atomic():
            gate.check_writable(SERVICE)
            outcome = replica.apply_team_state(state) if state is not None else replica.team_gone(team_id)
            repair = _record(outcome, cause=cause, detail=detail, found_at=found_at, before=before)
        if repair is not None:
            repairs.append(repair)
    return repairs


@dataclass
class ReconcileResult:
    buckets: int
    differing: int
    repairs: list[ReplicaRepair]


def teams_reconcile() -> ReconcileResult:
    """Compare the replica with the teams service's digest, bucket by bucket, and read in
    full and apply only the buckets that differ (``replica.apply_range``). Raises
    ``TeamsServiceUnavailable`` when the teams service cannot answer (nothing is written for
    a bucket it could not read)."""
    requested_at = timezone.now()
    if gate.current(SERVICE) != gate.OPEN:  # being moved: the replica waits, the relay goes first
        return ReconcileResult(buckets=0, differing=0, repairs=[])
    try:
        with teams_client.healing():
            buckets = teams_client.fetch_digest(bucket=settings.TEAMS_RECONCILE_BUCKET)
    except teams_client.TeamsServiceError:
        antientropy.reconciled(SERVICE, "failed")
        raise
    differing = [b for b in buckets if not replica.digest(after=b.after, last=b.last).same(b)]
    repairs: list[ReplicaRepair] = []
    for bucket in differing:
        try:
            with teams_client.healing():
                teams = teams_client.fetch_export(id_after=bucket.after, id_upto=bucket.last)
        except teams_client.TeamsServiceError:
            antientropy.reconciled(SERVICE, "failed")
            raise
        held = replica.digest(after=bucket.after, last=bucket.last)
        detail = (
            f"bucket ({bucket.after}, {bucket.last if bucket.last is not None else '∞'}]: the teams service has "
            f"{bucket.count} teams up to sequence {bucket.max_sequence}, the replica {held.count} up to {held.max_sequence}"
        )
        ids = sorted({t["id"] for t in teams} | set(_live_ids(bucket.after, bucket.last)))
        before = _figures(ids)
        with transaction.atomic():
            gate.check_writable(SERVICE)
            for outcome in replica.apply_range(
                teams=teams, after=bucket.after, last=bucket.last, requested_at=requested_at
            ):
                repair = _record(
                    outcome,
                    cause=RepairCause.RECONCILIATION,
                    detail=detail,
                    found_at=requested_at,
                    before=before.get(outcome.team_id, (0, 0)),
                )
                if repair is not None:
                    repairs.append(repair)
    antientropy.reconciled(SERVICE, "repaired" if repairs else "clean")
    return ReconcileResult(buckets=len(buckets), differing=len(differing), repairs=repairs)


def _live_ids(after: int, last: int | None) -> list[int]:
    teams = TeamReplica.objects.live().filter(team_id__gt=after)
    if last is not None:
        teams = teams.filter(team_id__lte=last)
    return list(teams.values_list("team_id", flat=True))


# ---------------------------------------------------------------------------------------
# Retention (events/retention.py)
# ---------------------------------------------------------------------------------------


def transfer_sequences_purge(cutoff: datetime) -> int:
    """Delete the sequences (``transfer:<id>``) of transfers that finished before ``cutoff``:
    a finished transfer publishes nothing more, and its events are out of every outbox,
    queue and DLQ by then. The transfers themselves stay."""
    finished = Transfer.objects.exclude(state__in=IN_FLIGHT).filter(updated_at__lt=cutoff).values_list("pk", flat=True)
    return retention.purge_sequences("transfer", finished.iterator(chunk_size=1000))
