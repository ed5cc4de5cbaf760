"""The command line of the crash suite: ``python -m faults.run [--quick] [--keep-logs]
[--seed N] [--only NAME]...``; exits 0 when every scenario and the final re-check pass."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
import traceback
from pathlib import Path

from ..stack import Stack, postgres_available
from .boot import boot
from .engine import Row, Suite
from .plan import Plan

DESCRIPTION = "The crash-injection suite: ``python -m faults.run [--quick] [--keep-logs]``."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults.run", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="Small sizes (the pytest wrapper).")
    parser.add_argument("--keep-logs", action="store_true", help="Keep the run directory (logs) after success.")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--only", action="append", help="Run only scenarios whose name contains this (repeatable).")
    args = parser.parse_args(argv)
    if not postgres_available():
        print("PostgreSQL is not reachable at 127.0.0.1:5432 (user postgres): the crash suite needs it.")
        return 2
    plan = Plan.quick() if args.quick else Plan()
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    run_dir = Path(tempfile.mkdtemp(prefix="faults-"))
    stack = Stack(run_dir)
    stack.prom_dir.mkdir()
    os.environ.update(stack.env)
    ok = False
    started = time.monotonic()
    print(
        f"crash suite ({'quick' if args.quick else 'full'}, seed {seed}): database {stack.db_name}, "
        f"emulator {stack.emulator}, logs {run_dir}"
    )
    try:
        token = boot(stack)
        suite = Suite(stack, plan, token, seed)
        from .scenarios import SCENARIOS

        for name, body in SCENARIOS:
            if not args.only or any(o in name for o in args.only):
                suite.scenario(name, body)

        from .. import checks

        whole = checks.exactly_once(0, suite.last_outbox_id())
        total = Row(
            "ALL (re-check)",
            events=whole.events,
            lost=whole.lost,
            twice=whole.twice,
            redelivered=sum(r.redelivered for r in suite.rows),
            dlq=sum(r.dlq for r in suite.rows),
            drain=sum(r.drain for r in suite.rows),
            stuck=whole.stuck,
            faults=f"stuck outbox rows: {whole.stuck}",
        )
        total.problems += [f"{whole.stuck} outbox rows stuck"] if whole.stuck else []
        total.problems += checks.replicas_match()[:10]
        print()
        print(suite.report(total, time.monotonic() - started))
        ok = total.ok and all(r.ok for r in suite.rows)
        print("\nRESULT:", "PASS: no event lost, none applied twice" if ok else "FAIL")
        return 0 if ok else 1
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        stack.close()
        if ok and not args.keep_logs:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"logs kept in {run_dir}")
