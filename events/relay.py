"""The outbox relay: publishes committed outbox rows to SNS.

Promises:
- At least once: a row is marked published only after SNS accepted it. A relay that dies
  between the two leaves the row to be published again when its lease runs out; the
  consumers' inbox absorbs the duplicate.
- One relay per row in normal operation: rows are claimed in a short transaction that
  sets a lease and this claim's ``claim_token`` (on Postgres one ``UPDATE ... RETURNING``
  over a ``SELECT ... FOR UPDATE SKIP LOCKED``; on SQLite a select and an update in an
  IMMEDIATE transaction); any number of relays may run at once. No transaction is open
  across a network call.
- What is sent is what was stored: on Postgres the claim returns the envelope as the text
  the database holds and that text is the SNS message (no decode and re-encode in the
  relay). The sweeper (``relay()``: beat, kicks, ``relay_outbox``) claims
  ``OUTBOX_SWEEP_BATCH_SIZE`` rows a batch, ``relay_once`` alone ``OUTBOX_BATCH_SIZE``.
- An outcome belongs to its claim: marking a row published, counting a failed attempt,
  backing off or failing it are each one UPDATE ``WHERE claim_token = <ours> AND state =
  'pending'``. A relay that stalled past its lease and lost its rows to another relay
  changes nothing when it wakes up (its late outcome is dropped and logged).
- A claim is not outlived by its own calls: every SNS call (retries and their back-off
  included) gives up within half the lease, and the lease is renewed before each
  ``PublishBatch`` once a third of it has passed; rows whose lease was lost are not sent.
- Per-subject order: a row is not claimed while an older row of the same aggregate is
  unpublished (pending, leased or failed). Consumers also get a ``sequence``.
- Overlap, bounded: on PostgreSQL a sweep claims its next batch while it publishes a full
  one, never more than two batches in flight. The batch being published stays pending until
  its mark commits, so the batch claimed ahead never holds a subject's next row: a subject's
  row is published only after its previous one was marked. A batch claimed ahead keeps the
  lease it took at its claim (renewed before its first ``PublishBatch`` if a third has
  passed); one the sweep ends without publishing is given back.
- Transient errors (network, timeouts, throttling, 5xx, anything unrecognised) back off
  exponentially with jitter up to ``OUTBOX_BACKOFF_MAX_SECONDS`` and are retried for
  ``OUTBOX_RETRY_FOR_SECONDS`` (a day by default) from the first of them. A sweep tries
  each row at most once: a retry that falls due during it waits for the next sweep, so a
  sweep (and ``relay_outbox --once``) ends while SNS keeps failing. Errors that
  retrying cannot fix (topic missing, access denied, message too large, another request
  SNS rejects as the sender's fault) mark the row ``failed`` at once, and ``failure`` says
  which. Access denied says which permission the process's role lacks (``sns:Publish on
  <topic ARN>``; the roles are ``events/iam.py``'s). A failed row is shown in the admin and ``bus_status`` and requeued by an action
  or ``manage.py requeue_outbox``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from botocore.exceptions import ClientError
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.base import ModelState
from django.utils import timezone

from . import aws, iam, metrics, telemetry, wakeup
from .models import OutboxFailure, OutboxMessage, OutboxState

log = logging.getLogger("events.relay")

SNS_BATCH = 10  # PublishBatch's limit


class Publisher(Protocol):
    def publish(self, event_type: str, rows: Sequence[OutboxMessage]) -> dict[int, str | Exception]:
        """Publish rows of one type; return per row pk its SNS message id or the error."""


def call_budget() -> float:
    """Seconds one SNS call may take, retries included: half the lease. A ``PublishBatch``
    starts with at least two thirds of the lease left (``Lease.keep``), so a call that
    hangs gives up while the rows are still this relay's."""
    return settings.OUTBOX_LEASE_SECONDS / 2


class EntryFailed(Exception):
    """One entry of a ``PublishBatch`` that SNS refused (its ``Failed`` list)."""

    def __init__(self, code: str, message: str, sender_fault: bool) -> None:
        super().__init__(f"{code}: {message}".strip())
        self.code, self.message, self.sender_fault = code, message, sender_fault


class PermissionMissing(Exception):
    """AWS refused a call for want of a permission: this process's role lacks it (a
    permanent failure until the role changes). The message names the permission."""

    def __init__(self, permission: str, error: BaseException) -> None:
        super().__init__(f"access denied: this process's AWS role lacks {permission} ({error})")
        self.permission = permission


def _denied(error: Exception, operation: str, resource: str) -> Exception:
    permission = iam.missing_permission(error, service="sns", operation=operation, resource=resource)
    return PermissionMissing(permission, error) if permission else error


class SnsPublisher:
    """``PublishBatch`` to the type's topic, 10 entries a call, per-entry results. Its
    client gives up on a call within ``call_budget()``."""

    def publish(self, event_type: str, rows: Sequence[OutboxMessage]) -> dict[int, str | Exception]:
        sns = aws.client("sns", budget=call_budget())
        try:
            arn = aws.topic_arn(event_type, sns)
        except Exception as exc:
            error = _denied(exc, "ListTopics", "*")
            return {row.pk: error for row in rows}
        return self._publish_chunks(sns, arn, rows)

    def _publish_chunks(self, sns: Any, arn: str, rows: Sequence[OutboxMessage]) -> dict[int, str | Exception]:
        results: dict[int, str | Exception] = {}
        for start in range(0, len(rows), SNS_BATCH):
            chunk = rows[start : start + SNS_BATCH]
            entries = [self._entry(row) for row in chunk]
            try:
                response = sns.publish_batch(TopicArn=arn, PublishBatchRequestEntries=entries)
            except Exception as exc:
                error = _denied(exc, "PublishBatch", arn)
                results.update({row.pk: error for row in chunk})
                continue
            for ok in response.get("Successful", []):
                results[int(ok["Id"])] = ok["MessageId"]
            for bad in response.get("Failed", []):
                results[int(bad["Id"])] = EntryFailed(
                    str(bad.get("Code", "")), str(bad.get("Message", "")), bool(bad.get("SenderFault", True))
                )
        return results

    @staticmethod
    def _entry(row: OutboxMessage) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "Id": str(row.pk),
            "Message": row.body(),
            "MessageAttributes": {
                "type": {"DataType": "String", "StringValue": row.type},
                "id": {"DataType": "String", "StringValue": str(row.event_id)},
            },
        }
        if aws.fifo():
            entry["MessageGroupId"] = row.aggregate_key
            entry["MessageDeduplicationId"] = str(row.event_id)
        return entry


class NullPublisher:
    """Accepts everything without I/O: measures the database side alone (benchmarks)."""

    def publish(self, event_type: str, rows: Sequence[OutboxMessage]) -> dict[int, str | Exception]:
        return {row.pk: f"null-{row.pk}" for row in rows}


@dataclass
class RelayResult:
    published: int = 0
    retried: int = 0
    failed: int = 0
    batches: int = 0
    lost: int = 0  # rows whose outcome was dropped: another relay had claimed them meanwhile
    errors: list[str] = field(default_factory=list)

    def __iadd__(self, other: RelayResult) -> RelayResult:
        self.published += other.published
        self.retried += other.retried
        self.failed += other.failed
        self.lost += other.lost
        self.batches += other.batches
        self.errors.extend(other.errors)
        return self


def due_queryset(now: Any, retries_due_by: Any = None) -> Any:
    older_unpublished = OutboxMessage.objects.filter(
        aggregate_key=OuterRef("aggregate_key"), id__lt=OuterRef("id")
    ).exclude(state=OutboxState.PUBLISHED)
    return (
        OutboxMessage.objects.filter(state=OutboxState.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=retries_due_by or now))
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .exclude(Exists(older_unpublished))
        .order_by("id")
    )


def claim(limit: int, *, token: uuid.UUID | None = None, retries_due_by: Any = None) -> list[OutboxMessage]:
    """Lease up to ``limit`` due rows in one short transaction; they come back in id order.
    ``retries_due_by`` (a sweep's start) leaves out rows whose retry falls after it."""
    now = timezone.now()
    due_by = min(now, retries_due_by) if retries_due_by is not None else now
    with transaction.atomic():
        _relaxed_commit()
        if connection.vendor == "postgresql":
            return _claim_returning(limit, now, token, due_by)
        qs = due_queryset(now, due_by)
        if connection.features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True)
        rows = list(
            qs.only("id", "event_id", "type", "aggregate_key", "envelope", "attempts", "retrying_since")[:limit]
        )
        if rows:
            OutboxMessage.objects.filter(pk__in=[r.pk for r in rows]).update(
                claimed_until=now + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS), claim_token=token
            )
    return rows


# The columns a claim reads (besides the envelope, which comes as text), in the model's
# field order as ``Model.from_db`` wants them; the others stay deferred.
_CLAIMED = [
    f.attname
    for f in OutboxMessage._meta.concrete_fields
    if f.attname
    in {"id", "event_id", "type", "aggregate_key", "state", "attempts", "next_attempt_at", "failure", "retrying_since"}
]


def _claim_returning(limit: int, now: Any, token: uuid.UUID | None, due_by: Any) -> list[OutboxMessage]:
    """Postgres: select the due rows (the same conditions as ``due_queryset``, per-subject
    order included), lock them skipping those another relay holds, lease them to ``token``
    and return them, in one statement.

    The per-subject check is a correlated subquery with ``LIMIT 1``, not ``NOT EXISTS``: a
    large published history makes ANALYZE's sample miss the few pending rows, and the
    planner then turned ``NOT EXISTS`` into an anti-join that read the whole unpublished
    index for every candidate (quadratic in the backlog). A ``LIMIT`` subquery stays a
    per-row probe of ``outbox_unpublished_subject`` by subject and id whatever the
    statistics say."""
    table = connection.ops.quote_name(OutboxMessage._meta.db_table)
    columns = ", ".join(f"o.{connection.ops.quote_name(name)}" for name in _CLAIMED)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {table} AS o SET claimed_until = %s, claim_token = %s
            FROM (
                SELECT c.id FROM {table} AS c
                WHERE c.state = %s
                  AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= %s)
                  AND (c.claimed_until IS NULL OR c.claimed_until < %s)
                  AND (
                      SELECT p.id FROM {table} AS p
                      WHERE p.aggregate_key = c.aggregate_key AND p.id < c.id AND NOT (p.state = %s)
                      ORDER BY p.aggregate_key, p.id
                      LIMIT 1
                  ) IS NULL
                ORDER BY c.id
                LIMIT %s
                FOR UPDATE SKIP LOCKED
            ) AS due
            WHERE o.id = due.id
            RETURNING {columns}, o.envelope::text
            """,
            [
                now + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS),
                token,
                OutboxState.PENDING,
                due_by,
                now,
                OutboxState.PUBLISHED,
                limit,
            ],
        )
        fetched = sorted(cursor.fetchall(), key=lambda values: values[0])
    rows = []
    for *values, text in fetched:
        # What ``Model.from_db`` does with deferred fields, without its per-field loop (a
        # quarter of the relay's Python time for 500 rows): the other fields stay deferred
        # and load on access as usual.
        row = OutboxMessage.__new__(OutboxMessage)
        row._state = ModelState()
        row._state.adding, row._state.db = False, connection.alias
        row.__dict__.update(zip(_CLAIMED, values, strict=True))
        row.envelope_text = text  # type: ignore[attr-defined]
        rows.append(row)
    return rows


class Lease:
    """Keeps a claim's lease alive while its rows are published. A slow SNS (or a slow
    emulator) must not let the lease run out mid-batch, or another relay would claim and
    publish the same rows again. Before each ``PublishBatch`` the lease is renewed once a
    third of it has passed; rows whose lease was lost meanwhile are dropped, not sent."""

    def __init__(self, token: uuid.UUID, rows: Sequence[OutboxMessage], *, since: float | None = None) -> None:
        self.token = token
        self.owned = {r.pk for r in rows}
        # When the lease was taken (``time.monotonic()`` before the claim): a batch claimed
        # ahead waits for the one before it, and its lease runs meanwhile.
        self.renewed_at = time.monotonic() if since is None else since

    def keep(self, chunk: Sequence[OutboxMessage]) -> list[OutboxMessage]:
        seconds = settings.OUTBOX_LEASE_SECONDS
        if time.monotonic() - self.renewed_at > seconds / 3:
            mine = _claimed(self.token).filter(pk__in=self.owned)
            renewed = mine.update(claimed_until=timezone.now() + timedelta(seconds=seconds))
            if renewed < len(self.owned):
                self.owned = set(mine.values_list("pk", flat=True))
                log.warning(
                    "relay lost the lease of %s row(s); another relay has them",
                    len(chunk) - len(self.owned & {r.pk for r in chunk}),
                )
            self.renewed_at = time.monotonic()
        return [r for r in chunk if r.pk in self.owned]


def backoff(attempts: int) -> float:
    """Seconds before the next try: exponential from the base, capped, with full jitter
    on the upper half so that many failed rows do not retry in lockstep."""
    exponent = min(max(attempts - 1, 0), 40)  # past the cap anyway; keeps the float finite
    delay = min(settings.OUTBOX_BACKOFF_BASE_SECONDS * 2**exponent, settings.OUTBOX_BACKOFF_MAX_SECONDS)
    return delay * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class Verdict:
    """What a publish error means: ``transient`` (retry with back-off), or a ``failure``
    that retrying cannot fix."""

    transient: bool
    failure: str = ""


TRANSIENT = Verdict(True)
_THROTTLING = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "KMSThrottling",
    "KMSThrottlingException",
}
_NOT_FOUND = {"NotFound", "NotFoundException", "ResourceNotFoundException"}
_ACCESS = {
    "AuthorizationError",
    "AuthorizationErrorException",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidSecurity",
    "InvalidSecurityException",
    "KMSAccessDenied",
    "KMSAccessDeniedException",
    "KMSDisabled",
    "KMSDisabledException",
}
_TOO_LARGE = {"BatchRequestTooLong", "BatchRequestTooLongException", "RequestEntityTooLarge"}


def classify(error: BaseException) -> Verdict:
    """Transient: network errors, timeouts, throttling, 5xx, and anything not recognised
    (retrying costs little; giving up blocks the subject until a person acts). Permanent:
    the topic is missing, access is denied, the message is too large, or SNS rejected the
    request as the sender's fault."""
    if isinstance(error, aws.TopicMissing):
        return Verdict(False, OutboxFailure.TOPIC_MISSING)
    if isinstance(error, PermissionMissing):
        return Verdict(False, OutboxFailure.ACCESS_DENIED)
    if isinstance(error, EntryFailed):
        if not error.sender_fault:
            return TRANSIENT
        code, message, status = error.code, error.message, 400
    elif isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        message = str(error.response.get("Error", {}).get("Message", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    else:
        return TRANSIENT
    if code in _THROTTLING or status >= 500 or status == 429:
        return TRANSIENT
    if code in _NOT_FOUND:
        return Verdict(False, OutboxFailure.TOPIC_MISSING)
    if code in _ACCESS or status == 403:
        return Verdict(False, OutboxFailure.ACCESS_DENIED)
    if code in _TOO_LARGE or "too long" in message.lower() or "too large" in message.lower():
        return Verdict(False, OutboxFailure.TOO_LARGE)
    if 400 <= status < 500:
        return Verdict(False, OutboxFailure.REJECTED)
    return TRANSIENT


def _record_failure(row: OutboxMessage, error: Exception, now: Any) -> None:
    """Decide, in memory, what a failed attempt does to ``row``: back off, or fail."""
    row.attempts += 1
    row.last_error = f"{type(error).__name__}: {error}"[:2000]
    row.retrying_since = row.retrying_since or now
    verdict = classify(error)
    window = timedelta(seconds=settings.OUTBOX_RETRY_FOR_SECONDS)
    if verdict.transient and now - row.retrying_since < window:
        row.next_attempt_at = now + timedelta(seconds=backoff(row.attempts))
    else:
        row.state = OutboxState.FAILED
        row.failure = verdict.failure or OutboxFailure.GAVE_UP


def _log_failure(row: OutboxMessage) -> None:
    if row.state != OutboxState.FAILED:
        log.warning("outbox row %s (%s) attempt %s failed: %s", row.pk, row.type, row.attempts, row.last_error)
        return
    log.error(
        "outbox row %s (%s) failed (%s) after %s attempt(s): %s. Fix the cause, then requeue it "
        "(admin or `manage.py requeue_outbox`).",
        row.pk,
        row.type,
        row.get_failure_display(),
        row.attempts,
        row.last_error,
    )


def _mark(rows: Iterable[OutboxMessage], results: dict[int, str | Exception], token: uuid.UUID) -> RelayResult:
    """Record each row's outcome, each write conditional on this relay's claim."""
    now = timezone.now()
    outcome = RelayResult(batches=1)
    published, failed_attempts = [], []
    for row in rows:
        result = results.get(row.pk, RuntimeError("no result from publisher"))
        if isinstance(result, str):
            row.sns_message_id = result
            published.append(row)
        else:
            _record_failure(row, result, now)
            failed_attempts.append(row)
    with transaction.atomic():
        _relaxed_commit()
        marked = _mark_published(published, now, token) if published else set()
        recorded = {row.pk for row in failed_attempts if _mark_failed_attempt(row, token)}
    kept = [row for row in published if row.pk in marked]
    kept_failed = [row for row in failed_attempts if row.pk in recorded]
    for row in kept_failed:
        _log_failure(row)
    lost = [row.pk for row in [*published, *failed_attempts] if row.pk not in marked and row.pk not in recorded]
    if lost:
        log.warning(
            "relay dropped the outcome of %s row(s) %s: another relay claimed them meanwhile (lease ran out)",
            len(lost),
            lost[:20],
        )
    metrics.outbox_marked(kept, kept_failed)
    outcome.published = len(kept)
    outcome.failed = sum(1 for row in kept_failed if row.state == OutboxState.FAILED)
    outcome.retried = len(kept_failed) - outcome.failed
    outcome.lost = len(lost)
    outcome.errors = [row.last_error for row in kept_failed]
    return outcome


def _claimed(token: uuid.UUID) -> Any:
    """Rows still held by the claim ``token``: the condition of every outcome write."""
    return OutboxMessage.objects.filter(claim_token=token, state=OutboxState.PENDING)


def _mark_failed_attempt(row: OutboxMessage, token: uuid.UUID) -> bool:
    return (
        _claimed(token)
        .filter(pk=row.pk)
        .update(
            state=row.state,
            failure=row.failure,
            attempts=row.attempts,
            last_error=row.last_error,
            next_attempt_at=row.next_attempt_at,
            retrying_since=row.retrying_since,
            claimed_until=None,
        )
        == 1
    )


def _relaxed_commit() -> None:
    """Postgres: let this transaction's COMMIT return before its WAL reaches the disk.
    Only for the relay's own bookkeeping, in its own transaction (not a caller's): a lease
    or a "published" mark lost in a database crash means the row is published again,
    which at-least-once delivery and the consumers' inbox already absorb. Saves a disk
    flush on each claim and each mark, on the path of every event (1-10 ms on a busy disk).

    Also no JIT for these statements: the claim's estimated cost grows with the backlog (the
    per-subject probe's selectivity is a guess) past ``jit_above_cost``, and with 50,000
    pending rows each claim spent 120 ms compiling a plan that ran in 2.5 ms. Both settings
    go in one round trip."""
    if connection.vendor == "postgresql" and len(connection.atomic_blocks) == 1:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF; SET LOCAL jit TO OFF")


def _mark_published(rows: Sequence[OutboxMessage], now: Any, token: uuid.UUID) -> set[int]:
    """One UPDATE for the batch, the message ids in a plain ``CASE``, only of rows this
    claim still holds; returns their ids. (``bulk_update`` builds a ``Case(When(...))`` per
    row and field and resolves each in Python: ~180 ms for 100 rows, 90% of the relay's
    time with no I/O; the SQL itself takes ~2 ms.)"""
    table = connection.ops.quote_name(OutboxMessage._meta.db_table)
    token_value = OutboxMessage._meta.get_field("claim_token").get_db_prep_value(token, connection)
    if connection.vendor == "postgresql":  # two array parameters, whatever the batch size
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS o SET state = %s, published_at = %s, claimed_until = NULL, "
                "retrying_since = NULL, sns_message_id = v.message_id "
                "FROM unnest(%s::bigint[], %s::text[]) AS v(id, message_id) "
                "WHERE o.id = v.id AND o.claim_token = %s AND o.state = %s RETURNING o.id",
                [
                    OutboxState.PUBLISHED,
                    now,
                    [row.pk for row in rows],
                    [row.sns_message_id for row in rows],
                    token_value,
                    OutboxState.PENDING,
                ],
            )
            return {pk for (pk,) in cursor.fetchall()}
    whens = " ".join(["WHEN %s THEN %s"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET state = %s, published_at = %s, claimed_until = NULL, retrying_since = NULL, "
            f"sns_message_id = CASE id {whens} END "
            f"WHERE id IN ({', '.join(['%s'] * len(rows))}) AND claim_token = %s AND state = %s RETURNING id",
            [
                OutboxState.PUBLISHED,
                connection.ops.adapt_datetimefield_value(now),
                *[p for row in rows for p in (row.pk, row.sns_message_id)],
                *[row.pk for row in rows],
                token_value,
                OutboxState.PENDING,
            ],
        )
        return {pk for (pk,) in cursor.fetchall()}


@dataclass
class Claim:
    """A claimed batch: its rows, its token, and when its lease began (monotonic)."""

    token: uuid.UUID
    rows: list[OutboxMessage]
    at: float


def _claim_batch(limit: int, retries_due_by: Any = None) -> Claim:
    token, at = uuid.uuid4(), time.monotonic()
    return Claim(token, claim(limit, token=token, retries_due_by=retries_due_by), at)


@metrics.timed_relay_batch
def _publish_claim(batch: Claim, publisher: Publisher) -> RelayResult:
    """Publish a claimed batch (per type, 10 a call, the lease kept) and record the outcome."""
    lease = Lease(batch.token, batch.rows, since=batch.at)
    by_type: dict[str, list[OutboxMessage]] = defaultdict(list)
    for row in batch.rows:
        by_type[row.type].append(row)
    results: dict[int, str | Exception] = {}
    sent: list[OutboxMessage] = []
    for event_type, typed in by_type.items():
        for start in range(0, len(typed), SNS_BATCH):
            chunk = lease.keep(typed[start : start + SNS_BATCH])
            if chunk:
                results.update(publisher.publish(event_type, chunk))
                sent.extend(chunk)
    return _mark(sent, results, batch.token)


def relay_once(
    publisher: Publisher | None = None, *, batch_size: int | None = None, retries_due_by: Any = None
) -> RelayResult:
    """Claim one batch, publish it, record the outcome."""
    publisher = telemetry.traced(publisher or SnsPublisher())
    batch = _claim_batch(batch_size or settings.OUTBOX_BATCH_SIZE, retries_due_by)
    if not batch.rows:
        return RelayResult()
    return _publish_claim(batch, publisher)


class ClaimAhead:
    """A thread of its own (and so a database connection of its own) that claims the next
    batch while the caller publishes the current one. One claim at a time: with the batch
    being published, at most two batches are in flight. PostgreSQL only (SQLite has one
    writer at a time: nothing to overlap)."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-claim-ahead")

    def submit(self, limit: int, retries_due_by: Any) -> Future[Claim]:
        return self.pool.submit(_claim_batch, limit, retries_due_by)

    def close(self) -> None:
        """Close the thread's database connection, then the thread."""
        try:
            self.pool.submit(connections.close_all).result()
        finally:
            self.pool.shutdown(wait=True)


def overlap() -> bool:
    """Does the sweep claim its next batch while publishing one (PostgreSQL, ``OUTBOX_RELAY_OVERLAP``)?"""
    return settings.OUTBOX_RELAY_OVERLAP and connection.vendor == "postgresql"


def _release(ahead: Future[Claim]) -> None:
    """A batch claimed ahead that will not be published: give its rows back (best effort: a
    lease that is not released runs out anyway)."""
    try:
        batch = ahead.result()
        if batch.rows:
            _claimed(batch.token).update(claimed_until=None)
    except Exception as exc:  # the sweep is failing already; do not hide why
        log.warning("relay could not release a batch claimed ahead: %s", exc)


def relay(
    publisher: Publisher | None = None,
    *,
    batch_size: int | None = None,
    max_batches: int | None = None,
    max_seconds: float | None = None,
    ahead: ClaimAhead | None = None,
) -> RelayResult:
    """One sweep: publish batches of ``batch_size`` (default ``OUTBOX_SWEEP_BATCH_SIZE``)
    until nothing is due (or a bound is reached). A row whose retry falls after the sweep
    began waits for the next sweep: each row is tried at most once per sweep, so a sweep
    ends while SNS keeps failing (``relay_outbox --once`` returns).

    Overlap (``overlap()``): while a full batch is being published the next one is claimed
    (by ``ahead``, or a ``ClaimAhead`` of this sweep's own), so at most two batches are in
    flight. Per-subject order needs nothing more: the claim skips a row while an older row of
    its subject is unpublished, and the batch being published stays pending until its mark
    commits, so the batch claimed ahead never holds the next row of one of its subjects. The
    lease of a batch claimed ahead runs from its claim (``Lease``'s ``since``). A batch that
    was not full leaves nothing to claim ahead: the next claim comes after the mark, as
    without overlap (a light load pays no extra claim)."""
    batch_size = batch_size or settings.OUTBOX_SWEEP_BATCH_SIZE
    publisher = telemetry.traced(publisher or SnsPublisher())
    total = RelayResult()
    started = time.monotonic()
    began = timezone.now()
    own_ahead = None
    pending: Future[Claim] | None = None
    if max_batches is not None and max_batches <= 0:
        return total
    try:
        current = _claim_batch(batch_size, began)
        while current.rows:
            last = (max_batches is not None and total.batches + 1 >= max_batches) or (
                max_seconds is not None and time.monotonic() - started > max_seconds
            )
            if not last and len(current.rows) == batch_size and overlap():
                if ahead is None:
                    ahead = own_ahead = ClaimAhead()
                pending = ahead.submit(batch_size, began)
            total += _publish_claim(current, publisher)
            if last:
                break
            if pending is None:
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    break
                current = _claim_batch(batch_size, began)
                continue
            current, pending = pending.result(), None
            if not current.rows:  # claimed before the mark: the rows it unblocked are due now
                current = _claim_batch(batch_size, began)
    finally:
        if pending is not None:
            _release(pending)
        if own_ahead is not None:
            own_ahead.close()
    return total


def run(
    stop: threading.Event,
    *,
    interval: float,
    batch_size: int | None = None,
    report: Callable[[str], Any] = log.warning,
) -> None:
    """The long-running relay (``manage.py relay_outbox``): sweep, then wait for a writer's
    wake-up (``OUTBOX_WAKEUP=notify`` on PostgreSQL) or ``interval`` seconds, until ``stop``."""
    ahead = ClaimAhead() if overlap() else None  # one claiming thread (and connection) for the process
    try:
        _run(stop, interval=interval, batch_size=batch_size, report=report, ahead=ahead)
    finally:
        if ahead is not None:
            ahead.close()


def _run(
    stop: threading.Event,
    *,
    interval: float,
    batch_size: int | None,
    report: Callable[[str], Any],
    ahead: ClaimAhead | None,
) -> None:
    listener = None
    while not stop.is_set():
        # Listen before sweeping: a commit between the sweep's last claim and the wait
        # leaves its wake-up queued on the listener, so none is missed.
        if listener is None and wakeup.notify():
            try:
                listener = wakeup.Listener()
            except Exception as exc:  # database down: sweep on the interval meanwhile
                report(f"relay cannot listen for wake-ups: {exc}")
        try:
            relay(batch_size=batch_size, max_seconds=30, ahead=ahead)
        except Exception as exc:  # database or AWS down: keep sweeping
            report(f"relay sweep failed: {exc}")
        if listener is None:
            stop.wait(interval)
            continue
        try:
            listener.wait(interval)
        except Exception as exc:
            report(f"relay lost its wake-up connection, listening again: {exc}")
            listener.close()
            listener = None
            stop.wait(interval)
    if listener is not None:
        listener.close()


_background: tuple[threading.Thread, threading.Event] | None = None


def listen_in_background() -> bool:
    """Start ``run`` in a daemon thread of this process, if writers wake the relay with
    NOTIFY (``OUTBOX_KICK`` and ``wakeup.notify()``) and none runs yet: the Celery worker does
    this when it is ready, so every stack with a worker has a LISTENing relay. Returns
    whether one runs now."""
    global _background
    if _background is not None:
        return True
    if not (settings.OUTBOX_KICK and wakeup.notify()):
        return False
    stop = threading.Event()

    def target() -> None:
        try:
            run(stop, interval=settings.CELERY_RELAY_INTERVAL_SECONDS)
        finally:
            connections.close_all()

    thread = threading.Thread(target=target, name="relay-listener", daemon=True)
    thread.start()
    _background = (thread, stop)
    log.info("relay listening for the writers' wake-ups in this process")
    return True


def stop_background(timeout: float = 10) -> None:
    """Stop the thread ``listen_in_background`` started (after its sweep under way)."""
    global _background
    if _background is None:
        return
    thread, stop = _background
    _background = None
    stop.set()
    thread.join(timeout)


def requeue(queryset: Any) -> int:
    """Put failed rows back to pending, due now."""
    return queryset.filter(state=OutboxState.FAILED).update(
        state=OutboxState.PENDING, attempts=0, next_attempt_at=None, claimed_until=None, failure="", retrying_since=None
    )


def purge(older_than: timedelta | None = None) -> int:
    """Delete published rows past the retention window."""
    cutoff = timezone.now() - (older_than if older_than is not None else settings.OUTBOX_RETENTION)
    deleted, _ = OutboxMessage.objects.filter(state=OutboxState.PUBLISHED, published_at__lt=cutoff).delete()
    return deleted
