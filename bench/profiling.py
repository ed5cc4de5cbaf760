"""Where the time goes: ``bench/run.py --profile`` samples each benchmark with py-spy.

py-spy reads the stacks of the bench process and every process it started (relays,
consumers, web workers, Celery, the emulator) from outside, ``--nonblocking`` (the processes
are never paused) at ``RATE`` samples a second, idle threads included, so time spent waiting
on PostgreSQL or the emulator shows up where it is spent. For each benchmark it writes the
collapsed stacks (``profiles/<benchmark>-<emulator>.raw``, for flame graphs) and a summary
(``.txt``): per process, the share of samples under each frame of our code and under the
waits that matter (PostgreSQL, the emulator's HTTP API, sleeping). docs/PERFORMANCE.md reads
the misses from these.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

RATE = 25  # samples a second per thread: enough for a 60 s row, a few % of one core
OURS = re.compile(r"\((?:events|teams|transfers|fixtures|league|bench|frontdoor|cutover|live)/")
WAITS = {
    "waiting on PostgreSQL": re.compile(r"psycopg/(?:connection|_connection_base|waiting)\.py"),
    "waiting on the emulator (HTTP)": re.compile(r"\((?:http/client|urllib3/connectionpool)\.py"),
    "sleeping / polling": re.compile(r"\b(?:sleep|select|wait) \((?:time|selectors|threading)"),
}


def available() -> str | None:
    """The py-spy executable, or None (it is in requirements-dev.txt)."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Sampler:
    """``with Sampler(name, out_dir):`` samples this process and its descendants."""

    def __init__(self, name: str, out_dir: Path) -> None:
        self.name, self.out_dir = name, out_dir
        self.raw = out_dir / f"{name}.raw"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Sampler:
        exe = available()
        if exe is None:
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install -r requirements-dev.txt")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        argv = [exe, "record", "--pid", str(os.getpid()), "--subprocesses", "--idle", "--threads", "--nonblocking"]
        argv += ["--rate", str(RATE), "--format", "raw", "--output", str(self.raw)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            err = b""
        if self.raw.exists():
            (self.out_dir / f"{self.name}.txt").write_text(summary(self.raw.read_text()))
        else:
            print(f"   profile of {self.name}: py-spy wrote nothing ({err.decode()[-300:]})", flush=True)


def process_of(frames: list[str]) -> str:
    """py-spy names each process in a frame ``process 123:"argv..."`` (a child's stack starts
    with its parents'); the last one is the process the sample is of."""
    named = [f for f in frames if f.startswith("process ")]
    m = re.match(r'process (\d+):"(.*)"', named[-1]) if named else None
    if not m:
        return "bench process"
    argv = m.group(2)
    for word in KINDS:
        found = re.search(word, argv)
        if found:
            return f"{found.group(0)} [{m.group(1)}]"
    return f"{argv[:60]} [{m.group(1)}]"


KINDS = (  # first match wins: the bench's own argv names the emulator (--emulator localstack)
    r"bench/run\.py",
    r"drainer",
    r"relay_outbox",
    r"consume --service \S+",
    r"gunicorn",
    r"celery\S* \S+ \S+ \w+",
    r"split_service",
    r"runserver|uvicorn",
    r"moto_server",
    r"localstack",
)


def _main(group: tuple[str, str]) -> bool:
    return group[1].endswith("MainThread")


def summary(raw: str, top: int = 25) -> str:
    """Per process, its busiest thread of our code (the most samples in our code and not
    asleep: a consumer's main loop, not its heartbeat waiting between beats): its samples, the waits' shares and the frames of our
    code, by the share of that thread's samples under them. Processes with no frame of ours
    (the emulator) get their sample count only."""
    per: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    totals: Counter[tuple[str, str]] = Counter()
    working: Counter[tuple[str, str]] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = next((f for f in reversed(frames) if f.startswith("thread (")), "")
        group = (process_of(frames), thread)
        totals[group] += n
        seen: set[str] = set()
        for frame in frames:
            if OURS.search(frame):
                key = re.sub(r":\d+\)$", ")", frame)
                if key not in seen:
                    seen.add(key)
                    per[group][key] += n
        waiting = None
        for label, pattern in WAITS.items():
            if any(pattern.search(f) for f in frames[-6:]):
                per[group][f"[{label}]"] += n
                waiting = label
                break
        if seen and waiting != "sleeping / polling":
            working[group] += n  # in our code and not asleep: what picks a process's thread
    busiest: dict[str, tuple[str, str]] = {}
    samples: Counter[str] = Counter()
    for group, total in totals.items():
        proc = group[0]
        samples[proc] += total
        best = busiest.get(proc)
        # Every process of ours does its work on its main thread (the consumer's loop, a
        # sync web worker, Celery's solo pool, the bench): that one, when it ran our code.
        # Otherwise the thread most in our code and not visibly asleep (py-spy does not
        # always show the wait a thread sleeps in: a heartbeat between beats looks busy).
        if best is None or (_main(group), working[group]) > (_main(best), working[best]):
            busiest[proc] = group
    out = []
    for proc, total in samples.most_common():
        group = busiest[proc]
        ours = [(k, n) for k, n in per[group].most_common() if n]
        if not any(not k.startswith("[") for k, _ in ours):
            out.append(f"== {proc}: {total} samples, no frame of our code")
            continue
        thread = re.sub(r"^thread \(\d+\):?\s*", "", group[1]) or "main"
        out.append(f"== {proc}, thread {thread}: {totals[group]} samples ({totals[group] / RATE:.0f} s)")
        for key, n in ours[:top]:
            out.append(f"  {100 * n / totals[group]:5.1f}%  {key}")
    return "\n".join(out) + "\n"
