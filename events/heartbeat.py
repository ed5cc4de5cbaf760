"""The consumer's visibility heartbeat.

Promise: every message a consumer holds stays invisible to other consumers, from its
receive until it is deleted, released, backed off or dead-lettered: the one in hand, the
rest of its batch, the next receive waiting for its turn, the handled ones waiting for
their delete, a batch held through an outage. One daemon thread per consumer extends
(in batches of 10) each held message whose receive or last extension is a third of a
visibility timeout (``CONSUMER_VISIBILITY_TIMEOUT``) old, by one timeout; the margin of
two thirds absorbs a slow machine or a slow SQS call.

Because the heartbeat covers whatever is held, the base visibility can be short: a
consumer that dies (kill -9) leaves its messages invisible for at most one timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings

log = logging.getLogger("events.consumer")

Extend = Callable[[list[dict[str, Any]], int], None]


class Heartbeat:
    """Holds messages by receipt handle; ``extend(messages, seconds)`` is the SQS call."""

    def __init__(self, name: str, extend: Extend) -> None:
        self.name = name
        self.extend = extend
        # Held during the extension calls, so that once ``drop`` returns, a message handed
        # back (visibility 0) is never extended again behind the consumer's back.
        self._lock = threading.Lock()
        self._held: dict[str, list[Any]] = {}  # receipt handle -> [message, last extended]
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def hold(self, messages: Iterable[dict[str, Any]]) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="visibility-heartbeat", daemon=True)
                self._thread.start()
        now = time.monotonic()
        with self._lock:
            for m in messages:
                self._held[m["ReceiptHandle"]] = [m, now]

    def drop(self, messages: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            for m in messages:
                self._held.pop(m["ReceiptHandle"], None)

    @property
    def held(self) -> int:
        return len(self._held)

    def _beat(self) -> None:
        while True:
            time.sleep(max(settings.CONSUMER_VISIBILITY_TIMEOUT / 6, 0.2))
            try:
                self.beat()
            except Exception:  # never let the heartbeat thread die
                log.exception("consumer %s: heartbeat failed", self.name)

    def beat(self) -> None:
        timeout = settings.CONSUMER_VISIBILITY_TIMEOUT
        with self._lock:
            now = time.monotonic()
            due = [entry for entry in self._held.values() if now - entry[1] >= timeout / 3]
            if not due:
                return
            log.info(
                "consumer %s: extending the visibility of %d held message(s) by %s s", self.name, len(due), timeout
            )
            self.extend([entry[0] for entry in due], timeout)
            for entry in due:
                entry[1] = now
