"""The replica heals itself (transfers/replica.py, "Healing"): a gap or an event about state
it lacks marks the team for a fetch; a periodic reconciliation with the teams service's
digest repairs what no later event would show. Against the real teams API over HTTP
(``live_server``) and the bus on moto."""

from __future__ import annotations

import json
import time

import pytest
from django.db import transaction
from prometheus_client import REGISTRY

from events import aws
from events.models import OutboxMessage
from league.celery import _schedule, app
from transfers import handlers, services, tasks, teams_client
from transfers.models import PlayerReplica, ReplicaRepair, TeamReplica

from .conftest import make_event

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]  # an end-to-end flow


def squad(team_id: int) -> set[str]:
    return set(PlayerReplica.objects.filter(team__team_id=team_id, present=True).values_list("name", flat=True))


def repairs(cause: str) -> float:
    return REGISTRY.get_sample_value("league_replica_repairs_total", {"service": "transfers", "cause": cause}) or 0.0


@pytest.fixture
def fetches(monkeypatch):
    """The GETs teams_client sends (the real call still happens)."""
    calls: list[str] = []
    real = teams_client._get

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(teams_client, "_get", counting)
    return calls


def drop(service: str, event_type: str) -> None:
    """Take every message of ``event_type`` off ``service``'s queue unhandled: what a message
    dead-lettered (or lost) looks like to the replica."""
    sqs = aws.client("sqs")
    url = aws.queue_url(aws.queue_name(service))
    dropped = 0
    for _ in range(10):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            break
        for m in got:
            if json.loads(m["Body"])["type"] == event_type:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                dropped += 1
            else:
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    assert dropped, f"no {event_type} on the {service} queue"


def request_and_drop_the_move(bus, teams_service, auth_client) -> tuple[dict, dict, dict]:
    """Reds (Ann) and Blues over HTTP, the replica loaded from the bus; a transfer of Ann that
    teams carries out, whose ``player.transferred`` never reaches transfers."""
    reds = teams_service.create_team("Reds", [("Ann", "GK"), ("Bob", "ST")])
    blues = teams_service.create_team("Blues")
    bus.drain()
    ann = next(p for p in teams_service.team(reds["id"])["players"] if p["name"] == "Ann")
    response = auth_client.post(
        "/api/transfers/",
        {"player_id": ann["id"], "from_team_id": reds["id"], "to_team_id": blues["id"], "fee": "10.00"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    bus.relay()
    bus.consume("teams")  # teams moves Ann
    bus.relay()
    drop("transfers", "player.transferred")
    assert {p["name"] for p in teams_service.team(blues["id"])["players"]} == {"Ann"}
    assert squad(reds["id"]) == {"Ann", "Bob"} and squad(blues["id"]) == set()  # the drift
    return reds, blues, ann


def run_beat_entry(name: str, settings, *, until, budget: float) -> float:
    """Run the beat entry ``name`` of the project's Celery app on its own schedule (its task,
    every ``schedule`` seconds, in this process) until ``until()`` holds; returns the seconds
    it took, or fails after ``budget`` seconds."""
    assert tasks.reconcile_teams.name in app.tasks  # registered as the worker registers it
    _schedule(app)  # the schedule as the settings of this test make it
    entry = app.conf.beat_schedule[name]
    task, period = app.tasks[entry["task"]], entry["schedule"].total_seconds()
    started = time.monotonic()
    next_run = started + period  # beat's first run of an interval entry is one period in
    while time.monotonic() - started < budget:
        if time.monotonic() >= next_run:
            task.apply()
            next_run += period
            if until():
                return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"the beat entry {name} did not repair the replica within {budget} s")


def test_a_dropped_player_transferred_is_repaired_within_one_reconciliation_period(
    bus, teams_service, auth_client, settings
):
    settings.TEAMS_RECONCILE_SECONDS = 2.0
    reds, blues, _ = request_and_drop_the_move(bus, teams_service, auth_client)
    before = repairs("reconciliation")

    took = run_beat_entry(
        "reconcile-teams",
        settings,
        until=lambda: squad(reds["id"]) == {"Bob"} and squad(blues["id"]) == {"Ann"},
        budget=2 * settings.TEAMS_RECONCILE_SECONDS,
    )

    assert took < settings.TEAMS_RECONCILE_SECONDS + 1.0  # the first run after one period repaired it
    found = ReplicaRepair.objects.filter(cause="reconciliation").order_by("team_id")
    assert [(r.team_id, r.action, r.players_before, r.players_after) for r in found] == [
        (reds["id"], "updated", 2, 1),
        (blues["id"], "updated", 0, 1),
    ]
    for r in found:
        assert r.sequence_after == teams_service.team(r.team_id)["sequence"] > r.sequence_before
    assert repairs("reconciliation") == before + 2
    assert TeamReplica.objects.filter(heal_wanted_at__isnull=False).count() == 0


def test_reconciliation_reads_only_the_buckets_that_differ(bus, teams_service, auth_client, settings, fetches):
    settings.TEAMS_RECONCILE_BUCKET = 2
    extra = [teams_service.create_team(f"Team {i}") for i in range(3)]
    reds, blues, _ = request_and_drop_the_move(bus, teams_service, auth_client)
    ids = sorted([t["id"] for t in extra] + [reds["id"], blues["id"]])  # 5 teams: buckets of 2, 2, 1
    fetches.clear()

    result = services.teams_reconcile()

    assert result.buckets == 3
    wrong = {ids.index(reds["id"]) // 2, ids.index(blues["id"]) // 2}
    assert result.differing == len(wrong)
    assert fetches[0] == "/api/teams/export/digest/?bucket=2"
    assert len(fetches) == 1 + len(wrong) and all("id_after=" in f for f in fetches[1:])
    assert squad(reds["id"]) == {"Bob"} and squad(blues["id"]) == {"Ann"}

    fetches.clear()
    again = services.teams_reconcile()
    assert (again.differing, again.repairs, fetches) == (0, [], ["/api/teams/export/digest/?bucket=2"])


def test_reconciliation_removes_a_team_whose_deletion_was_lost(bus, teams_service, settings):
    reds = teams_service.create_team("Reds", [("Ann", "GK")])
    bus.drain()
    TeamReplica.objects.filter(team_id=reds["id"]).update(
        created_at=TeamReplica.objects.get().created_at.replace(year=2000)
    )
    teams_service.delete_team(reds["id"])
    bus.relay()
    drop("transfers", "team.deleted")

    result = services.teams_reconcile()

    assert [(r.team_id, r.action) for r in result.repairs] == [(reds["id"], "deleted")]
    assert TeamReplica.objects.get(team_id=reds["id"]).deleted


def test_a_gap_marks_the_team_and_the_heal_fetches_it(bus, teams_service, auth_client, settings):
    """Ann's move was dropped; the next event about Reds (a player added) jumps Reds' sequence:
    the replica marks Reds, and the heal (beat) fetches it and repairs the squad."""
    reds, _, _ = request_and_drop_the_move(bus, teams_service, auth_client)
    held = TeamReplica.objects.get(team_id=reds["id"]).sequence
    teams_service.add_player(reds["id"], "Cid")
    bus.drain()

    team = TeamReplica.objects.get(team_id=reds["id"])
    assert team.heal_wanted_at is not None and "gap" in team.heal_cause
    assert f"after {held}" in team.heal_cause
    assert squad(reds["id"]) == {"Ann", "Bob", "Cid"}  # still wrong until the fetch
    before = repairs("gap")

    settings.TEAMS_HEAL_INTERVAL_SECONDS = 0.5
    settings.TEAMS_HEAL_GRACE_SECONDS = 1.0
    run_beat_entry("heal-replica", settings, until=lambda: squad(reds["id"]) == {"Bob", "Cid"}, budget=4)

    team.refresh_from_db()
    assert team.heal_wanted_at is None and team.sequence == teams_service.team(reds["id"])["sequence"]
    (repair,) = ReplicaRepair.objects.all()
    assert (repair.team_id, repair.cause, repair.action, repair.players_before, repair.players_after) == (
        reds["id"],
        "gap",
        "updated",
        3,
        2,
    )
    assert repairs("gap") == before + 1


def test_an_event_arriving_late_closes_its_gap_without_a_fetch(teams_service, fetches, settings):
    """Out of order, not lost: #S+2 marks the team waiting for #S+1; #S+1 arriving clears it."""
    reds = teams_service.create_team("Reds", [("Ann", "GK")])
    services.teams_sync()
    s = teams_service.team(reds["id"])["sequence"]
    first = make_event(
        "player.added",
        {"id": 901, "team_id": reds["id"], "name": "Bob", "position": "ST"},
        sequence=s + 2,
        subject=reds["id"],
    )
    late = make_event(
        "player.added",
        {"id": 900, "team_id": reds["id"], "name": "Cid", "position": "GK"},
        sequence=s + 1,
        subject=reds["id"],
    )
    with transaction.atomic():
        handlers.on_player_added(first)
    team = TeamReplica.objects.get(team_id=reds["id"])
    assert team.heal_wanted_at is not None and team.heal_missing == [s + 1]
    with transaction.atomic():
        handlers.on_player_added(late)
    team.refresh_from_db()
    assert (team.heal_wanted_at, team.heal_missing, team.heal_cause) == (None, [], "")
    fetches.clear()
    settings.TEAMS_HEAL_GRACE_SECONDS = 0
    assert services.teams_heal() == [] and fetches == []


def test_events_in_order_mark_nothing(bus, teams_service):
    reds = teams_service.create_team("Reds", [("Ann", "GK")])
    teams_service.add_player(reds["id"], "Bob")
    teams_service.add_player(reds["id"], "Cid")
    bus.drain()
    assert squad(reds["id"]) == {"Ann", "Bob", "Cid"}
    assert not TeamReplica.objects.filter(heal_wanted_at__isnull=False).exists()


def test_an_event_about_a_player_the_replica_lacks_marks_the_team(teams_service, fetches, settings):
    settings.TEAMS_HEAL_GRACE_SECONDS = 0
    reds = teams_service.create_team("Reds", [("Ann", "GK")])
    services.teams_sync()
    team = teams_service.team(reds["id"])
    ghost = make_event(
        "player.removed",
        {"id": 999, "team_id": reds["id"], "name": "Zed"},
        sequence=team["sequence"] + 1,
        subject=reds["id"],
    )
    with transaction.atomic():
        handlers.on_player_removed(ghost)
    marked = TeamReplica.objects.get(team_id=reds["id"])
    assert marked.heal_wanted_at is not None and "player 999 is not in this team" in marked.heal_cause

    fetches.clear()
    services.teams_heal()  # the teams service has Reds at an older sequence: nothing to repair
    assert fetches == [f"/api/teams/{reds['id']}/"]

    marked.refresh_from_db()
    assert marked.heal_wanted_at is not None  # the replica has seen newer than the snapshot: kept
    assert not ReplicaRepair.objects.exists()


def test_heal_with_the_teams_service_down_keeps_the_mark(teams_down, settings, fetches):
    settings.TEAMS_HEAL_GRACE_SECONDS = 0
    TeamReplica.objects.create(team_id=7, name="Reds", sequence=3, name_sequence=1, heal_cause="gap")
    TeamReplica.objects.filter(team_id=7).update(heal_wanted_at=TeamReplica.objects.get().created_at)

    assert tasks.heal_replica() == 0 and tasks.reconcile_teams() == 0  # logged, not raised

    assert fetches == ["/api/teams/7/", "/api/teams/export/digest/?bucket=500"]  # both were tried
    assert TeamReplica.objects.get(team_id=7).heal_wanted_at is not None


def test_the_admin_lists_the_repairs(bus, teams_service, auth_client, admin_client):
    reds, blues, _ = request_and_drop_the_move(bus, teams_service, auth_client)
    services.teams_reconcile()
    page = admin_client.get("/admin/transfers/replicarepair/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "periodic reconciliation" in text and str(reds["id"]) in text and str(blues["id"]) in text


def test_the_digest_needs_the_export_permission_and_a_good_bucket(teams_service, client):
    import requests

    url = f"{teams_service.url}/api/teams/export/digest/"
    assert requests.get(url, timeout=10).status_code in (401, 403)
    from django.conf import settings

    headers = {"Authorization": f"Token {settings.TEAMS_SERVICE_TOKEN}"}
    bad = requests.get(url + "?bucket=0", headers=headers, timeout=10)
    assert bad.status_code == 400 and "bucket" in json.dumps(bad.json())
    bad = requests.get(url + "?content=everything", headers=headers, timeout=10)
    assert bad.status_code == 400 and "content" in json.dumps(bad.json())
    export = f"{teams_service.url}/api/teams/export/"
    bad = requests.get(export + "?id_after=abc", headers=headers, timeout=10)
    assert bad.status_code == 400 and "id_after" in json.dumps(bad.json())
    ok = requests.get(url, headers=headers, timeout=10).json()
    assert ok == {
        "bucket": 500,
        "content": "full",
        "buckets": [{"after": 0, "last": None, "count": 0, "max_sequence": 0, "hash": ok["buckets"][0]["hash"]}],
    }


def test_no_outbox_row_is_written_by_healing(bus, teams_service, auth_client):
    request_and_drop_the_move(bus, teams_service, auth_client)
    published = OutboxMessage.objects.count()
    services.teams_reconcile()
    assert OutboxMessage.objects.count() == published


def test_no_healing_call_while_the_service_is_being_moved(teams_service, fetches, settings):
    """During split_service's pause the worker's relay must drain the outbox: the healing waits."""
    from events import gate

    settings.TEAMS_HEAL_GRACE_SECONDS = 0
    reds = teams_service.create_team("Reds")
    TeamReplica.objects.create(team_id=reds["id"], name="Reds", sequence=1, name_sequence=1, heal_cause="gap")
    TeamReplica.objects.filter(team_id=reds["id"]).update(heal_wanted_at=TeamReplica.objects.get().created_at)
    gate.pause("transfers")
    try:
        assert services.teams_heal() == [] and services.teams_reconcile().buckets == 0
        assert fetches == []
    finally:
        gate.open_("transfers")
    assert len(services.teams_heal()) == 0 and fetches == [f"/api/teams/{reds['id']}/"]  # open: fetched
