"""The write pause of a cutover, as users see it: ``manage.py runstack``
(its own database ``<run db>_cutover``, moto_server, the front door) with a league of 20
teams and 500 transfers (quick: 100), then traffic at a fixed rate through the front door
while ``manage.py split_service transfers`` runs. The pause is measured by the clients:
from the first 503 (with ``Retry-After``) to the last successful write after it, each
client waiting what ``Retry-After`` says; split_service's own step timings come from its
output. Target: under 5 s. The checks of ``devtools/cutover/checks.py`` run after it (nothing lost
or doubled), so a fast but lossy cutover is not reported as a pass. Then the way back
(``split_service transfers --back``) under the same traffic, measured the same way and held
to the same target (``--quick`` too: it is the pause that used to be 30 times longer).
Two rows: ``cutover_pause_out`` and ``cutover_pause_back``, each with the pause's phases as
split_service printed them (``extra["phases"]``: the same phases both ways, so the two
directions compare phase by phase).

    .venv/bin/python bench/run.py --only cutover_pause [--quick]

``BENCH_CUTOVER_PORT`` picks the front door's port (the stack uses the next few too).
"""

from __future__ import annotations

import os
import re
import time

from . import common
from .common import Result

TARGET_SECONDS = 5.0
STEP = re.compile(r"step (\d+)/(\d+): (.+?)(?:: done in (\d+(?:\.\d+)?) s| \.\.\.)?$")
PAUSED = re.compile(r"were paused for (\d+(?:\.\d+)?) s")
PHASE = re.compile(r"^\s*phase: (.+): (\d+(?:\.\d+)?) s$")


def step_timings(output: str) -> list[tuple[str, float | None]]:
    """``("1/7 create and migrate the new database", 2.31)`` per step of split_service's
    output (``step N/M: <name> ...`` when it begins, ``step N/M: <name>: done in 2.31 s``
    when it ends; None for a step that began and never ended)."""
    steps: dict[int, tuple[str, float | None]] = {}
    for line in output.replace("\r", "\n").splitlines():
        m = STEP.search(line.strip())
        if not m:
            continue
        number, total, name, seconds = m.groups()
        if seconds is not None or int(number) not in steps:
            steps[int(number)] = (f"{number}/{total} {name}", float(seconds) if seconds else None)
    return [steps[n] for n in sorted(steps)]


def pause_phases(output: str) -> list[tuple[str, float]]:
    """``("publish the last outbox rows", 0.41)`` per phase of the pause, in order, as
    split_service prints each when it ends (``phase: <name>: 0.410 s``; cutover/split.py's
    PAUSE_PHASES, the same both ways)."""
    phases = []
    for line in output.replace("\r", "\n").splitlines():
        m = PHASE.match(line)
        if m:
            phases.append((m.group(1), float(m.group(2))))
    return phases


def paused_by_split(output: str) -> float | None:
    """The pause as split_service measured it (its own summary line), if it printed one."""
    m = PAUSED.search(output)
    return float(m.group(1)) if m else None


def seed(stack, *, teams: int, players: int, transfers: int, timeout: float) -> int:
    """``teams`` teams of ``players`` through the API, then ``transfers`` transfer requests
    (a random walk of players between teams), each saga finished. Returns the requests made."""
    from devtools.cutover import checks
    from devtools.cutover.traffic import Traffic

    t = Traffic(stack.base_url, stack.token, rate=15, threads=6, seed=500, mix={"transfer_request": 1})
    t.seed(teams=teams, players=players)
    time.sleep(3)  # the transfers replica learns the teams
    t.start()
    deadline = time.monotonic() + timeout
    while len(t.transfer_ids) < transfers and time.monotonic() < deadline:
        time.sleep(0.5)
    summary = t.stop()
    if len(summary.transfer_ids) < transfers:
        raise RuntimeError(f"only {len(summary.transfer_ids)} of {transfers} transfers requested in {timeout:.0f} s")
    verdict = checks.settled(checks.Placement(stack.url), transfer_ids=summary.transfer_ids, timeout=timeout)
    if not verdict.ok:
        raise RuntimeError(f"the seeded league did not settle: {verdict.describe()}")
    return len(summary.transfer_ids)


def cutover_pause(quick: bool) -> list[Result]:
    from devtools.cutover import checks
    from devtools.cutover.stack import CutoverStack
    from devtools.cutover.traffic import Traffic
    from devtools.netutil import free_port

    e = common.env()
    port = int(os.environ.get("BENCH_CUTOVER_PORT") or free_port(span=2))
    transfers = 100 if quick else 500
    rate = 10.0
    with CutoverStack(f"{e.db_name}_cutover", port, free_port()) as stack:
        stack.start()
        requested = seed(stack, teams=20, players=16, transfers=transfers, timeout=600)
        target = stack.database("transfers")
        # Writes of every service, transfers' the most (the ones that meet the pause).
        mix = {"transfer_request": 40, "player_add": 10, "team_rename": 5, "result_record": 5, "read": 40}
        traffic = Traffic(stack.base_url, stack.token, rate=rate, threads=10, seed=5, mix=mix)
        traffic.seed(teams=20)
        traffic.start()
        try:
            time.sleep(5)
            proc = stack.manage("split_service", "transfers", "--database-url", target, "--yes")
            started = time.monotonic()
            proc.wait(600)
            split_seconds = time.monotonic() - started
            time.sleep(5)
        finally:
            summary = traffic.stop()
        output = stack.output_of(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"split_service exited {proc.returncode}:\n{output}\n{stack.tail()}")
        placement = checks.Placement.from_data_dir(stack.data_dir, stack.url)
        verdict = checks.settled(placement, transfer_ids=summary.transfer_ids, timeout=180)
        problems = verdict.problems + checks.http(summary, moved=["transfers"])
        back = _way_back(stack, rate=rate, mix=mix)
        problems += back["problems"]
    steps = step_timings(output)
    refused = [c for c in summary.calls if c.documented_pause]
    after_last = [
        c.ended - min(r.ended for r in refused)
        for c in summary.calls
        if refused and c.write and c.service == "transfers" and 200 <= c.status < 300
        and c.ended > max(r.ended for r in refused)
    ]  # fmt: skip
    pause = summary.user_pause if summary.user_pause is not None else 0.0
    print(f"   league: 20 teams, {requested} transfers; traffic {rate:g} req/s: {summary.describe()}")
    print(f"   {'split_service step':<40} {'seconds':>8}")
    for name, seconds in steps:
        print(f"   {name:<40} {'-' if seconds is None else f'{seconds:.2f}':>8}")
    print(f"   {'split_service (wall, from outside)':<40} {split_seconds:>8.2f}")
    own = paused_by_split(output)
    print(f"   {'pause as split_service measured it':<40} {_s(own):>8}")
    print(f"   {'503s (first to last)':<40} {summary.pause_window or 0:>8.2f}   ({len(refused)} refused)")
    print(f"   {'first 503 -> first write accepted after':<40} {min(after_last) if after_last else 0:>8.2f}")
    print(f"   {'first 503 -> last refused write accepted':<40} {pause:>8.2f}   (target < {TARGET_SECONDS:g} s)")
    print(f"   {'way back: split_service --back step':<40} {'seconds':>8}")
    for name, seconds in back["steps"]:
        print(f"   {name:<40} {'-' if seconds is None else f'{seconds:.2f}':>8}")
    print(f"   {'way back: pause as split_service measured':<40} {_s(back['paused_by_split_s']):>8}")
    print(
        f"   {'way back: first 503 -> last refused accepted':<40} {_s(back['user_pause_s']):>8}   (target < {TARGET_SECONDS:g} s)"
    )
    out_phases = pause_phases(output)
    print(f"   {'the pause, phase by phase':<40} {'out':>8} {'back':>8}")
    for name, out_s, back_s in side_by_side(out_phases, back["phases"]):
        print(f"   {name:<40} {_s(out_s):>8} {_s(back_s):>8}")
    print(f"   {'paused (split_service)':<40} {_s(own):>8} {_s(back['paused_by_split_s']):>8}")
    print(f"   checks: {'PASS' if not problems else 'FAIL: ' + '; '.join(problems[:5])}")
    back_pause = back["user_pause_s"] if back["user_pause_s"] is not None else back["paused_by_split_s"]
    back_ok = back_pause is not None and back_pause < TARGET_SECONDS
    out_problems = [p for p in problems if not p.startswith("way back: ")]
    common_extra = {"write_p50_ms": summary.latency(0.5) * 1000, "write_p99_ms": summary.latency(0.99) * 1000}
    out_row = Result(
        name="cutover_pause_out",
        unit="s",
        value=pause,
        baseline=TARGET_SECONDS,
        ratio=TARGET_SECONDS / pause if pause else float("nan"),
        target=f"value < {TARGET_SECONDS:g} s, checks pass",
        met=(0 < pause < TARGET_SECONDS and not out_problems) if refused else None,
        note=(
            f"20 teams, {requested} transfers; {rate:g} req/s, {len(refused)} writes refused; split_service "
            f"{split_seconds:.1f} s; checks {'pass' if not out_problems else 'FAIL'}"
            + ("" if refused else "; no write met the pause (too short to hit at this rate)")
        ),
        extra={
            "pause_window_s": summary.pause_window,
            "first_accept_after_s": min(after_last) if after_last else None,
            "refused": len(refused),
            "steps": {name: seconds for name, seconds in steps},
            "phases": dict(out_phases),
            "split_seconds": split_seconds,
            "paused_by_split_s": own,
            "problems": out_problems[:20],
            **common_extra,
        },
    )
    back_problems = [p for p in problems if p.startswith("way back: ")]
    back_row = Result(
        name="cutover_pause_back",
        unit="s",
        value=back_pause if back_pause is not None else float("nan"),
        baseline=TARGET_SECONDS,
        ratio=TARGET_SECONDS / back_pause if back_pause else float("nan"),
        target=f"value < {TARGET_SECONDS:g} s, checks pass",
        met=(back_ok and not back_problems) if back["refused"] else None,
        note=(
            f"{back['refused']} writes refused; back/out "
            + (f"{back_pause / pause:.2f}" if back_pause is not None and pause else "-")
            + f"; checks {'pass' if not back_problems else 'FAIL'}"
        ),
        extra={
            "steps": {name: seconds for name, seconds in back["steps"]},
            "phases": dict(back["phases"]),
            "paused_by_split_s": back["paused_by_split_s"],
            "user_pause_s": back["user_pause_s"],
            "refused": back["refused"],
            "back_over_out": back_pause / pause if back_pause is not None and pause else None,
            "problems": back_problems[:20],
        },
    )
    return [out_row, back_row]


def side_by_side(
    out: list[tuple[str, float]], back: list[tuple[str, float]]
) -> list[tuple[str, float | None, float | None]]:
    """Each phase's seconds out and back, in the order of the way out (then any phase only
    the way back had)."""
    names = [n for n, _ in out] + [n for n, _ in back if n not in dict(out)]
    o, b = dict(out), dict(back)
    return [(n, o.get(n), b.get(n)) for n in names]


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _way_back(stack, *, rate: float, mix: dict[str, int]) -> dict:
    """``split_service transfers --back`` under traffic: its steps, the pause it measured,
    the pause clients saw, and the checks after it (nothing lost or doubled)."""
    from devtools.cutover import checks
    from devtools.cutover.traffic import Traffic

    traffic = Traffic(stack.base_url, stack.token, rate=rate, threads=10, seed=6, mix=mix)
    traffic.seed(teams=20)
    traffic.start()
    try:
        time.sleep(3)
        proc = stack.manage("split_service", "transfers", "--back", "--yes")
        proc.wait(600)
        time.sleep(3)
    finally:
        summary = traffic.stop()
    output = stack.output_of(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"split_service --back exited {proc.returncode}:\n{output}\n{stack.tail()}")
    placement = checks.Placement.from_data_dir(stack.data_dir, stack.url)
    verdict = checks.settled(placement, transfer_ids=summary.transfer_ids, timeout=180)
    return {
        "steps": step_timings(output),
        "phases": pause_phases(output),
        "paused_by_split_s": paused_by_split(output),
        "user_pause_s": summary.user_pause,
        "refused": len([c for c in summary.calls if c.documented_pause]),
        "problems": [f"way back: {p}" for p in verdict.problems + checks.http(summary, moved=["transfers"])],
    }
