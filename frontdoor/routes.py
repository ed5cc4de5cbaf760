"""Which service a request path belongs to: the front door's route table.

Guarantees kept here:

- One table (``ROUTES``) says which path prefixes each service owns; the nginx configuration
  (``frontdoor.nginx.render``) and ``service_for`` are both made from it, so they agree.
- A prefix ending in ``/`` matches every path that starts with it; one without (``/api/teams``)
  matches that exact path only (so ``/api/teamsheet`` is not a teams path).
- The longest matching prefix wins (nginx's rule for prefix locations); no two services share
  a prefix, and a path no service owns belongs to ``DEFAULT`` (the monolith: the process set
  that serves what has not moved, including ``/``, ``/admin/``, ``/healthz``, the live page).
- frontdoor/tests/test_routes.py walks every URL the service apps mount and checks that it
  falls under its own service's prefixes and no other's: a new URL cannot route silently to
  the wrong process.
"""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT = "monolith"

ROUTES: Mapping[str, tuple[str, ...]] = {
    "teams": ("/api/teams/", "/api/teams", "/admin/teams/"),
    "transfers": ("/api/transfers/", "/admin/transfers/"),
    "fixtures": ("/api/seasons/", "/api/fixtures/", "/admin/fixtures/"),
}

# The league page's Server-Sent-Events stream (live/urls.py: live/events): served by the
# default upstream, unbuffered and with a long read timeout.
STREAM_PREFIX = "/live/"


def is_exact(prefix: str) -> bool:
    """A route without a trailing slash names one exact path."""
    return not prefix.endswith("/")


def matches(prefix: str, path: str) -> bool:
    return path == prefix if is_exact(prefix) else path.startswith(prefix)


def service_for(path: str) -> str:
    """The service that serves ``path`` (a URL path, starting with ``/``), or ``DEFAULT``."""
    best, owner = -1, DEFAULT
    for service, prefixes in ROUTES.items():
        for prefix in prefixes:
            if matches(prefix, path) and len(prefix) > best:
                best, owner = len(prefix), service
    return owner


def check_services(names: object) -> None:
    """Raise ValueError naming an unknown service (one with no routes)."""
    unknown = sorted(set(names) - set(ROUTES))  # type: ignore[call-overload]
    if unknown:
        raise ValueError(f"no front-door routes for {', '.join(unknown)}: known services are {', '.join(ROUTES)}")
