#!/usr/bin/env python
"""docker-compose.yml run for real by a Docker engine, with containers killed: CI's compose step.

    python scripts/compose_ci.py [--keep-engine] [--profiles monolith,microservices]

What it does, in order, printing each step with its duration:

1. **Engine.** Installs Debian's ``docker.io``, ``debootstrap`` and ``docker-compose`` if
   missing, saves the iptables rules, starts ``dockerd`` (its log in a temporary file) and
   sets the FORWARD policy back to ACCEPT so the host's other bridges keep working. An
   engine that already answers is used as it is and left running.
2. **Images, with no registry.** ``docker/build_offline_images.sh``: the local Debian base
   (debootstrap from the host's apt mirror, kept while its inputs do not change), then
   PostgreSQL, Redis, moto, nginx and the League Manager image on it. Prints their sizes.
3. **Each profile** (``monolith``, ``microservices``), with ``docker-compose.offline.yml``
   over ``docker-compose.yml``, a random SECRET_KEY and POSTGRES_PASSWORD in a temporary
   env file, and the front door's and web ports on free host ports: ``up -d``; wait until every
   container is healthy (one-shot setups: exited 0); then the flow (in the monolith profile
   through the front door, which is its only published port):
   - a team created on the teams API reaches the transfers and fixtures replicas, read over
     their own APIs;
   - a transfer between two teams completes (the saga over the bus) and teams shows the
     player in the new team;
   - a season is scheduled over four teams and a result changes the standings;
   - the front door (nginx on WEB_PORT) sends /api/teams/, /api/transfers/teams/,
     /api/seasons/, /healthz and / each to the web service that owns it, with the
     X-League-Upstream header naming it, and a team POSTed through it is created;
   - monolith profile: ``split_service transfers``, then ``split_service fixtures``
     (``--supervisor compose``, run from this host) move each to a database of its own while
     the stack runs; after each move it answers its paths through the front door, work made
     after the move goes through (a transfer completes; a result changes the standings, a
     new season is scheduled), devtools/cutover/checks.py passes across the databases and the
     monolith's containers run without it.
4. **Microservices, under faults** (same stack, before ``down``):
   - ``--scale transfers-consumer=4``; 40 teams created; each ``team.created`` event is
     handled exactly once: no event id in the "handled" log lines of two consumer
     containers, and teams' outbox rows = transfers' inbox rows = its replica's teams;
   - traffic (teams created one after another) while ``docker kill`` hits a transfers
     consumer and then the teams web container; both come back, and every team the API
     accepted (201) reaches both replicas, which end up equal to the teams database;
   - ``docker restart`` of the PostgreSQL container: with no other action, every container
     is healthy again and a new team reaches both replicas;
   - the front door routes as before (it resolves the web containers' names at request time).
5. ``down -v`` after each profile, and at the end (also on failure or Ctrl-C): no
   container, network or volume of the run is left; ``dockerd`` is stopped (if this script
   started it), its bridge removed and the iptables rules it added deleted, the FORWARD
   policy restored. The images stay in the engine's store: the next run on this machine
   reuses them (the base image is rebuilt only when its inputs change).

Every wait has a timeout. Exits 0 when everything passed, 1 otherwise (with the last log
lines of the containers that were not healthy). Needs root (apt, dockerd, iptables).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.netutil import free_port  # noqa: E402  (the repo's own helper)

PROJECT = "leagueci"
APP_IMAGE = "league-manager:ci"
COMPOSE_FILES = ["-f", "docker-compose.yml", "-f", "docker-compose.offline.yml"]
HTTPS = {"X-Forwarded-Proto": "https"}  # as if through the TLS proxy
SERVICES = ("teams", "transfers", "fixtures")
STARTED = time.monotonic()


class Failed(Exception):
    """A check did not hold; the message says which and what was seen."""


def say(line: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f} s] {line}", flush=True)


TIMINGS: list[tuple[str, float, str]] = []


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    say(f"{name} ...")
    started = time.monotonic()
    outcome = "FAILED"
    try:
        yield
        outcome = "ok"
    finally:
        took = time.monotonic() - started
        TIMINGS.append((name, took, outcome))
        say(f"{name}: {outcome} ({took:.1f} s)")


def run(
    argv: list[str], *, timeout: float = 120, check: bool = True, env: dict[str, str] | None = None, quiet: bool = False
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check and done.returncode != 0:
        raise Failed(
            f"{' '.join(argv[:6])} ... exited {done.returncode}: {(done.stderr or done.stdout).strip()[-1500:]}"
        )
    if not quiet and done.returncode != 0:
        say(f"  ({' '.join(argv[:4])} exited {done.returncode})")
    return done


def wait_until(what: str, probe: Callable[[], Any], *, timeout: float, interval: float = 1.0) -> Any:
    """Call ``probe`` until it returns something truthy; raise Failed after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
            if last:
                return last
        except (requests.RequestException, subprocess.TimeoutExpired, ValueError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise Failed(f"{what}: not within {timeout:.0f} s (last: {str(last)[:300]})")
        time.sleep(interval)


# ----------------------------------------------------------------------------- the engine


class Engine:
    """dockerd started (and stopped) by this script, and the host state it changes."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="league-dockerd.", suffix=".log")[1])
        self.iptables_before = ""
        self.forward_policy = "ACCEPT"

    @staticmethod
    def answers() -> bool:
        try:
            return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    @staticmethod
    def install() -> None:
        wanted = {
            "dockerd": "docker.io",
            "debootstrap": "debootstrap",
            "docker-compose": "docker-compose",
            "iptables": "iptables",
        }
        missing = sorted({pkg for binary, pkg in wanted.items() if not shutil.which(binary)})
        if not missing:
            say("  docker.io, debootstrap, docker-compose: installed")
            return
        say(f"  apt-get install {' '.join(missing)}")
        run(["apt-get", "update", "-q"], timeout=300)
        run(["apt-get", "install", "-y", "-q", *missing], timeout=600, env={"DEBIAN_FRONTEND": "noninteractive"})

    def start(self) -> None:
        if self.answers():
            say("  a Docker engine already answers: using it, and leaving it running")
            return
        self.iptables_before = run(["iptables-save"]).stdout
        policy = re.search(r"^:FORWARD (\w+)", self.iptables_before, flags=re.M)
        self.forward_policy = policy.group(1) if policy else "ACCEPT"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--host", "unix:///var/run/docker.sock"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until("dockerd answers", lambda: self.proc.poll() is None and self.answers() or self._died(), timeout=60)
        # The engine sets FORWARD to DROP; other bridges on this host must keep working.
        run(["iptables", "-P", "FORWARD", "ACCEPT"])
        version = run(["docker", "version", "-f", "{{.Server.Version}}"]).stdout.strip()
        say(f"  dockerd {version} (pid {self.proc.pid}, log {self.log})")

    def _died(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise Failed(f"dockerd exited {self.proc.returncode}: {self.log.read_text()[-1500:]}")
        return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # containerd, started by dockerd in its session, goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.restore_network()
        say(f"  dockerd stopped; log kept at {self.log}")

    def restore_network(self) -> None:
        """Delete what the engine added (its chains, the rules pointing at them or at its
        bridges, the docker0 bridge) and put back the FORWARD policy."""
        for table in ("nat", "filter"):
            rules = run(["iptables", "-t", table, "-S"], check=False).stdout.splitlines()
            for rule in rules:
                if rule.startswith("-A ") and re.search(r"DOCKER|docker0|br-[0-9a-f]{12}", rule):
                    run(["iptables", "-t", table, "-D", *rule[3:].split()], check=False, quiet=True)
            for rule in rules:
                chain = re.match(r"-N (DOCKER\S*)", rule)
                if chain:
                    run(["iptables", "-t", table, "-F", chain.group(1)], check=False, quiet=True)
                    run(["iptables", "-t", table, "-X", chain.group(1)], check=False, quiet=True)
        run(["iptables", "-P", "FORWARD", self.forward_policy], check=False)
        for link in re.findall(
            r"^\d+: (docker0|br-[0-9a-f]{12})[@:]", run(["ip", "-o", "link"], check=False).stdout, flags=re.M
        ):
            run(["ip", "link", "delete", link], check=False, quiet=True)
        after = run(["iptables-save"], check=False).stdout
        same = _rules(after) == _rules(self.iptables_before)
        say(
            f"  iptables: engine's rules removed, FORWARD {self.forward_policy}; "
            f"{'identical to before' if same else 'DIFFERS from before (see iptables-save)'}"
        )


def _rules(dump: str) -> list[str]:
    """What iptables-save says that matters: rules, custom chains, and built-in chains
    whose policy is not ACCEPT (an empty table with ACCEPT policies changes nothing)."""
    builtin = re.compile(r"^:(INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ACCEPT ")
    return [
        re.sub(r"\[\d+:\d+\]", "", line)
        for line in dump.splitlines()
        if line.startswith("-A ") or (line.startswith(":") and not builtin.match(line))
    ]


# ----------------------------------------------------------------------------- compose


class Stack:
    """One profile of docker-compose.yml (+ the offline override) in project ``leagueci``."""

    def __init__(self, profile: str, workdir: Path) -> None:
        self.profile = profile
        self.ports = {
            "WEB_PORT": free_port(),
            "TEAMS_WEB_PORT": free_port(),
            "TRANSFERS_WEB_PORT": free_port(),
            "FIXTURES_WEB_PORT": free_port(),
            "POSTGRES_PORT": free_port(),  # loopback only: split_service runs on this host
        }
        self.workdir = workdir
        self.data_dir = workdir / f"{profile}-data"  # split_service's DATA_DIR (deployment.json)
        self.env_file = workdir / f"{profile}.env"
        # Every ${VAR:?} the file requires gets a random value (a token: 40 hex digits).
        required = re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "docker-compose.yml").read_text())
        values = {
            **{name: secrets.token_hex(20) for name in required},
            "SECRET_KEY": secrets.token_urlsafe(50),
            "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
            # The service account transfers reads the teams export with (setup creates it).
            "TEAMS_SERVICE_TOKEN": secrets.token_hex(20),
            "LEAGUE_IMAGE": APP_IMAGE,
            # The front door's routes after a cutover (split_service --supervisor compose).
            "FRONTDOOR_LIVE_DIR": str(workdir / f"{profile}-frontdoor"),
            **{k: str(v) for k, v in self.ports.items()},
        }
        self.values = values
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        self.tokens: dict[str, str] = {}

    def compose_argv(self) -> list[str]:
        """The compose command of this stack, without --profile."""
        return ["docker-compose", "-p", PROJECT, *COMPOSE_FILES, "--env-file", str(self.env_file)]

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*self.compose_argv(), "--profile", self.profile, *args], timeout=timeout, check=check)

    def database_url(self, name: str) -> str:
        """A database on the compose PostgreSQL, from this host (its loopback port)."""
        return f"postgres://league:{self.values['POSTGRES_PASSWORD']}@127.0.0.1:{self.ports['POSTGRES_PORT']}/{name}"

    def url(self, service: str) -> str:
        if self.profile == "monolith":
            return f"http://127.0.0.1:{self.ports['WEB_PORT']}"
        return f"http://127.0.0.1:{self.ports[service.upper() + '_WEB_PORT']}"

    def web(self, service: str) -> str:
        return "web" if self.profile == "monolith" else f"{service}-web"

    def containers(self) -> list[dict[str, Any]]:
        ids = self.compose("ps", "-a", "-q", timeout=60).stdout.split()
        if not ids:
            return []
        return json.loads(run(["docker", "inspect", *ids], timeout=60).stdout)

    def container_ids(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service, timeout=60).stdout.split()

    def up(self, *args: str, attempts: int = 3) -> None:
        """``up -d``, again if compose gave up on a dependency that was unhealthy for a
        while (1.29 stops at the first "unhealthy"; the checks recover on a loaded machine)."""
        for attempt in range(1, attempts + 1):
            done = self.compose("up", "-d", *args, timeout=420, check=attempt == attempts)
            if done.returncode == 0:
                return
            say(f"  up -d, attempt {attempt}: {done.stderr.strip().splitlines()[-2:]}; again")

    def not_ready(self) -> list[str]:
        """Containers not (yet) healthy, or one-shots not exited 0; [] when all are."""
        waiting = []
        for c in self.containers():
            name, state = c["Name"].lstrip("/"), c["State"]
            one_shot = c["HostConfig"]["RestartPolicy"]["Name"] == "no"
            if one_shot:
                if state["Status"] != "exited" or state["ExitCode"] != 0:
                    waiting.append(f"{name}={state['Status']}/{state['ExitCode']}")
            elif state["Status"] != "running" or state.get("Health", {}).get("Status") != "healthy":
                waiting.append(f"{name}={state['Status']}/{state.get('Health', {}).get('Status', 'no check')}")
        return waiting

    def wait_healthy(self, timeout: float = 300) -> None:
        self.last_waiting: list[str] = []

        def probe() -> bool:
            self.last_waiting = self.not_ready()
            return not self.last_waiting and bool(self.containers())

        try:
            wait_until(f"{self.profile}: every container healthy", probe, timeout=timeout, interval=2)
        except Failed as exc:
            raise Failed(f"{exc}; waiting for {', '.join(self.last_waiting)}") from None
        say(f"  {len(self.containers())} containers healthy (one-shots exited 0)")

    def login(self) -> None:
        """A superuser and an API token on each service's database (one in the monolith):
        one ``docker exec`` per service, the services side by side."""
        services = SERVICES if self.profile == "microservices" else ("teams",)
        password = secrets.token_urlsafe(16)

        def one(service: str) -> tuple[str, str]:
            container = self.container_ids(self.web(service))[0]
            env = [
                "-e",
                "DJANGO_SUPERUSER_USERNAME=ci",
                "-e",
                "DJANGO_SUPERUSER_EMAIL=ci@example.com",
                "-e",
                f"DJANGO_SUPERUSER_PASSWORD={password}",
            ]
            script = "python manage.py createsuperuser --noinput && python manage.py drf_create_token ci"
            out = run(["docker", "exec", *env, container, "sh", "-ec", script], timeout=180).stdout
            token = re.search(r"Generated token (\S+)", out)
            if not token:
                raise Failed(f"{service}: drf_create_token printed no token: {out[-300:]}")
            return service, token.group(1)

        with concurrent.futures.ThreadPoolExecutor(len(services)) as pool:
            self.tokens = dict(pool.map(one, services))
        if self.profile == "monolith":
            self.tokens = dict.fromkeys(SERVICES, self.tokens["teams"])

    def api(self, method: str, service: str, path: str, body: Any = None, timeout: float = 10) -> requests.Response:
        headers = {**HTTPS, "Authorization": f"Token {self.tokens[service]}"}
        return requests.request(method, self.url(service) + path, json=body, headers=headers, timeout=timeout)

    def psql(self, database: str, sql: str) -> str:
        if self.profile == "monolith":
            database = "league"
        postgres = self.container_ids("postgres")[0]
        return run(["docker", "exec", postgres, "psql", "-U", "league", "-d", database, "-tAc", sql]).stdout.strip()

    def logs_of_failures(self) -> None:
        """The last lines of every container not ready, and always of PostgreSQL."""
        with contextlib.suppress(Exception):
            postgres = [c["Name"].lstrip("/") for c in self.containers() if "_postgres_" in c["Name"]]
            for name in dict.fromkeys([n.split("=")[0] for n in self.not_ready()] + postgres):
                container = name
                tail = run(["docker", "logs", "--tail", "25", container], check=False, quiet=True)
                print(f"\n--- {container} (last lines)\n{(tail.stdout + tail.stderr).strip()}", file=sys.stderr)

    def down(self) -> None:
        done = self.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=180, check=False)
        if done.returncode != 0:
            say(f"  down -v exited {done.returncode}: {done.stderr.strip()[-300:]}")


def created(response: requests.Response, what: str) -> dict[str, Any]:
    if response.status_code != 201:
        raise Failed(
            f"{what}: {response.request.method} {response.url} answered {response.status_code}: {response.text[:300]}"
        )
    return response.json()


def items(response: requests.Response) -> list[dict[str, Any]]:
    response.raise_for_status()
    body = response.json()
    return body.get("results", body) if isinstance(body, dict) else body


def all_items(stack: Stack, service: str, path: str) -> list[dict[str, Any]]:
    """Every item of a paginated list (follows ``next``)."""
    out: list[dict[str, Any]] = []
    url: str | None = stack.url(service) + path
    pages = 0
    while url and pages < 100:
        response = requests.get(url, headers=HTTPS, timeout=10)
        response.raise_for_status()
        body = response.json()
        if not isinstance(body, dict):
            return out + body
        out += body.get("results", [])
        nxt = body.get("next")
        url = (stack.url(service) + nxt[nxt.index("/api/") :]) if nxt else None
        pages += 1
    return out


def replica_ids(stack: Stack, service: str) -> set[int]:
    """Team ids in a service's replica (transfers says ``id``, fixtures ``team_id``)."""
    return {t["team_id"] if "team_id" in t else t["id"] for t in all_items(stack, service, f"/api/{service}/teams/")}


# ----------------------------------------------------------------------------- the flows


def flow(stack: Stack) -> None:
    """The smoke flow, through the containers: propagation, a transfer, a season."""
    tag = secrets.token_hex(3)
    started = time.monotonic()
    teams = [
        created(
            stack.api(
                "POST",
                "teams",
                "/api/teams/",
                {
                    "name": f"CI {tag} {n}",
                    "players": [
                        {"name": f"Player {tag} {n}{p}", "position": pos} for p, pos in enumerate(("GK", "ST"))
                    ],
                },
            ),
            "create team",
        )
        for n in range(4)
    ]
    ids = {t["id"] for t in teams}
    for service in ("transfers", "fixtures"):
        wait_until(
            f"4 teams in the {service} replica",
            lambda s=service: ids <= replica_ids(stack, s),
            timeout=60,
            interval=0.3,
        )
        say(f"  4 teams created on teams reached the {service} replica after {time.monotonic() - started:.1f} s")

    # A transfer: the replica must know the player first (player.added / team.created).
    seller, buyer = teams[0], teams[1]
    player = next(p for p in seller["players"] if p["position"] == "ST")

    def replica_has_player() -> bool:
        team = next(
            (t for t in all_items(stack, "transfers", "/api/transfers/teams/") if t["id"] == seller["id"]), None
        )
        return bool(team and any(p["id"] == player["id"] for p in team["players"]))

    wait_until("the player in the transfers replica", replica_has_player, timeout=60, interval=0.3)
    started = time.monotonic()
    transfer = created(
        stack.api(
            "POST",
            "transfers",
            "/api/transfers/",
            {"player_id": player["id"], "from_team_id": seller["id"], "to_team_id": buyer["id"], "fee": "1500000.00"},
        ),
        "request a transfer",
    )

    def transfer_state() -> str | None:
        state = stack.api("GET", "transfers", f"/api/transfers/{transfer['id']}/").json()["state"]
        if state == "rejected":
            raise Failed(f"transfer {transfer['id']} was rejected")
        return state if state == "completed" else None

    wait_until("the transfer completes", transfer_state, timeout=90, interval=0.3)
    moved = stack.api("GET", "teams", f"/api/teams/{buyer['id']}/").json()
    if player["id"] not in {p["id"] for p in moved["players"]}:
        raise Failed(f"transfer completed but teams does not show player {player['id']} in team {buyer['id']}")
    say(f"  transfer {transfer['id']} completed after {time.monotonic() - started:.1f} s; teams shows the player moved")

    # A season over the four teams, and a result in the table.
    season = created(
        stack.api(
            "POST",
            "fixtures",
            "/api/seasons/",
            {"name": f"CI season {tag}", "starts_on": date.today().isoformat(), "team_ids": sorted(ids)},
        ),
        "schedule a season",
    )
    if season["fixture_count"] != 12:
        raise Failed(f"a double round-robin of 4 teams has 12 fixtures, the season has {season['fixture_count']}")
    fixture = items(stack.api("GET", "fixtures", f"/api/seasons/{season['id']}/fixtures/?matchday=1"))[0]
    result = stack.api("PATCH", "fixtures", f"/api/fixtures/{fixture['id']}/", {"home_goals": 3, "away_goals": 1})
    if result.status_code != 200:
        raise Failed(f"PATCH /api/fixtures/{fixture['id']}/ answered {result.status_code}: {result.text[:300]}")
    table = {
        row["team_id"]: row
        for row in stack.api("GET", "fixtures", f"/api/seasons/{season['id']}/standings/").json()["standings"]
    }
    home, away = table[fixture["home_team"]["id"]], table[fixture["away_team"]["id"]]
    if (home["points"], home["goal_difference"], away["points"], home["position"]) != (3, 2, 0, 1):
        raise Failed(f"after 3-1 the table shows home {home}, away {away}")
    say(f"  season {season['id']}: 12 fixtures; 3-1 on matchday 1 puts {home['name']!r} first with 3 points")


def handled_ids(stack: Stack, containers: list[str], since: str) -> dict[str, Counter[str]]:
    """Per container, the team.created event ids its consumer logged as handled."""
    out: dict[str, Counter[str]] = {}
    for cid in containers:
        logs = run(["docker", "logs", "--since", since, cid], timeout=60)
        out[cid[:12]] = Counter(re.findall(r"handled team\.created ([0-9a-f-]{36})", logs.stdout + logs.stderr))
    return out


def scaled_consumers(stack: Stack) -> None:
    since = run(["date", "-u", "+%Y-%m-%dT%H:%M:%S"]).stdout.strip()
    stack.up("--no-recreate", "--scale", "transfers-consumer=4")
    consumers = stack.container_ids("transfers-consumer")
    if len(consumers) != 4:
        raise Failed(f"--scale transfers-consumer=4 gave {len(consumers)} containers")
    stack.wait_healthy(timeout=180)
    tag = secrets.token_hex(3)
    new = {
        created(stack.api("POST", "teams", "/api/teams/", {"name": f"Scale {tag} {n}"}), "create team")["id"]
        for n in range(40)
    }
    wait_until(
        "40 teams in the transfers replica", lambda: new <= replica_ids(stack, "transfers"), timeout=120, interval=0.5
    )
    per_container = handled_ids(stack, consumers, since)
    seen: Counter[str] = Counter()
    for counts in per_container.values():
        seen.update(counts)
    twice = [event for event, n in seen.items() if n > 1]
    outbox = int(stack.psql("league_teams", "SELECT count(*) FROM events_outboxmessage WHERE type = 'team.created'"))
    inbox, distinct = stack.psql(
        "league_transfers",
        "SELECT count(*), count(DISTINCT event_id) FROM events_inboxmessage WHERE type = 'team.created'",
    ).split("|")
    replica = len(replica_ids(stack, "transfers"))
    spread = ", ".join(f"{cid}: {sum(c.values())}" for cid, c in per_container.items())
    say(
        f"  40 team.created over 4 consumers ({spread}); handled twice: {len(twice)}; teams outbox {outbox}, "
        f"transfers inbox {inbox} ({distinct} distinct), replica {replica} teams"
    )
    if twice:
        raise Failed(f"events handled by two consumers: {twice[:5]}")
    if sum(len(c) for c in per_container.values()) < 40:
        raise Failed(f"the consumers logged {sum(len(c) for c in per_container.values())} of 40 events as handled")
    if not (outbox == int(inbox) == int(distinct) == replica):
        raise Failed("outbox, inbox and replica disagree")
    if sum(1 for c in per_container.values() if c) < 2:
        raise Failed("one consumer handled everything: the queue is not shared")


class Traffic(threading.Thread):
    """Creates teams one after another until stopped; remembers what the API accepted."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack, self.accepted, self.errors = stack, set(), Counter()
        self.stopping = threading.Event()

    def run(self) -> None:
        tag, n = secrets.token_hex(3), 0
        while not self.stopping.is_set():
            n += 1
            try:
                response = self.stack.api("POST", "teams", "/api/teams/", {"name": f"Traffic {tag} {n}"}, timeout=5)
                if response.status_code == 201:
                    self.accepted.add(response.json()["id"])
                else:
                    self.errors[str(response.status_code)] += 1
            except requests.RequestException as exc:
                self.errors[type(exc).__name__] += 1
            self.stopping.wait(0.1)


def front_door(stack: Stack) -> None:
    """The profile's front door (nginx on WEB_PORT) sends each path to the web service that
    owns it (frontdoor/routes.py) and says which in X-League-Upstream; a write through it
    is answered by the owning service."""
    base = f"http://127.0.0.1:{stack.ports['WEB_PORT']}"
    if stack.profile == "monolith":
        expected = dict.fromkeys(("/api/teams/", "/api/transfers/teams/", "/api/seasons/", "/healthz", "/"), "monolith")
    else:
        expected = {
            "/api/teams/": "teams",
            "/api/transfers/teams/": "transfers",
            "/api/seasons/": "fixtures",
            "/healthz": "teams",  # everything else: the teams service's web
            "/": "teams",
        }
    seen = {}
    for path, name in expected.items():
        response = requests.get(base + path, headers=HTTPS, timeout=10)
        seen[path] = (response.status_code, response.headers.get("X-League-Upstream"))
        if seen[path] != (200, name):
            raise Failed(f"front door: GET {path} answered {seen[path]}, expected (200, {name!r})")
    name = f"Front door {secrets.token_hex(3)}"
    headers = {**HTTPS, "Authorization": f"Token {stack.tokens['teams']}"}
    response = requests.post(f"{base}/api/teams/", json={"name": name}, headers=headers, timeout=10)
    upstream = response.headers.get("X-League-Upstream")
    if response.status_code != 201 or upstream != ("monolith" if stack.profile == "monolith" else "teams"):
        raise Failed(
            f"front door: POST /api/teams/ answered {response.status_code} via {upstream}: {response.text[:200]}"
        )
    say(
        f"  {base}: "
        + ", ".join(f"{p} -> {u}" for p, (_, u) in seen.items())
        + f"; POST /api/teams/ 201 via {upstream}"
    )


def seed_transfers(stack: Stack, tag: str, n: int) -> list[dict[str, Any]]:
    """``n`` teams with two players each, in the transfers replica; returns the teams."""
    teams = [
        created(
            stack.api(
                "POST",
                "teams",
                "/api/teams/",
                {"name": f"{tag} {i}", "players": [{"name": f"{tag} {i}{p}", "position": "ST"} for p in range(2)]},
            ),
            "create team",
        )
        for i in range(n)
    ]
    ids = {t["id"] for t in teams}
    wait_until(f"{n} teams in the transfers replica", lambda: ids <= replica_ids(stack, "transfers"), timeout=90)
    return teams


def transfer(stack: Stack, seller: dict[str, Any], buyer: dict[str, Any], index: int) -> int:
    player = seller["players"][index]
    body = {"player_id": player["id"], "from_team_id": seller["id"], "to_team_id": buyer["id"], "fee": "1000.00"}
    return created(stack.api("POST", "transfers", "/api/transfers/", body), "request a transfer")["id"]


def wait_transfers(stack: Stack, ids: list[int], timeout: float = 120) -> None:
    def done() -> bool:
        states = {i: stack.api("GET", "transfers", f"/api/transfers/{i}/").json()["state"] for i in ids}
        if any(s == "rejected" for s in states.values()):
            raise Failed(f"transfers rejected: {states}")
        return all(s == "completed" for s in states.values())

    wait_until(f"transfers {ids} complete", done, timeout=timeout, interval=0.5)


def split_service(stack: Stack, service: str) -> str:
    """``split_service SERVICE --supervisor compose`` from this host against the running
    monolith profile, as an operator runs it; returns the service's new database URL."""
    new_url = stack.database_url(f"league_{service}")
    stack.data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "manage.py",
        "split_service",
        service,
        "--supervisor",
        "compose",
        "--compose",
        " ".join(stack.compose_argv()),
        "--database-url",
        new_url,
        "--yes",
        "--timeout",
        "300",
    ]
    say(f"  $ DATABASE_URL=…/league DATA_DIR=… manage.py split_service {service} --supervisor compose --database-url …")
    started = time.monotonic()
    try:
        done = subprocess.run(argv, cwd=ROOT, env=split_env(stack), capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as exc:
        raise Failed(f"split_service {service} did not finish within 900 s") from exc
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip():
            say(f"  | {line.rstrip()}")
    if done.returncode != 0:
        raise Failed(f"split_service {service} exited {done.returncode}")
    say(f"  split_service {service} finished in {time.monotonic() - started:.1f} s")
    return new_url


def split_env(stack: Stack) -> dict[str, str]:
    """What split_service and the checks run with: the stack's values (as an operator's
    ``set -a; . ./.env``), the monolith's database and the deployment's data dir."""
    return {
        **os.environ,
        **stack.values,
        "DATABASE_URL": stack.database_url("league"),
        "DATA_DIR": str(stack.data_dir),
        "LEAGUE_SERVICE": "all",
    }


def routed(stack: Stack, expected: dict[str, str]) -> None:
    """Each path answered 200 through the front door by the upstream named."""
    base = f"http://127.0.0.1:{stack.ports['WEB_PORT']}"
    for path, name in expected.items():
        response = requests.get(base + path, headers=HTTPS, timeout=10)
        if (response.status_code, response.headers.get("X-League-Upstream")) != (200, name):
            raise Failed(
                f"after the move GET {path} answered {response.status_code} via "
                f"{response.headers.get('X-League-Upstream')}, expected 200 via {name}"
            )


def monolith_without(stack: Stack, moved: list[str]) -> None:
    """The monolith's containers run with LEAGUE_SERVICE = what stays; no consumer of a moved service."""
    staying = ",".join(s for s in SERVICES if s not in moved)
    for name in ("web", "worker", "beat", *(f"consumer-{s}" for s in SERVICES if s not in moved)):
        for cid in stack.container_ids(name):
            (info,) = json.loads(run(["docker", "inspect", cid]).stdout)
            league_service = dict(e.split("=", 1) for e in info["Config"]["Env"]).get("LEAGUE_SERVICE")
            if league_service != staying or not info["State"]["Running"]:
                raise Failed(f"{name} runs with LEAGUE_SERVICE={league_service} (running {info['State']['Running']})")
    for service in moved:
        left = stack.container_ids(f"consumer-{service}")
        if left:
            raise Failed(f"the monolith's {service} consumer is still there: {left}")
    say(
        f"  the monolith's web, worker, beat and consumers run with LEAGUE_SERVICE={staying}; "
        + ", ".join(f"no consumer-{s}" for s in moved)
    )


def settled_across(stack: Stack, moved: dict[str, str], transfer_ids: list[int]) -> None:
    """devtools/cutover/checks.py over the monolith's database and each moved service's: every event
    handled exactly once, the transfers final, the replicas equal to the teams service."""
    script = (
        "import django, sys; django.setup(); from cutover import checks; "
        f"v = checks.settled(checks.Placement({stack.database_url('league')!r}, {moved!r}), "
        f"transfer_ids={transfer_ids!r}, timeout=120); print(v.describe()); sys.exit(0 if v.ok else 1)"
    )
    verdict = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**split_env(stack), "DJANGO_SETTINGS_MODULE": "league.settings"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    for line in (verdict.stdout + verdict.stderr).strip().splitlines()[-20:]:
        say(f"  {line}")
    if verdict.returncode != 0:
        raise Failed(f"the checks across the databases of {['monolith', *moved]} (devtools/cutover/checks.py) failed")


def split_transfers_then_fixtures(stack: Stack) -> None:
    """Transfers, then fixtures, moved out of the running monolith profile by one command
    each; after each move, through the front door: the moved service answers its paths, its
    work goes on (a transfer requested after the move completes; a result recorded after the
    fixtures move changes the standings, a new season is scheduled), every event is handled
    exactly once across the databases, and the monolith's containers no longer run it."""
    tag = f"Split {secrets.token_hex(3)}"
    teams = seed_transfers(stack, tag, 6)
    before = [transfer(stack, teams[i], teams[i + 1], 0) for i in (0, 2, 4)]
    wait_transfers(stack, before)
    say(f"  seeded: 6 teams, transfers {before} completed in the monolith")
    ids = {t["id"] for t in teams}
    wait_until("the 6 teams in the fixtures replica", lambda: ids <= replica_ids(stack, "fixtures"), timeout=90)
    season = created(
        stack.api(
            "POST",
            "fixtures",
            "/api/seasons/",
            {"name": f"{tag} season", "starts_on": date.today().isoformat(), "team_ids": [t["id"] for t in teams[:4]]},
        ),
        "schedule a season before the moves",
    )
    say(f"  season {season['id']} scheduled in the monolith ({season['fixture_count']} fixtures)")

    moved = {"transfers": split_service(stack, "transfers")}
    routed(stack, {"/api/transfers/": "transfers", "/api/teams/": "monolith", "/api/seasons/": "monolith"})
    after = [transfer(stack, teams[1], teams[3], 0), transfer(stack, teams[5], teams[0], 1)]
    wait_transfers(stack, after)
    player = stack.api("GET", "teams", f"/api/teams/{teams[3]['id']}/").json()
    if teams[1]["players"][0]["id"] not in {p["id"] for p in player["players"]}:
        raise Failed("a transfer completed after the move, but teams does not show the player moved")
    say(f"  after the move: /api/transfers/ via transfers; transfers {after} completed; teams shows the player")
    monolith_without(stack, ["transfers"])
    settled_across(stack, moved, before + after)

    moved["fixtures"] = split_service(stack, "fixtures")
    routed(stack, {"/api/seasons/": "fixtures", "/api/transfers/": "transfers", "/api/teams/": "monolith"})
    fixture = items(stack.api("GET", "fixtures", f"/api/seasons/{season['id']}/fixtures/?matchday=1"))[0]
    result = stack.api("PATCH", "fixtures", f"/api/fixtures/{fixture['id']}/", {"home_goals": 2, "away_goals": 0})
    if result.status_code != 200:
        raise Failed(
            f"after the move PATCH /api/fixtures/{fixture['id']}/ answered {result.status_code}: {result.text[:300]}"
        )
    standings = stack.api("GET", "fixtures", f"/api/seasons/{season['id']}/standings/").json()["standings"]
    home = next(row for row in standings if row["team_id"] == fixture["home_team"]["id"])
    if home["points"] != 3:
        raise Failed(f"after 2-0 recorded on the moved fixtures service the home side has {home}")
    second = created(
        stack.api(
            "POST",
            "fixtures",
            "/api/seasons/",
            {"name": f"{tag} second", "starts_on": date.today().isoformat(), "team_ids": [t["id"] for t in teams[2:6]]},
        ),
        "schedule a season on the moved fixtures service",
    )
    say(
        f"  after the move: /api/seasons/ via fixtures; 2-0 recorded in season {season['id']} (3 points), "
        f"season {second['id']} scheduled ({second['fixture_count']} fixtures)"
    )
    monolith_without(stack, ["transfers", "fixtures"])
    settled_across(stack, moved, before + after)


def kill_mid_traffic(stack: Stack) -> None:
    traffic = Traffic(stack)
    traffic.start()
    try:
        wait_until("traffic flows", lambda: len(traffic.accepted) >= 10, timeout=60, interval=0.2)
        victim = stack.container_ids("transfers-consumer")[0]
        run(["docker", "kill", victim])
        say(f"  docker kill transfers-consumer {victim[:12]} after {len(traffic.accepted)} teams")
        mark = len(traffic.accepted)
        wait_until("traffic goes on", lambda: len(traffic.accepted) >= mark + 10, timeout=60, interval=0.2)
        web = stack.container_ids("teams-web")[0]
        run(["docker", "kill", web])
        say(f"  docker kill teams-web {web[:12]} after {len(traffic.accepted)} teams")
        time.sleep(3)
        comeback = {}
        for name, cid in (("transfers-consumer", victim), ("teams-web", web)):
            state = json.loads(run(["docker", "inspect", cid]).stdout)[0]["State"]
            comeback[name] = "restarted by its restart policy" if state["Running"] else "stays killed"
        # A killed container stays down (docker kill is a manual stop); compose brings it back.
        stack.up("--no-recreate", "--scale", "transfers-consumer=4")
        mark = len(traffic.accepted)
        wait_until(
            "teams-web accepts writes again", lambda: len(traffic.accepted) >= mark + 10, timeout=120, interval=0.5
        )
    finally:
        traffic.stopping.set()
        traffic.join(timeout=15)
    say(
        f"  after the kills: {', '.join(f'{k} {v}' for k, v in comeback.items())}; compose up brought them back; "
        f"{len(traffic.accepted)} teams accepted, failed requests: {dict(traffic.errors) or 'none'}"
    )
    stack.wait_healthy(timeout=180)
    teams_db = {int(i) for i in stack.psql("league_teams", "SELECT id FROM teams_team").split()}
    missing_in_db = traffic.accepted - teams_db
    if missing_in_db:
        raise Failed(f"teams answered 201 for {sorted(missing_in_db)[:5]} but its database does not have them")
    for service in ("transfers", "fixtures"):
        # The killed consumer's in-flight messages come back after the visibility timeout (30 s).
        wait_until(
            f"the {service} replica equals the teams database",
            lambda s=service: replica_ids(stack, s) == teams_db,
            timeout=150,
            interval=1,
        )
    say(
        f"  nothing lost: all {len(teams_db)} teams of the teams database (incl. the {len(traffic.accepted)} accepted "
        f"during the kills) are in both replicas, and nothing else"
    )


def restart_postgres(stack: Stack) -> None:
    before = {c["Name"].lstrip("/"): c["RestartCount"] for c in stack.containers()}
    started = time.monotonic()
    run(["docker", "restart", "--time", "10", *stack.container_ids("postgres")], timeout=120)
    say("  docker restart postgres")
    name = f"After restart {secrets.token_hex(3)}"

    def write_accepted() -> dict[str, Any] | None:
        # Retried until accepted: only a request that got 201 is a promise to keep.
        response = stack.api("POST", "teams", "/api/teams/", {"name": name})
        return response.json() if response.status_code == 201 else None

    team = wait_until("teams accepts a write after the restart", write_accepted, timeout=120, interval=1)
    say(f"  teams accepted a write {time.monotonic() - started:.1f} s after the restart")
    for service in ("transfers", "fixtures"):
        wait_until(
            f"the new team in the {service} replica",
            lambda s=service: team["id"] in replica_ids(stack, s),
            timeout=120,
            interval=0.5,
        )
    say(f"  the team reached both replicas {time.monotonic() - started:.1f} s after the restart")
    stack.wait_healthy(timeout=240)
    after = {c["Name"].lstrip("/"): c["RestartCount"] for c in stack.containers()}
    restarted = {n: after[n] - before.get(n, 0) for n in after if after[n] != before.get(n, 0)}
    say(
        f"  every container healthy again {time.monotonic() - started:.1f} s after the restart, with no help; "
        f"restarted by their restart policy: {restarted or 'none'}"
    )


# ----------------------------------------------------------------------------- main


def image_sizes() -> list[tuple[str, float]]:
    out = run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}"]).stdout.splitlines()
    wanted = re.compile(r"^(local/|league-manager:ci)")
    return [(line.split()[0], line.split()[1]) for line in out if wanted.match(line)]  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", default="monolith,microservices")
    parser.add_argument("--keep-engine", action="store_true", help="leave dockerd running at the end")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("compose_ci: run as root (apt, dockerd, iptables)", file=sys.stderr)
        return 2

    engine = Engine()
    stacks: list[Stack] = []
    ok = False
    workdir = Path(tempfile.mkdtemp(prefix="league-compose-ci."))
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with step("engine: install and start dockerd"):
            engine.install()
            engine.start()
        with step("images: build with no registry (docker/build_offline_images.sh)"):
            build = subprocess.Popen(
                ["docker/build_offline_images.sh"],
                cwd=ROOT,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LEAGUE_IMAGE": APP_IMAGE},
            )
            timer = threading.Timer(1800, build.kill)  # bounded, like every other wait
            timer.start()
            assert build.stdout is not None
            for line in build.stdout:
                say(f"  {line.rstrip()}")
            timer.cancel()
            if build.wait() != 0:
                raise Failed(f"docker/build_offline_images.sh exited {build.returncode}")
        for profile in args.profiles.split(","):
            stack = Stack(profile, workdir)
            stacks.append(stack)
            try:
                with step(f"{profile}: up -d and wait for health"):
                    stack.up()
                    stack.wait_healthy()
                with step(f"{profile}: flow (propagation, transfer, season)"):
                    stack.login()
                    flow(stack)
                with step(f"{profile}: the front door routes by path (X-League-Upstream)"):
                    front_door(stack)
                if profile == "monolith":
                    with step("monolith: split_service transfers, then fixtures (--supervisor compose), then checks"):
                        split_transfers_then_fixtures(stack)
                if profile == "microservices":
                    with step("microservices: transfers-consumer x4, each event handled once"):
                        scaled_consumers(stack)
                    with step("microservices: docker kill a consumer and the teams web mid-traffic"):
                        kill_mid_traffic(stack)
                    with step("microservices: restart PostgreSQL, the stack recovers by itself"):
                        restart_postgres(stack)
                    with step("microservices: the front door still routes (teams-web came back after its kill)"):
                        front_door(stack)
            except Exception:
                stack.logs_of_failures()
                raise
            finally:
                with step(f"{profile}: down -v"):
                    stack.down()
        ok = True
    except Failed as exc:
        print(f"\ncompose_ci FAILED: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ncompose_ci interrupted", file=sys.stderr)
    except Exception:  # a bug here or an answer nobody expected: said, then cleaned up
        import traceback

        traceback.print_exc()
        print("\ncompose_ci FAILED with an unexpected error", file=sys.stderr)
    finally:
        with step("cleanup: containers, networks, volumes, engine, iptables"):
            with contextlib.suppress(Exception):
                for stack in stacks:
                    stack.down()
                left = run(
                    ["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"], check=False
                ).stdout.split()
                volumes = run(
                    ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                    check=False,
                ).stdout.split()
                sizes = image_sizes()
                say(f"  left behind: {len(left)} containers, {len(volumes)} volumes of project {PROJECT}")
                say("  images (kept for the next run): " + ", ".join(f"{name} {size}" for name, size in sizes))
            if not args.keep_engine:
                engine.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    total = time.monotonic() - STARTED
    print("\nstep                                                              seconds  result")
    for name, took, outcome in TIMINGS:
        print(f"{name:<65} {took:7.1f}  {outcome}")
    print(f"\ncompose_ci {'passed' if ok else 'FAILED'} in {total:.0f} s ({total / 60:.1f} min)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
