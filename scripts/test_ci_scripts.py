"""The CI scripts' own logic, with no Docker engine: the end of a run (exit code, the table of
steps, cleanup always), the API token parse, --skip, the swarm traffic's accounting (answers
per endpoint, no transfer asked twice for a player, a 409 fails the end state) and the
rolling upgrade's shape (a domain service's setup first, then the rest side by side)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from scripts import compose_ci
from scripts.ci import engine, swarm_scenarios, tokens
from scripts.ci.engine import Failed


@pytest.fixture
def timings(monkeypatch):
    fresh: list[tuple[str, float, str]] = []
    monkeypatch.setattr(engine, "TIMINGS", fresh)
    return fresh


def test_a_run_ends_with_its_cleanup_the_table_of_steps_and_the_exit_code(timings, capsys):
    cleaned = []

    def body() -> None:
        with engine.step("first"):
            pass
        raise Failed("the replica is behind")

    assert engine.conclude("demo_ci", body, lambda: cleaned.append(1), width=20) == 1
    out, err = capsys.readouterr()
    assert cleaned == [1]
    assert "demo_ci FAILED: the replica is behind" in err
    assert f"\n{'step':<20} seconds  result\n{'first':<20} " in out
    assert "\ndemo_ci FAILED in " in out

    reported = []
    assert engine.conclude("demo_ci", lambda: None, lambda: None, report=lambda: reported.append(1)) == 0
    assert reported == [1] and "\ndemo_ci passed in " in capsys.readouterr().out


def test_an_unexpected_error_is_said_and_cleaned_up_after(timings, capsys):
    cleaned = []
    assert engine.conclude("demo_ci", lambda: [][0], lambda: cleaned.append(1)) == 1
    assert cleaned == [1]
    err = capsys.readouterr().err
    assert "IndexError" in err and "demo_ci FAILED with an unexpected error" in err


def test_tokens_are_read_from_what_drf_create_token_printed():
    seen = []

    def execute(service: str, env: list[str], script: str) -> str:
        seen.append((service, script))
        assert "DJANGO_SUPERUSER_USERNAME=ci" in env and env[0] == "-e"
        return f"Generated token {service}-key for user ci\n"

    assert tokens.api_tokens(("teams", "fixtures"), execute) == {"teams": "teams-key", "fixtures": "fixtures-key"}
    assert {script for _, script in seen} == {tokens.SCRIPT}
    with pytest.raises(Failed, match="teams: drf_create_token printed no token: oops"):
        tokens.api_tokens(("teams",), lambda *_: "oops")


def test_skip_names_steps_and_refuses_unknown_ones(capsys):
    assert compose_ci.scenario_list("scaled-consumers, kill-mid-traffic") == {"scaled-consumers", "kill-mid-traffic"}
    with pytest.raises(SystemExit) as exit_info:
        compose_ci.main(["--skip", "kill-mid-traffic,chaos"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown scenario chaos" in err and "valid: flow, front-door, split-services, scaled-consumers" in err


class Answer:
    def __init__(self, status: int, body: Any = None) -> None:
        self.status_code, self.body, self.headers = status, body, {}
        self.text = str(body)

    def json(self) -> Any:
        return self.body


class FakeStack:
    """Answers the traffic's transfer requests as the transfers service would: 409 for a
    player with a transfer already asked for."""

    def __init__(self) -> None:
        self.requested: list[int] = []

    def api(self, method: str, service: str, path: str, body: Any = None, timeout: float = 10) -> Answer:
        if path == "/api/transfers/":
            if body["player_id"] in self.requested:
                return Answer(409, {"player_id": [f"Player {body['player_id']} already has a transfer in progress."]})
            self.requested.append(body["player_id"])
            return Answer(201, {"id": len(self.requested)})
        return Answer(400, {"name": ["This field is required."]})


def team(number: int) -> dict[str, Any]:
    return {"id": number, "players": [{"id": number * 10}, {"id": number * 10 + 1}]}


def test_the_traffic_never_asks_twice_for_a_player_when_the_seller_stays_the_same():
    stack = FakeStack()
    traffic = swarm_scenarios.Traffic(stack)  # type: ignore[arg-type]
    seller = team(1)
    for buyer in range(2, 7):  # team creation stalled: the same seller every round
        traffic.request_transfer(seller=seller, buyer=team(buyer))
    assert stack.requested == [10, 11]
    assert traffic.transfers == [1, 2] and traffic.asked == {10, 11}
    assert traffic.conflicts() == {}
    assert swarm_scenarios.answers_expected(traffic).startswith("no 5xx but documented 503s")


def test_answers_are_counted_per_endpoint_with_the_first_bodies_of_each_4xx_and_a_409_fails():
    traffic = swarm_scenarios.Traffic(FakeStack())  # type: ignore[arg-type]
    for _ in range(5):
        traffic.call(swarm_scenarios.TEAMS, "teams", "/api/teams/", {})
    body = {"player_id": 7, "from_team_id": 1, "to_team_id": 2, "fee": "1000.00"}
    for _ in range(3):
        traffic.call(swarm_scenarios.TRANSFERS, "transfers", "/api/transfers/", body)
    assert traffic.answers[swarm_scenarios.TEAMS] == {"400": 5}
    assert traffic.answers[swarm_scenarios.TRANSFERS] == {"201": 1, "409": 2}
    assert len(traffic.samples[(swarm_scenarios.TEAMS, 400)]) == swarm_scenarios.SAMPLES
    totals, *lines = traffic.summary()
    assert lines[0].startswith("POST /api/teams/: 400 x5; 400: {'name'")
    assert lines[1].startswith("POST /api/transfers/: 201 x1, 409 x2; 409: {'player_id'")
    assert lines[2] == "POST /api/seasons/: not asked"
    with pytest.raises(Failed, match=r"2 answers 409: POST /api/transfers/ x2: .*Player 7 already has a transfer"):
        swarm_scenarios.answers_expected(traffic)


class LaggingFixtures:
    """The fixtures service whose replica learns teams only after two refused seasons."""

    def __init__(self) -> None:
        self.refusals = 2
        self.seasons: list[Any] = []

    def api(self, method: str, service: str, path: str, body: Any = None, timeout: float = 10) -> Answer:
        if path == "/api/seasons/":
            if self.refusals:
                self.refusals -= 1
                return Answer(409, {"team_ids": [f"Unknown team ids: {body['team_ids'][0]}."]})
            self.seasons.append(body)
            return Answer(201, {"id": len(self.seasons)})
        if path.endswith("/fixtures/?matchday=1"):
            return Answer(200, {"results": [{"id": 5}]})
        return Answer(200, {})


def test_a_season_refused_while_the_fixtures_replica_is_behind_is_asked_again_and_is_no_conflict():
    stack = LaggingFixtures()
    traffic = swarm_scenarios.Traffic(stack)  # type: ignore[arg-type]
    body = {"name": "S", "starts_on": "2026-12-07", "team_ids": [1, 2, 3, 4]}
    traffic.create_season(body)
    assert traffic.season_waiting == body
    traffic.create_season(traffic.season_waiting)
    traffic.create_season(traffic.season_waiting)
    assert traffic.season_waiting is None and stack.seasons == [body] and traffic.seasons == [1]
    assert traffic.answers[swarm_scenarios.SEASONS] == {"409 replica behind": 2, "201": 1}
    assert traffic.conflicts() == {}
    assert swarm_scenarios.answers_expected(traffic).startswith("no 5xx but documented 503s")


def test_an_upgrade_runs_each_setup_first_then_the_rest_of_its_domain_side_by_side(monkeypatch):
    calls: list[str] = []
    # The four of a domain service must all be updating at once for any of them to finish.
    together = threading.Barrier(len(swarm_scenarios.ROLES), timeout=10)

    def timed_update(stack: Any, service: str, image: str) -> float:
        calls.append(service)
        if not service.endswith("-setup"):
            together.wait()
        return 1.0

    monkeypatch.setattr(swarm_scenarios, "timed_update", timed_update)
    done = swarm_scenarios.upgrade(None, swarm_scenarios.ORDER_B, "league-manager:current")  # type: ignore[arg-type]
    assert list(done.domains) == ["transfers", "fixtures", "teams"]
    assert [calls[i] for i in (0, 5, 10)] == ["transfers-setup", "fixtures-setup", "teams-setup"]
    assert set(calls[1:5]) == {f"transfers-{role}" for role in ("web", "worker", "beat", "consumer")}
    assert len(done.services) == 15 and set(done.services.values()) == {1.0}


def test_an_upgrade_fails_with_every_service_that_did_not_converge(monkeypatch):
    def timed_update(stack: Any, service: str, image: str) -> float:
        if service in ("teams-web", "teams-beat"):
            raise Failed(f"{service}: the update to {image} was rolled back")
        return 1.0

    monkeypatch.setattr(swarm_scenarios, "timed_update", timed_update)
    with pytest.raises(Failed, match="teams-web: .*rolled back") as failed:
        swarm_scenarios.upgrade(None, swarm_scenarios.ORDER_A, "x")  # type: ignore[arg-type]
    assert "teams-beat" in str(failed.value)


def test_every_page_follows_next_through_the_api_prefix_and_returns_a_plain_list_as_it_is():
    """Both stacks read their replicas through one paginated reader: ``next`` is followed
    whatever host the API put in it (the front door's or the container's), from ``/api/`` on."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    pages = {
        "/api/teams/": {"results": [{"id": 1}, {"id": 2}], "next": "http://teams-web:8000/api/teams/?page=2"},
        "/api/teams/?page=2": {"results": [{"id": 3}], "next": None},
        "/api/plain/": [{"id": 9}],
    }
    seen: list[tuple[str, str | None]] = []

    class Api(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("X-Forwarded-Proto")))
            body = json.dumps(pages[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        headers = {"X-Forwarded-Proto": "https"}
        assert engine.every_page(base, "/api/teams/", headers=headers) == [{"id": 1}, {"id": 2}, {"id": 3}]
        assert engine.every_page(base, "/api/plain/", headers=headers) == [{"id": 9}]
        assert engine.every_page(base, "/api/teams/", headers=headers, pages=1) == [{"id": 1}, {"id": 2}]
    finally:
        server.shutdown()
        server.server_close()
    assert seen[:2] == [("/api/teams/", "https"), ("/api/teams/?page=2", "https")]
