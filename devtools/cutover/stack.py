"""``manage.py runstack`` as a subprocess on a fresh PostgreSQL database, for the cutover's
process-level test, bench and crash scenario.

``CutoverStack(name, port, emulator_port)`` creates the database ``<name>`` (and drops it, and
every ``<name>_*`` database it handed out, at ``close()``), starts runstack with
``DATABASE_URL`` on it and ``DATA_DIR`` in a temporary directory, waits until the stack
is up (the banner, every consumer consuming) and reads the admin's API token from its
output. Everything it starts is stopped by ``close()``, also on failure; every wait is
bounded. ``tail()`` is the end of runstack's output, for a failure message.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import psycopg
import requests

BASE_DIR = Path(__file__).resolve().parent.parent.parent  # devtools/cutover/stack.py -> the project
PG_HOST = "postgres://postgres@127.0.0.1:5432"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
CONSUMERS = ("teams", "transfers", "fixtures")


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


class CutoverStack:
    def __init__(self, name: str, port: int, emulator_port: int, *, env: dict[str, str] | None = None) -> None:
        if not re.fullmatch(r"[a-z0-9_]+", name):
            raise ValueError(f"database name {name!r}: lower-case letters, digits and _ only")
        self.name = name
        self.port = port
        self.emulator_port = emulator_port
        self.url = f"{PG_HOST}/{name}"
        self.base_url = f"http://127.0.0.1:{port}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "runstack.log"
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.token = ""
        self._databases = [name]
        self._log: TextIO | None = None

    # ------------------------------------------------------------------ databases
    def database(self, suffix: str) -> str:
        """The URL of a further database ``<name>_<suffix>`` (not created: split_service does
        that), dropped at close()."""
        db = f"{self.name}_{suffix}"
        drop_database(db)
        self._databases.append(db)
        return f"{PG_HOST}/{db}"

    # ------------------------------------------------------------------ processes
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS", "AWS_ENDPOINT"))}
        env.update(
            DATABASE_URL=self.url,
            DATA_DIR=str(self.data_dir),
            CELERY_BROKER_URL="filesystem://",
            PYTHONUNBUFFERED="1",
            LOG_LEVEL="WARNING",
            CONSUMER_WAIT_SECONDS="1",
            # The traffic measures the cutover, not the API's rates (league/throttling.py).
            API_THROTTLE_ANON="off",
            API_THROTTLE_USER="off",
        )
        # The league's services only: no test or crash-suite probe service (EVENTS_HANDLER_MODULES).
        for name in ("LEAGUE_SERVICE", "EVENTS_HANDLER_MODULES", "BUS_PREFIX"):
            env.pop(name, None)
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 240) -> CutoverStack:
        drop_database(self.name)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        argv = [
            sys.executable,
            str(BASE_DIR / "manage.py"),
            "runstack",
            "--port",
            str(self.port),
            "--emulator-port",
            str(self.emulator_port),
            "--workers",
            "1",
        ]
        self.proc = subprocess.Popen(
            argv, env=self.env(), cwd=BASE_DIR, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while True:
            text = self.output()
            if "Ctrl-C stops everything" in text and all(f"-{s} " in _consuming(text) for s in CONSUMERS):
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"runstack exited with {self.proc.returncode} at start:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"runstack not up after {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.5)
        match = re.search(r"export TOKEN=(\S+)", self.output())
        if match is None:
            raise RuntimeError(f"no API token in runstack's output:\n{self.tail()}")
        self.token = match.group(1)
        self.wait_http("/healthz", timeout=30)
        return self

    def wait_http(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(self.base_url + path, timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.base_url}{path} not answering 200 after {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.3)

    def manage(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``manage.py <args>`` in the stack's environment; its output goes to the file
        ``proc.log_path`` (read it with ``output_of(proc)``)."""
        log_path = self.dir / f"{args[0]}-{time.monotonic_ns()}.log"
        with open(log_path, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, str(BASE_DIR / "manage.py"), *args],
                env={**self.env(), **(env or {})},
                cwd=BASE_DIR,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc.log_path = log_path  # type: ignore[attr-defined]
        return proc

    @staticmethod
    def output_of(proc: subprocess.Popen) -> str:
        return proc.log_path.read_text(errors="replace")  # type: ignore[attr-defined]

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def errors(self, limit: int = 5, context: int = 40) -> str:
        """The processes' errors from the whole log (a 5xx's traceback scrolls out of the
        tail under traffic): up to ``limit`` blocks from each ``Traceback`` or ``ERROR`` line."""
        lines = self.output().splitlines()
        starts = [i for i, line in enumerate(lines) if "Traceback (most recent call last)" in line or " ERROR" in line]
        blocks, end = [], -1
        for i in starts:
            if i <= end:
                continue
            end = i + context
            blocks.append("\n".join(lines[max(i - 2, 0) : end]))
            if len(blocks) == limit:
                break
        return "\n---\n".join(blocks) or "(no Traceback or ERROR line in runstack's output)"

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
        for db in self._databases:
            try:
                drop_database(db)
            except psycopg.Error as exc:
                print(f"could not drop {db}: {exc}", file=sys.stderr)

    def __enter__(self) -> CutoverStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _consuming(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "consuming " in line)
