"""Request correlation: one id per request, from the client or made here.

The id in ``X-Request-ID`` (a new UUID when absent or unusable) is bound as the
correlation id (``events.context.bound``) while the request runs: every event the request
writes carries it as ``correlationid``, every log line as ``correlation_id``, and the
response returns it in ``X-Request-ID``. Consumers keep it on the events they write, so
one id follows a change across the services.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from opentelemetry import trace

from events import context

HEADER = "X-Request-ID"
# Ids come from clients: bounded and plain, so that they are safe in logs and headers.
_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

log = logging.getLogger("league.request")
# Probes and scrapes every few seconds would drown the request log.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def request_id(request: HttpRequest) -> str:
    given = request.headers.get(HEADER, "")
    return given if _VALID.match(given) else context.new_id()


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = request_id(request)
        request.request_id = rid  # type: ignore[attr-defined]
        started = time.monotonic()
        # The OpenTelemetry request span (when on): findable by the same id in a trace viewer.
        trace.get_current_span().set_attribute("league.correlation_id", rid)
        with context.bound(correlation=rid), context.serving(f"{request.method} {request.path}", at=timezone.now()):
            response = self.get_response(request)
            if request.path not in QUIET_PATHS:
                log.info(
                    "%s %s %s %.1f ms",
                    request.method,
                    request.path,
                    response.status_code,
                    (time.monotonic() - started) * 1000,
                )
        response[HEADER] = rid
        return response
