"""Request correlation (``RequestIdMiddleware``), the API's front (``ApiMiddleware``), and
503s for what is unavailable for a while (``WritesPausedMiddleware``,
``DatabaseOutageMiddleware``).

Request correlation: one id per request, from the client or made here.

The id in ``X-Request-ID`` (a new UUID when absent or unusable) is bound as the
correlation id (``events.context.bound``) while the request runs: every event the request
writes carries it as ``correlationid``, every log line as ``correlation_id``, and the
response returns it in ``X-Request-ID``. Consumers keep it on the events they write, so
one id follows a change across the services.
"""

from __future__ import annotations

import codecs
import logging
import re
import time
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
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


# Details of the errors Django answers itself under /api/ (no DRF view ran, or it crashed).
_DETAILS = {
    400: "The request could not be read.",
    403: "Forbidden.",
    404: "No API endpoint matches this URL. The endpoints are listed at /api/docs/.",
    405: "This method is not allowed here.",
    413: "The request body is too large.",
    500: "Server error. It has been logged with this request's id; try again later.",
}
# Headers of Django's answer that a client still needs once it is a problem document.
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


class ApiMiddleware:
    """The API's front: under ``/api/`` only.

    - A body larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (by its Content-Length) is a 413
      before anything reads it. The servers' entry points refuse it earlier still, and
      bound chunked bodies (``league/bodylimit.py``); this check covers any other caller.
    - A body is read only in a text charset JSON allows (RFC 8259: UTF-8; UTF-16 and
      UTF-32 in either byte order; US-ASCII, a subset of UTF-8): any other ``charset`` in the
      Content-Type (``zlib``, ``bz2``, ``rot13``, ``latin-1``, an unknown or empty one) is a
      415, before anything decodes the body. Python's codecs include compressors, so a
      ``charset=zlib`` body would otherwise be inflated past every size limit.
    - Both spellings of a route: ``/api/teams`` is served as ``/api/teams/`` (no redirect,
      which would turn a POST into a GET and lose the write; no ``APPEND_SLASH`` error).
    - Every error response that is not a problem document yet (Django's 404 for an unmatched
      URL, its 400/413, any 500, with ``DEBUG`` on or off) is replaced by one
      (``kernel.api``), keeping ``Allow``/``Retry-After``/``WWW-Authenticate``.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith("/api/"):
            return self.get_response(request)
        from django.conf import settings

        from kernel import api

        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return api.problem_response(request, 400, "The Content-Length header is not a number.")
        if limit is not None and length > limit:
            return api.problem_response(
                request,
                413,
                f"The request body is larger than {limit} bytes. Send a smaller one.",
                code="request_too_large",
            )
        refused = _charset_refused(request)
        if refused:
            return api.problem_response(request, 415, refused, code="unsupported_charset")
        _add_slash(request)
        response = self.get_response(request)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith(api.PROBLEM_CONTENT_TYPE):
            replaced = api.problem_response(
                request, response.status_code, _DETAILS.get(response.status_code, api.status_title(response.status_code))
            )
            for header in _KEPT_HEADERS:
                if header in response:
                    replaced[header] = response[header]
            return replaced
        return response


# The charsets a body may declare, by their codecs name (``codecs.lookup(name).name``).
TEXT_CHARSETS = frozenset({"utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "ascii"})


def _charset_refused(request: HttpRequest) -> str | None:
    """Why the body's declared charset is refused, or ``None`` (no charset, or a text one)."""
    params = getattr(request, "content_params", None) or {}
    if "charset" not in params:
        return None
    charset = params["charset"].strip().strip('"')
    try:
        known = codecs.lookup(charset).name
    except LookupError:
        known = None
    if known in TEXT_CHARSETS:
        return None
    return (
        f'The charset "{charset[:40]}" is not accepted: send the body as UTF-8 '
        "(or UTF-16, UTF-32, US-ASCII), or leave the charset out."
    )


def _add_slash(request: HttpRequest) -> None:
    path = request.path_info
    if path.endswith("/"):
        return
    from django.urls import is_valid_path

    urlconf = getattr(request, "urlconf", None)
    if not is_valid_path(path, urlconf) and is_valid_path(f"{path}/", urlconf):
        request.path_info = f"{path}/"
        request.path = f"{request.path}/"


class WritesPausedMiddleware:
    """Outside the API (the admin): a write refused by a service's gate (``events/gate.py``,
    the service is being moved) is a 503 with ``Retry-After`` and the reason, not a 500.
    The API answers the same as a problem document (``kernel.api``)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        from events import gate

        if not isinstance(exception, gate.ServicePaused):
            return None
        response = HttpResponse(f"{exception}\n", status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(exception.retry_after)
        return response


# SQLSTATEs of a database that is not there for us (as opposed to one that refused a
# statement): the connection failed or was cut (08), the server is shutting down, crashed or
# not yet accepting connections (57P01-57P03), too many clients (53300).
OUTAGE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def database_outage(exc: BaseException) -> bool:
    """True if ``exc`` says the database cannot be reached (refused, cut, shutting down, full
    of clients), not that it refused a statement (a deadlock, a constraint, a timeout)."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    cause = exc.__cause__
    if not hasattr(cause, "sqlstate"):  # SQLite
        return any(text in str(exc) for text in ("database is locked", "unable to open database"))
    sqlstate = cause.sqlstate  # type: ignore[union-attr]
    # A failed connect or a connection already closed carries no SQLSTATE (psycopg).
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in OUTAGE_SQLSTATES


_OUTAGE_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Service unavailable</title></head>
<body><h1>Service unavailable</h1>
<p>The database does not answer right now. Nothing was changed; try again in {seconds} seconds.</p>
</body></html>
"""


class DatabaseOutageMiddleware:
    """A database outage, seen by the web's clients: every request that needs the database
    while it does not answer (connections refused or cut, the server shutting down or full)
    is a ``503`` with ``Retry-After: DATABASE_OUTAGE_RETRY_AFTER_SECONDS``, never a 500:

    - under ``/api/``: an RFC 9457 problem document (``kernel.api``), ``code``
      ``database_unavailable``;
    - elsewhere (the admin, the league page): a short HTML page.

    Nothing was written (the request's transaction could not commit). A database that
    answers but refuses a statement is not an outage and keeps its own answer. ``/readyz``
    says 503 meanwhile (``league/health.py``); ``/healthz`` stays 200. Proved by
    ``league/tests/test_database_outage.py``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not database_outage(exception):
            return None
        from django.conf import settings

        seconds = settings.DATABASE_OUTAGE_RETRY_AFTER_SECONDS
        log.warning("%s %s: the database is unavailable (%s); answered 503", request.method, request.path, exception)
        if request.path_info.startswith("/api/"):
            from kernel import api

            response: HttpResponse = api.problem_response(
                request,
                503,
                f"The database is unavailable. Nothing was changed; try again in {seconds} seconds.",
                code="database_unavailable",
            )
        else:
            response = HttpResponse(
                _OUTAGE_HTML.format(seconds=seconds), status=503, content_type="text/html; charset=utf-8"
            )
        response["Retry-After"] = str(seconds)
        return response
