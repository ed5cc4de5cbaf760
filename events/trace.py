"""The event trace: one request's journey across the services, as a timeline.

A request's ``X-Request-ID`` is the ``correlationid`` of every event it causes, directly or
through handlers (events/context.py). Each service keeps its part of the journey: its
outbox rows (what it wrote, when the relay published each, the SNS message id, the HTTP
request that wrote it) and its inbox rows (which handler took which event, when it
entered the queue, when the consumer received it, when the handler started and finished).
``gather`` puts the parts together and ``Trace.hops`` orders them: the request, each
event written, published, received and handled, the events each handler caused
(``causationid``), and so on to the end of the saga, each hop with its latency.

Where the parts come from:
- monolith: the local database holds every part;
- microservices: each service answers ``GET /internal/trace/<correlation id>/`` (JSON)
  with its own part, to callers that send ``Authorization: Bearer <INTERNAL_TOKEN>``;
  the admin page asks every URL in ``TRACE_SERVICE_URLS`` (in parallel, with a timeout)
  and merges, deduplicating rows. A service that does not answer is named on the page;
  the rest of the trace is still shown.

Times come from each service's clock: across hosts, a hop's latency includes their skew.
"""

from __future__ import annotations

import concurrent.futures
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.dateparse import parse_datetime

from .models import InboxMessage, OutboxMessage

# The ids the request middleware accepts (league/middleware.py): bounded and plain.
CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# A trace is one request's events: far fewer rows than this; a bound keeps a runaway
# (a client reusing one X-Request-ID for everything) from loading a whole table.
ROW_LIMIT = 2000


class BadCorrelationId(ValueError):
    pass


def check_id(correlation_id: str) -> str:
    correlation_id = (correlation_id or "").strip()
    if not CORRELATION_ID.match(correlation_id):
        raise BadCorrelationId(
            "A correlation id is 1-128 letters, digits or ._:- (the X-Request-ID of a response, "
            "or an outbox row's correlation id)."
        )
    return correlation_id


# ----------------------------------------------------------------------------- one part
def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def local_part(correlation_id: str) -> dict[str, Any]:
    """This database's part of the trace, as JSON-ready dicts."""
    outbox = [
        {
            "id": row.pk,
            "event_id": str(row.event_id),
            "service": str(row.envelope.get("source", "")).rsplit("/", 1)[-1],
            "type": row.type,
            "subject": row.subject,
            "sequence": row.sequence,
            "state": row.state,
            "attempts": row.attempts,
            "last_error": row.last_error,
            "causation_id": row.causation_id,
            "request": row.request,
            "request_at": _iso(row.request_at),
            "created_at": _iso(row.created_at),
            "published_at": _iso(row.published_at),
            "sns_message_id": row.sns_message_id,
        }
        for row in OutboxMessage.objects.filter(correlation_id=correlation_id).order_by("id")[:ROW_LIMIT]
    ]
    inbox = [
        {
            "id": row.pk,
            "event_id": str(row.event_id),
            "service": row.service or row.handler.split(":", 1)[0],
            "handler": row.handler,
            "type": row.type,
            "subject": row.subject,
            "causation_id": row.causation_id,
            "queued_at": _iso(row.queued_at),
            "received_at": _iso(row.received_at),
            "started_at": _iso(row.started_at),
            "handled_at": _iso(row.handled_at),
        }
        for row in InboxMessage.objects.filter(correlation_id=correlation_id).order_by("id")[:ROW_LIMIT]
    ]
    return {"service": settings.LEAGUE_SERVICE, "outbox": outbox, "inbox": inbox}


def fetch_part(base_url: str, correlation_id: str) -> dict[str, Any]:
    """One service's part over its internal endpoint; raises ``TraceSourceError`` saying why not."""
    url = f"{base_url.rstrip('/')}/internal/trace/{correlation_id}/"
    try:
        response = requests.get(
            url,
            headers={"Authorization": f"Bearer {settings.INTERNAL_TOKEN}", "Accept": "application/json"},
            timeout=settings.TRACE_FETCH_TIMEOUT,
        )
    except requests.RequestException as exc:
        raise TraceSourceError(f"{base_url}: unreachable ({type(exc).__name__})") from None
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", "")
        except ValueError:
            detail = response.text[:200]
        raise TraceSourceError(f"{base_url}: answered {response.status_code} {detail}".strip())
    try:
        part = response.json()
        if not isinstance(part.get("outbox"), list) or not isinstance(part.get("inbox"), list):
            raise ValueError("no outbox/inbox lists")
    except (ValueError, AttributeError) as exc:
        raise TraceSourceError(f"{base_url}: not a trace part ({exc})") from None
    return part


class TraceSourceError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- the trace
@dataclass
class Hop:
    at: datetime
    kind: str  # request | written | published | received | handled
    service: str
    title: str
    detail: str = ""
    event_id: str = ""
    depth: int = 0
    after_ms: float | None = None  # since the hop before it in its chain
    offset_ms: float = 0.0  # since the trace began
    link: str = ""  # the admin page of the row (rows of this database only)
    # A waterfall bar: from the hop before it to this one, in % of the whole trace.
    bar_left: float = 0.0
    bar_width: float = 0.0


@dataclass
class Trace:
    correlation_id: str
    outbox: list[dict[str, Any]] = field(default_factory=list)
    inbox: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, part: dict[str, Any], *, source: str, local: bool = False) -> None:
        """Merge one service's part; a row already there (same event; same event and
        handler) is kept once."""
        self.sources.append(source)
        seen_out = {r["event_id"] for r in self.outbox}
        seen_in = {(r["event_id"], r["handler"]) for r in self.inbox}
        for row in part.get("outbox", []):
            if _has(row, OUTBOX_KEYS) and row["event_id"] not in seen_out:
                self.outbox.append({**row, "local": local})
                seen_out.add(row.get("event_id"))
        for row in part.get("inbox", []):
            if _has(row, INBOX_KEYS) and (row["event_id"], row["handler"]) not in seen_in:
                self.inbox.append({**row, "local": local})
                seen_in.add((row.get("event_id"), row.get("handler")))

    @property
    def empty(self) -> bool:
        return not self.outbox and not self.inbox

    @property
    def services(self) -> list[str]:
        return sorted({r["service"] for r in self.outbox + self.inbox if r.get("service")})

    @property
    def unfinished(self) -> list[dict[str, Any]]:
        """Outbox rows not published yet (pending or failed): where the journey stands still."""
        return [r for r in self.outbox if r.get("state") != "published"]

    def hops(self) -> list[Hop]:
        """The journey in time order: the request, then for each event its write and its
        publish, and for each handler its receive and its run; each hop placed on the
        waterfall."""
        timeline = _Timeline(self.outbox, self.inbox)
        hops = timeline.request_hops()
        for row in self.outbox:
            hops += timeline.outbox_hops(row)
        for row in self.inbox:
            hops += timeline.inbox_hops(row)
        return _placed(hops)


class _Timeline:
    """The indexes the hops are built from: events by id, handlers by event, and the events
    each handler caused."""

    def __init__(self, outbox: list[dict[str, Any]], inbox: list[dict[str, Any]]) -> None:
        self.outbox = outbox
        self.events = {r["event_id"]: r for r in outbox}
        self.handled_by: dict[str, list[dict[str, Any]]] = {}
        for row in inbox:
            self.handled_by.setdefault(row["event_id"], []).append(row)
        self.caused: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in outbox:
            if row.get("causation_id"):
                self.caused.setdefault((row["causation_id"], row["service"]), []).append(row)

    def depth(self, event_id: str, seen: frozenset[str] = frozenset()) -> int:
        """1 for an event a request wrote, one more per cause in the chain (2 when the
        cause is not in the trace)."""
        row = self.events.get(event_id)
        cause = row.get("causation_id") if row else None
        if not cause:
            return 1
        if cause in self.events and cause not in seen:
            return self.depth(cause, seen | {event_id}) + 1
        return 2

    def request_hops(self) -> list[Hop]:
        """One hop per HTTP request that wrote events (several events, one request)."""
        requests_seen: dict[tuple[str, str], Hop] = {}
        for row in self.outbox:
            if row.get("request") and row.get("request_at"):
                key = (row["request"], row["request_at"])
                at = _dt(row["request_at"])
                if key not in requests_seen and at:
                    requests_seen[key] = Hop(
                        at=at, kind="request", service=row["service"], title=row["request"], detail="HTTP request"
                    )
        return list(requests_seen.values())

    def _cause(self, row: dict[str, Any]) -> tuple[datetime | None, str]:
        """When what wrote this event happened, and how to say it."""
        if row.get("request_at") and not row.get("causation_id"):
            return _dt(row["request_at"]), "after the request arrived"
        if row.get("causation_id"):
            handlers = [h for h in self.handled_by.get(row["causation_id"], []) if h.get("service") == row["service"]]
            if handlers:
                h = handlers[0]
                return _dt(
                    h.get("started_at") or h.get("received_at")
                ), f"after {h['handler'].split(':', 1)[-1]} started"
            if row["causation_id"] in self.events:
                return _dt(self.events[row["causation_id"]].get("created_at")), "after its cause was written"
        return None, ""

    def outbox_hops(self, row: dict[str, Any]) -> list[Hop]:
        """An event written to the outbox, and published if it was."""
        written = _dt(row.get("created_at"))
        if written is None:
            return []
        d = self.depth(row["event_id"])
        cause_at, cause_label = self._cause(row)
        detail = f"subject {row['subject']}, sequence {row['sequence']}"
        if row.get("causation_id"):
            cause = self.events.get(row["causation_id"])
            detail += f"; caused by {cause['type'] if cause else 'event'} {row['causation_id'][:8]}"
        if cause_label:
            detail += f" ({cause_label})"
        link = _admin_link("outboxmessage", row)
        hops = [
            Hop(
                at=written,
                kind="written",
                service=row["service"],
                title=f"{row['type']} written to the outbox",
                detail=detail,
                event_id=row["event_id"],
                depth=d,
                after_ms=_ms(cause_at, written),
                link=link,
            )
        ]
        published = _dt(row.get("published_at"))
        if published is not None:
            hops.append(
                Hop(
                    at=published,
                    kind="published",
                    service=row["service"],
                    title=f"{row['type']} published to SNS",
                    detail=f"SNS message id {row.get('sns_message_id') or '?'}"
                    + (f" after {row['attempts']} failed attempt(s)" if row.get("attempts") else ""),
                    event_id=row["event_id"],
                    depth=d,
                    after_ms=_ms(written, published),
                    link=link,
                )
            )
        return hops

    def inbox_hops(self, row: dict[str, Any]) -> list[Hop]:
        """An event received by a service's consumer, and handled if it was."""
        source = self.events.get(row["event_id"])
        d = self.depth(row["event_id"])
        published = _dt(source.get("published_at")) if source else None
        received = _dt(row.get("received_at"))
        started = _dt(row.get("started_at"))
        handled = _dt(row.get("handled_at"))
        link = _admin_link("inboxmessage", row)
        hops = []
        if received is not None:
            queued = _dt(row.get("queued_at"))
            detail = f"from the {row['service']} queue"
            if queued is not None and published is not None and queued >= published:
                detail += f"; in the queue {_ms(queued, received):.0f} ms"
            hops.append(
                Hop(
                    at=received,
                    kind="received",
                    service=row["service"],
                    title=f"{row['type']} received by {row['service']}",
                    detail=detail,
                    event_id=row["event_id"],
                    depth=d,
                    after_ms=_ms(published, received),
                    link=link,
                )
            )
        if handled is not None:
            effects = self.caused.get((row["event_id"], row["service"]), [])
            detail = row["handler"].split(":", 1)[-1]
            if started is not None:
                detail += f" ran {_ms(started, handled):.1f} ms"
            detail += "; caused " + (", ".join(e["type"] for e in effects) if effects else "no event")
            hops.append(
                Hop(
                    at=handled,
                    kind="handled",
                    service=row["service"],
                    title=f"{row['type']} handled by {row['service']}",
                    detail=detail,
                    event_id=row["event_id"],
                    depth=d,
                    after_ms=_ms(received or started, handled),
                    link=link,
                )
            )
        return hops


_KIND_ORDER = {"request": 0, "written": 1, "published": 2, "received": 3, "handled": 4}


def _placed(hops: list[Hop]) -> list[Hop]:
    """Hops in time order with their offsets and waterfall bars (% of the whole trace)."""
    hops.sort(key=lambda h: (h.at, _KIND_ORDER[h.kind]))
    if hops:
        start = hops[0].at
        for hop in hops:
            hop.offset_ms = _ms(start, hop.at) or 0.0
        total = hops[-1].offset_ms or 1.0
        for hop in hops:
            since = max(hop.offset_ms - (hop.after_ms or 0.0), 0.0)
            hop.bar_left = round(100 * since / total, 2)
            hop.bar_width = max(round(100 * (hop.offset_ms - since) / total, 2), 0.4)
    return hops


# What a row from another service must hold to be placed on the timeline; a row without
# them (another version, a proxy's error page) is left out rather than breaking the page.
OUTBOX_KEYS = ("event_id", "service", "type", "subject", "sequence", "created_at")
INBOX_KEYS = ("event_id", "service", "handler", "type")


def _has(row: Any, keys: tuple[str, ...]) -> bool:
    return isinstance(row, dict) and all(isinstance(row.get(k), str | int) for k in keys)


def _dt(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    return parse_datetime(value) if isinstance(value, str) else None


def _ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds() * 1000


def _admin_link(model: str, row: dict[str, Any]) -> str:
    return reverse(f"admin:events_{model}_change", args=[row["id"]]) if row.get("local") else ""


def gather(correlation_id: str) -> Trace:
    """Every part of the trace: this database's, and each configured service's."""
    trace = Trace(correlation_id=correlation_id)
    trace.add(local_part(correlation_id), source="this service", local=True)
    urls = list(settings.TRACE_SERVICE_URLS)
    if urls and not settings.INTERNAL_TOKEN:
        trace.errors.append(
            "INTERNAL_TOKEN is not set here, so the other services were not asked: set the same INTERNAL_TOKEN "
            f"on every service ({', '.join(urls)})."
        )
    elif urls:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(urls), 8)) as pool:
            futures = {url: pool.submit(fetch_part, url, correlation_id) for url in urls}
            for url, future in futures.items():
                try:
                    trace.add(future.result(), source=url)
                except TraceSourceError as exc:
                    trace.errors.append(str(exc))
    return trace


# ----------------------------------------------------------------------------- views
def internal_trace_view(request: HttpRequest, correlation_id: str) -> JsonResponse:
    """``GET /internal/trace/<correlation id>/``: this service's part, for the admin of any
    service. Needs ``Authorization: Bearer <INTERNAL_TOKEN>``; disabled while the token is unset."""
    if request.method != "GET":
        return JsonResponse({"detail": "Use GET."}, status=405)
    token = settings.INTERNAL_TOKEN
    if not token:
        return JsonResponse(
            {"detail": "The internal API is disabled: set INTERNAL_TOKEN (the same on every service)."}, status=403
        )
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""  # the scheme is case-insensitive (RFC 9110)
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        return JsonResponse(
            {"detail": "Send Authorization: Bearer <INTERNAL_TOKEN>; the token given is missing or wrong."}, status=403
        )
    try:
        correlation_id = check_id(correlation_id)
    except BadCorrelationId as exc:
        return JsonResponse({"detail": str(exc)}, status=400)
    return JsonResponse(local_part(correlation_id))


def trace_view(request: HttpRequest, correlation_id: str = "") -> HttpResponse:
    """The admin's trace page (``admin:events_trace``): a form for an id, and the timeline."""
    if not request.user.has_perm("events.view_outboxmessage"):
        raise PermissionDenied
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Event trace",
        "subtitle": correlation_id or None,
        "correlation_id": correlation_id,
        "bus_url": reverse("admin:events_bus"),
    }
    status = 200
    if not correlation_id and "id" in request.GET:
        try:
            return HttpResponseRedirect(reverse("admin:events_trace", args=[check_id(request.GET["id"])]))
        except BadCorrelationId as exc:
            context.update(error=str(exc), correlation_id=request.GET["id"][:200])
            return render(request, "admin/events/trace.html", context, status=400)
    if correlation_id:
        try:
            trace = gather(check_id(correlation_id))
        except BadCorrelationId as exc:
            context["error"] = str(exc)
            status = 400
        else:
            hops = trace.hops()
            context.update(
                trace=trace,
                hops=hops,
                total_ms=hops[-1].offset_ms if hops else None,
                events=len(trace.outbox),
                handled=len(trace.inbox),
            )
    return render(request, "admin/events/trace.html", context, status=status)
