"""The transfers REST API: reads, the request, every body that does not match the schema as a
400, and a request the current state refuses as a 409."""

from __future__ import annotations

import pytest

from devtools.problems import problem_fields
from transfers.factories import PlayerReplicaFactory, TeamReplicaFactory, TransferFactory
from transfers.models import Transfer, TransferState

pytestmark = pytest.mark.django_db

URL = "/api/transfers/"
GOOD = {"player_id": 11, "from_team_id": 1, "to_team_id": 2, "fee": "1500000.00"}


@pytest.fixture
def teams():
    reds = TeamReplicaFactory(team_id=1, name="Reds", sequence=3)
    TeamReplicaFactory(team_id=2, name="Blues")
    PlayerReplicaFactory(team=reds, player_id=11, name="Ann", position="GK")
    PlayerReplicaFactory(team=reds, player_id=12, name="Bob", position="ST", present=False)
    TeamReplicaFactory(team_id=3, name="Gone", deleted=True)
    TeamReplicaFactory(team_id=4, name="", name_sequence=0)  # a stub
    return reds


def test_request_a_transfer(auth_client, teams):
    response = auth_client.post(URL, GOOD, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["state"] == "requested"
    assert body["player_name"] == "Ann" and body["fee"] == "1500000.00"
    assert body["completed_at"] is None and body["reason"] == ""
    detail = auth_client.get(f"{URL}{body['id']}/").json()
    assert detail == body


def test_anonymous_reads_but_cannot_write(api_client, teams):
    assert api_client.post(URL, GOOD, format="json").status_code in (401, 403)
    assert api_client.get(URL).status_code == 200
    assert not Transfer.objects.exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "player_id"),
        ({"player_id": None}, "player_id"),
        ({"player_id": "eleven"}, "player_id"),
        ({"player_id": 1.5}, "player_id"),
        ({"player_id": 0}, "player_id"),
        ({"from_team_id": "x"}, "from_team_id"),
        ({"to_team_id": [2]}, "to_team_id"),
        ({"fee": "-1.00"}, "fee"),
        ({"fee": "abc"}, "fee"),
        ({"fee": "1.001"}, "fee"),
        ({"fee": "1e40"}, "fee"),
    ],
)
def test_bad_input_is_a_400_with_a_field_message(auth_client, teams, payload, field):
    data = {**GOOD, **payload} if payload else {}
    response = auth_client.post(URL, data, format="json")
    assert response.status_code == 400, response.content
    body = problem_fields(response)
    assert field in body and all(isinstance(m, str) and m for m in body[field])
    assert not Transfer.objects.exists()


@pytest.mark.parametrize(
    ("payload", "field", "status"),
    [
        ({"to_team_id": 1}, "to_team_id", 409),  # the team he is in
        ({"to_team_id": 3}, "to_team_id", 409),  # deleted team
        ({"player_id": 12}, "player_id", 409),  # left the team
        ({"player_id": 99}, "player_id", 409),  # never in the team
    ],
)
def test_a_rule_refuses_a_well_formed_request(auth_client, teams, payload, field, status):
    response = auth_client.post(URL, {**GOOD, **payload}, format="json")
    assert response.status_code == status, response.content
    body = problem_fields(response)
    assert field in body and all(isinstance(m, str) and m for m in body[field])
    assert not Transfer.objects.exists()


def test_missing_fields_are_all_named(auth_client):
    response = auth_client.post(URL, {}, format="json")
    assert response.status_code == 400
    assert set(problem_fields(response)) == {"player_id", "from_team_id", "to_team_id", "fee"}


def test_not_json(auth_client):
    response = auth_client.post(URL, "{nope", content_type="application/json")
    assert response.status_code == 400


def test_duplicate_in_flight_is_a_conflict(auth_client, teams):
    assert auth_client.post(URL, GOOD, format="json").status_code == 201
    response = auth_client.post(URL, GOOD, format="json")
    assert response.status_code == 409
    assert "already has a transfer in progress" in problem_fields(response)["player_id"][0]


def test_outside_the_window_is_a_conflict(auth_client, teams, settings):
    from datetime import date

    settings.TRANSFER_WINDOW_CLOSES = date(2000, 1, 31)
    response = auth_client.post(URL, GOOD, format="json")
    assert response.status_code == 409
    assert problem_fields(response) == {"non_field_errors": ["The transfer window is closed: it closed on 2000-01-31."]}


def test_list_filters_and_detail(api_client):
    a = TransferFactory(player_id=1, from_team_id=1, to_team_id=2)
    b = TransferFactory(player_id=2, from_team_id=3, to_team_id=1, state=TransferState.COMPLETED)
    c = TransferFactory(player_id=3, from_team_id=3, to_team_id=4, state=TransferState.REJECTED, reason="full")

    def ids(query=""):
        response = api_client.get(URL + query)
        assert response.status_code == 200
        return {t["id"] for t in response.json()["results"]}

    assert ids() == {a.pk, b.pk, c.pk}
    assert ids("?state=completed") == {b.pk}
    assert ids("?team_id=1") == {a.pk, b.pk}
    assert ids("?player_id=3") == {c.pk}
    assert api_client.get(URL + "?state=lost").status_code == 400
    assert api_client.get(URL + "?team_id=x").status_code == 400
    assert api_client.get(f"{URL}{c.pk}/").json()["reason"] == "full"
    assert api_client.get(f"{URL}999999/").status_code == 404
    assert api_client.get(f"{URL}abc/").status_code == 404


def test_replica_list_is_not_a_transfer_id(api_client, teams):
    response = api_client.get("/api/transfers/teams/")
    assert response.status_code == 200
    teams_ = response.json()["results"]
    assert [(t["id"], t["name"], t["sequence"]) for t in teams_] == [(2, "Blues", 1), (1, "Reds", 3)]
    assert teams_[1]["players"] == [{"id": 11, "name": "Ann", "position": "GK"}]


def test_replica_list_is_read_only(auth_client):
    assert auth_client.post("/api/transfers/teams/", {"name": "x"}, format="json").status_code == 405
