"""OpenTelemetry on the bus: W3C trace context in the envelope, and a span for each hop.

Promises:
- Off by default, at no cost: without an SDK tracer provider (league/telemetry.py installs
  one only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set) the API's no-op tracer runs: no span
  is recorded, no ``traceparent`` enters an envelope, nothing is sent anywhere.
- On, one trace per request: ``publish`` runs in a PRODUCER span and writes its context into
  the envelope as the CloudEvents distributed-tracing extension (``traceparent``,
  ``tracestate``); the relay sends each row in a PRODUCER span whose parent is the row's
  context; each handler runs in a CONSUMER span whose parent is the envelope's context, so
  the events a handler writes continue the trace of the request that started the chain.
- A malformed or missing ``traceparent`` starts a new trace; it never fails the event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import context

if TYPE_CHECKING:
    from .envelope import Event
    from .models import OutboxMessage
    from .relay import Publisher

TRACER = "league.events"
_propagator = TraceContextTextMapPropagator()


def _tracer() -> trace.Tracer:
    # Looked up per use (cheap): a provider installed after import is picked up.
    return trace.get_tracer(TRACER)


def _parent(carrier: dict[str, Any]) -> Any:
    """The OpenTelemetry context in an envelope (empty when absent or malformed)."""
    headers = {k: carrier[k] for k in ("traceparent", "tracestate") if isinstance(carrier.get(k), str)}
    return _propagator.extract(headers) if headers else None


def publishing(event_type: str, subject: str) -> contextlib.AbstractContextManager[dict[str, str]]:
    """Around ``events.publish``: a PRODUCER span; yields the envelope's tracing attributes
    (``traceparent``/``tracestate``, or nothing without an SDK)."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # No SDK: the no-op tracer's span would only repeat the current context. Pass that
        # on (a handler's received one) without making a span.
        carrier: dict[str, str] = {}
        if trace.get_current_span().get_span_context().is_valid:
            _propagator.inject(carrier)
        return contextlib.nullcontext(carrier)
    return _publishing_span(event_type, subject)


@contextlib.contextmanager
def _publishing_span(event_type: str, subject: str) -> Iterator[dict[str, str]]:
    with _tracer().start_as_current_span(
        f"publish {event_type}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "aws_sns",
            "messaging.operation.type": "create",
            "league.event.type": event_type,
            "league.event.subject": subject,
            "league.correlation_id": context.correlation_id.get() or "",
        },
    ) as span:
        carrier: dict[str, str] = {}
        # A valid context even when not sampled: the flag travels, so a sampler that follows
        # the parent decides the same way for every hop of the request.
        if span.get_span_context().is_valid:
            _propagator.inject(carrier)
        yield carrier


class TracedPublisher:
    """Wraps the relay's publisher: one PRODUCER span per row sent, in the row's own trace
    (its parent is the context stored in the envelope), with the SNS message id or the error."""

    def __init__(self, inner: Publisher) -> None:
        self.inner = inner

    def publish(self, event_type: str, rows: Sequence[OutboxMessage]) -> dict[int, str | Exception]:
        envelopes = {row.pk: row.envelope_fields() for row in rows}
        parents = {pk: _parent(env) for pk, env in envelopes.items()}
        if not any(parents.values()):
            return self.inner.publish(event_type, rows)
        tracer = _tracer()
        spans = {
            row.pk: tracer.start_span(
                f"send {event_type}",
                context=parents[row.pk],
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "aws_sns",
                    "messaging.operation.type": "send",
                    "messaging.batch.message_count": len(rows),
                    "league.event.type": event_type,
                    "league.event.id": str(row.event_id),
                    "league.correlation_id": str(envelopes[row.pk].get("correlationid") or ""),
                },
            )
            for row in rows
            if parents[row.pk]
        }
        try:
            results = self.inner.publish(event_type, rows)
        except BaseException as exc:
            for span in spans.values():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                span.end()
            raise
        for pk, span in spans.items():
            result = results.get(pk)
            if isinstance(result, str):
                span.set_attribute("messaging.message.id", result)
            else:
                span.set_status(Status(StatusCode.ERROR, str(result or "no result from publisher")))
            span.end()
        return results


def traced(publisher: Publisher) -> Publisher:
    return TracedPublisher(publisher)


@contextlib.contextmanager
def handling(service: str, handler: str, event: Event) -> Iterator[Any]:
    """Around one handler: a CONSUMER span, child of the span that wrote the event. An
    exception marks it failed unless it says otherwise (``trace_as_error = False``, e.g. a
    duplicate skipped by the inbox)."""
    carrier = {"traceparent": event.traceparent, "tracestate": event.tracestate}
    with _tracer().start_as_current_span(
        f"handle {event.type}",
        context=_parent(carrier),
        kind=SpanKind.CONSUMER,
        record_exception=False,
        set_status_on_exception=False,
        attributes={
            "messaging.system": "aws_sqs",
            "messaging.operation.type": "process",
            "messaging.consumer.group.name": service,
            "league.handler": handler,
            "league.event.type": event.type,
            "league.event.id": event.id,
            "league.correlation_id": event.correlationid or "",
        },
    ) as span:
        try:
            yield span
        except BaseException as exc:
            if getattr(exc, "trace_as_error", True):
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            else:
                span.set_attribute("league.outcome", type(exc).__name__.lower())
            raise
