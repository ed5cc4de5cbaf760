"""The inbox: one row per (event id, handler) that committed, the consumer's duplicate filter.

Promise (effectively once): a handler's side effects commit only together with its inbox
row, in the same transaction, and the row's key is unique; so whatever redelivers an
event (SQS at least once, a relay that published twice, a consumer that died before its
delete), its side effects are committed once. The consumer writes the rows of a whole
batch in one statement at the end of the batch's transaction (``record``:
``INSERT … ON CONFLICT DO NOTHING RETURNING``); a key the statement did not insert was
committed by someone else first (on PostgreSQL a concurrent insert of the same key waits
for the other transaction, then finds the row), so the batch rolls back and runs again
without it. The batch's keys are looked up before its handlers run (``committed``, one
statement), so a redelivery is skipped without running its handler. On PostgreSQL the batch
first holds a transaction-level advisory lock on each of its keys (``lock``, in one global
order, so two batches never wait on each other in a cycle): a consumer holding a copy of an
event another consumer is handling waits for that transaction, then finds its row and skips
it, so a handler does not run for an event being handled elsewhere (its effects outside the
database, a log line or a file, happen once too). The insert's conflict stays the backstop.

Each row also records the hop for the trace (events/trace.py): service, ids, and the
times the message was queued (SQS ``SentTimestamp``), received, and its handler started
and finished, all in the one statement: no per-message update.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from .envelope import Event
from .models import InboxMessage

# The time the consumer received a message, kept on the message dict (events/trace.py).
RECEIVED_AT = "LeagueReceivedAt"

Key = tuple[str, str]  # (event id as a canonical UUID string, handler name)


def stamp_received(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    now = timezone.now()
    for message in messages:
        message[RECEIVED_AT] = now
    return messages


def key(event_id: Any, handler: str) -> Key:
    return str(uuid.UUID(str(event_id))), handler


@dataclass
class Row:
    """What one handler did with one event, waiting for the batch's inbox statement."""

    event: Event
    handler: str
    message: dict[str, Any]
    started: datetime
    handled: datetime

    @property
    def key(self) -> Key:
        return key(self.event.id, self.handler)


def _queued_at(message: dict[str, Any]) -> datetime | None:
    sent = str((message.get("Attributes") or {}).get("SentTimestamp") or "")
    return datetime.fromtimestamp(int(sent) / 1000, tz=UTC) if sent.isdigit() else None


def _table() -> str:
    return connection.ops.quote_name(InboxMessage._meta.db_table)


def _event_id(value: str) -> Any:
    return InboxMessage._meta.get_field("event_id").get_db_prep_value(uuid.UUID(value), connection)


def lock(keys: Iterable[Key]) -> None:
    """PostgreSQL: hold a transaction-level advisory lock on each key, in sorted order (one
    statement). Elsewhere (SQLite serializes writers) nothing."""
    ordered = sorted({f"{event_id}|{handler}" for event_id, handler in keys})
    if not ordered or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        # unnest yields the array in order; each row's lock is taken as it is produced.
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest(%s::text[]) AS k",
            [ordered],
        )


def committed(keys: Iterable[Key]) -> set[Key]:
    """Which of ``keys`` already have their row (one statement)."""
    keys = list(keys)
    if not keys:
        return set()
    found: set[Key] = set()
    ids = sorted({k[0] for k in keys})
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT event_id, handler FROM {_table()} WHERE event_id IN ({', '.join(['%s'] * len(ids))})",
            [_event_id(i) for i in ids],
        )
        found = {key(event_id, handler) for event_id, handler in cursor.fetchall()}
    return found & set(keys)


def record(rows: Sequence[Row], *, service: str) -> set[Key]:
    """Insert the rows of a batch in one statement; returns the keys it inserted (a key
    left out was there already: a duplicate)."""
    if not rows:
        return set()
    adapt = connection.ops.adapt_datetimefield_value
    columns = (
        "event_id, handler, type, subject, sequence, service, correlation_id, causation_id, "
        "queued_at, received_at, started_at, handled_at"
    )
    values: list[Any] = []
    for row in rows:
        event = row.event
        values += [
            _event_id(row.key[0]),
            row.handler,
            event.type,
            event.subject,
            event.sequence,
            service,
            (event.correlationid or "")[:128],
            (event.causationid or "")[:64],
            adapt(_queued_at(row.message)),
            adapt(row.message.get(RECEIVED_AT) or row.started),
            adapt(row.started),
            adapt(row.handled),
        ]
    placeholders = ", ".join(["(" + ", ".join(["%s"] * 12) + ")"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_table()} ({columns}) VALUES {placeholders} "
            "ON CONFLICT (event_id, handler) DO NOTHING RETURNING event_id, handler",
            values,
        )
        return {key(event_id, handler) for event_id, handler in cursor.fetchall()}
