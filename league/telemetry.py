"""OpenTelemetry for every process of the project (web, Celery worker and beat, consumers).

Promise: spans leave a process only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (e.g.
``http://jaeger:4318``, the ``observability`` compose profile). Then ``setup()`` (called
once per process from ``LeagueConfig.ready``) installs an SDK tracer provider that exports
over OTLP/HTTP in batches, off the request path, and switches on the official
instrumentations: Django (a span per HTTP request), Celery (tasks, linked to whoever
enqueued them), botocore (each SNS/SQS call) and psycopg (each SQL statement). The bus's
own spans (``publish``, the relay's ``send``, each ``handle``) and the W3C trace context in
the envelope come from events/telemetry.py and join the same traces. With the variable
unset nothing is installed: the OpenTelemetry API stays a no-op, no envelope carries a
``traceparent``, and nothing is sent anywhere.

The usual ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_SAMPLER``, ...)
apply as the SDK documents; the service name defaults to ``league`` (monolith) or
``league-<service>``.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("league.telemetry")

_installed: dict[str, Any] = {}


def setup() -> bool:
    """Install the exporter and the instrumentations when the endpoint is set; True if on."""
    from django.conf import settings

    if not settings.OTEL_EXPORTER_OTLP_ENDPOINT or _installed:
        return bool(_installed)
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": settings.OTEL_SERVICE_NAME}))
    # The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and _HEADERS, _TIMEOUT) itself.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    instrument(provider)
    log.info(
        "OpenTelemetry: exporting spans to %s as %s", settings.OTEL_EXPORTER_OTLP_ENDPOINT, settings.OTEL_SERVICE_NAME
    )
    return True


def instrument(provider: Any) -> None:
    """The official instrumentations, on ``provider``."""
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    # Probes and scrapes every few seconds would bury the traces worth reading.
    DjangoInstrumentor().instrument(tracer_provider=provider, excluded_urls="healthz,readyz,metrics")
    CeleryInstrumentor().instrument(tracer_provider=provider)
    BotocoreInstrumentor().instrument(tracer_provider=provider)
    PsycopgInstrumentor().instrument(tracer_provider=provider)
    _installed["provider"] = provider


def uninstrument() -> None:
    """Undo ``instrument`` (tests)."""
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    for instrumentor in (DjangoInstrumentor(), CeleryInstrumentor(), BotocoreInstrumentor(), PsycopgInstrumentor()):
        instrumentor.uninstrument()
    _installed.clear()
