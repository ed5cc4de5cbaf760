"""What the crash suite reads from the services' queues (and nothing else: no handler of
the suite's probe service is imported here).

- In flight: what a service's queue holds invisible (``in_flight``). A consumer killed with
  kill -9 leaves what it held in flight for up to one visibility timeout, so a check of what
  a *stopped* consumer leaves behind first waits out any earlier kill's holds
  (``wait_none_in_flight``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from events import aws


def in_flight(service: str) -> int:
    """How many messages ``service``'s queue holds invisible (received, not yet deleted or
    given back), as SQS approximates it."""
    url = aws.queue_url(aws.queue_name(service))
    attrs = aws.queue_attributes(url, "ApproximateNumberOfMessagesNotVisible")
    return int(attrs["ApproximateNumberOfMessagesNotVisible"])


def wait_none_in_flight(services: Iterable[str], timeout: float) -> dict[str, int]:
    """Wait until none of ``services``' queues holds a message in flight, for at most
    ``timeout`` seconds. Returns what is still in flight at the deadline, by service (empty:
    all clear)."""
    services = list(services)
    deadline = time.monotonic() + timeout
    while True:
        held = {s: n for s in services if (n := in_flight(s))}
        if not held or time.monotonic() >= deadline:
            return held
        time.sleep(0.2)
