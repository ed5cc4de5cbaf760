"""The API as a client meets it: bounded pages, bounded bodies,
both spellings of a route, and one error format, RFC 9457 problem details
(``application/problem+json``), for every error in every mode, DEBUG on or off."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from fixtures.factories import FixtureFactory, ScheduledSeasonFactory
from fixtures.factories import TeamReplicaFactory as FixturesTeamFactory
from teams.factories import TeamFactory
from transfers.factories import PlayerReplicaFactory, TeamReplicaFactory

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


def assert_problem(response, status: int) -> dict:
    """The response is a problem document of this status (RFC 9457 members present)."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == PROBLEM, (response["Content-Type"], response.content[:300])
    body = json.loads(response.content)
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["instance"].startswith("/api/")
    return body


@pytest.fixture(params=[False, True], ids=["debug-off", "debug-on"])
def debug(request, settings):
    """Every test with this fixture runs with DEBUG off and on (the runstack default)."""
    settings.DEBUG = request.param
    return request.param


@pytest.fixture
def client_500():
    """A client that gets the 500 response instead of the view's exception."""
    return APIClient(raise_request_exception=False)


# --------------------------------------------------------------------------------------
# 1. limit/offset are bounded; what is not a number in range is a 400
# --------------------------------------------------------------------------------------
def _lists() -> list[str]:
    season = ScheduledSeasonFactory(teams=2)
    return [
        "/api/teams/",
        "/api/seasons/",
        f"/api/seasons/{season.id}/fixtures/",
        "/api/fixtures/teams/",
        "/api/transfers/",
        "/api/transfers/teams/",
    ]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=9223372036854775808", "limit"),
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=1001", "limit"),
        ("limit=1.5", "limit"),
        ("offset=9223372036854775808", "offset"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
    ],
)
def test_limit_and_offset_out_of_range_are_a_400_on_every_list(api_client, debug, query, parameter):
    for url in _lists():
        body = assert_problem(api_client.get(f"{url}?{query}"), 400)
        assert [e["parameter"] for e in body["errors"]] == [parameter], (url, body)
        assert "whole number from" in body["errors"][0]["detail"]


def test_limit_and_offset_in_range_page_every_list(api_client):
    for url in _lists():
        response = api_client.get(f"{url}?limit=1000&offset=2147483647")
        assert response.status_code == 200, (url, response.content)
        assert response.json()["results"] == []


# --------------------------------------------------------------------------------------
# 2. a fee of negative zero is zero
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fee", ["-0", "-0.00", "-0e-1", "0", "-0E+2"])
def test_a_negative_zero_fee_is_a_zero_fee(auth_client, settings, fee):
    settings.OUTBOX_KICK = False
    reds = TeamReplicaFactory(team_id=1, name="Reds")
    TeamReplicaFactory(team_id=2, name="Blues")
    PlayerReplicaFactory(team=reds, player_id=11, name="Ann", position="GK")
    response = auth_client.post(
        "/api/transfers/", {"player_id": 11, "from_team_id": 1, "to_team_id": 2, "fee": fee}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["fee"] == "0.00"


# --------------------------------------------------------------------------------------
# 3. deep or oversized bodies: 400/413, never a RecursionError
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [1000, 100_000, 40])
def test_deeply_nested_json_is_a_400(auth_client, debug, depth):
    body = "[" * depth + "]" * depth
    problem = assert_problem(auth_client.post("/api/teams/", body, content_type="application/json"), 400)
    assert "nested too deeply" in problem["detail"]


def test_an_oversized_json_body_is_a_413(auth_client, debug, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"name": "x" * 2000})
    problem = assert_problem(auth_client.post("/api/teams/", body, content_type="application/json"), 413)
    assert "larger than 1000 bytes" in problem["detail"]


# --------------------------------------------------------------------------------------
# 4. every error under /api/ is a problem document, DEBUG on or off
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/api/nope/", "/api/teams/-1/", "/api/teams/1/players/-5/", "/api/fixtures/%C2%84/", "/api/teams/abc"]
)
def test_an_unmatched_api_url_is_a_problem_404(api_client, debug, path):
    body = assert_problem(api_client.get(path), 404)
    assert "/api/docs/" in body["detail"]


def test_a_10_mb_body_is_a_problem_413(auth_client, debug):
    body = json.dumps({"name": "x" * (10 * 1024 * 1024)})
    problem = assert_problem(auth_client.post("/api/teams/", body, content_type="application/json"), 413)
    assert "Send a smaller one" in problem["detail"]


def test_too_many_form_fields_is_a_problem_400(auth_client, debug, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    body = "&".join(f"team_ids={i}" for i in range(20)) + "&name=S&starts_on=2026-08-01"
    response = auth_client.post("/api/seasons/", body, content_type="application/x-www-form-urlencoded")
    assert "more than 10 fields" in assert_problem(response, 400)["detail"]


def test_a_server_error_is_a_problem_500(client_500, debug, monkeypatch):
    from teams import selectors

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(selectors, "team_list", broken)
    body = assert_problem(client_500.get("/api/teams/"), 500)
    assert "boom" not in json.dumps(body)  # no internals
    assert body["request_id"]


def test_a_page_outside_the_api_keeps_the_html_404(client):
    response = client.get("/nope/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


# --------------------------------------------------------------------------------------
# 5. both spellings of an API route; no redirect that loses a write
# --------------------------------------------------------------------------------------
def test_a_route_without_its_trailing_slash_is_served(auth_client, debug):
    response = auth_client.post("/api/teams", {"name": "Reds"}, format="json")
    assert response.status_code == 201, response.content
    team_id = response.json()["id"]
    assert auth_client.get("/api/teams").status_code == 200
    renamed = auth_client.patch(f"/api/teams/{team_id}", {"name": "Blues"}, format="json")
    assert (renamed.status_code, renamed.json()["name"]) == (200, "Blues")
    assert auth_client.delete(f"/api/teams/{team_id}").status_code == 204


# --------------------------------------------------------------------------------------
# 7. one error format: validation (nested by JSON pointer), parse, 401/404/405/406/415, 503
# --------------------------------------------------------------------------------------
def test_validation_errors_are_addressed_by_json_pointer(auth_client, debug):
    response = auth_client.post(
        "/api/teams/",
        {"name": 5, "players": [{"name": "Ann", "position": "GK"}, {"name": "Bob", "position": "XX"}]},
        format="json",
    )
    body = assert_problem(response, 400)
    assert body["code"] == "invalid"
    by_pointer = {e["pointer"]: e for e in body["errors"]}
    assert set(by_pointer) == {"/name", "/players/1/position"}
    assert by_pointer["/players/1/position"]["detail"] == "Position must be one of GK, DEF, MID, ST."
    assert "/players/1/position: Position must be one of" in body["detail"]


def test_a_list_field_error_is_addressed_by_index(auth_client):
    response = auth_client.post(
        "/api/seasons/", {"name": "S", "starts_on": "2026-08-01", "team_ids": [1, "x"]}, format="json"
    )
    body = assert_problem(response, 400)
    assert [e["pointer"] for e in body["errors"]] == ["/team_ids/1"]


def test_a_service_error_for_the_whole_request_points_at_the_body(auth_client, settings):
    settings.SQUAD_LIMIT = 0
    team = TeamFactory(name="Westbrook")
    response = auth_client.post(f"/api/teams/{team.id}/players/", {"name": "Ann", "position": "GK"}, format="json")
    body = assert_problem(response, 409)
    assert body["errors"][0]["pointer"] == ""
    assert body["detail"] == body["errors"][0]["detail"]


def test_a_query_parameter_error_names_the_parameter(api_client):
    body = assert_problem(api_client.get("/api/transfers/?state=pending"), 400)
    assert body["errors"] == [
        {"parameter": "state", "detail": '"pending" is not a valid choice.', "code": "invalid_choice"}
    ]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "auth"),
    [
        ("post", "/api/teams/", {"data": "{bad", "content_type": "application/json"}, 400, True),
        ("post", "/api/teams/", {"data": {"name": "A"}, "format": "json"}, 401, False),
        ("get", "/api/teams/999999/", {}, 404, False),
        ("put", "/api/teams/", {"data": {}, "format": "json"}, 405, True),
        ("get", "/api/teams/", {"HTTP_ACCEPT": "application/xml"}, 406, False),
        ("post", "/api/teams/", {"data": "name: x", "content_type": "text/yaml"}, 415, True),
        ("get", "/api/teams/", {"HTTP_ACCEPT": "text/html"}, None, False),
    ],
)
def test_every_drf_error_is_a_problem(api_client, auth_client, debug, method, path, kwargs, status, auth):
    client = auth_client if auth else api_client
    if status is None:  # the browsable API's HTML for a success, a problem for an error
        assert_problem(client.get("/api/teams/999999/", HTTP_ACCEPT="text/html"), 404)
        return
    body = assert_problem(getattr(client, method)(path, **kwargs), status)
    if status == 401:
        assert body["code"] == "not_authenticated"


def test_a_404_keeps_the_views_message(api_client):
    assert assert_problem(api_client.get("/api/teams/999999/"), 404)["detail"] == "Team 999999 does not exist."
    assert assert_problem(api_client.get("/api/fixtures/999999/"), 404)["detail"] == "Fixture 999999 does not exist."


def test_every_unknown_id_is_a_404_in_one_wording(auth_client, user):
    """Whichever view answers, an id that names nothing reads "<Thing> <id> does not exist."."""
    import re

    import yaml
    from django.contrib.auth.models import Permission

    user.user_permissions.add(*Permission.objects.all())
    schema = yaml.safe_load(auth_client.get("/api/schema/").content)
    seen = set()
    for template, operations in schema["paths"].items():
        if "{" not in template:
            continue
        path = re.sub(r"\{[^}]+\}", "999", template)
        for method in {"get", "patch", "delete", "post"} & set(operations):
            body = assert_problem(getattr(auth_client, method)(path, {}, format="json"), 404)
            assert re.fullmatch(r"[A-Z][a-z]+ 999 does not exist\.", body["detail"]), (method, path, body["detail"])
            seen.add(body["detail"].split()[0])
    assert seen >= {"Team", "Season", "Fixture", "Transfer"}


@pytest.mark.django_db(transaction=True)
def test_the_teams_service_down_is_a_problem_503(auth_client, settings, monkeypatch):
    from transfers import teams_client

    def down(team_id: int):
        raise teams_client.TeamsServiceUnavailable("The teams service is unavailable. Try again later.")

    monkeypatch.setattr(teams_client, "fetch_team", down)
    response = auth_client.post(
        "/api/transfers/", {"player_id": 1, "from_team_id": 1, "to_team_id": 2, "fee": "1.00"}, format="json"
    )
    assert "unavailable" in assert_problem(response, 503)["detail"]


# --------------------------------------------------------------------------------------
# 7. the schema tells the truth: nullable fields, partial PATCH
# --------------------------------------------------------------------------------------
def test_patch_is_partial_on_a_team(auth_client):
    team = TeamFactory(name="Reds")
    response = auth_client.patch(f"/api/teams/{team.id}/", {}, format="json")
    assert (response.status_code, response.json()["name"]) == (200, "Reds")


def test_patch_is_partial_on_a_fixture(auth_client, settings):
    settings.OUTBOX_KICK = False
    fixture = FixtureFactory(home_goals=2, away_goals=1)
    response = auth_client.patch(f"/api/fixtures/{fixture.id}/", {"away_goals": 2, "correction": True}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["home_goals"], response.json()["away_goals"]) == (2, 2)
    # An unplayed fixture needs both counts: each missing one is named.
    unplayed = FixtureFactory()
    body = assert_problem(auth_client.patch(f"/api/fixtures/{unplayed.id}/", {"home_goals": 1}, format="json"), 409)
    assert [e["pointer"] for e in body["errors"]] == ["/away_goals"]


def test_a_deleted_replica_team_has_a_documented_nullable_deleted_at(api_client, client):
    FixturesTeamFactory(team_id=1, name="Reds")
    row = api_client.get("/api/fixtures/teams/").json()["results"][0]
    assert row["deleted_at"] is None
    schema = client.get("/api/schema/?format=json").json()
    assert schema["components"]["schemas"]["FixturesTeamReplica"]["properties"]["deleted_at"].get("nullable") is True


# --------------------------------------------------------------------------------------
# Found by the fuzzer (league/tests/test_fuzz.py): what the schema calls invalid is refused
# --------------------------------------------------------------------------------------
def test_a_season_name_that_is_a_number_is_refused(auth_client):
    body = assert_problem(auth_client.post("/api/seasons/", {"name": 0, "starts_on": "2026-08-08"}, format="json"), 400)
    assert [e["pointer"] for e in body["errors"]] == ["/name"]


def test_a_cancel_reason_that_is_a_number_is_refused(auth_client, user, settings):
    from django.contrib.auth.models import Permission

    from transfers.factories import TransferFactory

    settings.OUTBOX_KICK = False
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="transfers"))
    transfer = TransferFactory()
    response = auth_client.post(f"/api/transfers/{transfer.pk}/cancel/", {"reason": 0}, format="json")
    body = assert_problem(response, 400)
    assert [e["pointer"] for e in body["errors"]] == ["/reason"]


@pytest.mark.parametrize(
    ("reason", "what"),
    [
        ("Called off \u202eevil", "U+202E"),
        ("Called off\x07", "U+0007"),
        ("Called off\nby the club", "U+000A"),
        ("Tab\there", "U+0009"),
        ("Isolated \u2067x\u2069", "U+2067"),
        ("Private \ue000", "U+E000"),
    ],
)
def test_a_cancel_reason_with_control_or_bidi_override_characters_is_refused(auth_client, user, settings, reason, what):
    from django.contrib.auth.models import Permission

    from transfers.factories import TransferFactory
    from transfers.models import Transfer

    settings.OUTBOX_KICK = False
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="transfers"))
    transfer = TransferFactory()
    response = auth_client.post(f"/api/transfers/{transfer.pk}/cancel/", {"reason": reason}, format="json")
    body = assert_problem(response, 400)
    assert [e["pointer"] for e in body["errors"]] == ["/reason"]
    assert what in body["errors"][0]["detail"] and body["errors"][0]["detail"].startswith("Reason ")
    assert Transfer.objects.get().state == transfer.state


def test_a_cancel_reason_in_any_script_is_kept(auth_client, user, settings):
    from django.contrib.auth.models import Permission

    from transfers.factories import TransferFactory

    settings.OUTBOX_KICK = False
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="transfers"))
    transfer = TransferFactory()
    reason = "  \u0627\u0644\u0646\u0627\u062f\u064a \u0623\u0644\u063a\u0649 \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 \U0001f91d  "
    response = auth_client.post(f"/api/transfers/{transfer.pk}/cancel/", {"reason": reason}, format="json")
    assert response.status_code == 202, response.content[:300]
    assert response.json()["reason"] == reason.strip()


@pytest.mark.parametrize(
    ("url", "parameter"), [("/api/transfers/?state=", "state"), ("/api/fixtures/teams/?deleted=", "deleted")]
)
def test_an_empty_filter_is_refused_not_ignored(api_client, url, parameter):
    body = assert_problem(api_client.get(url), 400)
    assert [e["parameter"] for e in body["errors"]] == [parameter]
