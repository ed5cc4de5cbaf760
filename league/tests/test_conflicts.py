"""Requests the schema calls valid that the current state refuses answer 409 (a conflict the
client can resolve: a name taken, a full squad, a transfer in flight, an unknown team, a
result already recorded or not yet recorded), and requests that contradict themselves
whatever the state answer 422: never 400, which is for a request that does not match the
schema. Every write of teams, transfers and fixtures, as a problem document whose ``errors``
point at the field."""

from __future__ import annotations

import json
from datetime import date

import pytest

from devtools.problems import problem_fields
from fixtures.factories import ScheduledSeasonFactory
from fixtures.factories import TeamReplicaFactory as FixturesTeam
from teams import services as teams_services
from transfers.factories import PlayerReplicaFactory, TeamReplicaFactory, TransferFactory
from transfers.models import TransferState

pytestmark = pytest.mark.django_db


def refused(response, status: int, code: str) -> dict[str, list[str]]:
    """The problem's messages by field, after checking its status and codes."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = json.loads(response.content)
    assert body["code"] == code, body
    assert body["errors"] and {e["code"] for e in body["errors"]} <= {code, "invalid"}, body
    return problem_fields(response)


# --------------------------------------------------------------------------------------
# teams
# --------------------------------------------------------------------------------------
def test_a_team_name_taken_is_a_409(auth_client):
    teams_services.team_create(name="Ajax")
    fields = refused(auth_client.post("/api/teams/", {"name": "AJAX"}, format="json"), 409, "conflict")
    assert fields == {"name": ["A team named AJAX already exists."]}


def test_a_rename_to_a_taken_name_is_a_409(auth_client):
    teams_services.team_create(name="Ajax")
    psv = teams_services.team_create(name="PSV")
    fields = refused(auth_client.patch(f"/api/teams/{psv.id}/", {"name": "ajax"}, format="json"), 409, "conflict")
    assert list(fields) == ["name"]


def test_two_players_with_one_name_in_a_new_team_is_a_409(auth_client):
    body = {"name": "Ajax", "players": [{"name": "Ann", "position": "GK"}, {"name": "ANN", "position": "ST"}]}
    fields = refused(auth_client.post("/api/teams/", body, format="json"), 409, "conflict")
    assert list(fields) == ["players"]


def test_a_player_name_taken_in_the_squad_is_a_409(auth_client):
    team = teams_services.team_create(name="Ajax", players=[{"name": "Ann", "position": "GK"}])
    response = auth_client.post(f"/api/teams/{team.id}/players/", {"name": "ann", "position": "ST"}, format="json")
    assert refused(response, 409, "conflict") == {"name": ["Team Ajax already has a player named ann."]}


def test_a_full_squad_is_a_409(auth_client, settings):
    settings.SQUAD_LIMIT = 1
    team = teams_services.team_create(name="Ajax", players=[{"name": "Ann", "position": "GK"}])
    response = auth_client.post(f"/api/teams/{team.id}/players/", {"name": "Bob", "position": "ST"}, format="json")
    assert refused(response, 409, "conflict") == {"non_field_errors": ["Team Ajax has a full squad (1 players)."]}


def test_more_players_than_a_squad_holds_is_a_422(auth_client, settings):
    settings.SQUAD_LIMIT = 1
    body = {"name": "Ajax", "players": [{"name": "Ann", "position": "GK"}, {"name": "Bob", "position": "ST"}]}
    fields = refused(auth_client.post("/api/teams/", body, format="json"), 422, "unprocessable")
    assert fields == {"players": ["A squad has at most 1 players; got 2."]}


# --------------------------------------------------------------------------------------
# transfers
# --------------------------------------------------------------------------------------
TRANSFER = {"player_id": 11, "from_team_id": 1, "to_team_id": 2, "fee": "1500000.00"}


@pytest.fixture
def replica():
    reds = TeamReplicaFactory(team_id=1, name="Reds")
    blues = TeamReplicaFactory(team_id=2, name="Blues")
    PlayerReplicaFactory(team=reds, player_id=11, name="Ann", position="GK")
    TeamReplicaFactory(team_id=3, name="Gone", deleted=True)
    return reds, blues


def test_a_transfer_in_flight_is_a_409(auth_client, replica):
    assert auth_client.post("/api/transfers/", TRANSFER, format="json").status_code == 201
    fields = refused(auth_client.post("/api/transfers/", TRANSFER, format="json"), 409, "conflict")
    assert "already has a transfer in progress" in fields["player_id"][0]


def test_a_full_destination_squad_is_a_409(auth_client, replica, settings):
    settings.SQUAD_LIMIT = 1
    PlayerReplicaFactory(team=replica[1], player_id=21, name="Cas", position="ST")
    fields = refused(auth_client.post("/api/transfers/", TRANSFER, format="json"), 409, "conflict")
    assert list(fields) == ["to_team_id"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"to_team_id": 3}, "to_team_id"),  # deleted
        ({"player_id": 12}, "player_id"),  # not in the team
    ],
)
def test_a_team_or_player_the_state_lacks_is_a_409(auth_client, replica, change, field):
    fields = refused(auth_client.post("/api/transfers/", {**TRANSFER, **change}, format="json"), 409, "conflict")
    assert list(fields) == [field]


def test_a_closed_transfer_window_is_a_409(auth_client, replica, settings):
    settings.TRANSFER_WINDOW_CLOSES = date(2000, 1, 31)
    fields = refused(auth_client.post("/api/transfers/", TRANSFER, format="json"), 409, "conflict")
    assert fields == {"non_field_errors": ["The transfer window is closed: it closed on 2000-01-31."]}


def test_a_transfer_to_the_team_the_player_is_in_is_a_409(auth_client, replica):
    response = auth_client.post("/api/transfers/", {**TRANSFER, "to_team_id": 1}, format="json")
    assert refused(response, 409, "conflict") == {
        "to_team_id": ["The destination team must differ from the current team."]
    }


def test_cancelling_a_finished_transfer_is_a_409(auth_client, replica):
    transfer = TransferFactory(state=TransferState.COMPLETED)
    response = auth_client.post(f"/api/transfers/{transfer.pk}/cancel/", {}, format="json")
    assert response.status_code == 409
    assert json.loads(response.content)["code"] == "conflict"


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------
@pytest.fixture
def league_teams():
    for team_id, name in ((1, "Reds"), (2, "Blues")):
        FixturesTeam(team_id=team_id, name=name)
    FixturesTeam(team_id=3, name="Gone", deleted=True)


def test_a_season_name_taken_is_a_409(auth_client, league_teams):
    ScheduledSeasonFactory(name="Taken", team_ids=[1, 2])
    response = auth_client.post("/api/seasons/", {"name": "taken", "starts_on": "2026-08-01"}, format="json")
    assert list(refused(response, 409, "conflict")) == ["name"]


@pytest.mark.parametrize("team_ids", [[1, 99], [1, 3]])
def test_unknown_or_deleted_teams_in_a_season_are_a_409(auth_client, league_teams, team_ids):
    body = {"name": "S", "starts_on": "2026-08-01", "team_ids": team_ids}
    assert list(refused(auth_client.post("/api/seasons/", body, format="json"), 409, "conflict")) == ["team_ids"]


def test_a_season_without_two_known_teams_is_a_409(auth_client):
    response = auth_client.post("/api/seasons/", {"name": "S", "starts_on": "2026-08-01"}, format="json")
    assert list(refused(response, 409, "conflict")) == ["team_ids"]


def test_a_season_that_would_end_after_9999_is_a_422(auth_client, league_teams):
    body = {"name": "S", "starts_on": "9999-12-30", "team_ids": [1, 2]}
    assert list(refused(auth_client.post("/api/seasons/", body, format="json"), 422, "unprocessable")) == ["starts_on"]


@pytest.fixture
def fixture_url(league_teams):
    return f"/api/fixtures/{ScheduledSeasonFactory(team_ids=[1, 2]).fixtures.first().id}/"


def test_changing_a_result_without_correction_is_a_409(auth_client, fixture_url):
    assert auth_client.patch(fixture_url, {"home_goals": 2, "away_goals": 1}, format="json").status_code == 200
    response = auth_client.patch(fixture_url, {"home_goals": 0, "away_goals": 1}, format="json")
    assert list(refused(response, 409, "conflict")) == ["correction"]


def test_correcting_a_result_not_recorded_yet_is_a_409(auth_client, fixture_url):
    body = {"home_goals": 1, "away_goals": 0, "correction": True}
    assert list(refused(auth_client.patch(fixture_url, body, format="json"), 409, "conflict")) == ["correction"]


def test_one_goal_count_for_a_fixture_without_a_result_is_a_409(auth_client, fixture_url):
    response = auth_client.patch(fixture_url, {"home_goals": 1}, format="json")
    assert list(refused(response, 409, "conflict")) == ["away_goals"]
