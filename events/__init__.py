"""The event bus: outbox, relay, topology, consumer, inbox.

Write side: ``events.publish(type, subject=..., data=...)`` inside ``transaction.atomic()``.
Read side: ``@events.handler(type, service=...)`` functions, run by ``manage.py consume``.
Sequences: every event carries a per-aggregate ``sequence`` (key ``"<aggregate>:<subject>"``,
e.g. ``"team:12"``); ``next_sequence`` bumps one without an event (inside a transaction),
``current_sequence`` reads one (for snapshots).
"""

from typing import Any


def publish(event_type: str, *, subject: str | int, data: dict[str, Any]) -> Any:
    from .publisher import publish as _publish

    return _publish(event_type, subject=subject, data=data)


def handler(event_type: str, *, service: str, broadcast: bool = False, many: Any = None) -> Any:
    from .registry import handler as _handler

    return _handler(event_type, service=service, broadcast=broadcast, many=many)


def next_sequence(key: str) -> int:
    from .publisher import next_sequence as _next

    return _next(key)


def current_sequence(key: str) -> int:
    from .publisher import current_sequence as _current

    return _current(key)


__all__ = ["publish", "handler", "next_sequence", "current_sequence"]
