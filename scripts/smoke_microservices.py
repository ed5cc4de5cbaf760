#!/usr/bin/env python
"""Smoke test of the ``microservices`` profile of docker-compose.yml, without Docker.

Reads docker-compose.yml and runs the profile's app services as local processes: the same
commands, the same environment (``${...}`` interpolated like compose does), the same
``depends_on`` order and health checks. Only the infrastructure is swapped:

- ``postgres`` -> the local server at 127.0.0.1:5432 (user postgres, trust auth); each
  service gets a fresh database ``<prefix>_<service>`` (prefix ``league_smoke``);
- ``redis``    -> 127.0.0.1:6379, the compose database numbers plus ``--redis-db-offset``;
- ``moto``     -> a ``moto_server`` on a free port;
- ``<x>-web``  -> 127.0.0.1 on a free port per web process.

Then it creates a team on the teams web API and waits until the transfers and fixtures
replicas show it over their own APIs. Prints a table, stops every process (also on
failure or Ctrl-C) and exits 0 when the team arrived everywhere, 1 otherwise.

    .venv/bin/python scripts/smoke_microservices.py [--timeout 60] [--keep-logs]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from events.netutil import free_port, port_open  # noqa: E402  (the repo's own helpers)

COMPOSE_FILE = ROOT / "docker-compose.yml"
PROFILE = "microservices"
BIN = Path(sys.executable).parent

# ----------------------------------------------------------------------------- compose


_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``
    and ``$$`` in every string of a loaded compose file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg, current = m.group("op"), m.group("arg"), env.get(name)
        missing = current is None or (op is not None and op.startswith(":") and current == "")
        if op is None:
            return current or ""
        if op.endswith("-"):
            return arg if missing else current
        if missing:
            raise SystemExit(f"docker-compose.yml: {name}: {arg}")
        return current

    return _VAR.sub(sub, value)


def load_compose(env: dict[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    return interpolate(yaml.safe_load(path.read_text()), env)


def profile_services(compose: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if profile in s.get("profiles", [])}


def app_services(compose: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    """The services built from this repository (the rest is infrastructure)."""
    return {n: s for n, s in profile_services(compose, profile).items() if "build" in s}


def is_one_shot(spec: dict[str, Any]) -> bool:
    return spec.get("restart") == "no"


def seconds(value: str | int | float | None, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    for number, unit in re.findall(r"([\d.]+)(ms|h|m|s)", value):
        total += float(number) * units[unit]
    return total


# ----------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    healthcheck: list[str] | None = None
    health_timeout: float = 10.0
    port: int | None = None
    one_shot: bool = False
    depends_on: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen | None = None
    log: Path | None = None
    healthy: bool = False
    checking: concurrent.futures.Future | None = None
    health_note: str = ""

    @property
    def state(self) -> str:
        if self.popen is None:
            return "pending"
        rc = self.popen.poll()
        if rc is not None:
            return "done" if rc == 0 and self.one_shot else f"exited {rc}"
        return "healthy" if self.healthy else "running"


class Stack:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="league-smoke-"))
        self.procs: dict[str, Proc] = {}
        self.moto: subprocess.Popen | None = None
        self.moto_port = free_port()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
        self.databases: list[str] = []
        self.interp_env = {
            **os.environ,
            # Compose would read these from .env; any value works for a smoke run.
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(40),
            "POSTGRES_PASSWORD": os.environ.get("POSTGRES_PASSWORD") or "smoke",
        }
        self.compose = load_compose(self.interp_env)
        self.apps = app_services(self.compose, PROFILE)
        self.web_ports = {n: free_port() for n, s in self.apps.items() if s["command"][0] == "gunicorn"}
        self.services = sorted({s["environment"]["LEAGUE_SERVICE"] for s in self.apps.values()})

    # --- address rewriting: compose host names -> local processes
    def rewrite_url(self, value: str) -> str:
        if not re.match(r"^[a-z][a-z0-9+.-]*://", value):
            return value
        url = urllib.parse.urlsplit(value)
        host = url.hostname
        if host == "postgres":
            db = self.args.db_prefix + url.path.lstrip("/").removeprefix("league")
            if db not in self.databases:
                self.databases.append(db)
            return f"postgres://{self.args.pg_user}@{self.args.pg_host}:{self.args.pg_port}/{db}"
        if host == "redis":
            number = int(url.path.lstrip("/") or 0) + self.args.redis_db_offset
            return f"redis://{self.args.redis_host}:{self.args.redis_port}/{number}"
        if host == "moto":
            return f"http://127.0.0.1:{self.moto_port}"
        if host in self.web_ports:
            return f"http://127.0.0.1:{self.web_ports[host]}{url.path}"
        return value

    def proc_env(self, name: str, spec: dict[str, Any]) -> dict[str, str]:
        # Nothing from this shell's settings leaks in: only what compose sets, plus a PATH
        # on which python, gunicorn and celery are this virtualenv's (the image's /usr/local/bin).
        keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        env.update({k: self.rewrite_url(str(v)) for k, v in (spec.get("environment") or {}).items()})
        # What the Dockerfile sets (ENV), with a directory per process group.
        data_dir = self.tmp / name
        env.update(
            DATA_DIR=str(data_dir),
            STATIC_ROOT=str(self.tmp / "static"),
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        if name in self.web_ports:
            env["HEALTHCHECK_PORT"] = str(self.web_ports[name])
        return env

    def build(self) -> None:
        for name, spec in self.apps.items():
            argv = list(spec["command"])
            if name in self.web_ports:
                i = argv.index("--bind")
                argv[i + 1] = f"127.0.0.1:{self.web_ports[name]}"
            hc = spec.get("healthcheck") or {}
            test = hc.get("test")
            if test and test[0] == "CMD":
                check = test[1:]
            elif test and test[0] == "CMD-SHELL":
                check = ["sh", "-c", test[1]]
            else:
                check = None
            deps = spec.get("depends_on") or {}
            if isinstance(deps, list):
                deps = {d: "service_started" for d in deps}
            else:
                deps = {d: (c or {}).get("condition", "service_started") for d, c in deps.items()}
            self.procs[name] = Proc(
                name=name,
                argv=argv,
                env=self.proc_env(name, spec),
                healthcheck=check,
                health_timeout=seconds(hc.get("timeout"), 10),
                port=self.web_ports.get(name),
                one_shot=is_one_shot(spec),
                depends_on={d: c for d, c in deps.items() if d in self.apps},
            )

    # --- infrastructure
    def start_infrastructure(self) -> None:
        import psycopg

        if not port_open(self.args.redis_host, self.args.redis_port):
            raise SystemExit(f"no Redis at {self.args.redis_host}:{self.args.redis_port}")
        with psycopg.connect(
            host=self.args.pg_host, port=self.args.pg_port, user=self.args.pg_user, dbname="postgres", autocommit=True
        ) as conn:
            for db in self.databases:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{db}"')
        log = open(self.tmp / "moto.log", "w")
        self.moto = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.moto_port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_http(f"http://127.0.0.1:{self.moto_port}/moto-api/", timeout=30)

    def drop_databases(self) -> None:
        import psycopg

        try:
            with psycopg.connect(
                host=self.args.pg_host,
                port=self.args.pg_port,
                user=self.args.pg_user,
                dbname="postgres",
                autocommit=True,
            ) as conn:
                for db in self.databases:
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        except Exception as exc:  # cleanup must not hide the real outcome
            print(f"could not drop the smoke databases: {exc}", file=sys.stderr)

    # --- the compose life cycle: start what depends_on allows, run health checks
    def satisfied(self, proc: Proc) -> bool:
        for dep, condition in proc.depends_on.items():
            other = self.procs[dep]
            if condition == "service_completed_successfully" and other.state != "done":
                return False
            if condition == "service_healthy" and not (other.healthy and other.state == "healthy"):
                return False
            if condition == "service_started" and other.popen is None:
                return False
        return True

    def spawn(self, proc: Proc) -> None:
        proc.log = self.tmp / f"{proc.name}.log"
        proc.popen = subprocess.Popen(
            proc.argv,
            env=proc.env,
            cwd=ROOT,
            stdout=open(proc.log, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def run_healthcheck(self, proc: Proc) -> tuple[bool, str]:
        try:
            done = subprocess.run(
                proc.healthcheck,
                env=proc.env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=proc.health_timeout,
            )
        except subprocess.TimeoutExpired:
            return False, "health check timed out"
        lines = (done.stdout + done.stderr).strip().splitlines()
        return done.returncode == 0, lines[-1] if lines else ""

    def up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for proc in self.procs.values():
                if proc.popen is None and self.satisfied(proc):
                    self.spawn(proc)
                state = proc.state
                if state.startswith("exited"):
                    raise StackFailed(f"{proc.name} {state}")
                if state == "running" and proc.healthcheck:
                    if proc.checking is None:
                        proc.checking = self.pool.submit(self.run_healthcheck, proc)
                    elif proc.checking.done():
                        proc.healthy, proc.health_note = proc.checking.result()
                        proc.checking = None
                elif state == "running":
                    proc.healthy = True
            if all(p.state in ("done", "healthy") for p in self.procs.values()):
                return
            if time.monotonic() > deadline:
                waiting = [
                    f"{p.name} ({p.state}{': ' + p.health_note if p.health_note else ''})"
                    for p in self.procs.values()
                    if p.state not in ("done", "healthy")
                ]
                raise StackFailed(f"not up within {timeout:.0f} s: {', '.join(waiting)}")
            time.sleep(0.3)

    def down(self) -> None:
        running = [p.popen for p in self.procs.values() if p.popen and p.popen.poll() is None]
        if self.moto and self.moto.poll() is None:
            running.append(self.moto)
        for popen in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for popen in running:
            try:
                popen.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
        self.pool.shutdown(wait=True, cancel_futures=True)

    # --- the scenario
    def manage(self, service_proc: str, *args: str, extra: dict[str, str] | None = None) -> str:
        env = {**self.procs[service_proc].env, **(extra or {})}
        done = subprocess.run(
            [sys.executable, "manage.py", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise StackFailed(f"manage.py {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
        return done.stdout

    def scenario(self, timeout: float) -> list[tuple[str, str, str]]:
        teams_web = self.web_of("teams")
        username = "smoke"
        self.manage(
            teams_web,
            "createsuperuser",
            "--noinput",
            extra={
                "DJANGO_SUPERUSER_USERNAME": username,
                "DJANGO_SUPERUSER_PASSWORD": secrets.token_urlsafe(16),
                "DJANGO_SUPERUSER_EMAIL": "smoke@example.com",
            },
        )
        out = self.manage(teams_web, "drf_create_token", username)
        token = re.search(r"Generated token (\S+)", out)
        if not token:
            raise StackFailed(f"drf_create_token printed no token: {out!r}")
        name = f"Smoke FC {secrets.token_hex(3)}"
        teams_url = f"http://127.0.0.1:{self.procs[teams_web].port}"
        started = time.monotonic()
        response = requests.post(
            f"{teams_url}/api/teams/",
            json={"name": name},
            headers={"Authorization": f"Token {token.group(1)}", "X-Forwarded-Proto": "https"},
            timeout=10,
        )
        if response.status_code != 201:
            raise StackFailed(f"POST /api/teams/ answered {response.status_code}: {response.text[:300]}")
        rows = [("teams", "POST /api/teams/", f"201 {name!r}")]
        replicas = {"transfers": "/api/transfers/teams/", "fixtures": "/api/fixtures/teams/"}
        seen: dict[str, float] = {}
        deadline = started + timeout
        while len(seen) < len(replicas) and time.monotonic() < deadline:
            for service, path in replicas.items():
                if service in seen:
                    continue
                url = f"http://127.0.0.1:{self.procs[self.web_of(service)].port}{path}"
                if name in team_names(requests.get(url, headers={"X-Forwarded-Proto": "https"}, timeout=5)):
                    seen[service] = time.monotonic() - started
            time.sleep(0.2)
        for service, path in replicas.items():
            result = f"seen after {seen[service]:.1f} s" if service in seen else f"NOT seen within {timeout:.0f} s"
            rows.append((service, f"GET {path}", result))
        if len(seen) < len(replicas):
            raise StackFailed("the team did not reach every replica", rows)
        return rows

    def web_of(self, service: str) -> str:
        for name, proc in self.procs.items():
            if proc.port and proc.env.get("LEAGUE_SERVICE") == service:
                return name
        raise StackFailed(f"docker-compose.yml has no web process for {service}")

    def table(self) -> str:
        lines = [f"{'process':<20} {'state':<9} {'pid':>7}  {'port':>5}  command"]
        for p in self.procs.values():
            pid = str(p.popen.pid) if p.popen else "-"
            lines.append(f"{p.name:<20} {p.state:<9} {pid:>7}  {p.port or '-':>5}  {shlex.join(p.argv)[:70]}")
        return "\n".join(lines)


class StackFailed(Exception):
    def __init__(self, message: str, rows: list[tuple[str, str, str]] | None = None) -> None:
        super().__init__(message)
        self.rows = rows or []


def wait_http(url: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise StackFailed(f"{url} did not answer within {timeout} s")


def team_names(response: requests.Response) -> set[str]:
    if response.status_code != 200:
        return set()
    body = response.json()
    items = body.get("results", body) if isinstance(body, dict) else body
    return {item.get("name") for item in items if isinstance(item, dict)}


def print_rows(rows: list[tuple[str, str, str]]) -> None:
    if not rows:
        return
    print(f"\n{'service':<10} {'request':<28} result")
    for row in rows:
        print(f"{row[0]:<10} {row[1]:<28} {row[2]}")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=60, help="seconds for the team to reach the replicas")
    parser.add_argument("--up-timeout", type=float, default=120, help="seconds for the stack to become healthy")
    parser.add_argument("--db-prefix", default="league_smoke")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--redis-host", default="127.0.0.1")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--redis-db-offset", type=int, default=0, help="added to the compose Redis db numbers")
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs (printed path)")
    args = parser.parse_args(argv)

    stack = Stack(args)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    ok = False
    rows: list[tuple[str, str, str]] = []
    started = time.monotonic()
    try:
        stack.build()
        stack.start_infrastructure()
        print(f"smoke: {len(stack.procs)} processes of the {PROFILE!r} profile, moto on :{stack.moto_port}")
        stack.up(args.up_timeout)
        print(f"smoke: stack healthy after {time.monotonic() - started:.1f} s")
        rows = stack.scenario(args.timeout)
        ok = True
    except StackFailed as exc:
        rows = exc.rows
        print(f"\nsmoke FAILED: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nsmoke interrupted", file=sys.stderr)
    finally:
        print()
        print(stack.table())
        print_rows(rows)
        stack.down()
        if not ok:
            for proc in stack.procs.values():
                if proc.log and proc.log.exists() and (proc.state.startswith("exited") or not proc.healthy):
                    tail = proc.log.read_text(errors="replace").strip().splitlines()[-15:]
                    print(f"\n--- {proc.name} (last lines of {proc.log.name})", file=sys.stderr)
                    print("\n".join(tail), file=sys.stderr)
        stack.drop_databases()
        if args.keep_logs or not ok:
            print(f"\nlogs: {stack.tmp}")
        else:
            shutil.rmtree(stack.tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    print(f"\nsmoke {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
