"""Where consumers find handlers. ``events`` imports no domain app: each app registers
its handlers from its ``AppConfig.ready`` by importing a module that uses ``@handler``.

A handler is a function ``(event: Event) -> None`` that calls a service. It runs inside
``transaction.atomic()`` together with its inbox row, so it must do its work through
the database only (no network calls) and be safe to run again after a crash: events are
delivered at least once, and the inbox makes handling effectively once.

A handler may also have a set-based form (``many``): a function ``(events) -> None`` with
the effect of calling the handler on each event in turn, in fewer statements. The consumer
calls it for a run of a batch's events that share the handler (the batch's order kept), and
falls back to the one-event form when it raises, to find the event that failed. It runs
without a per-event correlation context, so it must write only its own rows (no outbox
row); its events keep their own inbox rows under the handler's name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .envelope import Event

HandlerFunc = Callable[[Event], None]
ManyFunc = Callable[[Sequence[Event]], None]


@dataclass(frozen=True)
class Handler:
    service: str
    event_type: str
    func: HandlerFunc
    broadcast: bool = False
    many: ManyFunc | None = None  # the set-based form (module docstring)

    @property
    def name(self) -> str:
        return f"{self.service}:{self.func.__module__}.{self.func.__qualname__}"


_handlers: list[Handler] = []


def handler(
    event_type: str, *, service: str, broadcast: bool = False, many: ManyFunc | None = None
) -> Callable[[HandlerFunc], HandlerFunc]:
    """Register ``func`` as ``service``'s handler of ``event_type``.

    ``broadcast=True``: every running consumer instance gets every event (for in-process
    caches) through its own instance queue, instead of one instance per event.
    ``many``: the handler's set-based form (module docstring); not for broadcast handlers.
    """
    if many is not None and broadcast:
        raise ValueError("a broadcast handler runs one event at a time: drop many=")
    from . import catalogue

    catalogue.get(event_type)  # fail at import for a typo

    def register(func: HandlerFunc) -> HandlerFunc:
        h = Handler(service=service, event_type=event_type, func=func, broadcast=broadcast, many=many)
        if not any(x.name == h.name and x.event_type == event_type for x in _handlers):
            _handlers.append(h)
        return func

    return register


def handlers(
    *, service: str | None = None, event_type: str | None = None, broadcast: bool | None = None
) -> list[Handler]:
    return [
        h
        for h in _handlers
        if (service is None or h.service == service)
        and (event_type is None or h.event_type == event_type)
        and (broadcast is None or h.broadcast == broadcast)
    ]


def services() -> list[str]:
    """Services with at least one registered handler, in a stable order."""
    return sorted({h.service for h in _handlers})


def subscriptions(service: str, *, broadcast: bool = False) -> list[str]:
    return sorted({h.event_type for h in handlers(service=service, broadcast=broadcast)})


StartupHook = Callable[[], None]
_startup_hooks: list[tuple[str, StartupHook]] = []


def on_consumer_start(*, service: str) -> Callable[[StartupHook], StartupHook]:
    """Register ``func`` to run when ``service``'s consumer starts, after its queue and
    subscriptions exist and before it receives (e.g. a replica snapshot: events written
    meanwhile wait in the queue, so snapshot and events converge)."""

    def register(func: StartupHook) -> StartupHook:
        if (service, func) not in _startup_hooks:
            _startup_hooks.append((service, func))
        return func

    return register


def startup_hooks(service: str) -> list[StartupHook]:
    return [f for s, f in _startup_hooks if s == service]
