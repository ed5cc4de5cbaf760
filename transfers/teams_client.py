"""The one sanctioned HTTP call between services: transfers reads the teams REST API.

Three reads only: the export (``GET /api/teams/export/``, for ``sync_teams``, or one bucket
of ids of it for reconciliation; paginated by a cursor, followed page by page, with the
service account's ``TEAMS_SERVICE_TOKEN``: it needs ``teams.export_team``), its digest
(``GET /api/teams/export/digest/``, same permission) and one team (``GET /api/teams/{id}/``,
on a replica miss or a gap). Retries are urllib3's (connect errors
and 502/503/504, exponential back-off), never a hand loop. Settings are read on each call,
not at import, so tests and deployments can change them.

Where teams is comes from ``TEAMS_SERVICE_URL`` only, never a guess: unset, no request is
made; ``TeamsServiceNotConfigured`` names the setting, and a process that would read teams
refuses to start (``TransfersConfig.check_serving``: a web serving transfers; ``sync_teams``;
the consumer's start hook logs it). ``runstack`` and compose set it.

Never call this inside ``transaction.atomic()``: a slow or retrying teams service would
hold the transaction (and its locks) open for the whole wait.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from events import antientropy

BACKOFF_FACTOR = 0.2  # seconds; urllib3 doubles it on each consecutive retry
# The replica's healing runs in the Celery worker that also relays the outbox: its calls are
# short (no retry, at most this many seconds); the next beat run tries again.
HEALING_TIMEOUT = 2.0
_healing: contextvars.ContextVar[bool] = contextvars.ContextVar("teams_client_healing", default=False)


@contextmanager
def healing() -> Iterator[None]:
    """Calls made inside are the healing's: no retry, ``HEALING_TIMEOUT`` at most."""
    token = _healing.set(True)
    try:
        yield
    finally:
        _healing.reset(token)


def _timeout() -> float:
    timeout = float(settings.TEAMS_SERVICE_TIMEOUT)
    return min(timeout, HEALING_TIMEOUT) if _healing.get() else timeout
RETRY_STATUSES = (502, 503, 504)


class TeamsServiceError(Exception):
    """Base of the errors this client raises."""


class TeamsServiceUnavailable(TeamsServiceError):
    """The teams service could not be reached or did not give a usable answer."""


class TeamsServiceNotConfigured(TeamsServiceUnavailable):
    """``TEAMS_SERVICE_URL`` is not set: there is no teams service to ask."""

    def __init__(self) -> None:
        super().__init__(NOT_CONFIGURED)


NOT_CONFIGURED = (
    "TEAMS_SERVICE_URL is not set: transfers reads the teams service over HTTP and has no address for it. "
    "Set TEAMS_SERVICE_URL to the teams service's base URL (e.g. http://teams-web:8000; in the monolith its own "
    "web's URL). `manage.py runstack` sets it."
)


def base_url() -> str:
    """The teams service's base URL, or ``TeamsServiceNotConfigured``."""
    url = (settings.TEAMS_SERVICE_URL or "").strip()
    if not url:
        raise TeamsServiceNotConfigured()
    return url.rstrip("/")


class TeamNotFound(TeamsServiceError):
    """The teams service does not know this team (404)."""

    def __init__(self, team_id: int) -> None:
        self.team_id = team_id
        super().__init__(f"Team {team_id} does not exist.")


def _session() -> requests.Session:
    retries = 0 if _healing.get() else settings.TEAMS_SERVICE_RETRIES
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=BACKOFF_FACTOR,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,  # hand back the last 5xx; _get turns it into TeamsServiceUnavailable
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["Accept"] = "application/json"
    if settings.TEAMS_SERVICE_TOKEN:
        session.headers["Authorization"] = f"Token {settings.TEAMS_SERVICE_TOKEN}"
    return session


def _url(path: str) -> str:
    return base_url() + path


def _get(path: str) -> requests.Response:
    url = _url(path)
    with _session() as session:
        try:
            response = session.get(url, timeout=_timeout())
        except requests.RequestException as exc:
            raise TeamsServiceUnavailable(
                f"The teams service at {url} is unavailable ({type(exc).__name__}). Try again later."
            ) from exc
    if response.status_code >= 500:
        raise TeamsServiceUnavailable(f"The teams service at {url} answered {response.status_code}. Try again later.")
    return response


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise TeamsServiceUnavailable(f"The teams service at {response.url} did not answer JSON.") from exc


def _check_team(team: Any, url: str) -> dict[str, Any]:
    ok = (
        isinstance(team, dict)
        and isinstance(team.get("id"), int)
        and isinstance(team.get("name"), str)
        and isinstance(team.get("sequence"), int)
        and isinstance(team.get("players"), list)
        and all(isinstance(p, dict) and isinstance(p.get("id"), int) for p in team["players"])
    )
    if not ok:
        raise TeamsServiceUnavailable(f"The teams service at {url} answered a team in an unexpected shape.")
    return team


def _refused(response: requests.Response, what: str) -> TeamsServiceUnavailable:
    return TeamsServiceUnavailable(
        f"The teams service at {response.url} refused the {what} ({response.status_code}): it needs "
        "a token with the permission teams.export_team (role Service accounts). Create one with "
        "`manage.py service_account transfers-service` on the teams service and set TEAMS_SERVICE_TOKEN."
    )


def fetch_digest(*, bucket: int) -> list[antientropy.Bucket]:
    """The export's digest (events/antientropy.py), ``bucket`` teams a bucket."""
    response = _get(f"/api/teams/export/digest/?bucket={int(bucket)}")
    if response.status_code in (401, 403):
        raise _refused(response, "digest")
    if response.status_code != 200:
        raise TeamsServiceUnavailable(f"The teams service at {response.url} answered {response.status_code} to the digest.")
    try:
        return antientropy.parse(_json(response))
    except ValueError as exc:
        raise TeamsServiceUnavailable(f"The teams service at {response.url} answered a bad digest: {exc}") from None


def fetch_export(*, id_after: int | None = None, id_upto: int | None = None) -> list[dict[str, Any]]:
    """All teams with their players and sequences: every page of the export, following
    ``next`` (``TEAMS_EXPORT_PAGE_SIZE`` teams a request); only ids in ``(id_after, id_upto]``
    when given (a bucket of the digest)."""
    teams: list[dict[str, Any]] = []
    first = f"/api/teams/export/?limit={int(settings.TEAMS_EXPORT_PAGE_SIZE)}"
    if id_after is not None:
        first += f"&id_after={int(id_after)}"
    if id_upto is not None:
        first += f"&id_upto={int(id_upto)}"
    path: str | None = first
    seen: set[str] = set()
    while path is not None:
        if path in seen:  # a cursor that does not advance would loop forever
            raise TeamsServiceUnavailable(f"The teams service's export repeated the page {path}.")
        seen.add(path)
        response = _get(path)
        if response.status_code in (401, 403):
            raise _refused(response, "export")
        if response.status_code != 200:
            raise TeamsServiceUnavailable(
                f"The teams service at {response.url} answered {response.status_code} to the export."
            )
        body = _json(response)
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            raise TeamsServiceUnavailable(f"The teams service at {response.url} answered an export without 'results'.")
        teams += [_check_team(team, response.url) for team in body["results"]]
        path = _next_path(body.get("next"), response.url)
    return teams


def _next_path(next_url: Any, url: str) -> str | None:
    """The path and query of ``next``: joined to TEAMS_SERVICE_URL, not trusted as a host
    (behind a proxy the server may not know the name it is reached by)."""
    if next_url is None:
        return None
    if not isinstance(next_url, str):
        raise TeamsServiceUnavailable(f"The teams service at {url} answered an export with a bad 'next'.")
    parts = urlsplit(next_url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def fetch_team(team_id: int) -> dict[str, Any]:
    """One team with its players and sequence; ``TeamNotFound`` on a 404."""
    response = _get(f"/api/teams/{int(team_id)}/")
    if response.status_code == 404:
        raise TeamNotFound(team_id)
    if response.status_code != 200:
        raise TeamsServiceUnavailable(
            f"The teams service at {response.url} answered {response.status_code} for team {team_id}."
        )
    return _check_team(_json(response), response.url)
