"""The processes of one crash-suite run: a fresh Postgres database, ``moto_server``,
gunicorn, relays and consumers, each a real process with its log in the run directory.
Every process started here is stopped by ``Stack.close()`` (also on failure)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import requests

from devtools import emulators
from devtools.netutil import free_port, wait_for_http

BASE_DIR = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
CONSUMED = ("teams", "transfers", "fixtures", "faultprobe")


def postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


class Stack:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.db_name = f"faults_{secrets.token_hex(4)}"
        self.db_url = f"postgres://postgres@127.0.0.1:5432/{self.db_name}"
        self.moto_port = free_port()
        self.moto_url = f"http://127.0.0.1:{self.moto_port}"
        self.web_port = free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.prom_dir = run_dir / "prom"
        self.procs: dict[str, subprocess.Popen] = {}
        self._started: list[subprocess.Popen] = []
        self.emulator = emulators.selected()
        self.moto: emulators.Emulator | None = None
        self._logs: list = []
        self._seq = 0
        self.env = self._env()

    # ------------------------------------------------------------------ environment
    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS"))}
        env.update(
            DJANGO_SETTINGS_MODULE="league.settings",
            DATABASE_URL=self.db_url,
            CONN_MAX_AGE="60",
            BUS_PREFIX="faults",
            EVENTS_HANDLER_MODULES="faults.probe",
            DATA_DIR=str(self.run_dir / "data"),
            CELERY_BROKER_URL="filesystem://",
            OUTBOX_KICK="false",
            PROMETHEUS_MULTIPROC_DIR=str(self.prom_dir),
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
            # The crash suite's traffic is not abuse (league/throttling.py).
            API_THROTTLE_ANON="off",
            API_THROTTLE_USER="off",
            # Short timers so that a crash's leftovers come back within seconds, not
            # minutes (production: lease 30 s, back-off cap 1 h; the visibility timeout is
            # production's own).
            OUTBOX_LEASE_SECONDS="5",
            OUTBOX_BATCH_SIZE="50",
            OUTBOX_BACKOFF_MAX_SECONDS="8",
            CONSUMER_WAIT_SECONDS="1",
            CONSUMER_VISIBILITY_TIMEOUT="10",
            CONSUMER_BACKOFF_BASE_SECONDS="1",
            # The transfer saga's deadline (production: 900 s).
            TRANSFER_TIMEOUT_SECONDS="10",
            CONSUMER_DB_BACKOFF_MAX_SECONDS="5",
        )
        env.update(emulators.client_env(self.moto_url))
        return env

    # ------------------------------------------------------------------ lifecycle
    def create_database(self) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')

    def drop_database(self) -> None:
        try:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{self.db_name}" ALLOW_CONNECTIONS true')
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [self.db_name]
                )
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}"')
        except psycopg.Error as exc:
            print(f"could not drop database {self.db_name}: {exc}", file=sys.stderr)

    def manage(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
        """Run a management command to completion; raise with its output on failure."""
        done = subprocess.run(
            [sys.executable, str(BASE_DIR / "manage.py"), *args],
            env={**self.env, **(env or {})},
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def _log(self, name: str):
        self._seq += 1
        f = open(self.run_dir / f"{self._seq:03d}-{name}.log", "w")  # noqa: SIM115 - closed in close()
        self._logs.append(f)
        return f

    def spawn(self, name: str, argv: list[str], **extra_env: str) -> subprocess.Popen:
        log = self._log(name)
        proc = subprocess.Popen(argv, env={**self.env, **extra_env}, cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        self._started.append(proc)
        return proc

    def start_moto(self) -> None:
        """Start the bus emulator: ``moto_server``, or LocalStack with ``BUS_EMULATOR=localstack``."""
        self.moto = emulators.start(
            self.emulator, self.moto_port, log=self._log(self.emulator), data_dir=self.run_dir, timeout=120
        )

    def stop_moto(self) -> None:
        if self.moto is not None:
            self.moto.stop(kill=True)
            self.moto = None

    def start_web(self) -> None:
        exe = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        self.spawn(
            "web",
            [exe, "league.wsgi", "-b", f"127.0.0.1:{self.web_port}", "-w", "2", "--timeout", "60"],
            TEAMS_SERVICE_URL=self.web_url,  # the monolith: transfers reads teams from this web
        )
        wait_for_http(f"{self.web_url}/healthz", timeout=60)

    def start_relay(self, name: str = "relay", **extra_env: str) -> subprocess.Popen:
        return self.spawn(
            name, [sys.executable, str(BASE_DIR / "manage.py"), "relay_outbox", "--interval", "0.2"], **extra_env
        )

    def start_consumer(self, service: str, name: str | None = None, **extra_env: str) -> subprocess.Popen:
        return self.spawn(
            name or f"consume-{service}",
            [sys.executable, str(BASE_DIR / "manage.py"), "consume", "--service", service, "--no-startup"],
            **extra_env,
        )

    def database_down(self) -> int:
        """A database outage as PostgreSQL shows it to clients: new connections refused
        (``ALLOW_CONNECTIONS false``), every open one terminated. Returns how many."""
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{self.db_name}" ALLOW_CONNECTIONS false')
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s", [self.db_name]
            ).fetchone()
        return int(row[0]) if row else 0

    def database_up(self) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{self.db_name}" ALLOW_CONNECTIONS true')

    def pause_relays(self) -> None:
        for name, proc in self.procs.items():
            if name.startswith("relay"):
                proc.send_signal(signal.SIGSTOP)

    def resume_relays(self) -> None:
        for name, proc in self.procs.items():
            if name.startswith("relay"):
                proc.send_signal(signal.SIGCONT)

    def pause(self, prefixes: tuple[str, ...]) -> list[subprocess.Popen]:
        """SIGSTOP every process whose name starts with one of ``prefixes``."""
        paused = [proc for name, proc in self.procs.items() if name.startswith(prefixes)]
        for proc in paused:
            proc.send_signal(signal.SIGSTOP)
        return paused

    @staticmethod
    def resume(paused: list[subprocess.Popen]) -> None:
        for proc in paused:
            proc.send_signal(signal.SIGCONT)

    def wait_ready(self, name: str, text: str, timeout: float = 180) -> None:
        """Wait until process ``name`` wrote ``text`` to its log (e.g. a consumer's
        "consuming ..." line, printed once its topology check passed)."""
        log = next(f for f in reversed(self._logs) if f.name.endswith(f"-{name}.log"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in Path(log.name).read_text():
                return
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited at start: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {timeout} s")

    def kill9(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def check_alive(self) -> list[str]:
        """Names of processes that exited on their own (a crash the suite did not cause)."""
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def close(self) -> None:
        self.procs.clear()
        for proc in self._started:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 20
        for proc in self._started:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.stop_moto()
        for f in self._logs:
            f.close()
        self.drop_database()

    # ------------------------------------------------------------------ helpers
    def api(self, token: str) -> requests.Session:
        s = requests.Session()
        s.headers["Authorization"] = f"Token {token}"
        return s
