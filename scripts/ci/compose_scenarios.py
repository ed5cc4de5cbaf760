"""What CI does to a running compose stack: the flow through the APIs, the front door's routes,
the cutover of two services, consumers scaled, containers killed, PostgreSQL restarted. Each
raises ``Failed`` with what it saw."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import date
from typing import Any

import requests

from scripts.ci.compose_stack import HTTPS, SERVICES, Stack, all_items, created, items, replica_ids
from scripts.ci.engine import ROOT, Failed, run, say, wait_until


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
        "import django, sys; django.setup(); from devtools.cutover import checks; "
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
