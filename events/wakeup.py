"""Waking a long-running relay on PostgreSQL (``OUTBOX_WAKEUP=notify``).

``events.publish`` sends ``NOTIFY events_outbox`` in the statement that writes the outbox row;
the relay that the Celery worker runs in a thread (``relay.listen_in_background``, started when
the worker is ready) and ``manage.py relay_outbox`` LISTEN on a connection of their own and
sweep as soon as one arrives (and every interval anyway). ``notify`` is the default wherever
the database is PostgreSQL. With ``OUTBOX_WAKEUP=celery`` (the default on SQLite, and there
always) each commit that wrote events kicks the Celery task ``events.relay_outbox`` instead.

Promises:
- A wake-up is sent only by a commit: NOTIFY is transactional, so a rolled-back write wakes
  no one, and the relay never looks before the row is visible.
- Nothing on the writer's path talks to anything but its database: no broker call per commit
  (the Celery kick was ~1.3 ms of a 14 ms POST).
- A lost wake-up (the listener's connection dropped, the relay restarting) costs latency,
  never an event: the relay still sweeps every interval, and beat every second.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection, connections

log = logging.getLogger("events.wakeup")

CHANNEL = "events_outbox"


def notify() -> bool:
    """Does ``events.publish`` wake the relay with NOTIFY (PostgreSQL and ``OUTBOX_WAKEUP=notify``)?"""
    return settings.OUTBOX_WAKEUP == "notify" and connection.vendor == "postgresql"


class Listener:
    """A connection of its own that LISTENs on the channel (autocommit, outside Django's
    connection handling, so that the relay's transactions never swallow a notification)."""

    def __init__(self, alias: str = "default") -> None:
        params: dict[str, Any] = dict(connections[alias].get_connection_params())
        for key in ("cursor_factory", "context", "server_side_binding", "pool", "prepare_threshold"):
            params.pop(key, None)
        self.conn = psycopg.connect(**params, autocommit=True)
        self.conn.execute(f"LISTEN {CHANNEL}")

    def wait(self, timeout: float) -> bool:
        """Block until a wake-up arrives (True) or ``timeout`` seconds pass (False). Wake-ups
        that piled up meanwhile are consumed too: one sweep serves them all."""
        woken = False
        for _ in self.conn.notifies(timeout=timeout, stop_after=1):
            woken = True
        if woken:
            for _ in self.conn.notifies(timeout=0):
                pass
        return woken

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # pragma: no cover - closing a broken connection
            pass
