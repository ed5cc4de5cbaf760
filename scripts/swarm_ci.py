#!/usr/bin/env python
"""docker-stack.yml on a one-node Docker Swarm, upgraded service by service under traffic:
CI's swarm step.

    python -m scripts.swarm_ci [--keep-engine] [--orders A,B]

What it does, in order, printing each step with its duration (every wait bounded):

1. **Engine and swarm.** dockerd as scripts/ci/engine.py starts it (an engine that already
   answers is used and left running); ``docker swarm init --advertise-addr 127.0.0.1`` unless
   the engine is in a swarm already (then it is left in it).
2. **Images, with no registry.** ``docker/build_offline_images.sh`` builds the infrastructure
   images and ``league-manager:current`` from the working tree; ``league-manager:previous``
   is built from the commit in ``docker/PREVIOUS_RELEASE`` (``git archive``; the release an
   upgrade starts from), on the same base, sharing its dependencies' layer.
3. **Each order** (A: teams first, then transfers and fixtures; B: transfers and fixtures
   first, teams last), on a fresh deploy: the stack with ``previous`` everywhere, every
   service converged; a token per service; the front door routes and a team reaches both
   replicas; then traffic through the front door in a thread (teams with players,
   transfers, seasons with a result) while ``docker service update --image
   league-manager:current`` moves one domain service after another: its one-shot setup
   until it completed, then its web, worker, beat and consumer side by side (each timed,
   and the domain service's wall time). In order A, with the traffic still on: ``docker
   kill`` of a web, a consumer and a relay container (swarm replaces each), and the
   transfers consumers scaled 3 -> 6 -> 2. Then the end state:
   every outbox row published; every queue drained, nothing in flight, DLQs empty; every
   event handled once by every consumer (outbox ids vs inbox rows, per (event, handler));
   no transfer requested or cancelling; both replicas equal to the teams database (ids and
   names; the short name too where the teams API has one); no 5xx but a 503 with
   Retry-After, no 409 (the traffic asks for each player's transfer once: nothing it asks
   for conflicts with what it did before), and no dropped connection. The traffic's
   answers are printed per endpoint and status, with the first bodies of each 4xx.
4. ``docker stack rm`` after each order and at the end (also on failure or Ctrl-C), the
   secrets and the volume removed, the swarm left (if this script made it), dockerd stopped
   (if this script started it) and the host's network as it was. The images stay in the
   engine's store for the next run.

Prints a table of the time each swarm service's update took, each domain service's (its
setup, then the rest side by side) and the upgrade's in all. Exits 0 when everything passed.
Needs root (dockerd, iptables).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.ci.engine import Engine, Failed, conclude, run, say, step, stream  # noqa: E402
from scripts.ci.swarm_scenarios import (  # noqa: E402  (run as a script or with -m)
    ORDER_A,
    ORDER_B,
    ROLES,
    Traffic,
    kill_tasks,
    scale_consumers,
    settled,
    smoke,
    upgrade,
)
from scripts.ci.swarm_stack import SwarmStack  # noqa: E402

PREVIOUS, CURRENT = "league-manager:previous", "league-manager:current"


def build(argv: list[str]) -> None:
    stream(argv, env={"LEAGUE_IMAGE": CURRENT})


def build_previous(workdir: Path) -> str:
    """``league-manager:previous`` from the commit in docker/PREVIOUS_RELEASE; also tagged
    ``league-manager:previous-<commit>``, and taken from that tag when a run built it already."""
    ref = (ROOT / "docker" / "PREVIOUS_RELEASE").read_text().split()[0]
    kept = f"{PREVIOUS}-{ref[:12]}"
    if run(["docker", "image", "inspect", kept], check=False, quiet=True).returncode == 0:
        run(["docker", "tag", kept, PREVIOUS])
        say(f"  {kept} is in the engine's store: tagged {PREVIOUS}")
        return ref
    context = workdir / "previous"
    context.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, timeout=120)
    if archive.returncode != 0:
        raise Failed(f"git archive {ref}: {archive.stderr.decode()[-300:]}")
    subprocess.run(["tar", "-x", "-C", str(context)], input=archive.stdout, check=True, timeout=120)
    build(["docker/build_offline_images.sh", "--app", str(context), PREVIOUS])
    run(["docker", "tag", PREVIOUS, kept])
    return ref


class Times:
    """Seconds of each update per order: swarm service -> order -> s, domain service -> order -> s."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, float]] = {}
        self.domains: dict[str, dict[str, float]] = {}

    def print_table(self, orders: list[str]) -> None:
        """A row per swarm service, then per domain service (its setup, then the rest side by
        side: wall time), then all of them (the whole upgrade's wall time)."""
        if not self.services:
            return
        print("\nrolling update of                 " + "".join(f"{'order ' + o:>10}" for o in orders))

        def row(label: str, seconds: dict[str, float]) -> None:
            print(f"{label:<33}" + "".join(f"{seconds.get(o, float('nan')):9.1f}s" for o in orders))

        for domain in ORDER_A:
            for service in (f"{domain}-setup", *(f"{domain}-{role}" for role in ROLES)):
                if service in self.services:
                    row(service, self.services[service])
        for domain in ORDER_A:
            if domain in self.domains:
                row(f"{domain} (setup, then the rest)", self.domains[domain])
        totals = "".join(f"{sum(t.get(o, 0) for t in self.domains.values()):9.1f}s" for o in orders)
        print(f"{'all services':<33}{totals}")


def say_traffic(heading: str, traffic: Traffic) -> None:
    totals, *endpoints = traffic.summary()
    say(f"  {heading}: {totals}")
    for line in endpoints:
        say(f"    {line}")


def one_order(name: str, order: list[str], times: Times, faults: bool) -> None:
    stack = SwarmStack(PREVIOUS)
    traffic: Traffic | None = None
    try:
        with step(f"order {name}: deploy the stack on {PREVIOUS}, wait until converged"):
            stack.deploy()
            stack.wait_healthy()
            stack.login()
            smoke(stack)
        traffic = Traffic(stack)
        traffic.start()
        traffic.phase = "upgrade"
        with step(f"order {name}: rolling upgrade to {CURRENT} under traffic ({order[0]} first)"):
            done = upgrade(stack, order, CURRENT)
            for service, took in done.services.items():
                times.services.setdefault(service, {})[name] = took
            for domain, took in done.domains.items():
                times.domains.setdefault(domain, {})[name] = took
            say_traffic("traffic so far", traffic)
        if faults:
            traffic.phase = "kill"
            with step(f"order {name}: docker kill a web, a consumer and a relay mid-traffic"):
                kill_tasks(stack, traffic)
            traffic.phase = "scale"
            with step(f"order {name}: scale transfers-consumer 3 -> 6 -> 2 mid-traffic"):
                scale_consumers(stack)
        traffic.stop()
        with step(f"order {name}: end state (events once, transfers final, replicas, queues, answers)"):
            for line in settled(stack, traffic):
                say(f"  {line}")
    except Exception:
        if traffic is not None:
            traffic.stop()
            say_traffic("traffic", traffic)
            say(f"  failed: {traffic.bad[:10]}")
        stack.logs_of_failures()
        raise
    finally:
        with step(f"order {name}: docker stack rm"):
            stack.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", default="A,B")
    parser.add_argument("--keep-engine", action="store_true", help="leave dockerd (and its swarm) running at the end")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("swarm_ci: run as root (dockerd, iptables)", file=sys.stderr)
        return 2

    engine = Engine()
    made_swarm = False
    times = Times()
    workdir = Path(tempfile.mkdtemp(prefix="league-swarm-ci."))

    def body() -> None:
        nonlocal made_swarm
        with step("engine: install and start dockerd, swarm init"):
            engine.install()
            engine.start()
            state = run(["docker", "info", "-f", "{{.Swarm.LocalNodeState}}"]).stdout.strip()
            if state != "active":
                run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"])
                made_swarm = True
            say(f"  swarm: {'initialised here' if made_swarm else 'already active, used as it is'}")
            SwarmStack.remove_leftovers()
        with step(f"images: {CURRENT} from the tree and the infrastructure (docker/build_offline_images.sh)"):
            build(["docker/build_offline_images.sh"])
        with step(f"images: {PREVIOUS} from docker/PREVIOUS_RELEASE (git archive)"):
            ref = build_previous(workdir)
            say(f"  {PREVIOUS} = {ref}")
        orders = {"A": ORDER_A, "B": ORDER_B}
        for name in args.orders.split(","):
            one_order(name, orders[name], times, faults=name == "A")

    def cleanup() -> None:
        with step("cleanup: stack, secrets, swarm, engine, iptables"):
            try:
                SwarmStack.remove_leftovers()
                if made_swarm and not args.keep_engine:
                    run(["docker", "swarm", "leave", "--force"], check=False, timeout=60)
                    say("  left the swarm")
            except Exception as exc:  # the engine may be gone: the rest of the cleanup still runs
                say(f"  cleanup: {exc}")
            if not args.keep_engine:
                engine.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    return conclude("swarm_ci", body, cleanup, width=75, report=lambda: times.print_table(args.orders.split(",")))


if __name__ == "__main__":
    sys.exit(main())
