"""Correlation and causation ids for the current request or handled event.

A request's ``X-Request-ID`` (or a new id) becomes the ``correlationid`` of every event it
writes; an event written while handling another carries that event's id as its
``causationid`` and keeps its correlation id.
"""

from __future__ import annotations

import contextlib
import contextvars
import uuid
from collections.abc import Iterator
from datetime import datetime

import structlog

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
causation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("causation_id", default=None)
# The HTTP request being served ("POST /api/transfers/", its arrival time): stored on the
# outbox rows it writes, the first hop of the trace (events/trace.py).
origin: contextvars.ContextVar[tuple[str, datetime] | None] = contextvars.ContextVar("origin", default=None)


def new_id() -> str:
    return str(uuid.uuid4())


@contextlib.contextmanager
def bound(*, correlation: str | None, causation: str | None = None) -> Iterator[None]:
    t1 = correlation_id.set(correlation)
    t2 = causation_id.set(causation)
    # The same ids on every log line written meanwhile (league/logging.py renders them).
    log_tokens = structlog.contextvars.bind_contextvars(correlation_id=correlation, causation_id=causation)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**log_tokens)
        causation_id.reset(t2)
        correlation_id.reset(t1)


@contextlib.contextmanager
def serving(request: str, *, at: datetime) -> Iterator[None]:
    """While an HTTP request runs: what it is and when it arrived."""
    token = origin.set((request[:300], at))
    try:
        yield
    finally:
        origin.reset(token)
