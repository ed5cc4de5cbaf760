"""Who runs the processes during a cutover: the three actions ``split_service`` needs from
the supervisor of the running monolith, behind one small interface (``Supervisor``).

- ``start(service, url)`` (step 2): the service's web, relay (Celery worker + beat) and
  consumer run on the new database; returns once they answer;
- ``route(service)`` (step 6): the front door sends the service's paths to its web; returns
  the front door's URL once it does;
- ``resume(service)`` (step 7): the monolith runs without the service in ``LEAGUE_SERVICE``;
- ``stop(service)`` (a rollback before the switch): the service's own processes are gone.

``preflight`` refuses, before anything changes, a supervisor that cannot do them.

Two implementations:

- ``RunstackSupervisor`` (the default, ``--supervisor runstack``): the file hand-over with a
  running ``manage.py runstack`` (cutover/deployment.py): ``split_service`` writes
  ``deployment.json``, runstack acts (league/placements.py) and reports in ``stack.json``,
  which this side waits on. Every wait is bounded by ``timeout``.
- ``ComposeSupervisor`` (``--supervisor compose``): run on the host next to
  ``docker compose --profile monolith up``, it drives docker compose itself:
  start = ``up -d --no-deps`` of the microservices profile's ``NAME-web``, ``NAME-worker``,
  ``NAME-beat``, ``NAME-consumer`` with ``NAME_DATABASE`` = the new database's name on the
  compose PostgreSQL (the URL given on the host must be that PostgreSQL's loopback port,
  ``POSTGRES_PORT``), waiting until Docker reports the web's health check (``/readyz``)
  healthy and the others run;
  route = the front door's configuration rendered again (``frontdoor.nginx.render``) with
  every moved service routed to its web, written into the directory the front door mounts
  at ``/etc/frontdoor-live`` (``FRONTDOOR_LIVE_DIR``; the checked-in docker/frontdoor/ is
  never edited), checked with ``nginx -t`` in the container, then a graceful reload, then a
  request through the published front door must show ``X-League-Upstream: NAME``;
  resume = ``rm -sf consumer-NAME``, then the monolith's worker, beat and consumers and last
  its web recreated with ``MONOLITH_SERVICES`` = what stays (compose interpolates it into
  their ``LEAGUE_SERVICE``). Compose recreates a container by stopping the old one before
  starting the new: while the monolith's web restarts (a few seconds) the front door answers
  502 for the monolith's paths; the moved service's paths are not affected.
  Each ``docker compose`` call has a timeout; a failure raises ``SupervisorError`` with the
  command's last lines.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from . import deployment

Say = Callable[[str], None]


class SplitError(RuntimeError):
    """split_service cannot go on; the message says why and what to do (cutover/split.py)."""


class SupervisorError(SplitError):
    """The supervisor cannot do what the cutover needs; the message says what to do."""


class Supervisor(Protocol):
    name: str

    def preflight(self, service: str, url: str) -> None: ...

    def start(self, service: str, url: str) -> None: ...

    def route(self, service: str) -> str: ...

    def resume(self, service: str) -> None: ...

    def stop(self, service: str) -> None: ...

    def describe(self) -> str: ...


# ---------------------------------------------------------------------------- runstack


class RunstackSupervisor:
    """The file hand-over with ``runstack`` (deployment.json → runstack → stack.json)."""

    name = "runstack"

    def __init__(self, data_dir: Path, *, timeout: float = 120.0, say: Say = print) -> None:
        self.data_dir = Path(data_dir)
        self.timeout = timeout
        self.say = say

    def preflight(self, service: str, url: str) -> None:
        stack = deployment.stack(self.data_dir)
        if stack is None:
            raise SupervisorError(
                f"no runstack supervises DATA_DIR {self.data_dir}: split_service starts the moved service "
                "through it. Start the monolith with `manage.py runstack` (same DATA_DIR and DATABASE_URL) "
                "and run this again (or pass --supervisor compose next to docker compose)."
            )
        if not stack.get("front_door"):
            raise SupervisorError(
                "the running stack has no front door (Debian's nginx was not found when runstack started): "
                "clients would keep calling the monolith. Install nginx (apt-get install nginx), restart runstack."
            )

    def start(self, service: str, url: str) -> None:
        self.wait(
            lambda s: s.get("services", {}).get(service, {}).get("state") in (deployment.STANDBY, deployment.SERVING),
            f"runstack to start {service}'s processes on the new database",
        )

    def route(self, service: str) -> str:
        stack = self.wait(
            lambda s: s.get("services", {}).get(service, {}).get("state") == deployment.SERVING,
            f"the front door to route {service} to its new processes",
        )
        return str(stack["front_door"])

    def resume(self, service: str) -> None:
        self.wait(
            lambda s: service not in s.get("monolith", {}).get("services", [service]),
            f"runstack to restart the monolith without {service}",
        )

    def stop(self, service: str) -> None:
        if deployment.stack(self.data_dir) is None:
            return
        try:
            self.wait(lambda s: service not in s.get("services", {}), f"runstack to stop {service}'s processes")
        except SupervisorError as exc:
            self.say(f"warning: {exc}")

    def describe(self) -> str:
        stack = deployment.stack(self.data_dir) or {}
        return f"the front door is {stack.get('front_door')}"

    def wait(self, ok: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            stack = deployment.stack(self.data_dir)
            if stack is None:
                raise SupervisorError(f"runstack stopped while waiting for {what}")
            if ok(stack):
                return stack
            time.sleep(0.1)
        raise SupervisorError(f"timed out after {self.timeout:.0f} s waiting for {what}; see runstack's output")


# ----------------------------------------------------------------------------- compose

FRONTDOOR = "frontdoor"
LIVE_MOUNT = "/etc/frontdoor-live"
LIVE_FILE = "monolith.conf"
MONOLITH_WEB = "web"
ROLES = ("web", "worker", "beat", "consumer")
# In the container: check the new file, make it the one the master reads, reload gracefully
# (the master was started on /tmp/frontdoor.conf by the compose file's command).
RELOAD = (
    f"cp {LIVE_MOUNT}/{LIVE_FILE} /tmp/frontdoor.next.conf"
    " && nginx -t -q -c /tmp/frontdoor.next.conf"
    " && mv -f /tmp/frontdoor.next.conf /tmp/frontdoor.conf"
    " && nginx -c /tmp/frontdoor.conf -s reload"
)
TEST = f"nginx -t -q -c {LIVE_MOUNT}/{LIVE_FILE}.next"

Runner = Callable[..., subprocess.CompletedProcess]


def compose_command(given: str | None = None) -> list[str]:
    """The compose command line: ``given`` (split with shell rules, e.g. ``docker-compose -p x
    -f a.yml --env-file e``), else ``docker compose`` when the plugin answers, else
    ``docker-compose``. Raises SupervisorError when none is installed."""
    if given:
        argv = shlex.split(given)
        if not argv or not shutil.which(argv[0]):
            raise SupervisorError(f"--compose {given!r}: {argv[0] if argv else '(empty)'} is not installed")
        return argv
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise SupervisorError(
        "docker compose was not found (neither the docker compose plugin nor docker-compose): "
        "--supervisor compose runs on the host that runs the stack"
    )


def env_name(service: str) -> str:
    return f"{service.upper()}_DATABASE"


class ComposeSupervisor:
    """docker compose's ``monolith`` profile as the supervisor (see the module docstring)."""

    name = "compose"

    def __init__(
        self,
        compose: Sequence[str],
        data_dir: Path,
        *,
        timeout: float = 120.0,
        say: Say = print,
        runner: Runner = subprocess.run,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.compose = list(compose)
        self.data_dir = Path(data_dir)
        self.timeout = timeout
        self.say = say
        self.runner = runner
        self.environ = dict(os.environ if environ is None else environ)
        self._front_door: str | None = None

    # ----------------------------------------------------------------- commands
    def command(self, *args: str, profile: str = "monolith") -> list[str]:
        return [*self.compose, "--profile", profile, *args]

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 300,
        check: bool = True,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess:
        try:
            done = self.runner(
                list(argv),
                env={**self.environ, **(env or {})},
                capture_output=True,
                text=True,
                timeout=timeout,
                input=stdin,
            )
        except FileNotFoundError as exc:
            raise SupervisorError(f"{argv[0]} was not found: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise SupervisorError(f"`{shlex.join(argv)}` did not finish within {timeout:.0f} s") from exc
        if check and done.returncode != 0:
            tail = "\n".join(((done.stdout or "") + (done.stderr or "")).strip().splitlines()[-8:])
            raise SupervisorError(f"`{shlex.join(argv)}` exited {done.returncode}:\n{tail}")
        return done

    def containers(self, compose_service: str, profile: str = "monolith") -> list[dict[str, Any]]:
        """``docker inspect`` of the service's containers (running or not)."""
        ids = self.run(self.command("ps", "-q", compose_service, profile=profile), timeout=60).stdout.split()
        if not ids:
            return []
        return json.loads(self.run(["docker", "inspect", *ids], timeout=60).stdout)

    def running(self, compose_service: str, profile: str = "monolith") -> list[dict[str, Any]]:
        return [c for c in self.containers(compose_service, profile) if c.get("State", {}).get("Running")]

    def published(self, compose_service: str, port: int, profile: str = "monolith") -> tuple[str, int]:
        out = self.run(self.command("port", compose_service, str(port), profile=profile), timeout=60).stdout.strip()
        host, _, published = out.rpartition(":")
        if not published.isdigit():
            raise SupervisorError(f"{compose_service}'s port {port} is not published (docker compose port: {out!r})")
        host = host.strip("[]")
        return ("127.0.0.1" if host in ("0.0.0.0", "", "::") else host), int(published)

    # ----------------------------------------------------------------- preflight
    def preflight(self, service: str, url: str) -> None:
        self.run([*self.compose, "version"], timeout=60)
        if not self.containers(MONOLITH_WEB):
            raise SupervisorError(
                "the compose monolith is not running here (no `web` container of the monolith profile in "
                f"`{shlex.join(self.compose)}`): start it with `{shlex.join(self.compose)} --profile monolith up -d`, "
                "or give the command it was started with in --compose"
            )
        if not self.running(FRONTDOOR):
            raise SupervisorError(
                "the compose front door (service frontdoor) is not running: clients would keep calling the monolith. "
                f"Start it: `{shlex.join(self.compose)} --profile monolith up -d frontdoor`"
            )
        self.live_dir()
        self.database_name(url)
        self.front_door()

    def live_dir(self) -> Path:
        """The host directory the front door container mounts at LIVE_MOUNT."""
        (door,) = self.running(FRONTDOOR)[:1] or [{}]
        for mount in door.get("Mounts", []):
            if mount.get("Destination") == LIVE_MOUNT and mount.get("Source"):
                return Path(mount["Source"])
        raise SupervisorError(
            f"the front door container mounts no {LIVE_MOUNT} (its routes could not change without editing the "
            "checked-in docker/frontdoor/): recreate it from this repository's docker-compose.yml "
            "(`… --profile monolith up -d frontdoor`)"
        )

    def database_name(self, url: str) -> str:
        """The new database's name on the compose PostgreSQL, which ``url`` (as seen from the
        host) must reach through its published loopback port."""
        parts = urlsplit(url)
        if not parts.scheme.startswith("postgres"):
            raise SupervisorError(
                "--supervisor compose moves a service to a database on the compose PostgreSQL: "
                "give --database-url postgres://league:PASSWORD@127.0.0.1:POSTGRES_PORT/NAME"
            )
        host, port = self.published("postgres", 5432)
        hosts = {host, "localhost"} if host == "127.0.0.1" else {host}
        if parts.hostname not in hosts or (parts.port or 5432) != port:
            raise SupervisorError(
                f"--database-url points at {parts.hostname}:{parts.port or 5432}, but the containers reach only the "
                f"compose PostgreSQL, published here on {host}:{port}: give "
                f"postgres://league:PASSWORD@{host}:{port}/NAME"
            )
        name = parts.path.lstrip("/")
        if not name or "/" in name:
            raise SupervisorError(f"--database-url names no database: {parts.path!r}")
        return name

    def front_door(self) -> str:
        if self._front_door is None:
            host, port = self.published(FRONTDOOR, 8080)
            self._front_door = f"http://{host}:{port}"
        return self._front_door

    # ---------------------------------------------------------------------- start
    def service_env(self, service: str, url: str) -> dict[str, str]:
        """Compose's interpolation variables for the service's containers: its database and,
        while the monolith serves teams, where transfers reads the teams export."""
        return {
            env_name(service): self.database_name(url),
            "TRANSFERS_TEAMS_SERVICE_URL": f"http://{MONOLITH_WEB}:8000",
        }

    def service_containers(self, service: str) -> list[str]:
        return [f"{service}-{role}" for role in ROLES]

    def start(self, service: str, url: str) -> None:
        names = self.service_containers(service)
        self.run(
            self.command("up", "-d", "--no-deps", *names, profile="microservices"),
            env=self.service_env(service, url),
            timeout=max(self.timeout, 300),
        )
        web = f"{service}-web"
        self.wait(lambda: self.healthy(web, "microservices"), f"{web} to pass its health check (/readyz)")
        self.wait(lambda: all(self.running(n, "microservices") for n in names), f"{', '.join(names)} to run")

    def healthy(self, compose_service: str, profile: str = "monolith") -> bool:
        """Docker's own verdict on the container's health check (the one compose's depends_on
        waits for), read with ``docker inspect``: no extra request or process in the container,
        which matters on a loaded host."""
        running = self.running(compose_service, profile)
        return bool(running) and all(c.get("State", {}).get("Health", {}).get("Status") == "healthy" for c in running)

    # ---------------------------------------------------------------------- route
    def routes(self) -> dict[str, str]:
        """Every service deployment.json says is routed (switching or moved) -> its web."""
        placed = deployment.load(self.data_dir)["services"]
        return {
            s: f"{s}-web:8000"
            for s, p in sorted(placed.items())
            if p.get("state") in (deployment.SWITCHING, deployment.MOVED)
        }

    def config(self, routes: Mapping[str, str]) -> str:
        from frontdoor.compose import DOCKER_DNS, LISTEN
        from frontdoor.nginx import render

        return render(
            routes,
            f"{MONOLITH_WEB}:8000",
            LISTEN,
            prefix_dir="/tmp",
            default_name="monolith",
            resolver=DOCKER_DNS,
            error_log="stderr",
            access_log="/dev/stdout",
            generation=str(int(time.time())),
        )

    def write_live(self, directory: Path, text: str) -> None:
        """``monolith.conf.next`` in the mounted directory, readable by the container's nginx user."""
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".frontdoor.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, directory / f"{LIVE_FILE}.next")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def route(self, service: str) -> str:
        routes = self.routes()
        routes.setdefault(service, f"{service}-web:8000")
        directory = self.live_dir()
        self.write_live(directory, self.config(routes))
        self.run(self.command("exec", "-T", FRONTDOOR, "sh", "-ec", TEST), timeout=60)
        os.replace(directory / f"{LIVE_FILE}.next", directory / LIVE_FILE)
        self.run(self.command("exec", "-T", FRONTDOOR, "sh", "-ec", RELOAD), timeout=60)
        from frontdoor.routes import ROUTES

        url = self.front_door() + ROUTES[service][0]
        self.wait(lambda: self.upstream(url) == service, f"the front door ({url}) to answer from {service}")
        return self.front_door()

    @staticmethod
    def upstream(url: str) -> str | None:
        try:
            return requests.get(url, timeout=5).headers.get("X-League-Upstream")
        except requests.RequestException:
            return None

    # --------------------------------------------------------------------- resume
    def monolith_services(self) -> list[str]:
        from django.conf import settings

        webs = self.running(MONOLITH_WEB) or self.containers(MONOLITH_WEB)
        env = dict(e.split("=", 1) for e in (webs[0].get("Config", {}).get("Env") or [])) if webs else {}
        value = env.get("LEAGUE_SERVICE", "all").strip() or "all"
        if value == "all":
            return list(settings.SERVICES)
        return [s for s in settings.SERVICES if s in value.split(",")]

    def resume(self, service: str) -> None:
        current = self.monolith_services()
        staying = [s for s in current if s != service]
        if not staying:
            raise SupervisorError(f"the monolith would serve nothing without {service}: nothing to restart")
        env = {"MONOLITH_SERVICES": ",".join(staying)}
        self.run(self.command("rm", "-s", "-f", f"consumer-{service}"), timeout=120)
        if current != staying:
            others = ["worker", "beat", *(f"consumer-{s}" for s in staying)]
            self.run(self.command("up", "-d", "--no-deps", *others), env=env, timeout=max(self.timeout, 300))
            self.run(self.command("up", "-d", "--no-deps", MONOLITH_WEB), env=env, timeout=max(self.timeout, 300))
        self.wait(lambda: self.healthy(MONOLITH_WEB), "the monolith's web to pass its health check (/readyz)")
        url = self.front_door() + "/healthz"
        self.wait(lambda: self.upstream(url) == "monolith", f"the front door ({url}) to answer from the monolith")
        self.say(
            f"  the monolith's containers run with LEAGUE_SERVICE={env['MONOLITH_SERVICES']}. To keep this deployment "
            f"at the next `up`, put in .env: MONOLITH_SERVICES={env['MONOLITH_SERVICES']} and "
            + " ".join(f"{k}={v}" for k, v in self.moved_env().items())
            + f", and start with --scale consumer-{service}=0 (docs/MIGRATION.md, 'In docker compose')."
        )

    def moved_env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for s, p in sorted(deployment.load(self.data_dir)["services"].items()):
            if p.get("state") in (deployment.SWITCHING, deployment.MOVED):
                with_url = p.get("database_url", "")
                out[env_name(s)] = urlsplit(with_url).path.lstrip("/")
        return out

    # ----------------------------------------------------------------------- stop
    def stop(self, service: str) -> None:
        try:
            self.run(
                self.command("rm", "-s", "-f", *self.service_containers(service), profile="microservices"), timeout=180
            )
        except SupervisorError as exc:
            self.say(f"warning: {exc}")

    def describe(self) -> str:
        try:
            return f"the front door is {self.front_door()} (docker compose service {FRONTDOOR})"
        except SupervisorError:
            return "the front door is the docker compose service frontdoor"

    # ---------------------------------------------------------------------- waits
    def wait(self, ok: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            if ok():
                return
            if time.monotonic() > deadline:
                raise SupervisorError(f"timed out after {self.timeout:.0f} s waiting for {what}")
            time.sleep(1.0)
