"""The league page at ``/`` and its live stream.

``/`` is rendered on the server from the services' published queries (``events.queries``):
the current season's table, the last and next matchday, recent transfers with their
state, teams and squads. ``/live/league`` renders the same content without the page
around it; the browser fetches it again whenever the stream says something happened.
``/live/events`` is the Server-Sent-Events stream of this process's feed (``live.feed``):
an async view, so under an ASGI server an open stream costs a coroutine, not a worker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from events import queries

from .feed import CLOSE, hub

# What the page shows, and which service's query answers it.
SECTIONS = {
    "season": ("fixtures.current_season", {}),
    "transfers": ("transfers.recent", {"limit": 10}),
    "squads": ("teams.squads", {}),
}


def league_context() -> dict[str, Any]:
    """Each section's data, or the reason it is missing (its service runs elsewhere)."""
    context: dict[str, Any] = {"unavailable": {}}
    for key, (name, kwargs) in SECTIONS.items():
        try:
            context[key] = queries.ask(name, **kwargs)
        except queries.QueryUnavailable as exc:
            context[key] = None
            context["unavailable"][key] = str(exc)
    return context


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "live/index.html", league_context())


@require_GET
def league(request: HttpRequest) -> HttpResponse:
    return render(request, "live/_league.html", league_context())


@require_GET
async def events(request: HttpRequest) -> HttpResponseBase:
    """``text/event-stream``: ``event: feed`` with the feed's state (``live``/``down``)
    at once and at each change, ``event: league`` with one line of HTML per event this
    process's feed receives, and a comment every ``LIVE_KEEPALIVE_SECONDS`` so proxies and
    browsers keep the connection. Served only under ASGI: a WSGI worker would be held for
    as long as the browser stays, so there the answer is 204, which tells a browser's
    EventSource not to reconnect (the page still works, without live updates)."""
    if "asgi" not in type(request).__module__:
        return HttpResponse(status=204)
    queue = hub.subscribe()
    keepalive = settings.LIVE_KEEPALIVE_SECONDS

    async def stream():
        try:
            yield "retry: 2000\n: connected\n\n" + hub.state_message().encode()
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), timeout=keepalive)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if message is CLOSE:  # the server is stopping
                    return
                yield message.encode()
        finally:
            hub.unsubscribe(queue)

    response = StreamingHttpResponse(stream(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx and the like: do not buffer the stream
    return response
