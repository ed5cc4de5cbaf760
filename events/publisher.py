"""``publish``: record an event in the outbox, in the caller's transaction.

Guarantee: the outbox row commits or rolls back with the domain change around it, so an
event is published if and only if the change committed. Calling ``publish`` outside
``transaction.atomic()`` is an error: in autocommit the row would be written on its own,
and a failure after it would leave an event describing a change that never happened.
The owning service's write gate (``events/gate.py``) must be open: it is read, and locked
in share mode, in the same transaction, so a service being moved takes no write after its
pause. Nothing here talks to the network; after commit the relay is kicked through Celery.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from . import catalogue, context, envelope, gate, telemetry
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

    # The owning service's write gate (events/gate.py): refused while it is being moved.
    gate.check_writable(et.source)
    subject = str(subject)
    key = f"{et.aggregate}:{subject}"
    event_id = str(uuid.uuid4())
    with telemetry.publishing(event_type, subject) as trace_context:
        sequence = next_sequence(key)
        body = envelope.build(
            event_id=event_id,
            source=f"{settings.BUS_SOURCE_PREFIX}/{et.source}",
            type=event_type,
            time=timezone.now(),
            subject=subject,
            sequence=sequence,
            data=data,
            dataversion=et.version,
            correlationid=context.correlation_id.get(),
            causationid=context.causation_id.get(),
            **trace_context,
        )
        origin = context.origin.get()
        row = OutboxMessage.objects.create(
            event_id=event_id,
            type=event_type,
            subject=subject,
            aggregate_key=key,
            sequence=sequence,
            envelope=body,
            correlation_id=(body.get("correlationid") or "")[:128],
            causation_id=body.get("causationid") or "",
            request=origin[0] if origin else "",
            request_at=origin[1] if origin else None,
        )
    if settings.OUTBOX_KICK:
        _kick_relay_on_commit()
    return row


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
