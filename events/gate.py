"""A service's write gate: what lets a service be moved to another database without losing
or doubling a write or an event (``cutover/``, ``manage.py split_service``).

Guarantees, for one database:

- Every write of service S commits only while S's gate is ``open``. ``events.publish``
  (which every state change calls, in the writer's transaction) reads S's gate row with
  ``SELECT … FOR SHARE`` (on PostgreSQL in the statement that writes the outbox row, which
  writes nothing unless the gate is open: events/publisher.py), and every consumer batch of
  S does the same inside its transaction. A gate that is ``paused`` or ``moved`` makes the write raise
  ``ServicePaused``: the transaction rolls back, the API answers 503 with ``Retry-After``,
  a consumer gives its messages back to the queue (nothing is lost: the service's next
  consumer, wherever it runs, handles them).
- ``pause(S)`` is an ``UPDATE`` of that row: it waits for the writers that hold the share
  lock, so once it returns no write of S is under way and none can start. On SQLite the
  database's single write lock (transactions are ``IMMEDIATE``) gives the same order.
- The rows exist from the migration (one per service): a share lock on a missing row would
  lock nothing.
- ``moved`` is final for this database: its copy of S's tables is a read-only leftover.
"""

from __future__ import annotations

from django.db import connection, transaction

# The states (``events.models.GateState``); written out here so that this module imports
# no model and the API's error mapping can import it early.
OPEN, PAUSED, MOVED = "open", "paused", "moved"

# What a client is told to wait before trying again (seconds): a pause lasts a few seconds.
RETRY_AFTER_SECONDS = 2


class ServicePaused(Exception):
    """A write of a service whose gate is not open in this database."""

    def __init__(self, service: str, state: str) -> None:
        self.service = service
        self.state = state
        self.retry_after = RETRY_AFTER_SECONDS
        if state == MOVED:
            message = (
                f"The {service} service has moved to its own database; this deployment no longer "
                f"writes it. Send the request to the {service} service (through the front door)."
            )
        else:
            message = (
                f"The {service} service is being moved and takes no writes for a few seconds. "
                f"Try again in {self.retry_after} s; reads keep working."
            )
        super().__init__(message)


def check_writable(service: str, *, using: str | None = None) -> None:
    """Inside the writer's transaction: raise ``ServicePaused`` unless ``service`` is open,
    holding a share lock on its gate row until the transaction ends."""
    state = current(service, lock=True, using=using)
    if state != OPEN:
        raise ServicePaused(service, state)


def current(service: str, *, lock: bool = False, using: str | None = None) -> str:
    conn = connection if using is None else transaction.get_connection(using)
    table = conn.ops.quote_name("events_servicegate")
    share = " FOR SHARE" if lock and conn.vendor == "postgresql" else ""
    with conn.cursor() as cursor:
        cursor.execute(f"SELECT state FROM {table} WHERE service = %s{share}", [service])
        row = cursor.fetchone()
    # A database migrated before its row existed (or a new service name): open, as before.
    return row[0] if row else OPEN


def set_state(service: str, state: str, *, note: str = "", using: str = "default") -> str:
    """Set ``service``'s gate and return the state it had. Waits for the writers under way
    (their share locks) before it commits."""
    from .models import ServiceGate

    with transaction.atomic(using=using):
        gate, _ = ServiceGate.objects.using(using).select_for_update().get_or_create(service=service)
        before = gate.state
        gate.state, gate.note = state, note[:300]
        gate.save(using=using)
    return before


def pause(service: str, *, note: str = "", using: str = "default") -> str:
    return set_state(service, PAUSED, note=note, using=using)


def open_(service: str, *, using: str = "default") -> str:
    return set_state(service, OPEN, using=using)


def mark_moved(service: str, *, note: str = "", using: str = "default") -> str:
    return set_state(service, MOVED, note=note, using=using)
