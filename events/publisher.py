"""``publish``: record an event in the outbox, in the caller's transaction.

Guarantee: the outbox row commits or rolls back with the domain change around it, so an
event is published if and only if the change committed. Calling ``publish`` outside
``transaction.atomic()`` is an error: in autocommit the row would be written on its own,
and a failure after it would leave an event describing a change that never happened.
The owning service's write gate (``events/gate.py``) must be open: it is read, and locked
in share mode, in the same transaction, so a service being moved takes no write after its
pause. Nothing here talks to the network. On PostgreSQL the gate's check, the sequence bump
and the outbox row are one statement (a CTE that reads the gate row ``FOR SHARE``, upserts
the sequence and inserts the row only while the gate is open); with ``OUTBOX_WAKEUP=notify``
that statement also sends the relay's wake-up, a ``NOTIFY`` delivered at commit
(events/wakeup.py). Otherwise the relay is kicked through Celery after commit.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.utils import timezone

from . import catalogue, context, envelope, gate, telemetry, wakeup
from .models import OutboxMessage

log = logging.getLogger("events.publish")


class PublishOutsideTransaction(RuntimeError):
    pass


class InvalidEventData(ValueError):
    pass


def publish(event_type: str, *, subject: str | int, data: dict[str, Any]) -> OutboxMessage:
    """Write one outbox row for ``event_type`` about ``subject`` with ``data``.

    Must run inside ``transaction.atomic()``. ``data`` is checked against the type's JSON
    Schema (``events/catalogue.py``); a bad payload raises ``InvalidEventData`` here, in
    the writer's transaction.
    """
    if not connection.in_atomic_block:
        raise PublishOutsideTransaction(
            f"events.publish({event_type!r}) was called outside transaction.atomic(). Wrap the "
            "service function in transaction.atomic() so the event commits with the change."
        )
    et = catalogue.get(event_type)
    problem = catalogue.data_error(event_type, data)
    if problem:
        raise InvalidEventData(problem)

    # The owning service's write gate (events/gate.py): refused while it is being moved. On
    # PostgreSQL the statement that writes the row checks it (one round trip, not two).
    postgres = connection.vendor == "postgresql"
    if not postgres:
        gate.check_writable(et.source)
    subject = str(subject)
    key = f"{et.aggregate}:{subject}"
    event_id = str(uuid.uuid4())
    notify = settings.OUTBOX_KICK and wakeup.notify()
    with telemetry.publishing(event_type, subject) as trace_context:
        body = envelope.build(
            event_id=event_id,
            source=f"{settings.BUS_SOURCE_PREFIX}/{et.source}",
            type=event_type,
            time=timezone.now(),
            subject=subject,
            sequence=0,  # set below, from the subject's sequence
            data=data,
            dataversion=et.version,
            correlationid=context.correlation_id.get(),
            causationid=context.causation_id.get(),
            **trace_context,
        )
        origin = context.origin.get()
        row = OutboxMessage(
            event_id=event_id,
            type=event_type,
            subject=subject,
            aggregate_key=key,
            sequence=0,
            envelope=body,
            correlation_id=(body.get("correlationid") or "")[:128],
            causation_id=body.get("causationid") or "",
            request=origin[0] if origin else "",
            request_at=origin[1] if origin else None,
        )
        if postgres:
            _insert_with_sequence(row, gate_of=et.source, notify=notify)
        else:
            row.sequence = body["sequence"] = next_sequence(key)
            row.save(force_insert=True)
    if settings.OUTBOX_KICK and not notify:
        _kick_relay_on_commit()
    return row


_SEQUENCED = ("id", "sequence", "envelope")


def _insert_with_sequence(row: OutboxMessage, *, gate_of: str, notify: bool) -> None:
    """PostgreSQL: check ``gate_of``'s write gate, bump the subject's sequence and insert
    ``row`` with it (in its column and in the envelope) in one statement; with ``notify``,
    wake the relay in the same statement. Every other column gets what ``Model.save`` would
    give it (``pre_save``, then the field's database value), so a field added to the model
    needs nothing here.

    The gate row is read ``FOR SHARE`` first (``gate.check_writable``'s lock, held until the
    transaction ends); a gate that is not open writes nothing (no sequence bumped, no row, no
    wake-up) and raises ``ServicePaused``. A missing gate row counts as open, as there.

    The upsert's row lock is held until the caller's transaction ends, as ``next_sequence``'s:
    concurrent writers on one subject get consecutive numbers in commit order. The row is an
    ``INSERT ... SELECT ... FROM seq``, so its id is drawn after the upsert got that lock (a
    ``VALUES`` list would draw it first) and ids follow sequences as with two statements."""
    fields = [f for f in OutboxMessage._meta.concrete_fields if f.attname not in _SEQUENCED]
    params: list[Any] = [gate_of, row.aggregate_key]
    params += [f.get_db_prep_save(f.pre_save(row, True), connection) for f in fields]
    envelope_field = OutboxMessage._meta.get_field("envelope")
    params.append(envelope_field.get_db_prep_save(row.envelope, connection))
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(f.column)) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    wake = ""
    if notify:
        wake = ", CASE WHEN ins.id IS NOT NULL THEN pg_notify(%s, '') END"
        params.append(wakeup.CHANNEL)
    with _server_bound_cursor() as cursor:
        cursor.execute(
            f"WITH g AS ("
            f"SELECT state FROM {quote('events_servicegate')} WHERE service = %s FOR SHARE"
            f"), seq AS ("
            f"INSERT INTO {quote('events_subjectsequence')} AS s (key, last) "
            f"SELECT %s, 1 WHERE COALESCE((SELECT state FROM g), '{gate.OPEN}') = '{gate.OPEN}' "
            f"ON CONFLICT (key) DO UPDATE SET last = s.last + 1 RETURNING last"
            f"), ins AS ("
            f"INSERT INTO {quote(OutboxMessage._meta.db_table)} ({columns}, sequence, envelope) "
            f"SELECT {placeholders}, seq.last, jsonb_set(%s, '{{sequence}}', to_jsonb(seq.last)) FROM seq "
            f"RETURNING id, sequence"
            f") SELECT (SELECT state FROM g), ins.id, ins.sequence{wake} FROM (VALUES (1)) AS one (x) LEFT JOIN ins ON true",
            params,
        )
        state, pk, number = cursor.fetchone()[:3]
    if pk is None:
        raise gate.ServicePaused(gate_of, state)
    row.pk, row.sequence = pk, number
    row.envelope["sequence"] = number
    row._state.adding = False


def _server_bound_cursor() -> Any:
    """A cursor on Django's connection, in its transaction, whose parameters psycopg binds
    on the server: psycopg then prepares a statement once it repeats on the connection
    (``prepare_threshold``, 5 by default), and a long-lived connection (``CONN_MAX_AGE``)
    plans the outbox statement once instead of on every publish, where parsing and planning
    it cost more than running it (docs/PERFORMANCE.md). Django's own cursors bind on the
    client. Wrapped as Django wraps its cursors: execute wrappers, the query log and the
    database error translation apply."""
    import psycopg

    connection.ensure_connection()
    connection.validate_thread_sharing()
    with connection.wrap_database_errors:
        cursor = psycopg.Cursor(connection.connection)
    if connection.queries_logged:
        return _LoggedServerBound(cursor, connection)
    return connection.make_cursor(cursor)  # type: ignore[arg-type]  # a DB-API cursor, as Django passes it


class _LoggedServerBound(CursorDebugWrapper):
    """Django's query log for a server-bound cursor: the statement with its parameters
    composed on the client (for the log only), as Django logs its own."""

    def execute(self, sql: Any, params: Any = None) -> Any:
        with self.debug_sql(self.db.ops.compose_sql(sql, params)):
            return CursorWrapper.execute(self, sql, params)


def next_sequence(key: str) -> int:
    """Bump and return the sequence of ``key`` with one atomic upsert.

    The row lock taken by the upsert is held until the caller's transaction ends, so two
    concurrent writers on the same aggregate get consecutive numbers in commit order.
    """
    table = connection.ops.quote_name("events_subjectsequence")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (key, last) VALUES (%s, 1) "
            f"ON CONFLICT (key) DO UPDATE SET last = {table}.last + 1 RETURNING last",
            [key],
        )
        return int(cursor.fetchone()[0])


def _kick_relay_on_commit() -> None:
    # One kick per transaction, however many events it wrote.
    if any(getattr(entry[1], "_is_relay_kick", False) for entry in connection.run_on_commit):
        return
    transaction.on_commit(_kick_relay)


def _kick_relay() -> None:
    from .tasks import relay_outbox

    try:
        relay_outbox.apply_async(retry=False)
    except Exception as exc:  # the beat sweeper publishes the rows anyway
        log.warning("relay kick failed, beat will sweep: %s", exc)


_kick_relay._is_relay_kick = True  # type: ignore[attr-defined]


def current_sequence(key: str) -> int:
    """The last sequence given to ``key`` (0 if none). For snapshots: read the sequence
    no later than the data it describes, so a snapshot never claims to be newer than it is."""
    from .models import SubjectSequence

    return SubjectSequence.objects.filter(key=key).values_list("last", flat=True).first() or 0
