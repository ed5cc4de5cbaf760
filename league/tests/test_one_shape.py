"""One shape for one thing. Both team replicas list a team the same way
(``id`` is the team's id, as in the teams API); every "taken name" message has one wording;
the OpenAPI document marks public reads as public (no lock in Swagger UI) and writes and
the export as needing a token."""

from __future__ import annotations

import io

import pytest
import yaml
from django.core.management import call_command

from fixtures.factories import TeamReplicaFactory as FixturesTeamFactory
from transfers.factories import TeamReplicaFactory as TransfersTeamFactory

CORE = {"id", "name", "sequence", "deleted", "updated_at"}


@pytest.fixture(scope="module")
def schema() -> dict:
    out = io.StringIO()
    call_command("spectacular", stdout=out)
    return yaml.safe_load(out.getvalue())


@pytest.mark.django_db
def test_both_replicas_list_a_team_in_one_shape(api_client):
    FixturesTeamFactory(team_id=7, name="Ajax")
    TransfersTeamFactory(team_id=7, name="Ajax")
    [fixtures_team] = api_client.get("/api/fixtures/teams/").json()["results"]
    [transfers_team] = api_client.get("/api/transfers/teams/").json()["results"]
    for team in (fixtures_team, transfers_team):
        assert CORE <= set(team), team
        assert "team_id" not in team
        assert (team["id"], team["name"], team["deleted"]) == (7, "Ajax", False)


def test_both_replica_schemas_share_the_core_fields(schema):
    components = schema["components"]["schemas"]
    for name in ("FixturesTeamReplica", "TeamReplica"):
        assert CORE <= set(components[name]["properties"]), name
        assert "team_id" not in components[name]["properties"], name


@pytest.mark.django_db
def test_taken_names_have_one_wording(auth_client):
    FixturesTeamFactory.create_batch(2)
    assert auth_client.post("/api/teams/", {"name": "Reds"}, format="json").status_code == 201
    assert auth_client.post("/api/seasons/", {"name": "Cup", "starts_on": "2026-08-01"}, format="json").status_code == 201
    teams = auth_client.post("/api/teams/", {"name": "REDS"}, format="json").json()
    seasons = auth_client.post("/api/seasons/", {"name": "CUP", "starts_on": "2026-08-01"}, format="json").json()
    assert "A team named REDS already exists." in str(teams)
    assert "A season named CUP already exists." in str(seasons)


def test_public_reads_are_documented_without_auth(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if method == "get" and not path.startswith("/api/teams/export/"):
                assert "security" not in operation or operation["security"] in ([], [{}]), (path, operation["security"])


def test_writes_and_the_export_are_documented_with_auth(schema):
    for path in ("/api/teams/export/", "/api/teams/export/digest/"):
        export = schema["paths"][path]["get"]
        assert {"tokenAuth": []} in export["security"] and {} not in export["security"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if method in ("post", "patch", "put", "delete") and path.startswith("/api/") and "/auth/" not in path:
                assert {"tokenAuth": []} in operation["security"], (path, method)
                assert {} not in operation["security"], (path, method)
