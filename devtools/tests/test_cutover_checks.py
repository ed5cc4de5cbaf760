"""The cutover's checks (devtools/cutover/checks.py) pass on a settled system and fail on each kind of
breakage they exist to catch: a lost handling, an event handled in two databases or published
twice, an outbox row or a transfer stuck, a replica that differs, a 5xx or a wrong upstream.

The data is written through the services and the bus (moto in-process) into the test
database, committed (the checks read it over their own connections, like they read a
running stack's databases)."""

from __future__ import annotations

from datetime import date

import pytest
from django.db import connection

from devtools.cutover import checks
from devtools.testing import database_url

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def sql(statement: str, params: list | None = None) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])
        return cursor.rowcount


@pytest.fixture
def league(bus, settings):
    """Three teams, a completed transfer, a season: everything handled."""
    from fixtures import services as fixtures_services
    from teams import services as teams_services
    from transfers import services as transfers_services

    teams = [
        teams_services.team_create(
            name=f"Team {i}", players=[{"name": f"P{i}{j}", "position": "MID"} for j in range(3)]
        )
        for i in range(3)
    ]
    bus.drain()
    player = teams[0].players.first()
    transfer = transfers_services.transfer_request(
        player_id=player.id, from_team_id=teams[0].id, to_team_id=teams[1].id, fee="10.00"
    )
    fixtures_services.season_schedule(name="S", starts_on=date(2027, 1, 1), team_ids=[t.id for t in teams])
    bus.drain()
    return {"bus": bus, "teams": teams, "transfer": transfer.id}


@pytest.fixture
def monolith() -> checks.Placement:
    return checks.Placement(database_url())


def test_a_settled_monolith_passes(league, monolith):
    v = checks.settled(monolith, transfer_ids=[league["transfer"]], timeout=0)
    assert v.ok, v.describe()
    assert v.events >= 7 and v.expected >= 8  # 3 teams x 2 replicas, the saga, the season
    assert sql("SELECT 1 FROM transfers_transfer WHERE state = 'completed'") == 1


def test_a_missing_inbox_row_is_a_lost_event(league, monolith):
    assert sql("DELETE FROM events_inboxmessage WHERE id = (SELECT min(id) FROM events_inboxmessage)") == 1
    v = checks.settled(monolith, transfer_ids=[league["transfer"]], timeout=0)
    assert len(v.lost) == 1 and v.lost[0].startswith("LOST "), v.describe()
    assert not v.ok


def test_an_unpublished_outbox_row_is_stuck(league, monolith):
    from teams import services as teams_services

    teams_services.team_rename(team=league["teams"][2], name="Renamed")  # not relayed
    v = checks.settled(monolith, timeout=0)
    assert [p for p in v.stuck if "team.renamed" in p and "pending" in p], v.describe()
    league["bus"].drain()
    assert checks.settled(monolith, timeout=0).ok


def test_a_transfer_in_flight_or_missing_is_stuck(league, monolith):
    from transfers import services as transfers_services

    teams = league["teams"]
    player = teams[1].players.order_by("id").first()
    in_flight = transfers_services.transfer_request(
        player_id=player.id, from_team_id=teams[1].id, to_team_id=teams[2].id, fee="1.00"
    )
    league["bus"].relay()  # published, not yet handled by teams
    problems = checks.transfers_final(monolith, [league["transfer"], in_flight.id, 987654])
    assert problems == [f"transfer 987654 is missing from {monolith.monolith.rsplit('/', 1)[-1]}",
                        f"transfer {in_flight.id} is stuck in requested"]  # fmt: skip
    league["bus"].drain()
    assert checks.transfers_final(monolith, [league["transfer"], in_flight.id]) == []


@pytest.mark.parametrize(
    "breakage, expected",
    [
        ("UPDATE transfers_teamreplica SET name = 'Wrong' WHERE team_id = {t}", "transfers: team {t} is 'Wrong'"),
        ("UPDATE fixtures_teamreplica SET deleted_at = now() WHERE team_id = {t}", "fixtures: team {t} is"),
        ("DELETE FROM fixtures_teamreplica WHERE team_id = {t}", "fixtures: team {t} missing"),
        (
            "DELETE FROM transfers_playerreplica WHERE id = (SELECT min(p.id) FROM transfers_playerreplica p "
            "JOIN transfers_teamreplica r ON r.id = p.team_id WHERE r.team_id = {t} AND p.present)",
            "transfers: team {t} squad differs",
        ),
    ],
)
def test_a_replica_that_differs_from_teams(league, monolith, breakage, expected):
    t = league["teams"][2].id
    assert checks.replicas(monolith) == []
    assert sql(breakage.format(t=t)) == 1
    assert [p for p in checks.replicas(monolith) if p.startswith(expected.format(t=t))], checks.replicas(monolith)


@pytest.fixture
def moved(league, monolith):
    """A copy of the test database as the transfers service's own (what split_service's copy
    makes: the same rows, the same handled_at)."""
    import psycopg

    name = f"{connection.settings_dict['NAME']}_moved"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    connection.close()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{connection.settings_dict["NAME"]}"')
    url = monolith.monolith.rsplit("/", 1)[0] + f"/{name}"
    yield checks.Placement(monolith.monolith, {"transfers": url})
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def on(url: str, statement: str) -> int:
    import psycopg

    with psycopg.connect(checks.psycopg_url(url), autocommit=True) as conn:
        return conn.execute(statement).rowcount


TRANSFERS_ROW = "(SELECT min(id) FROM events_inboxmessage WHERE handler LIKE 'transfers:%')"


def test_a_moved_service_copied_exactly_passes(league, moved):
    v = checks.settled(moved, transfer_ids=[league["transfer"]], timeout=0)
    assert v.ok, v.describe()


def test_handled_again_on_the_new_side_is_twice(league, moved):
    on(moved.moved["transfers"], f"UPDATE events_inboxmessage SET handled_at = now() WHERE id = {TRANSFERS_ROW}")
    v = checks.settled(moved, transfer_ids=[league["transfer"]], timeout=0)
    assert len(v.twice) == 1 and "again at" in v.twice[0], v.describe()


def test_handled_in_the_monolith_only_is_twice_and_lost(league, moved):
    on(moved.moved["transfers"], f"DELETE FROM events_inboxmessage WHERE id = {TRANSFERS_ROW}")
    v = checks.settled(moved, transfer_ids=[league["transfer"]], timeout=0)
    assert len(v.twice) == 1 and "but not in" in v.twice[0], v.describe()
    assert len(v.lost) == 1, v.describe()


def test_an_event_published_from_both_databases_is_twice(league, moved):
    on(
        moved.moved["transfers"],
        "UPDATE events_outboxmessage SET sns_message_id = 'other' WHERE id = (SELECT min(id) FROM events_outboxmessage)",
    )
    v = checks.settled(moved, transfer_ids=[league["transfer"]], timeout=0)
    assert len(v.twice) == 1 and "published 2 times" in v.twice[0], v.describe()


def test_a_transfer_requested_but_not_copied_is_missing(league, moved):
    on(moved.moved["transfers"], f"DELETE FROM transfers_transfer WHERE id = {league['transfer']}")
    problems = checks.transfers_final(moved, [league["transfer"]])
    assert problems == [f"transfer {league['transfer']} is missing from {moved.moved['transfers'].rsplit('/', 1)[-1]}"]
