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
(events/wakeup.py). Otherwise the relay is kicked through Celery after commit. The
statement is bound on the server and prepared once it repeats on a connection
(``DATABASE_PREPARE_THRESHOLD``): planning it cost more than running it.
"""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
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
    fields, sql = _statement(notify)
    params: list[Any] = [gate_of, row.aggregate_key]
    values = row.__dict__
    for f, default, prepped in fields:
        if default is not _PER_ROW and values[f.attname] is default:
            params.append(prepped)
        else:
            params.append(f.get_db_prep_save(f.pre_save(row, True), connection))
    params.append(_ENVELOPE.get_db_prep_save(row.envelope, connection))
    if notify:
        params.append(wakeup.CHANNEL)
    cursor = _server_bound_cursor()
    cursor.execute(sql, params)
    state, pk, number = cursor.fetchone()[:3]
    if pk is None:
        raise gate.ServicePaused(gate_of, state)
    row.pk, row.sequence = pk, number
    row.envelope["sequence"] = number
    row._state.adding = False


_ENVELOPE = OutboxMessage._meta.get_field("envelope")


_PER_ROW = object()


@functools.cache
def _statement(notify: bool) -> tuple[list[tuple[Any, Any, Any]], str]:
    """The fields ``_insert_with_sequence`` fills from the row, and its SQL, built once per
    process (the model does not change while it runs). Each field comes with its default
    and that default's database value when both are fixed (no default, or one that is not
    callable, and a ``pre_save`` that returns the attribute): a row that holds that
    very default object gets the value prepared once, as ``Model.save`` would prepare it.
    Any other field, or value, is prepared per row."""
    fields = [f for f in OutboxMessage._meta.concrete_fields if f.attname not in _SEQUENCED]
    plan: list[tuple[Any, Any, Any]] = []
    for f in fields:
        fixed = not (f.has_default() and callable(f.default))  # no default: None or ""
        if fixed and _returns_attribute(f):
            default = f.get_default()
            plan.append((f, default, f.get_db_prep_save(default, connection)))
        else:
            plan.append((f, _PER_ROW, None))
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(f.column)) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    wake = ", CASE WHEN ins.id IS NOT NULL THEN pg_notify(%s, '') END" if notify else ""
    sql = (
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
        f") SELECT (SELECT state FROM g), ins.id, ins.sequence{wake} FROM (VALUES (1)) AS one (x) LEFT JOIN ins ON true"
    )
    return plan, sql


def _returns_attribute(f: Any) -> bool:
    """Does ``f.pre_save`` return the attribute as it is? ``Field``'s does; a date or time
    field's does unless it is ``auto_now`` or ``auto_now_add``."""
    if type(f).pre_save is models.Field.pre_save:
        return True
    return isinstance(f, models.DateField | models.TimeField) and not (f.auto_now or f.auto_now_add)


def _server_bound_cursor() -> Any:
    """A cursor on Django's connection, in its transaction, whose parameters psycopg binds
    on the server: psycopg then prepares a statement once it repeats on the connection
    (``prepare_threshold``, 5 by default), and a long-lived connection (``CONN_MAX_AGE``)
    plans the outbox statement once instead of on every publish, where parsing and planning
    it cost more than running it (docs/PERFORMANCE.md). Django's own cursors bind on the
    client. Wrapped as Django wraps its cursors: execute wrappers, the query log and the
    database error translation apply. Kept for the next publish on the same connection (a
    connection Django opens anew gets a cursor anew)."""
    import psycopg

    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw, logged = connection.connection, connection.queries_logged
    kept = getattr(connection, "_outbox_cursor", None)
    if kept is not None and kept[0] is raw and kept[1] == logged and not kept[2].closed:
        return kept[3]
    with connection.wrap_database_errors:
        cursor = psycopg.Cursor(raw)
    wrapped = _LoggedServerBound(cursor, connection) if logged else connection.make_cursor(cursor)  # type: ignore[arg-type]
    connection._outbox_cursor = (raw, logged, cursor, wrapped)  # type: ignore[attr-defined]
    return wrapped


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
