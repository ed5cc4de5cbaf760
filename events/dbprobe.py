"""Whether the consumer's database answers.

Promise: the consumer does not receive while its database does not answer, so an outage
holds the queue's messages in SQS instead of spending their receives (which would send
them to the DLQ). A ``SELECT 1`` before a receive, unless the batch just before it
committed (that commit is the proof); while it fails, back-off 0.5, 1, 2 ... s up to
``CONSUMER_DB_BACKOFF_MAX_SECONDS``, with one log line when the database goes away and
one when it is back, not one per check.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

log = logging.getLogger("events.consumer")


def first_line(exc: BaseException | None) -> str:
    """An exception as one log-friendly line (psycopg's messages span several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def close_stale_connection() -> None:
    """Drop a broken or expired connection between batches (a database restart must not
    kill the consumer). Not inside an atomic block: that is a test's transaction."""
    if not connection.in_atomic_block:
        close_old_connections()


class DatabaseProbe:
    def __init__(self, name: str, stop: threading.Event) -> None:
        self.name = name
        self.stop = stop
        self.down_since: float | None = None
        self.last_error: BaseException | None = None

    def answers(self) -> bool:
        try:
            close_stale_connection()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except DatabaseError as exc:
            self.last_error = exc
            if not connection.in_atomic_block:
                with contextlib.suppress(DatabaseError):
                    connection.close()
            return False

    def wait_until_up(self) -> bool:
        """Block until the database answers; False if stopped first."""
        delay = 0.5
        cap = float(settings.CONSUMER_DB_BACKOFF_MAX_SECONDS)
        while not self.stop.is_set():
            if self.answers():
                if self.down_since is not None:
                    log.warning(
                        "consumer %s: database back after %.0f s; receiving again",
                        self.name,
                        time.monotonic() - self.down_since,
                    )
                    self.down_since = None
                return True
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.error(
                    "consumer %s: database unreachable (%s); not receiving until it answers (checking every %s s at most)",
                    self.name,
                    first_line(self.last_error),
                    cap,
                )
            self.stop.wait(delay)
            delay = min(delay * 2, cap)
        return False
