"""Shared set-up of the benchmarks: a fresh Postgres database per run (random suffix), a
``moto_server`` on a free port, Django configured against both, child processes that are
always stopped (also on failure or SIGTERM), and small statistics helpers.

Import order matters: ``configure()`` sets the environment Django's settings read, so it
runs before anything imports Django models.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
OUTBOX = "events_outboxmessage"

_children: list[subprocess.Popen] = []


# ----------------------------------------------------------------------------- results
@dataclass
class Result:
    name: str
    unit: str
    value: float
    baseline: float
    ratio: float  # value / baseline, oriented so that higher is better
    target: str  # human-readable: "ratio >= 0.8", "value <= 30 ms"
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pct(values: list[float], p: float) -> float:
    """Percentile by linear interpolation (numpy's default)."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


median = statistics.median


# ----------------------------------------------------------------------------- processes
def spawn(argv: list[str], *, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """Start a child in its own process group (gunicorn's workers go with it) and remember
    it for cleanup."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen, *, timeout: float = 10) -> None:
    """SIGTERM the child's own process group, SIGKILL it after ``timeout``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
    else:  # the leader is gone; its group (gunicorn workers) may not be
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc in _children:
        _children.remove(proc)


def stop_all() -> None:
    for proc in reversed(list(_children)):
        stop(proc, timeout=5)


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


# ----------------------------------------------------------------------------- the run
@dataclass
class Env:
    suffix: str
    db_name: str
    endpoint: str  # the emulator's URL
    data_dir: Path
    queue: str  # the Celery queue name of this run
    emulator: str = "moto"
    emulator_proc: subprocess.Popen | None = None

    def child_env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(extra)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        return env


_env: Env | None = None


class BenchSetupError(RuntimeError):
    """The run cannot start; the message says what to change."""


def configure(emulator: str = "moto", db_name: str | None = None) -> Env:
    """Create the database (``db_name``, default ``bench_<random>``; it must not exist, since
    it is dropped after the run), start the emulator (moto_server or LocalStack), point
    Django's settings at both, set up Django, migrate and create the bus topology. Cleanup
    is registered at exit."""
    global _env
    import psycopg

    from devtools import emulators
    from devtools.netutil import free_port

    suffix = secrets.token_hex(4)
    db_name = db_name or f"bench_{suffix}"
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", db_name):
        raise BenchSetupError(f"--db-name {db_name!r}: use lower-case letters, digits and _ (at most 63).")
    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name]).fetchone():
            raise BenchSetupError(
                f"Database {db_name!r} exists; the run drops its database at the end, so name a new one."
            )
        signal.signal(signal.SIGTERM, _on_signal)
        atexit.register(teardown)
        conn.execute(f'CREATE DATABASE "{db_name}"')
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{suffix}-"))
    port = free_port()
    _env = Env(suffix, db_name, f"http://127.0.0.1:{port}", data_dir, queue=f"bench-{suffix}", emulator=emulator)
    argv, extra = emulators.command(emulator, port, data_dir=data_dir)
    _env.emulator_proc = spawn(argv, env={**os.environ, **extra}, log=data_dir / f"{emulator}.log")

    os.environ.update(
        DATABASE_URL=f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{db_name}",
        **emulators.client_env(_env.endpoint),
        DATA_DIR=str(data_dir),
        BUS_PREFIX=f"bench{suffix}",
        # Production-like: DEBUG off (no query log on every cursor), quiet logs.
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(32),
        ALLOWED_HOSTS="*",
        SECURE_SSL_REDIRECT="false",
        LOG_LEVEL="WARNING",
        # Redis, on a queue of this run's own (others share the server).
        CELERY_BROKER_URL=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
        CELERY_TASK_DEFAULT_QUEUE=_env.queue,
        CELERY_RELAY_INTERVAL_SECONDS="1",
        # The PostgreSQL configuration: writers wake a long-running relay with NOTIFY.
        OUTBOX_WAKEUP="notify",
        PYTHONUNBUFFERED="1",
        # The benchmarks measure the system, not the API's rates (league/throttling.py).
        API_THROTTLE_ANON="off",
        API_THROTTLE_USER="off",
        DJANGO_SETTINGS_MODULE="league.settings",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    emulators.wait_ready(emulator, _env.endpoint, timeout=120, proc=_env.emulator_proc)
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    from events import topology

    topology.ensure()
    return _env


def env() -> Env:
    assert _env is not None, "configure() first"
    return _env


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of process group
    ``pgid`` (an emulator spawned in a session of its own, with whatever it started),
    from ``/proc/<pid>/stat``; 0.0 where there is no ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the command's closing parenthesis: state, ppid, pgrp, ... utime (14th), stime (15th).
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def command_cpu_seconds(name: str) -> float:
    """CPU seconds used so far by the live processes whose command is ``name`` (e.g. every
    ``postgres`` backend), from ``/proc``; 0.0 where there is no ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        command, _, rest = text.partition(" (")[2].rpartition(")")
        if command == name:
            fields = rest.split()
            total += int(fields[11]) + int(fields[12])
    return total / tick


def emulator_cpu_seconds() -> float:
    """CPU seconds the run's emulator (its whole process group) has used so far; 0.0 when
    no run started one (an emulator of a test's own)."""
    proc = _env.emulator_proc if _env is not None else None
    return group_cpu_seconds(proc.pid) if proc is not None else 0.0


class EmulatorProbe:
    """While the block runs, a thread makes a trivial call to the emulator (an SQS
    ``ListQueues`` that matches nothing) every ``every`` seconds and keeps how long each took.
    A call that took longer than ``threshold`` seconds is a *stall*: the emulator answered
    nothing that fast, whatever else was asking. Events in flight during a stall waited on
    the emulator, not on the code measured.

    ``stalls()`` gives each stall as (wall start, wall end, monotonic start, monotonic end)."""

    def __init__(self, *, every: float = 0.1, threshold: float = 0.25) -> None:
        import threading

        self.every, self.threshold = every, threshold
        self.calls: list[tuple[float, float, float]] = []  # (wall start, monotonic start, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emulator-probe", daemon=True)

    def _run(self) -> None:
        from events import aws

        sqs = aws.client("sqs")
        while not self._stop.is_set():
            wall, mono = time.time(), time.monotonic()
            try:
                sqs.list_queues(QueueNamePrefix="bench-probe-matches-nothing")
            except Exception:  # a failed call is timed like an answered one
                pass
            self.calls.append((wall, mono, time.monotonic() - mono))
            self._stop.wait(self.every)

    def __enter__(self) -> EmulatorProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def stalls(self) -> list[tuple[float, float, float, float]]:
        return [(w, w + d, m, m + d) for w, m, d in self.calls if d > self.threshold]


def clear_of(spans: list[tuple[float, float]], stalls: list[tuple[float, float]]) -> list[bool]:
    """For each (start, end) in ``spans``: True when it overlaps none of ``stalls``."""
    return [not any(s < b and a < e for s, e in stalls) for a, b in spans]


def describe_stalls(stalls: list[tuple[float, float, float, float]]) -> str:
    if not stalls:
        return "none"
    longest = max(x[1] - x[0] for x in stalls)
    return f"{len(stalls)} (longest {longest * 1000:.0f} ms)"


def teardown() -> None:
    """Stop every child, drop the database, delete the Celery queue and the data dir."""
    global _env
    stop_all()
    if _env is None:
        return
    e, _env = _env, None
    try:
        from django.db import connections

        connections.close_all()
    except Exception:
        pass
    try:
        import psycopg

        with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{e.db_name}" WITH (FORCE)')
    except Exception as exc:  # pragma: no cover - report, do not mask the real error
        print(f"warning: could not drop {e.db_name}: {exc}", file=sys.stderr)
    try:
        import redis

        url = os.environ.get("CELERY_BROKER_URL", "")
        if url.startswith("redis"):
            r = redis.Redis.from_url(url)
            r.delete(e.queue, *[f"{e.queue}\x06\x16{i}" for i in range(10)])
    except Exception:
        pass
    import shutil

    shutil.rmtree(e.data_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- helpers
class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def truncate(*tables: str) -> None:
    from django.db import connection

    with connection.cursor() as c:
        c.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


def vacuum(*tables: str) -> None:
    from django.db import connection

    with connection.cursor() as c:
        for t in tables:
            c.execute(f"VACUUM ANALYZE {t}")


def queue_depth(name: str) -> int:
    from events import aws

    a = aws.queue_attributes(
        aws.queue_url(name), "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"
    )
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


def clean_slate() -> str:
    """Between two benchmarks: no backlog of one may slow the next. Purges every service's
    queue (and its dead-letter queue) that is not empty, and deletes outbox rows still
    pending. A row that missed its target (moto falls behind at 50 writes/s) would otherwise
    hand the next one thousands of messages and a relay with work to catch up on. Returns
    what it removed, for the run's log ("" when there was nothing)."""
    from botocore.exceptions import ClientError
    from django.db import connection

    from events import aws, topology

    sqs = aws.client("sqs")
    removed: list[str] = []
    for service in topology.consuming_services():
        for name in (aws.queue_name(service), aws.queue_name(service, dlq=True)):
            depth = queue_depth(name)
            if not depth:
                continue
            url = aws.queue_url(name)
            try:
                sqs.purge_queue(QueueUrl=url)
            except ClientError as exc:  # PurgeQueueInProgress: one purge a minute (LocalStack keeps AWS's rule)
                if "PurgeQueueInProgress" not in str(exc):
                    raise
                _drain(sqs, url, timeout=120)
            removed.append(f"{depth} messages on {name}")
    with connection.cursor() as c:
        c.execute(f"DELETE FROM {OUTBOX} WHERE state = 'pending'")
        if c.rowcount:
            removed.append(f"{c.rowcount} pending outbox rows")
    if removed:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
            queue_depth(aws.queue_name(s)) for s in topology.consuming_services()
        ):
            time.sleep(0.5)  # a purge takes effect asynchronously on some emulators
    return ", ".join(removed)


def _drain(sqs: Any, url: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not msgs:
            return
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)]
        )


def start_drainer(*services: str) -> subprocess.Popen:
    """A separate process that keeps the services' queues empty with a bare receive +
    delete loop (moto's cost per call grows with queue depth)."""
    from events import aws, topology

    services = services or tuple(topology.consuming_services())
    urls = [aws.queue_url(aws.queue_name(s)) for s in services]
    return spawn(
        [sys.executable, str(ROOT / "bench" / "drainer.py"), env().endpoint, *urls],
        env=env().child_env(),
        log=env().data_dir / "drainer.log",
    )


def wait_empty(*services: str, timeout: float = 60) -> None:
    from events import aws, topology

    services = services or tuple(topology.consuming_services())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(queue_depth(aws.queue_name(s)) == 0 for s in services):
            return
        time.sleep(0.2)
    raise TimeoutError(f"queues of {services} not drained within {timeout} s")
