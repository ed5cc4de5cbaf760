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
   league-manager:current`` moves one service after another (each timed). In order A, with
   the traffic still on: ``docker kill`` of a web, a consumer and a relay container (swarm
   replaces each), and the transfers consumers scaled 3 -> 6 -> 2. Then the end state:
   every outbox row published; every queue drained, nothing in flight, DLQs empty; every
   event handled once by every consumer (outbox ids vs inbox rows, per (event, handler));
   no transfer requested or cancelling; both replicas equal to the teams database (ids and
   names; the short name too where the teams API has one); no 5xx but a 503 with
   Retry-After, and no dropped connection.
4. ``docker stack rm`` after each order and at the end (also on failure or Ctrl-C), the
   secrets and the volume removed, the swarm left (if this script made it), dockerd stopped
   (if this script started it) and the host's network as it was. The images stay in the
   engine's store for the next run.

Prints a table of the time each service's update took. Exits 0 when everything passed.
Needs root (dockerd, iptables).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.ci.engine import STARTED, TIMINGS, Engine, Failed, run, say, step  # noqa: E402
from scripts.ci.swarm_scenarios import (  # noqa: E402  (run as a script or with -m)
    ORDER_A,
    ORDER_B,
    Traffic,
    kill_tasks,
    scale_consumers,
    settled,
    smoke,
    upgrade,
)
from scripts.ci.swarm_stack import SwarmStack  # noqa: E402

PREVIOUS, CURRENT = "league-manager:previous", "league-manager:current"


def build(argv: list[str], timeout: float = 1800) -> None:
    proc = subprocess.Popen(argv, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "LEAGUE_IMAGE": CURRENT})  # fmt: skip
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        say(f"  {line.rstrip()}")
    timer.cancel()
    if proc.wait() != 0:
        raise Failed(f"{' '.join(argv)} exited {proc.returncode}")


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


def one_order(name: str, order: list[str], times: dict[str, dict[str, float]], faults: bool) -> None:
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
            for service, took in upgrade(stack, order, CURRENT):
                times.setdefault(service, {})[name] = took
            say(f"  traffic so far: {traffic.summary()}")
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
            say(f"  traffic: {traffic.summary()}; failed: {traffic.bad[:10]}")
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
    ok = False
    times: dict[str, dict[str, float]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="league-swarm-ci."))
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
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
        ok = True
    except Failed as exc:
        print(f"\nswarm_ci FAILED: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nswarm_ci interrupted", file=sys.stderr)
    except Exception:  # a bug here or an answer nobody expected: said, then cleaned up
        import traceback

        traceback.print_exc()
        print("\nswarm_ci FAILED with an unexpected error", file=sys.stderr)
    finally:
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
        signal.signal(signal.SIGTERM, previous)
    if times:
        print("\nrolling update of                 " + "".join(f"{'order ' + o:>10}" for o in args.orders.split(",")))
        for service in ORDER_A:
            if service in times:
                row = "".join(f"{times[service].get(o, float('nan')):9.1f}s" for o in args.orders.split(","))
                print(f"{service:<33}{row}")
        totals = "".join(f"{sum(t.get(o, 0) for t in times.values()):9.1f}s" for o in args.orders.split(","))
        print(f"{'all services':<33}{totals}")
    total = time.monotonic() - STARTED
    print("\nstep                                                                        seconds  result")
    for name, took, outcome in TIMINGS:
        print(f"{name:<75} {took:7.1f}  {outcome}")
    print(f"\nswarm_ci {'passed' if ok else 'FAILED'} in {total:.0f} s ({total / 60:.1f} min)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
