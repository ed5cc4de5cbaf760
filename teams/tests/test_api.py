"""The teams REST API: shapes the transfers service depends on, and every bad input as a
400 with a field message (never a 500)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from devtools.problems import problem_fields
from events.models import OutboxMessage
from teams import services
from teams.factories import PlayerFactory, TeamFactory
from teams.models import Player, Team

pytestmark = pytest.mark.django_db

TEAMS = "/api/teams/"


def team_url(team_id) -> str:
    return f"/api/teams/{team_id}/"


def players_url(team_id) -> str:
    return f"/api/teams/{team_id}/players/"


def test_urls_are_named():
    assert reverse("teams:team-list") == TEAMS
    assert reverse("teams:team-export") == "/api/teams/export/"
    assert reverse("teams:player-detail", args=[1, 2]) == "/api/teams/1/players/2/"


# --- create -----------------------------------------------------------------------------


def test_create_team(auth_client):
    response = auth_client.post(TEAMS, {"name": " Lynwood Rovers "}, format="json")

    assert response.status_code == 201, response.json()
    team = Team.objects.get()
    body = response.json()
    assert body == {
        "id": team.id,
        "name": "Lynwood Rovers",
        "short_name": "LRO",
        "sequence": 1,
        "players": [],
        "created_at": body["created_at"],
    }
    assert OutboxMessage.objects.get().type == "team.created"


def test_create_team_with_a_short_name_and_change_it_by_patch(auth_client):
    response = auth_client.post(TEAMS, {"name": "Reds", "short_name": "lfc"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["short_name"] == "LFC"
    team_id = response.json()["id"]

    patched = auth_client.patch(team_url(team_id), {"short_name": "RDS"}, format="json")

    assert patched.status_code == 200, patched.json()
    assert (patched.json()["name"], patched.json()["short_name"]) == ("Reds", "RDS")
    assert OutboxMessage.objects.filter(type="team.renamed").get().envelope["data"]["short_name"] == "RDS"


@pytest.mark.parametrize("short_name", ["R", "TOOLONG", "R-D", 12, ""])
def test_a_bad_short_name_is_a_400_on_short_name(auth_client, short_name):
    response = auth_client.post(TEAMS, {"name": "Reds", "short_name": short_name}, format="json")

    assert response.status_code == 400
    assert [e["pointer"] for e in response.json()["errors"]] == ["/short_name"]
    assert not Team.objects.exists()


def test_create_team_with_players(auth_client):
    response = auth_client.post(
        TEAMS, {"name": "Marston", "players": [{"name": "Ann", "position": "GK"}]}, format="json"
    )

    assert response.status_code == 201, response.json()
    [player] = response.json()["players"]
    assert player == {"id": Player.objects.get().id, "name": "Ann", "position": "GK"}


@pytest.mark.parametrize("name", ["", "   "])
def test_create_team_with_an_empty_name(auth_client, name):
    response = auth_client.post(TEAMS, {"name": name}, format="json")

    assert response.status_code == 400
    assert problem_fields(response) == {"name": ["Team name cannot be empty."]}


def test_create_team_with_a_duplicate_name(auth_client):
    TeamFactory(name="Northgate")

    response = auth_client.post(TEAMS, {"name": "northgate"}, format="json")

    assert response.status_code == 409
    assert problem_fields(response) == {"name": ["A team named northgate already exists."]}


def test_create_team_with_a_too_long_name(auth_client):
    response = auth_client.post(TEAMS, {"name": "x" * 101}, format="json")

    assert response.status_code == 400
    assert problem_fields(response) == {"name": ["Team name has 101 characters; at most 100 are allowed."]}


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"name": ["This field is required."]}),
        ({"name": None}, {"name": ["This field may not be null."]}),
        ({"name": 42}, {"name": ["Not a valid string."]}),
        ({"name": ["A"]}, {"name": ["Not a valid string."]}),
        (
            {"name": "A", "players": "none"},
            {"players": ['Expected a list of items but got type "str".']},
        ),
        (
            {"name": "A", "players": [{"name": "Ann", "position": "GOALIE"}]},
            {"players/0/position": ["Position must be one of GK, DEF, MID, ST."]},
        ),
    ],
)
def test_create_team_with_wrong_types(auth_client, body, errors):
    response = auth_client.post(TEAMS, body, format="json")

    assert response.status_code == 400
    assert problem_fields(response) == errors
    assert not Team.objects.exists()


@pytest.mark.parametrize("body", ['{"name": ', "[1, 2]", '"Arsenal"', "null"])
def test_create_team_with_malformed_json(auth_client, body):
    response = auth_client.post(TEAMS, body, content_type="application/json")

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"


def test_create_team_with_form_data(auth_client):
    response = auth_client.post(TEAMS, {"name": "Oakham"})

    assert response.status_code == 201


def test_create_team_as_an_unsupported_media_type(auth_client):
    response = auth_client.post(TEAMS, "name=Oakham", content_type="text/plain")

    assert response.status_code == 415


# --- read -------------------------------------------------------------------------------


def test_list_teams_is_paginated_and_anonymous(api_client):
    TeamFactory.create_batch(3)

    body = api_client.get(TEAMS, {"limit": 2}).json()

    assert body["count"] == 3
    assert len(body["results"]) == 2
    assert set(body["results"][0]) == {"id", "name", "short_name", "sequence", "players", "created_at"}


def test_get_team(api_client):
    team = services.team_create(name="Pemberton", players=[{"name": "Ann", "position": "GK"}])
    services.player_add(team=team, name="Bo", position="ST")

    body = api_client.get(team_url(team.id)).json()

    ann, bo = team.players.order_by("id")
    assert body == {
        "id": team.id,
        "name": "Pemberton",
        "short_name": "PEM",
        "sequence": 2,
        "players": [
            {"id": ann.id, "name": "Ann", "position": "GK"},
            {"id": bo.id, "name": "Bo", "position": "ST"},
        ],
        "created_at": body["created_at"],
    }


def test_team_without_events_has_sequence_zero(api_client):
    team = TeamFactory()

    assert api_client.get(team_url(team.id)).json()["sequence"] == 0


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_unknown_team_is_404(auth_client, method):
    response = getattr(auth_client, method)(team_url(999999), {"name": "X"}, format="json")

    assert response.status_code == 404
    assert problem_fields(response) == {"detail": "Team 999999 does not exist."}


@pytest.mark.parametrize("team_id", ["abc", "99999999999999999999999"])
def test_odd_team_ids_are_404(api_client, team_id):
    assert api_client.get(f"/api/teams/{team_id}/").status_code == 404


@pytest.fixture
def export_client(api_client):
    """A client with the token of a service account (teams.export_team)."""
    from kernel import roles
    from league.management.commands.service_account import ensure_service_account

    roles.ensure_roles()
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {ensure_service_account('transfers-service').key}")
    return api_client


def test_export(export_client):
    a = services.team_create(name="Queensferry", players=[{"name": "Ann", "position": "GK"}])
    services.team_rename(team=a, name="Queensferry Albion")
    b = TeamFactory(name="Redhill")
    PlayerFactory(team=b, name="Bo", position="DEF")
    TeamFactory.create_batch(60)

    body = export_client.get("/api/teams/export/").json()

    assert list(body) == ["next", "previous", "results"]
    assert len(body["results"]) == 62 and body["next"] is None
    ann, bo = Player.objects.get(name="Ann"), Player.objects.get(name="Bo")
    assert body["results"][:2] == [
        {
            "id": a.id,
            "name": "Queensferry Albion",
            "short_name": "QAL",
            "sequence": 2,
            "players": [{"id": ann.id, "name": "Ann", "position": "GK"}],
        },
        {
            "id": b.id,
            "name": "Redhill",
            "short_name": "RED",
            "sequence": 0,
            "players": [{"id": bo.id, "name": "Bo", "position": "DEF"}],
        },
    ]


def test_export_query_count(export_client, django_assert_num_queries):
    for i in range(5):
        PlayerFactory(team__name=f"T{i}")

    # The token (user, then permissions), teams with their sequences, then all players.
    with django_assert_num_queries(5):
        export_client.get("/api/teams/export/")


def test_export_is_paginated_by_a_cursor_the_client_follows(export_client, django_assert_max_num_queries):
    """The export scales to large leagues: pages by id, each read with a
    bounded number of queries, every team exactly once."""
    ids = [t.id for t in TeamFactory.create_batch(7)]
    seen, url, pages = [], "/api/teams/export/?limit=3", 0
    while url:
        with django_assert_max_num_queries(5):
            body = export_client.get(url).json()
        assert len(body["results"]) <= 3
        seen += [t["id"] for t in body["results"]]
        url, pages = body["next"], pages + 1
    assert seen == ids and pages == 3


def test_export_with_a_cursor_it_did_not_issue_is_a_404(export_client):
    """Any string is a cursor by the schema; one the export did not issue names no page."""
    response = export_client.get("/api/teams/export/?cursor=not-a-cursor")
    assert response.status_code == 404
    assert response.json()["detail"] == "No page at this cursor: follow the `next` link of the previous page."


@pytest.mark.parametrize(
    "position", ["abc", "1e3", "\x01", "-1", "", " 7", "9223372036854775808", "1" * 40, "٣"]
)
def test_export_with_a_cursor_whose_position_is_not_a_team_id_is_a_404(export_client, position):
    """A cursor that decodes but does not hold a team id (``p=abc``) names no page either."""
    import base64
    from urllib.parse import quote, urlencode

    TeamFactory.create_batch(2)
    cursor = base64.b64encode(urlencode({"p": position}).encode()).decode()
    client = export_client
    client.raise_request_exception = False

    response = client.get(f"/api/teams/export/?cursor={quote(cursor)}")

    assert response.status_code == 404, response.content[:300]
    assert problem_fields(response) == {"detail": "No page at this cursor: follow the `next` link of the previous page."}


@pytest.mark.parametrize("limit", ["0", "1001", "abc", "9223372036854775808"])
def test_export_page_size_is_bounded(export_client, limit):
    TeamFactory.create_batch(3)
    response = export_client.get(f"/api/teams/export/?limit={limit}")
    assert response.status_code == 400
    assert "limit" in str(response.json())


def test_export_needs_a_token_and_the_export_permission(api_client, auth_client):
    """Service to service: anonymous is a 401, a person's token without the permission a
    403 naming it."""
    assert api_client.get("/api/teams/export/").status_code == 401
    response = auth_client.get("/api/teams/export/")
    assert response.status_code == 403
    assert "teams.export_team" in str(response.json()) and "Service accounts" in str(response.json())


# --- update, delete ---------------------------------------------------------------------


def test_rename_team(auth_client):
    team = services.team_create(name="Stanmore")

    response = auth_client.patch(team_url(team.id), {"name": "Stanmore City"}, format="json")

    assert response.status_code == 200
    assert response.json()["name"] == "Stanmore City"
    assert response.json()["sequence"] == 2


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"name": " "}, {"name": ["Team name cannot be empty."]}),
        ({"name": 7}, {"name": ["Not a valid string."]}),
        ({"name": None}, {"name": ["This field may not be null."]}),
    ],
)
def test_rename_team_bad_input(auth_client, body, errors):
    TeamFactory(name="Thornbury")
    team = TeamFactory(name="Upton")

    response = auth_client.patch(team_url(team.id), body, format="json")

    assert response.status_code == 400
    assert problem_fields(response) == errors


def test_rename_team_to_a_taken_name_is_a_conflict(auth_client):
    TeamFactory(name="Thornbury")
    team = TeamFactory(name="Upton")

    response = auth_client.patch(team_url(team.id), {"name": "THORNBURY"}, format="json")

    assert response.status_code == 409
    assert problem_fields(response) == {"name": ["A team named THORNBURY already exists."]}


def test_put_is_not_allowed(auth_client):
    team = TeamFactory()

    assert auth_client.put(team_url(team.id), {"name": "X"}, format="json").status_code == 405


def test_delete_team(auth_client):
    team = PlayerFactory().team

    response = auth_client.delete(team_url(team.id))

    assert response.status_code == 204
    assert not Team.objects.exists()
    assert OutboxMessage.objects.get().type == "team.deleted"


# --- players ----------------------------------------------------------------------------


def test_add_player(auth_client):
    team = TeamFactory()

    response = auth_client.post(players_url(team.id), {"name": "Ann Lee", "position": "MID"}, format="json")

    assert response.status_code == 201, response.json()
    assert response.json() == {"id": Player.objects.get().id, "name": "Ann Lee", "position": "MID"}
    assert OutboxMessage.objects.get().type == "player.added"


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"name": "Bo", "position": "GOALIE"}, {"position": ["Position must be one of GK, DEF, MID, ST."]}),
        ({"name": "Bo", "position": 1}, {"position": ["Position must be one of GK, DEF, MID, ST."]}),
        ({"name": "Bo"}, {"position": ["This field is required."]}),
        ({"name": "", "position": "GK"}, {"name": ["Player name cannot be empty."]}),
        ({"name": 5, "position": "GK"}, {"name": ["Not a valid string."]}),
    ],
)
def test_add_player_bad_input(auth_client, body, errors):
    team = TeamFactory(name="Victoria")
    PlayerFactory(team=team, name="Ann")

    response = auth_client.post(players_url(team.id), body, format="json")

    assert response.status_code == 400
    assert problem_fields(response) == errors
    assert team.players.count() == 1


def test_add_player_to_a_full_squad(auth_client, settings):
    settings.SQUAD_LIMIT = 1
    team = PlayerFactory(team__name="Westbrook").team

    response = auth_client.post(players_url(team.id), {"name": "Late", "position": "ST"}, format="json")

    assert response.status_code == 409
    assert problem_fields(response) == {"non_field_errors": ["Team Westbrook has a full squad (1 players)."]}


def test_add_player_with_a_name_taken_in_the_squad_is_a_conflict(auth_client):
    team = TeamFactory(name="Victoria")
    PlayerFactory(team=team, name="Ann")

    response = auth_client.post(players_url(team.id), {"name": "ann", "position": "GK"}, format="json")

    assert response.status_code == 409
    assert problem_fields(response) == {"name": ["Team Victoria already has a player named ann."]}
    assert team.players.count() == 1


def test_add_player_to_an_unknown_team(auth_client):
    response = auth_client.post(players_url(999999), {"name": "Ann", "position": "GK"}, format="json")

    assert response.status_code == 404


def test_list_and_get_players(api_client):
    player = PlayerFactory(name="Ann", position="GK")

    assert api_client.get(players_url(player.team_id)).json() == [{"id": player.id, "name": "Ann", "position": "GK"}]
    assert api_client.get(f"{players_url(player.team_id)}{player.id}/").json()["name"] == "Ann"


def test_remove_player(auth_client):
    player = PlayerFactory()

    response = auth_client.delete(f"{players_url(player.team_id)}{player.id}/")

    assert response.status_code == 204
    assert not Player.objects.exists()
    assert OutboxMessage.objects.get().type == "player.removed"


def test_remove_a_player_of_another_team_is_404(auth_client):
    player = PlayerFactory()
    other = TeamFactory()

    response = auth_client.delete(f"{players_url(other.id)}{player.id}/")

    assert response.status_code == 404
    assert problem_fields(response) == {"detail": f"Player {player.id} is not in team {other.id}."}
    assert Player.objects.exists()


# --- permissions ------------------------------------------------------------------------


def test_anonymous_writes_are_refused(api_client):
    player = PlayerFactory()
    team = player.team
    attempts = [
        api_client.post(TEAMS, {"name": "Anon"}, format="json"),
        api_client.patch(team_url(team.id), {"name": "Anon"}, format="json"),
        api_client.delete(team_url(team.id)),
        api_client.post(players_url(team.id), {"name": "Anon", "position": "GK"}, format="json"),
        api_client.delete(f"{players_url(team.id)}{player.id}/"),
    ]

    assert [r.status_code for r in attempts] == [401] * 5
    assert not OutboxMessage.objects.exists()
    assert Team.objects.get().name == team.name
