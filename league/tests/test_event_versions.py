"""team.created and team.renamed in two versions: v2 carries the team's short name, v1 (written
before the upgrade: in an outbox, a queue, a dead-letter queue, a replay) is read after it
with the short name derived from the name (events/catalogue.py). Both consumers read both,
on the real bus (moto in-process), through the real consumer."""

from __future__ import annotations

import json
from datetime import date

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import transaction

from events import antientropy, aws, operations, registry, topology
from events.consumer import Consumer
from events.models import OutboxMessage, OutboxState
from fixtures.models import TeamReplica as FixturesTeam
from teams import selectors as teams_selectors
from teams import services as teams
from teams.models import Team
from transfers import replica as transfers_replica
from transfers.models import TeamReplica as TransfersTeam


def as_v1(row: OutboxMessage) -> OutboxMessage:
    """``row`` (pending) rewritten to what the teams service wrote before short names
    existed: the same event with ``dataversion`` 1 and no ``short_name`` in its data."""
    row.refresh_from_db()
    envelope = dict(row.envelope)
    envelope["dataversion"] = "1"
    envelope["data"] = {k: v for k, v in envelope["data"].items() if k != "short_name"}
    OutboxMessage.objects.filter(pk=row.pk).update(envelope=envelope)
    row.refresh_from_db()
    return row


def latest(event_type: str) -> OutboxMessage:
    return OutboxMessage.objects.filter(type=event_type).latest("id")


def create_v1(name: str) -> int:
    """A team created by the teams service of before the upgrade: its team.created is v1."""
    with transaction.atomic():
        team = teams.team_create(name=name)
    as_v1(latest("team.created"))
    return team.id


def replicas(team_id: int) -> tuple[tuple[str, str], str]:
    """(fixtures' name and short name, transfers' name) of the team."""
    fixtures = FixturesTeam.objects.get(team_id=team_id)
    return (fixtures.name, fixtures.short_name), TransfersTeam.objects.get(team_id=team_id).name


def assert_nothing_failed(bus) -> None:
    for service in ("fixtures", "transfers"):
        stats = bus.consumed[service]
        assert (stats.failed, stats.dead_lettered) == (0, 0), (service, stats)


def test_v1_rows_from_before_the_upgrade_are_published_and_both_consumers_derive_the_short_name(bus):
    qpr = create_v1("Queens Park Rangers")
    madrid = create_v1("Rovers")
    with transaction.atomic():
        teams.team_rename(team=Team.objects.get(pk=madrid), name="Real Madrid")
    renamed = as_v1(latest("team.renamed"))
    assert renamed.envelope["dataversion"] == "1" and "short_name" not in renamed.envelope["data"]

    bus.drain()

    assert OutboxMessage.objects.exclude(state=OutboxState.PUBLISHED).count() == 0
    assert replicas(qpr) == (("Queens Park Rangers", "QPR"), "Queens Park Rangers")
    assert replicas(madrid) == (("Real Madrid", "RMA"), "Real Madrid")
    assert_nothing_failed(bus)


def test_v2_events_carry_the_short_name_the_teams_service_holds(bus):
    with transaction.atomic():
        reds = teams.team_create(name="Reds", short_name="rds")
    assert latest("team.created").envelope["dataversion"] == "2"
    bus.drain()
    assert replicas(reds.id) == (("Reds", "RDS"), "Reds")

    with transaction.atomic():  # the short name alone
        teams.team_rename(team=reds, short_name="LFC")
    event = latest("team.renamed").envelope
    assert (event["dataversion"], event["data"]) == (
        "2",
        {"id": reds.id, "name": "Reds", "old_name": "Reds", "short_name": "LFC"},
    )
    bus.drain()
    assert replicas(reds.id) == (("Reds", "LFC"), "Reds")
    assert_nothing_failed(bus)


def test_replaying_a_v1_event_after_the_upgrade_applies_it(bus, capsys):
    """The fixtures service lost the event (its queue purged, say) and replays it from the
    outbox, where the row still holds the v1 envelope the old producer wrote."""
    team_id = create_v1("Straße Rovers")
    bus.relay()
    aws.client("sqs").purge_queue(QueueUrl=aws.queue_url(aws.queue_name("fixtures")))
    bus.consume("fixtures")
    assert not FixturesTeam.objects.filter(team_id=team_id).exists()

    call_command("replay_events", "--service", "fixtures", "--type", "team.created")
    assert "1 event(s) replayed to leaguemanager-fixtures" in capsys.readouterr().out
    [message] = aws.client("sqs").receive_message(
        QueueUrl=aws.queue_url(aws.queue_name("fixtures")), MaxNumberOfMessages=10, VisibilityTimeout=0
    )["Messages"]
    assert json.loads(message["Body"])["dataversion"] == "1"

    bus.consume("fixtures")
    row = FixturesTeam.objects.get(team_id=team_id)
    assert (row.name, row.short_name) == ("Straße Rovers", "SRO")
    stats = bus.consumed["fixtures"]
    assert (stats.failed, stats.dead_lettered) == (0, 0)


def test_a_v1_event_redriven_from_the_dlq_after_the_upgrade_is_handled(bus, settings, monkeypatch):
    """A v1 event dead-lettered before the upgrade (its handler failed then) is redriven
    after it and read as v2."""
    settings.CONSUMER_MAX_RECEIVE_COUNT = 2
    settings.CONSUMER_BACKOFF_BASE_SECONDS = 0
    topology.ensure(["fixtures"])  # the queue's redrive policy with the count above
    team_id = create_v1("Whites")
    bus.relay()

    [handler] = registry.handlers(service="fixtures", event_type="team.created")

    def broken(event):
        raise RuntimeError("the handler of the old release failed")

    old_release = registry.Handler("fixtures", "team.created", broken)
    monkeypatch.setattr(registry, "_handlers", [old_release if h is handler else h for h in registry._handlers])
    for _ in range(4):
        Consumer("fixtures", wait_seconds=0, check_topology=False).poll(wait_seconds=0)
    dlq = aws.queue_url(aws.queue_name("fixtures", dlq=True))
    depth = aws.queue_attributes(dlq, "ApproximateNumberOfMessages")["ApproximateNumberOfMessages"]
    assert int(depth) == 1
    monkeypatch.undo()  # the upgrade: today's handler, today's catalogue

    assert operations.redrive_dlq("fixtures") == 1
    bus.consume("fixtures")
    row = FixturesTeam.objects.get(team_id=team_id)
    assert (row.name, row.short_name) == ("Whites", "WHI")
    assert bus.consumed["fixtures"].dead_lettered == 0


@pytest.mark.parametrize("dataversion", ["1", "2"])
def test_the_teams_export_carries_the_short_name_and_the_transfers_digest_still_matches(
    bus, dataversion, api_client, user
):
    """Transfers ignores the short name (tolerant reader); the export it loads carries it,
    and its replica's digest over teams equals the teams service's."""
    if dataversion == "1":
        team_id = create_v1("Greens")
    else:
        with transaction.atomic():
            team_id = teams.team_create(name="Greens", short_name="GRN").id
    bus.drain()
    user.user_permissions.add(*Permission.objects.filter(codename="export_team"))
    api_client.force_authenticate(user)
    exported = api_client.get("/api/teams/export/").json()["results"]
    assert [(t["id"], t["short_name"]) for t in exported] == [(team_id, "GRE" if dataversion == "1" else "GRN")]
    [owner] = teams_selectors.team_digest(size=antientropy.DEFAULT_BUCKET)
    assert transfers_replica.digest(after=owner.after, last=owner.last).same(owner)


def test_the_league_page_shows_the_short_names_the_events_brought(bus, client):
    """The fixtures replica keeps the short name of a v1 event (derived) and of a v2 event
    (chosen); the page's table and matchdays show it where space is short, the full name
    in its title."""
    from fixtures import services as fixtures

    rangers = create_v1("Queens Park Rangers")
    with transaction.atomic():
        reds = teams.team_create(name="Reds", short_name="LFC").id
    bus.drain()
    with transaction.atomic():
        season = fixtures.season_schedule(name="2026/27", starts_on=date(2026, 8, 1), team_ids=[rangers, reds])
    first = season.fixtures.order_by("matchday", "id").first()
    fixtures.fixture_record_result(fixture=first, home_goals=1, away_goals=0)

    html = client.get("/live/league").content.decode()

    table = html.split('id="standings"')[1].split("</section>")[0]
    last = html.split('id="last-matchday"')[1].split("</section>")[0]
    for part in (table, last):
        assert '<abbr class="short" title="Queens Park Rangers">QPR</abbr>' in part
        assert '<abbr class="short" title="Reds">LFC</abbr>' in part
