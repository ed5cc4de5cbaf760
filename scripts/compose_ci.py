#!/usr/bin/env python
"""docker-compose.yml run for real by a Docker engine, with containers killed: CI's compose step.

    python -m scripts.compose_ci [--keep-engine] [--profiles monolith,microservices]
                                 [--skip SCENARIO[,SCENARIO]]

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

``--skip`` leaves steps of 3 and 4 out by name (``flow``, ``front-door``, ``split-services``,
``scaled-consumers``, ``kill-mid-traffic``, ``restart-postgres``, ``front-door-after-kills``;
default: none), e.g. ``--skip scaled-consumers,kill-mid-traffic`` where the swarm step kills
tasks and scales consumers itself; the table of steps lists them as skipped.

Every wait has a timeout. Exits 0 when everything passed, 1 otherwise (with the last log
lines of the containers that were not healthy). Needs root (apt, dockerd, iptables).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.ci.compose_scenarios import (  # noqa: E402  (run as a script or with -m)
    flow,
    front_door,
    kill_mid_traffic,
    restart_postgres,
    scaled_consumers,
    split_transfers_then_fixtures,
)
from scripts.ci.compose_stack import APP_IMAGE, PROJECT, Stack, image_sizes  # noqa: E402
from scripts.ci.engine import Engine, conclude, run, say, skipped, step, stream  # noqa: E402


def login_and_flow(stack: Stack) -> None:
    stack.login()
    flow(stack)


# What runs on each profile once it is up, in this order: a name for --skip, the profiles
# that run it, the step's title, the check. The swarm step kills tasks and scales consumers
# itself: it can leave those out here.
BOTH = ("monolith", "microservices")
SCENARIOS: list[tuple[str, tuple[str, ...], str, Callable[[Stack], None]]] = [
    ("flow", BOTH, "{profile}: flow (propagation, transfer, season)", login_and_flow),
    ("front-door", BOTH, "{profile}: the front door routes by path (X-League-Upstream)", front_door),
    (
        "split-services",
        ("monolith",),
        "monolith: split_service transfers, then fixtures (--supervisor compose), then checks",
        split_transfers_then_fixtures,
    ),
    (
        "scaled-consumers",
        ("microservices",),
        "microservices: transfers-consumer x4, each event handled once",
        scaled_consumers,
    ),
    (
        "kill-mid-traffic",
        ("microservices",),
        "microservices: docker kill a consumer and the teams web mid-traffic",
        kill_mid_traffic,
    ),
    (
        "restart-postgres",
        ("microservices",),
        "microservices: restart PostgreSQL, the stack recovers by itself",
        restart_postgres,
    ),
    (
        "front-door-after-kills",
        ("microservices",),
        "microservices: the front door still routes (teams-web came back after its kill)",
        front_door,
    ),
]
SCENARIO_NAMES = [name for name, *_ in SCENARIOS]


def scenario_list(value: str) -> frozenset[str]:
    """``--skip``'s value: scenario names, comma-separated, each one of SCENARIO_NAMES."""
    names = frozenset(n.strip() for n in value.split(",") if n.strip())
    unknown = sorted(names - set(SCENARIO_NAMES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenario {', '.join(unknown)} (valid: {', '.join(SCENARIO_NAMES)})")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", default="monolith,microservices")
    parser.add_argument(
        "--skip",
        type=scenario_list,
        default=frozenset(),
        metavar="SCENARIO[,SCENARIO]",
        help=f"leave these steps out (default: none); one or more of {', '.join(SCENARIO_NAMES)}",
    )
    parser.add_argument("--keep-engine", action="store_true", help="leave dockerd running at the end")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("compose_ci: run as root (apt, dockerd, iptables)", file=sys.stderr)
        return 2

    engine = Engine()
    stacks: list[Stack] = []
    workdir = Path(tempfile.mkdtemp(prefix="league-compose-ci."))

    def body() -> None:
        with step("engine: install and start dockerd"):
            engine.install()
            engine.start()
        with step("images: build with no registry (docker/build_offline_images.sh)"):
            stream(["docker/build_offline_images.sh"], env={"LEAGUE_IMAGE": APP_IMAGE})
        for profile in args.profiles.split(","):
            stack = Stack(profile, workdir)
            stacks.append(stack)
            try:
                with step(f"{profile}: up -d and wait for health"):
                    stack.up()
                    stack.wait_healthy()
                    if "flow" in args.skip:
                        stack.login()  # otherwise the flow's first act
                for name, profiles, title, check in SCENARIOS:
                    if profile not in profiles:
                        continue
                    if name in args.skip:
                        skipped(title.format(profile=profile), f"--skip {name}")
                        continue
                    with step(title.format(profile=profile)):
                        check(stack)
            except Exception:
                stack.logs_of_failures()
                raise
            finally:
                with step(f"{profile}: down -v"):
                    stack.down()

    def cleanup() -> None:
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

    return conclude("compose_ci", body, cleanup, width=65)


if __name__ == "__main__":
    sys.exit(main())
