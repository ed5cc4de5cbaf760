"""Prometheus metrics of the bus, served at ``/metrics``.

Two kinds:
- **Gauges read from the database at scrape time** (``OutboxCollector``): pending rows,
  the age of the oldest pending row, failed rows; each event type has a sample, 0 when
  it has no such row. They describe the whole outbox, so any
  web process answers the same, whichever process wrote the rows.
- **Counters and histograms kept in the process** that does the work: the relay
  (published / retried / failed rows, batch duration) and the consumers (handled /
  failed / duplicate per event type, and the time from the envelope's ``time`` to the end
  of the handler). A relay running in Celery and a consumer running in ``manage.py consume``
  count in their own processes: without more, ``/metrics`` of a web process shows only
  what that process did. Set ``PROMETHEUS_MULTIPROC_DIR`` (the same empty directory for
  every process on the host, wiped at deploy) and prometheus-client writes each process's
  values there and ``/metrics`` adds them up (``runstack`` does this for its children).
Across hosts, scrape each host.

The recording functions never raise: a metric must not fail a relay batch or a handler.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("events.metrics")

OUTBOX_PUBLISHED = Counter("league_outbox_published_total", "Outbox rows the relay published to SNS.", ["type"])
OUTBOX_RETRIED = Counter(
    "league_outbox_publish_retries_total", "Failed publish attempts that will be retried.", ["type"]
)
OUTBOX_FAILED = Counter("league_outbox_failed_total", "Outbox rows marked failed (an error retrying cannot fix, or past OUTBOX_RETRY_FOR_SECONDS).", ["type"])
RELAY_BATCH_SECONDS = Histogram(
    "league_relay_batch_duration_seconds",
    "One relay batch: publish and record the outcome (on PostgreSQL its claim ran ahead of it).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EVENTS_HANDLED = Counter("league_events_handled_total", "Events a handler handled (committed).", ["service", "type"])
EVENTS_FAILED = Counter(
    "league_events_failed_total", "Messages whose handling failed (left for redelivery).", ["service", "type"]
)
EVENTS_DUPLICATE = Counter(
    "league_events_duplicate_total", "Redelivered events a handler had already handled (skipped).", ["service", "type"]
)
CONSUMER_CONFLICTS = Counter(
    "league_consumer_conflicts_total",
    "Batches rolled back by a deadlock or serialization failure and retried in-process (not redelivered).",
    ["service", "kind"],
)
EVENT_LAG_SECONDS = Histogram(
    "league_event_handling_lag_seconds",
    "From the event's envelope time (written in the outbox) to the end of its handler.",
    ["service", "type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)


def _safely(func: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except Exception:  # never let bookkeeping break the work it measures
            log.exception("metrics: %s failed", func.__name__)

    return wrapper


# ----------------------------------------------------------------------------- relay
R = TypeVar("R")


def timed_relay_batch(func: Callable[..., R]) -> Callable[..., R]:
    """Decorates the relay's publish of a claimed batch: observe the duration (publish and
    mark) of batches that moved rows."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        started = time.monotonic()
        result = func(*args, **kwargs)
        if getattr(result, "batches", 0):
            RELAY_BATCH_SECONDS.observe(time.monotonic() - started)
        return result

    return wrapper


@_safely
def outbox_marked(published: Iterable[Any], retried_or_failed: Iterable[Any]) -> None:
    """Rows the relay just recorded: published, or failed (for now or for good)."""
    for event_type, count in collections.Counter(row.type for row in published).items():
        OUTBOX_PUBLISHED.labels(type=event_type).inc(count)
    for row in retried_or_failed:
        (OUTBOX_FAILED if row.state == "failed" else OUTBOX_RETRIED).labels(type=row.type).inc()


# ----------------------------------------------------------------------------- consumer
@_safely
def event_handled(service: str, event: Any) -> None:
    """A handler committed ``event``: count it and observe its end-to-end lag."""
    EVENTS_HANDLED.labels(service=service, type=event.type).inc()
    sent = event.time if event.time.tzinfo else event.time.replace(tzinfo=UTC)
    EVENT_LAG_SECONDS.labels(service=service, type=event.type).observe(
        max((datetime.now(UTC) - sent).total_seconds(), 0.0)
    )


@_safely
def event_duplicate(service: str, event: Any) -> None:
    EVENTS_DUPLICATE.labels(service=service, type=event.type).inc()


@_safely
def event_failed(service: str, message: dict[str, Any]) -> None:
    """Handling a raw SQS message failed; its type comes from the message attribute the
    relay sets (or the body, or ``unknown``)."""
    EVENTS_FAILED.labels(service=service, type=message_type(message)).inc()


@_safely
def consumer_conflict(service: str, kind: str) -> None:
    CONSUMER_CONFLICTS.labels(service=service, kind=kind).inc()


def message_type(message: dict[str, Any]) -> str:
    """The message's event type for a label: only a type of the catalogue, else
    ``unknown``. The attribute and the body come from whoever sent the message, and a
    label copied from them would let anyone create unlimited series."""
    from .catalogue import EVENT_TYPES

    attr = (message.get("MessageAttributes") or {}).get("type") or {}
    claimed = attr.get("StringValue")
    if not claimed:
        try:
            import json

            claimed = json.loads(message.get("Body") or "{}").get("type")
        except (ValueError, AttributeError):
            claimed = None
    return claimed if isinstance(claimed, str) and claimed in EVENT_TYPES else "unknown"


# ----------------------------------------------------------------------------- gauges
class OutboxCollector(Collector):
    """Outbox gauges computed from the database when scraped."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db.models import Count, Min
        from django.utils import timezone as dj_timezone

        from . import catalogue
        from .models import OutboxMessage, OutboxState

        pending = GaugeMetricFamily("league_outbox_pending", "Outbox rows not yet published.", labels=["type"])
        failed = GaugeMetricFamily(
            "league_outbox_failed_rows", "Outbox rows failed for good (requeue in the admin).", labels=["type"]
        )
        rows = (
            OutboxMessage.objects.exclude(state=OutboxState.PUBLISHED)
            .values("state", "type")
            .annotate(n=Count("id"))
            .order_by()
        )
        # Every declared type has a sample, 0 when it has no such row: a series that
        # appears only when something is wrong breaks alerts and graphs.
        counts: dict[tuple[str, str], int] = {
            (str(state), t): 0
            for state in (OutboxState.PENDING, OutboxState.FAILED)
            for t in catalogue.EVENT_TYPES
            if not catalogue.EVENT_TYPES[t].retired
        }
        for row in rows:
            counts[(row["state"], row["type"])] = row["n"]
        for (state, event_type), n in sorted(counts.items()):
            (pending if state == str(OutboxState.PENDING) else failed).add_metric([event_type], n)
        yield pending
        yield failed
        oldest = OutboxMessage.objects.filter(state=OutboxState.PENDING).aggregate(t=Min("created_at"))["t"]
        yield GaugeMetricFamily(
            "league_outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none).",
            value=(dj_timezone.now() - oldest).total_seconds() if oldest else 0.0,
        )


# Services' own gauges read from their database at scrape time (each registers its
# collector in its AppConfig.ready; ``events`` imports no service).
_SERVICE_COLLECTORS: list[Collector] = []


def register_scrape_collector(collector: Collector) -> None:
    """Add a service's database gauges to ``/metrics`` (once per collector class)."""
    if not any(type(c) is type(collector) for c in _SERVICE_COLLECTORS):
        _SERVICE_COLLECTORS.append(collector)


class _Scrape:
    """What one scrape reads: the process's (or, in multiprocess mode, every process's)
    counters, then the database gauges."""

    def __init__(self, *sources: Any) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Any]:
        for source in self.sources:
            yield from source.collect()


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        process_metrics = CollectorRegistry()
        multiprocess.MultiProcessCollector(process_metrics)
    else:
        process_metrics = REGISTRY
    return generate_latest(_Scrape(process_metrics, OutboxCollector(), *_SERVICE_COLLECTORS)), CONTENT_TYPE_LATEST  # type: ignore[arg-type]


def metrics_view(request: Any) -> Any:
    """``GET /metrics`` for Prometheus. Internal: expose it on the private network only."""
    from django.http import HttpResponse

    body, content_type = render()
    return HttpResponse(body, content_type=content_type)
