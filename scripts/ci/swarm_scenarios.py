"""What CI does to the league on a swarm: traffic through the front door the whole time,
rolling upgrades service by service, tasks killed, consumers scaled; then the end state,
checked in the databases and on the queues. Each raises ``Failed`` with what it saw."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from datetime import date
from typing import Any

import requests

from scripts.ci.engine import Failed, run, say, wait_until
from scripts.ci.swarm_stack import SERVICES, SwarmStack, timed_update

# The upgrade orders: one service of docker-stack.yml after another. Each service's setup
# (migrations, new topics) goes first, so the new web and consumers find their schema.
ORDER_A = [
    "teams-setup", "teams-web", "teams-worker", "teams-beat", "teams-consumer",
    "transfers-setup", "transfers-consumer", "transfers-web", "transfers-worker", "transfers-beat",
    "fixtures-setup", "fixtures-consumer", "fixtures-web", "fixtures-worker", "fixtures-beat",
]  # fmt: skip
ORDER_B = [
    "transfers-setup", "transfers-consumer", "transfers-web", "transfers-worker", "transfers-beat",
    "fixtures-setup", "fixtures-consumer", "fixtures-web", "fixtures-worker", "fixtures-beat",
    "teams-setup", "teams-web", "teams-worker", "teams-beat", "teams-consumer",
]  # fmt: skip
# Which events each service's consumer handles (README's table), by publisher.
CONSUMES = {
    "teams": {"transfers": ("transfer.",)},
    "transfers": {"teams": ("team.", "player.", "move.")},
    "fixtures": {"teams": ("team.",)},
}


class Traffic(threading.Thread):
    """The league's day through the front door until stopped: teams with players, transfers
    between them, a season now and then with a result. Remembers every answer."""

    def __init__(self, stack: SwarmStack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.statuses: Counter[str] = Counter()
        self.bad: list[str] = []  # 5xx but a 503 with Retry-After, and dropped connections
        # What the stack is going through ("steady", "upgrade", "kill", "scale"): a docker
        # kill drops the requests the killed task was answering, nothing else may.
        self.phase = "steady"
        self.dropped_by_kill: list[str] = []
        self.teams: list[dict[str, Any]] = []
        self.transfers: list[int] = []
        self.seasons: list[int] = []
        self.stopping = threading.Event()

    def call(self, method: str, service: str, path: str, body: Any = None) -> requests.Response | None:
        try:
            response = self.stack.api(method, service, path, body, timeout=15)
        except requests.RequestException as exc:
            self.statuses[type(exc).__name__] += 1
            self.failed(f"{method} {path}: {type(exc).__name__}")
            return None
        self.statuses[str(response.status_code)] += 1
        if response.status_code >= 500 and not (response.status_code == 503 and "Retry-After" in response.headers):
            self.failed(f"{method} {path}: {response.status_code} via {response.headers.get('X-League-Upstream')}")
        return response

    def failed(self, what: str) -> None:
        (self.dropped_by_kill if self.phase == "kill" else self.bad).append(f"{what} ({self.phase})")

    def run(self) -> None:
        tag, n = secrets.token_hex(3), 0
        while not self.stopping.is_set():
            n += 1
            body = {
                "name": f"Swarm {tag} {n}",
                "players": [{"name": f"P {tag} {n}{p}", "position": "ST"} for p in range(2)],
            }
            response = self.call("POST", "teams", "/api/teams/", body)
            if response is not None and response.status_code == 201:
                self.teams.append(response.json())
            if n % 4 == 0 and len(self.teams) >= 6:
                # A player of a team made a few rounds ago (in the replica by now), to the newest.
                seller, buyer = self.teams[-6], self.teams[-1]
                player = seller["players"][(n // 4) % 2]
                body = {
                    "player_id": player["id"],
                    "from_team_id": seller["id"],
                    "to_team_id": buyer["id"],
                    "fee": "1000.00",
                }
                response = self.call("POST", "transfers", "/api/transfers/", body)
                if response is not None and response.status_code == 201:
                    self.transfers.append(response.json()["id"])
            if n % 15 == 0 and len(self.teams) >= 10:
                ids = [t["id"] for t in self.teams[-10:-6]]
                body = {"name": f"Swarm {tag} season {n}", "starts_on": date.today().isoformat(), "team_ids": ids}
                response = self.call("POST", "fixtures", "/api/seasons/", body)
                if response is not None and response.status_code == 201:
                    season = response.json()["id"]
                    self.seasons.append(season)
                    fixtures = self.call("GET", "fixtures", f"/api/seasons/{season}/fixtures/?matchday=1")
                    if fixtures is not None and fixtures.status_code == 200:
                        body_ = fixtures.json()
                        first = (body_.get("results", body_) if isinstance(body_, dict) else body_)[0]
                        self.call(
                            "PATCH", "fixtures", f"/api/fixtures/{first['id']}/", {"home_goals": 2, "away_goals": 1}
                        )
            self.stopping.wait(0.2)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)

    def summary(self) -> str:
        return (
            f"{len(self.teams)} teams, {len(self.transfers)} transfers, {len(self.seasons)} seasons; "
            f"answers {dict(sorted(self.statuses.items()))}; dropped by the kills: {self.dropped_by_kill or 'none'}"
        )


def smoke(stack: SwarmStack) -> None:
    """The front door routes each prefix to its service; a team reaches both replicas."""
    for path, upstream in (("/api/teams/", "teams"), ("/api/transfers/", "transfers"), ("/api/seasons/", "fixtures")):
        response = requests.get(stack.base + path, headers={"X-Forwarded-Proto": "https"}, timeout=10)
        if (response.status_code, response.headers.get("X-League-Upstream")) != (200, upstream):
            raise Failed(f"GET {path} answered {response.status_code} via {response.headers.get('X-League-Upstream')}")
    response = stack.api("POST", "teams", "/api/teams/", {"name": f"Smoke {secrets.token_hex(3)}"})
    if response.status_code != 201:
        raise Failed(f"POST /api/teams/ answered {response.status_code}: {response.text[:200]}")
    team = response.json()["id"]
    for service in ("transfers", "fixtures"):
        wait_until(f"the team in the {service} replica", lambda s=service: team in stack.replica(s), timeout=90)
    say("  front door routes teams/transfers/fixtures; a new team reached both replicas")


def upgrade(stack: SwarmStack, order: list[str], image: str) -> list[tuple[str, float]]:
    times = []
    for service in order:
        took = timed_update(stack, service, image)
        times.append((service, took))
        say(f"  {service} -> {image}: {took:.1f} s")
    return times


def kill_tasks(stack: SwarmStack, traffic: Traffic) -> None:
    """``docker kill`` one container each of a web, a consumer and a relay: swarm starts a
    new task for each, and traffic goes on."""
    killed = {}
    for service in ("teams-web", "transfers-consumer", "teams-worker"):
        container = stack.containers(service)[0]
        run(["docker", "kill", container])
        killed[service] = container
        say(f"  docker kill {service} {container[:12]} ({len(traffic.teams)} teams so far)")
    started = time.monotonic()

    def replaced() -> bool:
        return all(
            killed[s] not in " ".join(stack.containers(s))
            and not [w for w in stack.not_ready() if w.startswith(s + "=")]
            for s in killed
        )

    wait_until("swarm replaced the killed tasks (new ones healthy)", replaced, timeout=240, interval=2)
    say(f"  swarm replaced all three within {time.monotonic() - started:.1f} s")
    mark = len(traffic.teams)
    wait_until("traffic goes on", lambda: len(traffic.teams) >= mark + 5, timeout=60, interval=0.5)


def scale_consumers(stack: SwarmStack) -> None:
    for n in (6, 2):
        started = time.monotonic()
        run(["docker", "service", "scale", "--detach", f"league_transfers-consumer={n}"])
        wait_until(
            f"transfers-consumer at {n} healthy tasks",
            lambda n=n: (
                not [w for w in stack.not_ready() if w.startswith("transfers-consumer=")]
                and len(stack.containers("transfers-consumer")) == n
            ),
            timeout=240,
            interval=2,
        )
        say(f"  transfers-consumer scaled to {n} in {time.monotonic() - started:.1f} s")


def settled(stack: SwarmStack, traffic: Traffic, timeout: float = 240) -> list[str]:
    """The end state; returns the lines that say it. Waits (bounded) for the bus to drain."""
    lines: list[str] = []

    def outbox_published() -> bool:
        return all(
            stack.psql(f"league_{s}", "SELECT count(*) FROM events_outboxmessage WHERE state <> 'published'") == "0"
            for s in SERVICES
        )

    wait_until("every outbox row published", outbox_published, timeout=timeout, interval=2)

    def queues_empty() -> list[dict[str, Any]] | None:
        queues = stack.queues()
        return queues if all(q["visible"] == 0 and q["in_flight"] == 0 and q["dlq"] == 0 for q in queues) else None

    try:
        queues = wait_until(
            "every queue drained, nothing in flight, DLQs empty", queues_empty, timeout=timeout, interval=3
        )
    except Failed:
        raise Failed(f"queues not drained: {stack.queues()}") from None
    lines.append("queues: " + ", ".join(f"{q['queue']} visible 0 in flight 0 DLQ 0" for q in queues))

    def handled_once() -> list[str] | None:
        out = []
        for consumer, publishers in CONSUMES.items():
            inbox_rows, inbox_keys = stack.psql(
                f"league_{consumer}", "SELECT count(*), count(DISTINCT (event_id, handler)) FROM events_inboxmessage"
            ).split("|")
            if inbox_rows != inbox_keys:
                raise Failed(f"{consumer}: {inbox_rows} inbox rows for {inbox_keys} (event, handler) pairs")
            handled = set(stack.psql(f"league_{consumer}", "SELECT DISTINCT event_id FROM events_inboxmessage").split())
            for publisher, prefixes in publishers.items():
                where = " OR ".join(f"type LIKE '{p}%'" for p in prefixes)
                published = set(
                    stack.psql(
                        f"league_{publisher}", f"SELECT event_id FROM events_outboxmessage WHERE {where}"
                    ).split()
                )
                types = set(stack.psql(f"league_{consumer}", "SELECT DISTINCT type FROM events_inboxmessage").split())
                handled_types = {t for t in types if t.startswith(prefixes)}
                expected = set(
                    stack.psql(
                        f"league_{publisher}",
                        "SELECT event_id FROM events_outboxmessage WHERE type IN ("
                        + ",".join(f"'{t}'" for t in sorted(handled_types) or ["-"])
                        + ")",
                    ).split()
                )
                missing = expected - handled
                if missing:
                    return None
                out.append(
                    f"{consumer} handled each of {len(expected)} events of {publisher} once "
                    f"({len(published)} published with {'/'.join(prefixes)}; types {sorted(handled_types)})"
                )
        return out

    lines += wait_until("every event handled once by every consumer", handled_once, timeout=timeout, interval=3)

    def transfers_final() -> str | None:
        rows = stack.psql("league_transfers", "SELECT state, count(*) FROM transfers_transfer GROUP BY state")
        states = dict(line.split("|") for line in rows.splitlines() if line)
        return None if set(states) & {"requested", "cancelling"} else str(states)

    lines.append(
        f"transfers: none requested or cancelling: {wait_until('every transfer final', transfers_final, timeout=timeout, interval=2)}"
    )

    owner = {
        int(i): name
        for i, name in (
            r.split("|", 1) for r in stack.psql("league_teams", "SELECT id, name FROM teams_team").splitlines() if r
        )
    }
    for service in ("transfers", "fixtures"):
        wait_until(
            f"the {service} replica equals the teams database (ids and names)",
            lambda s=service: stack.replica(s) == owner,
            timeout=timeout,
            interval=2,
        )
    lines.append(f"replicas: transfers and fixtures hold the {len(owner)} teams of the teams database, same names")
    # With team.created/renamed v2 (a short name) the owner keeps one; then the fixtures
    # replica must hold it too for the newest team, made after every consumer ran the new
    # image (true before that change as well: then there is no such column to compare).
    has_short = stack.psql(
        "league_teams",
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'teams_team' AND column_name = 'short_name'",
    )
    if has_short == "1":
        newest = max(owner)
        theirs = stack.psql("league_teams", f"SELECT short_name FROM teams_team WHERE id = {newest}")
        ours = stack.psql("league_fixtures", f"SELECT short_name FROM fixtures_teamreplica WHERE team_id = {newest}")
        if not theirs or ours != theirs:
            raise Failed(f"team {newest}: short name {theirs!r} in teams, {ours!r} in the fixtures replica")
        lines.append(f"short names: the fixtures replica holds the owner's for the newest team ({theirs!r})")
    lines.append(f"traffic: {traffic.summary()}")
    for line in lines:
        say(f"  {line}")
    lines.clear()
    if traffic.bad:
        raise Failed(f"{len(traffic.bad)} requests failed other than a documented 503: {traffic.bad[:8]}")
    lines.append("no 5xx but documented 503s (with Retry-After), no dropped connection (but by a docker kill)")
    return lines
