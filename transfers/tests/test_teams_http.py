"""The HTTP side against a real server: the teams API of this project served by
``live_server``, and a closed port for "teams service down"."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from devtools.problems import problem_fields
from events.models import OutboxMessage
from transfers import services, teams_client
from transfers.factories import PlayerReplicaFactory, TeamReplicaFactory
from transfers.models import PlayerReplica, TeamReplica, TeamsSync, Transfer
from transfers.teams_client import TeamNotFound, TeamsServiceUnavailable

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fetches(monkeypatch):
    """Count the GETs teams_client sends (the real call still happens)."""
    calls: list[str] = []
    real = teams_client._get

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(teams_client, "_get", counting)
    return calls


EXPORT = "/api/teams/export/?limit=500"  # the first page, settings.TEAMS_EXPORT_PAGE_SIZE


def squad(team_id: int) -> set[str]:
    return set(PlayerReplica.objects.filter(team__team_id=team_id, present=True).values_list("name", flat=True))


# --- sync_teams ------------------------------------------------------------------------


def test_sync_teams_loads_every_team(teams_service, fetches, capsys):
    reds = teams_service.create_team("Reds", [("Ann", "GK"), ("Bob", "ST")])
    blues = teams_service.create_team("Blues")
    teams_service.add_player(blues["id"], "Dan", "DEF")

    call_command("sync_teams")

    assert fetches == [EXPORT]
    out = capsys.readouterr().out
    assert "Synced 2 teams: 2 created, 0 updated, 0 unchanged, 0 stale, 0 deleted." in out
    assert "Reds" in out and "action" in out
    assert squad(reds["id"]) == {"Ann", "Bob"} and squad(blues["id"]) == {"Dan"}
    assert TeamReplica.objects.get(team_id=blues["id"]).sequence == teams_service.team(blues["id"])["sequence"]
    assert TeamsSync.objects.get().teams == 2

    call_command("sync_teams")
    assert "0 created, 0 updated, 2 unchanged" in capsys.readouterr().out


def test_sync_teams_follows_the_export_pages(teams_service, fetches, settings, capsys):
    """The export is paginated; the bootstrap reads every page."""
    settings.TEAMS_EXPORT_PAGE_SIZE = 2
    created = [teams_service.create_team(f"Team {i}", [(f"P{i}", "GK")]) for i in range(5)]

    call_command("sync_teams")

    assert len(fetches) == 3 and fetches[0] == "/api/teams/export/?limit=2"
    assert all(f.startswith("/api/teams/export/?") and "cursor=" in f for f in fetches[1:])
    assert "Synced 5 teams: 5 created" in capsys.readouterr().out
    assert sorted(TeamReplica.objects.visible().values_list("team_id", flat=True)) == [t["id"] for t in created]


def test_sync_teams_without_the_export_permission_says_what_to_do(teams_service, settings):
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    person = get_user_model().objects.create_user(username="person")
    settings.TEAMS_SERVICE_TOKEN = Token.objects.create(user=person).key
    with pytest.raises(CommandError, match="teams.export_team") as exc:
        call_command("sync_teams")
    assert "TEAMS_SERVICE_TOKEN" in str(exc.value)
    settings.TEAMS_SERVICE_TOKEN = ""
    with pytest.raises(CommandError, match="TEAMS_SERVICE_TOKEN"):
        call_command("sync_teams")


def test_sync_removes_a_team_deleted_at_the_teams_service(teams_service, capsys):
    reds = teams_service.create_team("Reds")
    gone = teams_service.create_team("Gone", [("Gil", "MID")])
    call_command("sync_teams")
    teams_service.delete_team(gone["id"])
    # The replica heard of the team well before this sync was requested.
    TeamReplica.objects.update(created_at=timezone.now() - timedelta(hours=1))
    call_command("sync_teams")
    assert "1 deleted" in capsys.readouterr().out
    assert list(TeamReplica.objects.visible().values_list("team_id", flat=True)) == [reds["id"]]
    assert squad(gone["id"]) == set()


def test_sync_teams_with_the_teams_service_down(teams_down):
    TeamReplicaFactory(team_id=1, name="Reds")
    with pytest.raises(
        CommandError, match=re.escape(f"The teams service at {teams_down}{EXPORT} is unavailable")
    ):
        call_command("sync_teams")
    assert TeamReplica.objects.get().name == "Reds" and not TeamsSync.objects.exists()


@pytest.mark.slow
def test_sync_teams_exit_code_when_down(teams_down):
    import subprocess
    import sys

    from django.conf import settings

    proc = subprocess.run(
        [sys.executable, "manage.py", "sync_teams"],
        cwd=settings.BASE_DIR,
        env={
            "TEAMS_SERVICE_URL": teams_down,
            "TEAMS_SERVICE_RETRIES": "0",
            "DATA_DIR": "/tmp/transfers-sync-test",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "CommandError: sync_teams failed: The teams service at" in proc.stderr


def test_consumer_start_hook_syncs_an_empty_replica(teams_service, fetches):
    from events.registry import startup_hooks

    teams_service.create_team("Reds", [("Ann", "GK")])
    for hook in startup_hooks("transfers"):
        hook()
    assert fetches == [EXPORT]
    for hook in startup_hooks("transfers"):
        hook()  # fresh now: no second request
    assert fetches == [EXPORT]
    assert TeamReplica.objects.visible().count() == 1


# --- team_get_or_fetch: the replica first, one GET on a miss ------------------------------------


def test_team_get_miss_fetches_once_and_stores(teams_service, fetches):
    reds = teams_service.create_team("Reds", [("Ann", "GK")])
    team = services.team_get_or_fetch(reds["id"])
    assert team.name == "Reds" and squad(reds["id"]) == {"Ann"}
    assert fetches == [f"/api/teams/{reds['id']}/"]
    assert services.team_get_or_fetch(reds["id"]).pk == team.pk
    assert len(fetches) == 1  # the second read is a hit


def test_team_get_unknown(teams_service, fetches):
    with pytest.raises(TeamNotFound):
        services.team_get_or_fetch(424242)
    assert fetches == ["/api/teams/424242/"]
    assert not TeamReplica.objects.exists()


def test_team_get_refuses_to_call_inside_a_transaction(teams_service):
    from django.db import transaction

    with pytest.raises(services.TeamFetchInsideTransaction), transaction.atomic():
        services.team_get_or_fetch(1)


def test_transfer_request_fetches_a_missing_team(teams_service, fetches, auth_client):
    """The destination is not in the replica yet: one GET, then the transfer."""
    reds = TeamReplicaFactory(team_id=900001, name="Reds")
    PlayerReplicaFactory(team=reds, player_id=900011, name="Ann")
    blues = teams_service.create_team("Blues")
    response = auth_client.post(
        "/api/transfers/",
        {"player_id": 900011, "from_team_id": 900001, "to_team_id": blues["id"], "fee": "2500.50"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert fetches == [f"/api/teams/{blues['id']}/"]
    assert TeamReplica.objects.visible().filter(team_id=blues["id"]).exists()
    assert OutboxMessage.objects.filter(type="transfer.requested").count() == 1


def test_transfer_request_unknown_team_is_a_conflict(teams_service, auth_client):
    reds = TeamReplicaFactory(team_id=900001, name="Reds")
    PlayerReplicaFactory(team=reds, player_id=900011)
    response = auth_client.post(
        "/api/transfers/",
        {"player_id": 900011, "from_team_id": 900001, "to_team_id": 900002, "fee": "1"},
        format="json",
    )
    assert response.status_code == 409
    assert problem_fields(response) == {"to_team_id": ["Team 900002 does not exist."]}


# --- the teams service down ------------------------------------------------------------


def test_teams_service_down_is_a_503_and_nothing_is_written(teams_down, auth_client):
    reds = TeamReplicaFactory(team_id=1, name="Reds")
    PlayerReplicaFactory(team=reds, player_id=11)
    response = auth_client.post(
        "/api/transfers/", {"player_id": 11, "from_team_id": 1, "to_team_id": 2, "fee": "10.00"}, format="json"
    )
    assert response.status_code == 503
    body = response.json()
    assert body["detail"].startswith(f"The teams service at {teams_down}/api/teams/2/ is unavailable")
    assert not Transfer.objects.exists() and not OutboxMessage.objects.exists()
    assert TeamReplica.objects.count() == 1


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first GET, then a team (to see urllib3's retry at work)."""

    hits = 0

    def do_GET(self):  # noqa: N802
        type(self).hits += 1
        if type(self).hits == 1:
            self.send_response(503)
            self.end_headers()
            return
        body = b'{"id": 5, "name": "Flaky", "sequence": 2, "players": [], "created_at": "2026-01-01T00:00:00Z"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky(settings):
    _Flaky.hits = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.TEAMS_SERVICE_URL = f"http://127.0.0.1:{server.server_port}"
    yield _Flaky
    server.shutdown()
    server.server_close()


def test_a_503_is_retried(flaky, settings):
    settings.TEAMS_SERVICE_RETRIES = 2
    assert teams_client.fetch_team(5)["name"] == "Flaky"
    assert flaky.hits == 2


def test_a_503_without_retries_is_unavailable(flaky, settings):
    settings.TEAMS_SERVICE_RETRIES = 0
    with pytest.raises(TeamsServiceUnavailable, match="answered 503"):
        teams_client.fetch_team(5)


def test_the_token_is_sent(settings, teams_service):
    seen = {}

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen["auth"] = self.headers.get("Authorization")
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.TEAMS_SERVICE_URL = f"http://127.0.0.1:{server.server_port}"
        settings.TEAMS_SERVICE_TOKEN = "s3cret"
        with pytest.raises(TeamNotFound):
            teams_client.fetch_team(1)
        assert seen["auth"] == "Token s3cret"
    finally:
        server.shutdown()
        server.server_close()


# --- the saga end to end, over the bus (moto in-process) -------------------------------


def test_saga_end_to_end(bus, teams_service, auth_client):
    """Teams created over HTTP, the replica loaded by sync, the transfer requested, the bus
    drained: the teams service moves the player and the transfer completes."""
    reds = teams_service.create_team("Reds", [("Ann", "GK")])
    blues = teams_service.create_team("Blues")
    bus.drain()  # team.created events reach the transfers replica
    ann = next(p for p in teams_service.team(reds["id"])["players"] if p["name"] == "Ann")
    response = auth_client.post(
        "/api/transfers/",
        {"player_id": ann["id"], "from_team_id": reds["id"], "to_team_id": blues["id"], "fee": "1500000.00"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    transfer_id = response.json()["id"]
    bus.drain()
    body = auth_client.get(f"/api/transfers/{transfer_id}/").json()
    assert body["state"] == "completed" and body["completed_at"]
    assert squad(reds["id"]) == set() and squad(blues["id"]) == {"Ann"}
    assert [p["name"] for p in teams_service.team(blues["id"])["players"]] == ["Ann"]
    completed = OutboxMessage.objects.get(type="transfer.completed")
    assert completed.envelope["data"]["fee"] == "1500000.00"
    assert Transfer.objects.get().fee == Decimal("1500000.00")
