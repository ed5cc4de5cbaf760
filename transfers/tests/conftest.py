"""Fixtures of the transfers tests: hand-built events, a real teams service over HTTP
(pytest-django's ``live_server`` serving this project, whose teams API is installed in
tests) and a closed port for "teams service down"."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import requests
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from devtools.testing import aws_mock, bus  # noqa: F401  (re-exported fixtures)
from events.envelope import Event
from kernel import roles
from league.management.commands.service_account import ensure_service_account


@pytest.fixture(autouse=True)
def _no_relay_kick(settings):
    # Commits would otherwise kick the relay through Celery; these tests drive it by hand.
    settings.OUTBOX_KICK = False


def make_event(type: str, data: dict, *, sequence: int, subject: str | int | None = None) -> Event:
    """An envelope as the consumer would hand it to a handler."""
    return Event(
        id=str(uuid.uuid4()),
        type=type,
        source="/league/transfers" if type.startswith("transfer.") else "/league/teams",
        subject=str(subject if subject is not None else data["id"]),
        time=datetime.now(UTC),
        sequence=sequence,
        data=data,
    )


@dataclass
class TeamsService:
    """The real teams API of this project, over HTTP, with a token for writes."""

    url: str
    token: str

    def _post(self, path: str, payload: dict) -> dict:
        r = requests.post(
            f"{self.url}{path}", json=payload, headers={"Authorization": f"Token {self.token}"}, timeout=10
        )
        assert r.status_code == 201, r.text
        return r.json()

    def create_team(self, name: str, players: list[tuple[str, str]] = ()) -> dict:
        return self._post("/api/teams/", {"name": name, "players": [{"name": n, "position": p} for n, p in players]})

    def add_player(self, team_id: int, name: str, position: str = "MID") -> dict:
        return self._post(f"/api/teams/{team_id}/players/", {"name": name, "position": position})

    def delete_team(self, team_id: int) -> None:
        r = requests.delete(
            f"{self.url}/api/teams/{team_id}/", headers={"Authorization": f"Token {self.token}"}, timeout=10
        )
        assert r.status_code == 204, r.text

    def team(self, team_id: int) -> dict:
        return requests.get(f"{self.url}/api/teams/{team_id}/", timeout=10).json()


@pytest.fixture
def teams_service(live_server, settings) -> TeamsService:
    """The teams API at ``live_server``, with transfers pointed at it. Needs
    ``@pytest.mark.django_db(transaction=True)``: the server thread sees committed rows only."""
    user = get_user_model().objects.create_superuser(username="teams-admin", email="", password="pw-teams-123")
    token = Token.objects.create(user=user)
    settings.TEAMS_SERVICE_URL = live_server.url
    # The export needs teams.export_team: the transfers service's own service account.
    roles.ensure_roles()  # the flush of the previous transactional test removed the groups
    settings.TEAMS_SERVICE_TOKEN = ensure_service_account("transfers-service").key
    settings.TEAMS_SERVICE_RETRIES = 0
    settings.TEAMS_SERVICE_TIMEOUT = 5.0
    return TeamsService(url=live_server.url, token=token.key)


@pytest.fixture
def teams_down(settings) -> str:
    """A URL nobody listens on (a port bound, then closed); retries kept small and quick."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    settings.TEAMS_SERVICE_URL = url
    settings.TEAMS_SERVICE_RETRIES = 1
    settings.TEAMS_SERVICE_TIMEOUT = 1.0
    return url
