"""The crash suite's ``split kill -9`` scenario: ``manage.py split_service transfers`` killed
at each of its steps under traffic, then recovered, and the end state checked.

One ``runstack`` (its own database ``<suite db>_split``, moto_server, front door), driven by
the traffic generator through the front door the whole time. For each kill point before the
switch, split_service is started with a new target database and ``kill -9``-ed when it
reaches the point; then ``split_service transfers --rollback`` (the design: a failure before
the switch goes back to the monolith) must leave the monolith serving transfers, its gate
open, and the checks of ``devtools/cutover/checks.py`` passing on the monolith alone. The last kill
point is after the switch: there the same ``split_service`` command is run again and must
finish the move, and the checks must pass across both databases.

Kill points, by the step split_service has begun (it prints ``step N/M: <name> ...``):

- ``migrated``: the new database created and migrated, starting the service on it;
- ``started``: its processes up on the new database, the pause beginning;
- ``paused``: the transfers gate is ``paused`` in the monolith (read from the database);
- ``draining``: publishing the service's remaining outbox rows;
- ``copying``: shortly into the copy;
- ``switching``: the switch begun (its outcome decides: a rerun rolls back or finishes);
- ``switched``: the switch done, the resume begun (fixtures, after transfers has moved).

Before the switch the recovery is ``split_service NAME --rollback``; from the switch on it is
the same ``split_service`` command again, which finishes the move.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

# Kill point -> (the service moved, the step whose start triggers the kill, the recovery).
POINTS: dict[str, tuple[str, str, str]] = {
    "migrated": ("transfers", "start", "rollback"),
    "started": ("transfers", "pause", "rollback"),
    "paused": ("transfers", "pause", "rollback"),  # and the gate paused
    "draining": ("transfers", "publish", "rollback"),
    "copying": ("transfers", "copy", "rollback"),
    "switching": ("transfers", "switch", "rerun"),
    "switched": ("fixtures", "resume", "rerun"),
}
# The start of a step: "step 3/7: pause transfers's writes in the monolith ..." (the plan that
# --dry-run prints has no "...", the end of a step says "done in").
STEP = re.compile(r"step \d+/\d+: (.*?) \.\.\.", re.MULTILINE)


@dataclass
class Kill:
    point: str
    landed: str = ""  # the last step line printed when the kill landed
    recovered: str = ""  # "rollback" or "rerun"
    problems: list[str] | None = None


def _begun(step: str, output: str) -> bool:
    """Whether split_service printed the start of the step whose name starts with ``step``."""
    return any(name.lower().startswith(step) for name in STEP.findall(output))


def _gate(url: str, service: str, conn: psycopg.Connection | None = None) -> str:
    from devtools.cutover.checks import psycopg_url

    sql = "SELECT state FROM events_servicegate WHERE service = %s"
    if conn is not None:
        row = conn.execute(sql, [service]).fetchone()
    else:
        with psycopg.connect(psycopg_url(url), connect_timeout=5, autocommit=True) as own:
            row = own.execute(sql, [service]).fetchone()
    return row[0] if row else "open"


def _reached(point: str, output: str, gate: Callable[[], str]) -> bool:
    _, step, _ = POINTS[point]
    return _begun(step, output) and (point != "paused" or gate() == "paused")


def kill_at(stack, point: str, target: str, timeout: float = 300) -> Kill:
    """Start split_service and kill -9 it at ``point``."""
    service = POINTS[point][0]
    kill = Kill(point, problems=[])
    proc = stack.manage("split_service", service, "--database-url", target, "--yes")
    deadline = time.monotonic() + timeout
    from devtools.cutover.checks import psycopg_url

    conn = psycopg.connect(psycopg_url(stack.url), connect_timeout=5, autocommit=True)  # one, polled every few ms
    gate = lambda: _gate(stack.url, service, conn)  # noqa: E731
    try:
        while True:
            output = stack.output_of(proc)
            if _reached(point, output, gate):
                if point == "copying":
                    time.sleep(0.05)
                break
            if proc.poll() is not None:
                kill.problems.append(f"split_service ended ({proc.returncode}) before '{point}':\n{output[-1500:]}")
                return kill
            if time.monotonic() > deadline:
                kill.problems.append(f"split_service did not reach '{point}' in {timeout:.0f} s:\n{output[-1500:]}")
                return kill
            time.sleep(0.005)
        if proc.poll() is not None:
            kill.problems.append(f"split_service ended ({proc.returncode}) before the kill at '{point}'")
            return kill
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        conn.close()
        if proc.poll() is None and kill.problems:
            proc.kill()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            kill.problems.append("split_service did not die")
    lines = [ln for ln in stack.output_of(proc).splitlines() if STEP.search(ln)]
    kill.landed = lines[-1].strip()[:80] if lines else "(no step printed)"
    return kill


def run(stack, points: tuple[str, ...] = tuple(POINTS), *, rate: float = 4, settle: float = 180) -> list[Kill]:
    """Every kill point in order on ``stack`` (a started ``devtools.cutover.stack.CutoverStack``), under traffic."""
    from devtools.cutover import checks
    from devtools.cutover.traffic import Traffic

    kills: list[Kill] = []
    traffic = Traffic(stack.base_url, stack.token, rate=rate, threads=6, seed=9)
    traffic.seed(teams=6, players=5)
    traffic.start()
    moved: dict[str, str] = {}
    try:
        for i, point in enumerate(points):
            service, _, recovery = POINTS[point]
            target = stack.database(f"{service}{i}")
            time.sleep(3)  # traffic between the runs
            kill = kill_at(stack, point, target)
            kills.append(kill)
            if kill.problems:
                continue
            kill.recovered = recovery
            again = ["--database-url", target, "--yes"] if recovery == "rerun" else ["--rollback"]
            proc = stack.manage("split_service", service, *again)
            try:
                proc.wait(300)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.returncode != 0:
                kill.problems.append(f"{recovery} exited {proc.returncode}:\n{stack.output_of(proc)[-2000:]}")
                continue
            if recovery == "rerun":
                moved[service] = target
            time.sleep(3)  # traffic through the recovered state
            placement = checks.Placement.from_data_dir(stack.data_dir, stack.url)
            if placement.moved != moved:
                kill.problems.append(f"after the {recovery}: deployment.json places {placement.moved}, not {moved}")
            if recovery == "rollback" and (state := _gate(stack.url, service)) != "open":
                kill.problems.append(f"after the rollback the monolith's {service} gate is {state}")
    finally:
        summary = traffic.stop()
    placement = checks.Placement.from_data_dir(stack.data_dir, stack.url)
    verdict = checks.settled(placement, transfer_ids=summary.transfer_ids, timeout=settle)
    http = checks.http(summary, moved=sorted({POINTS[p][0] for p in points}))
    if not verdict.ok or http:
        kills.append(Kill("end state", problems=[verdict.describe(), *http, summary.describe()]))
    return kills
