"""What CI does to the league on a swarm: traffic through the front door the whole time,
rolling upgrades domain service by domain service (its setup, then the rest side by side),
tasks killed, consumers scaled; then the end state, checked in the databases and on the
queues and in the traffic's answers. Each raises ``Failed`` with what it saw."""

from __future__ import annotations

import concurrent.futures
import secrets
import threading
import time
from collections import Counter
from datetime import date
from typing import Any, NamedTuple

import requests

from scripts.ci.engine import Failed, run, say, wait_until
from scripts.ci.swarm_stack import SERVICES, SwarmStack, timed_update

# The upgrade orders, by domain service: for each, its setup (migrations, new topics) first,
# so the new web and consumers find their schema, then its web, relays, beat and consumer side
# by side. A: teams first; B: transfers and fixtures first, teams last.
ORDER_A = ["teams", "transfers", "fixtures"]
ORDER_B = ["transfers", "fixtures", "teams"]
# The swarm services of a domain service that are updated together once its setup completed.
ROLES = ("web", "worker", "beat", "consumer")
# Which events each service's consumer handles (README's table), by publisher.
CONSUMES = {
    "teams": {"transfers": ("transfer.",)},
    "transfers": {"teams": ("team.", "player.", "move.")},
    "fixtures": {"teams": ("team.",)},
}


# What the traffic asks for, as its answers are counted: one key per endpoint.
TEAMS, TRANSFERS, SEASONS = "POST /api/teams/", "POST /api/transfers/", "POST /api/seasons/"
FIXTURES, RESULT = "GET /api/seasons/{id}/fixtures/", "PATCH /api/fixtures/{id}/"
ENDPOINTS = (TEAMS, TRANSFERS, SEASONS, FIXTURES, RESULT)
SAMPLES = 3  # bodies kept of each distinct 4xx of an endpoint


class Traffic(threading.Thread):
    """The league's day through the front door until stopped: teams with players, transfers
    between them, a season now and then with a result. Counts the answers of each endpoint
    by status and keeps the first bodies of each 4xx. Nothing it asks for is refused by the
    state it made: it never asks twice for a transfer of the same player (a pending or
    finished transfer out of that team would be a 409), so a 409 is a bug here or in the
    system."""

    def __init__(self, stack: SwarmStack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.lock = threading.Lock()
        # Endpoint -> status (or the exception of a request with no answer) -> count.
        self.answers: dict[str, Counter[str]] = {endpoint: Counter() for endpoint in ENDPOINTS}
        # (endpoint, 4xx status) -> the first SAMPLES bodies of that answer.
        self.samples: dict[tuple[str, int], list[str]] = {}
        self.bad: list[str] = []  # 5xx but a 503 with Retry-After, and dropped connections
        # What the stack is going through ("steady", "upgrade", "kill", "scale"): a docker
        # kill drops the requests the killed task was answering, nothing else may.
        self.phase = "steady"
        self.dropped_by_kill: list[str] = []
        self.teams: list[dict[str, Any]] = []
        self.transfers: list[int] = []
        self.asked: set[int] = set()  # the players a transfer was requested for, whatever the answer
        self.seasons: list[int] = []
        self.season_waiting: dict[str, Any] | None = None  # refused while the replica was behind
        self.stopping = threading.Event()

    def call(self, endpoint: str, service: str, path: str, body: Any = None) -> requests.Response | None:
        method = endpoint.split()[0]
        try:
            response = self.stack.api(method, service, path, body, timeout=15)
        except requests.RequestException as exc:
            with self.lock:
                self.answers[endpoint][type(exc).__name__] += 1
            self.failed(f"{method} {path}: {type(exc).__name__}")
            return None
        status = response.status_code
        answer = str(status)
        if endpoint == SEASONS and status == 409 and "Unknown team ids" in response.text:
            # Teams made seconds ago that the fixtures replica has not learnt yet (it is
            # eventually consistent, and its consumer may be mid-upgrade): asked again later.
            answer = "409 replica behind"
        with self.lock:
            self.answers[endpoint][answer] += 1
            if 400 <= status < 500:
                kept = self.samples.setdefault((endpoint, status), [])
                if len(kept) < SAMPLES:
                    kept.append(response.text[:200])
        if status >= 500 and not (status == 503 and "Retry-After" in response.headers):
            self.failed(f"{method} {path}: {status} via {response.headers.get('X-League-Upstream')}")
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
            response = self.call(TEAMS, "teams", "/api/teams/", body)
            if response is not None and response.status_code == 201:
                self.teams.append(response.json())
            if n % 4 == 0 and len(self.teams) >= 6:
                self.request_transfer(seller=self.teams[-6], buyer=self.teams[-1])
            if self.season_waiting is not None and n % 3 == 0:
                self.create_season(self.season_waiting)
            elif n % 15 == 0 and len(self.teams) >= 10:
                ids = [t["id"] for t in self.teams[-10:-6]]
                self.create_season(
                    {"name": f"Swarm {tag} season {n}", "starts_on": date.today().isoformat(), "team_ids": ids}
                )
            self.stopping.wait(0.2)

    def create_season(self, body: dict[str, Any]) -> None:
        """A season of four recent teams, with a result on its first matchday. Refused because
        the fixtures replica does not hold those teams yet, it is asked again a few rounds later
        (``season_waiting``) until it is made."""
        response = self.call(SEASONS, "fixtures", "/api/seasons/", body)
        if response is None:
            return
        if response.status_code == 409 and "Unknown team ids" in response.text:
            self.season_waiting = body
            return
        self.season_waiting = None
        if response.status_code != 201:
            return
        season = response.json()["id"]
        self.seasons.append(season)
        fixtures = self.call(FIXTURES, "fixtures", f"/api/seasons/{season}/fixtures/?matchday=1")
        if fixtures is not None and fixtures.status_code == 200:
            body_ = fixtures.json()
            first = (body_.get("results", body_) if isinstance(body_, dict) else body_)[0]
            self.call(RESULT, "fixtures", f"/api/fixtures/{first['id']}/", {"home_goals": 2, "away_goals": 1})

    def request_transfer(self, seller: dict[str, Any], buyer: dict[str, Any]) -> None:
        """A player of a team made a few rounds ago (in the replica by now) to the newest, one
        the traffic never asked about: while team creation stalls the seller stays the same,
        and once its players were asked for there is nothing to ask."""
        player = next((p for p in seller["players"] if p["id"] not in self.asked), None)
        if player is None:
            return
        self.asked.add(player["id"])
        body = {"player_id": player["id"], "from_team_id": seller["id"], "to_team_id": buyer["id"], "fee": "1000.00"}
        response = self.call(TRANSFERS, "transfers", "/api/transfers/", body)
        if response is not None and response.status_code == 201:
            self.transfers.append(response.json()["id"])

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)

    def conflicts(self) -> dict[str, tuple[int, list[str]]]:
        """Endpoint -> (how many 409s it answered, the first bodies), for those that did."""
        with self.lock:
            return {
                endpoint: (counts["409"], list(self.samples.get((endpoint, 409), [])))
                for endpoint, counts in self.answers.items()
                if counts["409"]
            }

    def summary(self) -> list[str]:
        """A line of totals, then one per endpoint: its answers by status and the first
        bodies of each 4xx."""
        lines = [
            f"{len(self.teams)} teams, {len(self.transfers)} transfers ({len(self.asked)} asked for), "
            f"{len(self.seasons)} seasons; dropped by the kills: {self.dropped_by_kill or 'none'}"
        ]
        with self.lock:
            for endpoint, counts in self.answers.items():
                answers = ", ".join(f"{status} x{n}" for status, n in sorted(counts.items())) or "not asked"
                bodies = "".join(
                    f"; {status}: " + " | ".join(kept)
                    for (where, status), kept in sorted(self.samples.items())
                    if where == endpoint
                )
                lines.append(f"{endpoint}: {answers}{bodies}")
        return lines


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


class Upgrade(NamedTuple):
    """Seconds each update took: per swarm service (its own ``docker service update``) and
    per domain service (the wall time of its setup, then of the rest side by side)."""

    services: dict[str, float]
    domains: dict[str, float]


def upgrade(stack: SwarmStack, order: list[str], image: str) -> Upgrade:
    """Each domain service of ``order`` in turn to ``image``: its ``-setup`` one-shot until
    its new task completed, then its web, worker, beat and consumer at once (a thread each),
    until every one converged. Raises Failed when one did not (after the others ended)."""
    done = Upgrade({}, {})
    for domain in order:
        started = time.monotonic()
        setup = f"{domain}-setup"
        done.services[setup] = timed_update(stack, setup, image)
        say(f"  {setup} -> {image}: {done.services[setup]:.1f} s")
        together = [f"{domain}-{role}" for role in ROLES]
        side_by_side = time.monotonic()
        errors: list[tuple[str, BaseException]] = []
        pool = concurrent.futures.ThreadPoolExecutor(len(together), thread_name_prefix=f"update-{domain}")
        try:
            futures = {pool.submit(timed_update, stack, service, image): service for service in together}
            for future in concurrent.futures.as_completed(futures):
                service, exc = futures[future], future.exception()
                if exc is not None:
                    errors.append((service, exc))
                    say(f"  {service} -> {image}: {type(exc).__name__}: {exc}")
                    continue
                done.services[service] = future.result()
                say(f"  {service} -> {image}: {done.services[service]:.1f} s")
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        if errors:
            raise Failed("; ".join(f"{service}: {exc}" for service, exc in errors)) from errors[0][1]
        side_by_side = time.monotonic() - side_by_side
        done.domains[domain] = time.monotonic() - started
        say(
            f"  {domain}: setup {done.services[setup]:.1f} s, then {', '.join(ROLES)} side by side "
            f"{side_by_side:.1f} s; {done.domains[domain]:.1f} s in all"
        )
    return done


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
    totals, *endpoints = traffic.summary()
    lines += [f"traffic: {totals}", *(f"  {line}" for line in endpoints)]
    for line in lines:
        say(f"  {line}")
    return [answers_expected(traffic)]


def answers_expected(traffic: Traffic) -> str:
    """Failed, saying which, when a request failed other than by a documented 503 (outside a
    docker kill) or anything answered 409; otherwise the line that says so."""
    problems = []
    if traffic.bad:
        problems.append(f"{len(traffic.bad)} requests failed other than a documented 503: {traffic.bad[:8]}")
    conflicts = traffic.conflicts()
    if conflicts:
        # The traffic never asks for what the state it made refuses: a 409 is a bug, here or there.
        problems.append(
            f"{sum(n for n, _ in conflicts.values())} answers 409: "
            + "; ".join(f"{endpoint} x{n}: {' | '.join(bodies)}" for endpoint, (n, bodies) in conflicts.items())
        )
    if problems:
        raise Failed("; ".join(problems))
    return "no 5xx but documented 503s (with Retry-After), no 409, no dropped connection (but by a docker kill)"
