"""The event bus: outbox, relay, topology, consumer, inbox.

Write side: ``events.publish(type, subject=..., data=...)`` inside ``transaction.atomic()``.
Read side: ``@events.handler(type, service=...)`` functions, run by ``manage.py consume``.
"""

from typing import Any


def publish(event_type: str, *, subject: str | int, data: dict[str, Any]) -> Any:
    from .publisher import publish as _publish

    return _publish(event_type, subject=subject, data=data)


def handler(event_type: str, *, service: str, broadcast: bool = False) -> Any:
    from .registry import handler as _handler

    return _handler(event_type, service=service, broadcast=broadcast)


__all__ = ["publish", "handler"]
