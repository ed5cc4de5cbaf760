"""Cross-service flows over the public APIs only, with the bus drained synchronously
(moto in-process): what a user sees across teams, transfers and fixtures."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # an end-to-end flow


def create_team(client, name, players=()):
    body = {"name": name, "players": [{"name": n, "position": p} for n, p in players]}
    response = client.post("/api/teams/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_transfer_completes_and_the_player_moves(bus, auth_client):
    reds = create_team(auth_client, "Reds", [("Ann Smith", "GK")])
    blues = create_team(auth_client, "Blues")
    bus.drain()
    ann = reds["players"][0]
    response = auth_client.post(
        "/api/transfers/",
        {"player_id": ann["id"], "from_team_id": reds["id"], "to_team_id": blues["id"], "fee": "250000"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["state"] == "requested"
    bus.drain()
    transfer = auth_client.get(f"/api/transfers/{response.json()['id']}/").json()
    assert transfer["state"] == "completed" and transfer["completed_at"]
    assert [p["name"] for p in auth_client.get(f"/api/teams/{blues['id']}/").json()["players"]] == ["Ann Smith"]
    assert auth_client.get(f"/api/teams/{reds['id']}/").json()["players"] == []
    # The transfers replica followed the move.
    replica = {t["id"]: t for t in auth_client.get("/api/transfers/teams/").json()["results"]}
    assert [p["name"] for p in replica[blues["id"]]["players"]] == ["Ann Smith"]
    assert replica[reds["id"]]["players"] == []


def test_transfer_is_rejected_with_the_teams_service_reason(bus, auth_client):
    """The player leaves the from-team after the request was accepted: teams refuses."""
    reds = create_team(auth_client, "Reds", [("Ann Smith", "GK")])
    blues = create_team(auth_client, "Blues")
    bus.drain()
    ann = reds["players"][0]
    response = auth_client.post(
        "/api/transfers/",
        {"player_id": ann["id"], "from_team_id": reds["id"], "to_team_id": blues["id"], "fee": "0"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert auth_client.delete(f"/api/teams/{reds['id']}/players/{ann['id']}/").status_code == 204
    bus.drain()
    transfer = auth_client.get(f"/api/transfers/{response.json()['id']}/").json()
    assert transfer["state"] == "rejected"
    assert transfer["reason"] == f"Player {ann['id']} is no longer in team {reds['id']}."


def test_a_season_from_teams_created_over_the_api_to_a_standings_table(bus, auth_client):
    ids = [create_team(auth_client, name)["id"] for name in ("Athletic", "Borough", "City", "Dynamo")]
    bus.drain()
    response = auth_client.post("/api/seasons/", {"name": "2026/27", "starts_on": "2026-08-01"}, format="json")
    assert response.status_code == 201, response.content
    season = response.json()
    assert sorted(season["team_ids"]) == sorted(ids)
    assert season["matchdays"] == 6 and season["fixture_count"] == 12
    fixtures = auth_client.get(f"/api/seasons/{season['id']}/fixtures/?matchday=1").json()["results"]
    assert len(fixtures) == 2
    first, second = fixtures
    assert auth_client.patch(f"/api/fixtures/{first['id']}/", {"home_goals": 2, "away_goals": 0}, format="json").status_code == 200
    assert auth_client.patch(f"/api/fixtures/{second['id']}/", {"home_goals": 1, "away_goals": 1}, format="json").status_code == 200
    # A team renamed after scheduling shows its new name.
    assert auth_client.patch(f"/api/teams/{first['home_team']['id']}/", {"name": "Athletic Club"}, format="json").status_code == 200
    bus.drain()
    table = auth_client.get(f"/api/seasons/{season['id']}/standings/").json()["standings"]
    top = table[0]
    assert (top["team_id"], top["points"], top["goal_difference"]) == (first["home_team"]["id"], 3, 2)
    names = {row["team_id"]: row["name"] for row in table}
    assert [row["points"] for row in table] == [3, 1, 1, 0]
    assert names[first["home_team"]["id"]] == "Athletic Club"
