"""``manage.py runstack``: the whole system on one machine, one command.

With nothing configured it uses embedded parts: SQLite, ``moto_server`` on loopback (or
LocalStack with ``--emulator localstack``, installed into its own environment on first use)
whose endpoint and credentials it hands to every child, a Celery broker on the filesystem.
With ``DATABASE_URL``, ``CELERY_BROKER_URL`` or ``AWS_ENDPOINT_URL`` set it uses those
instead (``AWS_ENDPOINT_URL`` set and empty: real AWS, credentials from boto3's chain). It migrates, sets up the bus, makes sure
an admin exists (a superuser: its API token is printed with its role; a new admin's
password is kept in ``DATA_DIR/admin-password``, mode 0600, and the path is printed on
every run) and a service account for the transfers service's export reads
(``TEAMS_SERVICE_TOKEN`` of the children, unless set), then supervises: Celery worker and beat, one
consumer per service and the web server (uvicorn, ASGI: the league page's live streams
hold no worker each; every worker process consumes its own broadcast queue). With Debian's
nginx installed the front door (``frontdoor``) listens on ``--port`` and proxies to the web
server on an internal loopback port (``--port`` + 1 when free); without nginx (or with
``--no-front-door``) the web server listens on ``--port`` itself and one line says so.
``switch_routes`` changes the front door's routes gracefully (the cutover calls it), and
``DATA_DIR/stack.json`` says what runs now (removed at a clean stop). Every child signs with
one key: ``SECRET_KEY``, or this data directory's own (``league/secretkey.py``). With ``DEBUG``
off it runs ``collectstatic`` first (the pages name their files by its manifest), when a
static source changed since the last run. All of them
write their Prometheus counters to one ``PROMETHEUS_MULTIPROC_DIR`` (``DATA_DIR/metrics``,
emptied at start), so ``/metrics`` adds up every process.

A child that dies is restarted (at most 5 times a minute). The embedded emulator keeps
the bus in memory, so a restarted one comes back empty: runstack pauses the Celery worker
(the relay), runs ``setup_bus`` again, and resumes it, and the consumers find their queues
again by themselves. A front door that dies is started again with the same routes. Ctrl-C
(or SIGTERM) stops everything cleanly, the front door first (no new requests), and exits 0; a
child that keeps dying stops everything with exit code 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from cutover import deployment
from devtools import emulators
from devtools.netutil import free_port, port_open, wait_for_http
from frontdoor.nginx import FrontDoor, FrontDoorError
from kernel import roles
from league import secretkey
from league.placements import Placements, monolith_consumers

from .service_account import ensure_service_account

SERVICE_USER = "transfers-service"
# In STATIC_ROOT: the fingerprint of the static sources the last collection copied.
STATIC_STAMP = ".runstack-collected"
# The longest runstack waits for a started process to say its start-up is over.
READY_TIMEOUT = 60.0


def static_fingerprint() -> str:
    """A digest of every static source file collectstatic would copy (path, size, mtime)
    and of the storage that post-processes them."""
    from django.contrib.staticfiles.finders import get_finders

    entries = set()
    for finder in get_finders():
        for path, storage in finder.list(["CVS", ".*", "*~"]):
            info = os.stat(storage.path(path))
            entries.add(f"{getattr(storage, 'prefix', None) or ''}/{path}\0{info.st_size}\0{info.st_mtime_ns}")
    digest = hashlib.sha256(settings.STORAGES["staticfiles"]["BACKEND"].encode())
    for entry in sorted(entries):
        digest.update(entry.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    env: dict[str, str] | None = None
    output: Any = None
    restarts: list[float] = field(default_factory=list)
    # Where the process says its start-up is over (events/readiness.py), when runstack waits on it.
    ready_file: Path | None = None


@dataclass
class Layout:
    """Where a runstack puts things: the address people use (``base_url``), the front door
    (None without nginx), the web server's address (behind the door, or ``base_url``'s),
    and the environment every child starts with."""

    base_url: str
    door: FrontDoor | None
    web_host: str
    web_port: int
    env: dict[str, str]

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"


class Command(BaseCommand):
    help = "Run the whole system locally: moto, migrations, bus, Celery worker + beat, consumers, web, front door."

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.front_door: FrontDoor | None = None
        self.front_door_lock = threading.Lock()
        self.front_door_restarts: list[float] = []
        self.monolith = ""  # host:port of this runstack's web server (the default upstream)
        self.children: list[Child] = []

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--emulator",
            choices=emulators.KINDS,
            default="moto",
            help="The local AWS emulator to start when AWS_ENDPOINT_URL is unset (default moto).",
        )
        parser.add_argument(
            "--emulator-port",
            "--moto-port",
            dest="emulator_port",
            type=int,
            default=5005,
            help="Port for the emulator when AWS_ENDPOINT_URL is unset.",
        )
        parser.add_argument("--demo", action="store_true", help="Seed a believable league (20 teams with full squads).")
        parser.add_argument(
            "--workers", type=int, default=2, help="web server (uvicorn) worker processes, each with its own live feed"
        )
        parser.add_argument(
            "--no-front-door",
            action="store_true",
            help="serve the web server directly on --port even when nginx is installed",
        )

    def handle(
        self,
        *args,
        host: str,
        port: int,
        emulator: str,
        emulator_port: int,
        demo: bool,
        workers: int,
        no_front_door: bool = False,
        **options,
    ):
        self.stop = threading.Event()
        self.children = []
        self.emulator: tuple[str, str] | None = None  # (kind, endpoint) of the emulator runstack started
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop.set())
        layout = self.plan(host, port, emulator_port, no_front_door=no_front_door)
        try:
            if "AWS_ENDPOINT_URL" not in os.environ:
                self.start_emulator(emulator, emulator_port, layout.env)
            token = self.prepare(layout.env)
            self.start_processes(layout, workers)
            if demo:
                call_command("seed_demo")
            self.banner(layout.base_url, token, layout.web_url if layout.door else None)
            return self.supervise()
        finally:
            self.shutdown()

    def plan(self, host: str, port: int, emulator_port: int, *, no_front_door: bool) -> Layout:
        """Where everything goes, before anything starts: the front door (nginx) on ``--port``
        and the web server behind it on loopback, or, without nginx, the web server on
        ``--port`` as it always was; the environment every child gets (one signing key, one
        metrics folder, emptied). Raises CommandError if a port it needs is taken."""
        door = None if no_front_door else self.front_door_for(host, port)
        web_host, web_port = ("127.0.0.1", self.internal_port(port, avoid=emulator_port)) if door else (host, port)
        self.monolith = f"{web_host}:{web_port}"
        base_url = f"http://{host}:{port}"
        env = dict(os.environ)
        env.setdefault("TEAMS_SERVICE_URL", base_url)
        env.setdefault("DATA_DIR", str(settings.DATA_DIR))
        env["PYTHONUNBUFFERED"] = "1"
        if not env.get("SECRET_KEY"):
            # Every child signs with this data directory's key (league/secretkey.py): sessions
            # and CSRF tokens hold across the processes, and no other install knows the key.
            env["SECRET_KEY"] = settings.SECRET_KEY
            self.say(f"signing   SECRET_KEY of this data directory, kept in {settings.DATA_DIR / secretkey.FILE_NAME}")
        # Every child counts into one folder, so /metrics of any web worker adds them all up.
        metrics_dir = settings.DATA_DIR / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        if port_open(host, port):
            raise CommandError(f"Port {port} on {host} is taken. Stop what runs there or pass --port.")
        if door and port_open(web_host, web_port):
            raise CommandError(f"Port {web_port} (the web server behind the front door) is taken; pass another --port.")
        return Layout(base_url=base_url, door=door, web_host=web_host, web_port=web_port, env=env)

    def start_emulator(self, emulator: str, emulator_port: int, env: dict[str, str]) -> None:
        """The embedded emulator on ``emulator_port`` (LocalStack installed first if asked),
        ready; its endpoint and credentials go into ``env``, this process and its settings."""
        endpoint = f"http://127.0.0.1:{emulator_port}"
        if port_open("127.0.0.1", emulator_port):
            raise CommandError(f"Port {emulator_port} is taken; pass --emulator-port or set AWS_ENDPOINT_URL.")
        try:
            if emulator == "localstack":
                emulators.install_localstack(out=self.stdout)
            argv, extra = emulators.command(emulator, emulator_port, data_dir=settings.DATA_DIR)
        except emulators.EmulatorError as exc:
            raise CommandError(str(exc)) from exc
        # The emulator logs every request: to a file, not the terminal.
        log = open(settings.DATA_DIR / f"{emulator}.log", "ab")
        self.spawn(Child(emulator, argv), {**env, **extra}, output=log)
        try:
            emulators.wait_ready(emulator, endpoint, timeout=90)
        except emulators.EmulatorError as exc:
            raise CommandError(f"{exc}: see {settings.DATA_DIR / f'{emulator}.log'}") from exc
        self.emulator = (emulator, endpoint)
        # Its endpoint and credentials, to this process and to every child explicitly.
        env.update(emulators.client_env(endpoint))
        os.environ.update(emulators.client_env(endpoint))
        settings.AWS_ENDPOINT_URL = endpoint

    def prepare(self, env: dict[str, str]) -> str:
        """What the processes need before they start: the database migrated (the monolith's
        share when services moved out), the bus set up, static files collected, an admin and
        the transfers service's account (its token into ``env``). Returns the admin's token."""
        self.say(
            f"database  {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]} {settings.DATABASES['default']['NAME']}"
        )
        self.say(f"AWS       {env.get('AWS_ENDPOINT_URL') or 'real AWS'}")
        self.say(f"broker    {settings.CELERY_BROKER_URL}")
        # Services moved to their own database (split_service, league/placements.py) run
        # apart: the monolith migrates and serves the rest.
        self.placements = Placements(self)
        if self.placements.moved():
            self.say(f"moved     {', '.join(self.placements.moved())} (own databases: {deployment.DEPLOYMENT})")
            subprocess.run(
                [sys.executable, str(settings.BASE_DIR / "manage.py"), "migrate", "--noinput", "-v", "0"],
                env=self.placements.monolith_env(env),
                check=True,
            )
        else:
            call_command("migrate", interactive=False, verbosity=0)
        call_command("setup_bus", verbosity=0, stdout=open(os.devnull, "w"))
        self.collect_static()
        token = self.ensure_admin()
        if "teams" in settings.ACTIVE_SERVICES and not os.environ.get("TEAMS_SERVICE_TOKEN"):
            # The transfers consumer's bootstrap reads GET /api/teams/export/, which
            # needs teams.export_team: a service account, not the admin's token.
            env["TEAMS_SERVICE_TOKEN"] = ensure_service_account(SERVICE_USER).key
        return token

    def start_processes(self, layout: Layout, workers: int) -> None:
        """The web server (answering), the front door in front of it, stack.json, Celery
        worker and beat, one consumer per service the monolith serves; the moved services'
        processes (league/placements.py)."""
        self.base_env = dict(layout.env)
        self.workers = workers
        env = self.placements.monolith_env(layout.env)
        self.monolith_env = env
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        celery = [self.bin("celery"), "-A", "league"]
        self.spawn(Child("web", self.web_argv(layout.web_host, layout.web_port, workers)), env)
        wait_for_http(f"{layout.web_url}/healthz", timeout=30)
        door = layout.door
        if door:
            try:
                door.start({}, self.monolith)
            except FrontDoorError as exc:
                raise CommandError(f"the front door did not start: {exc}") from exc
            self.front_door = door
            self.say(f"started   front door (nginx pid {door.pid}) on {door.url} -> web on {self.monolith}")
        self.write_stack()
        self.spawn(Child("worker", [*celery, "worker", "-l", "warning", "-P", "solo"]), env)
        self.spawn(
            Child("beat", [*celery, "beat", "-l", "warning", "-s", str(settings.DATA_DIR / "celerybeat-schedule")]),
            env,
        )
        for service in monolith_consumers(self.placements.monolith_services):
            self.spawn(Child(f"consume-{service}", [*manage, "consume", "--service", service]), env)
        self.placements.reconcile()

    def collect_static(self) -> None:
        """With ``DEBUG`` off the pages name their static files by the manifest that
        ``collectstatic`` writes (whitenoise serves them from ``STATIC_ROOT``): collect them
        first, or every page would be a 500. Skipped while no source file changed since the
        last collection (its fingerprint is kept in ``STATIC_ROOT``)."""
        from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage

        if not isinstance(staticfiles_storage, ManifestFilesMixin):
            return
        root = Path(settings.STATIC_ROOT)
        stamp = root / STATIC_STAMP
        fingerprint = static_fingerprint()
        manifest = root / staticfiles_storage.manifest_name
        if manifest.exists() and stamp.exists() and stamp.read_text() == fingerprint:
            self.say(f"static    up to date in {settings.STATIC_ROOT} (DEBUG is off)")
            return
        started = time.monotonic()
        call_command("collectstatic", interactive=False, verbosity=0)
        stamp.write_text(fingerprint)
        self.say(f"static    collected into {settings.STATIC_ROOT} ({time.monotonic() - started:.1f} s; DEBUG is off)")

    def front_door_for(self, host: str, port: int) -> FrontDoor | None:
        """The front door on ``host:port`` if Debian's nginx is installed; else None and one line."""
        if not FrontDoor.available():
            self.say(
                f"front door off: it needs Debian's nginx (apt-get install nginx); the web server serves {port} directly"
            )
            return None
        return FrontDoor(settings.DATA_DIR / "frontdoor", host, port)

    @staticmethod
    def internal_port(port: int, avoid: int | None = None) -> int:
        """The web server's port behind the front door: ``port`` + 1 when free (and not
        ``avoid``, the emulator's), else any free one."""
        wanted = port + 1
        if wanted < 65536 and wanted != avoid and not port_open("127.0.0.1", wanted):
            return wanted
        return free_port()

    def switch_routes(self, upstreams: dict[str, str]) -> None:
        """Route each service in ``upstreams`` ({"transfers": "127.0.0.1:8011"}) to that
        address and everything else to this runstack's web server (the monolith), gracefully:
        requests in flight finish where they are. Returns once the new routes answer. Raises
        CommandError (and the routes stay as they were) for an unknown service, a bad address,
        a configuration nginx refuses, or when no front door runs."""
        with self.front_door_lock:
            if self.front_door is None:
                raise CommandError(
                    "no front door runs (it needs Debian's nginx: apt-get install nginx, and no --no-front-door)"
                )
            try:
                self.front_door.switch(dict(upstreams), self.monolith)
            except FrontDoorError as exc:
                raise CommandError(str(exc)) from exc
            self.say(
                "routes    "
                + (", ".join(f"{s} -> {a}" for s, a in sorted(upstreams.items())) or "everything")
                + f" (everything else -> {self.monolith})"
            )
            self.write_stack()

    @property
    def stack_file(self):
        return settings.DATA_DIR / "stack.json"

    def write_stack(self) -> None:
        """DATA_DIR/stack.json: what this runstack runs now (cutover/deployment.py describes it):
        pid, the front door's URL, the monolith's web and services, the routes the front door
        has now; other keys (the moved services' processes) are kept."""
        try:
            current = json.loads(self.stack_file.read_text())
        except (OSError, ValueError):
            current = {}
        door = self.front_door
        monolith = current.get("monolith") if isinstance(current.get("monolith"), dict) else {}
        monolith["web"] = self.monolith
        monolith.setdefault("services", list(settings.ACTIVE_SERVICES))
        current.update(
            pid=os.getpid(),
            front_door=door.url if door else None,
            monolith=monolith,
            routes=dict(door.upstreams) if door else {},
        )
        current.setdefault("services", {})
        placements = getattr(self, "placements", None)
        if placements is not None:
            current.update(placements.report())
        tmp = self.stack_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(current, indent=2) + "\n")
        os.replace(tmp, self.stack_file)

    def web_argv(self, host: str, port: int, workers: int) -> list[str]:
        return [
            self.bin("uvicorn"),
            "league.asgi:application",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--lifespan",
            "on",
            # Open live streams end after this at a stop, so a stop is quick.
            "--timeout-graceful-shutdown",
            "3",
            # The client's address is Django's to find (TRUSTED_PROXIES, league/throttling.py):
            # uvicorn would believe any X-Forwarded-For entry that reached the front door.
            "--no-proxy-headers",
        ]

    def child(self, name: str, argv: list[str], env: dict[str, str], *, ready: bool = False) -> Child:
        child = Child(name, argv)
        self.spawn(child, env, ready=ready)
        return child

    def stop_children(self, children: list[Child]) -> None:
        """Stop these children gracefully and stop supervising them (their ready files go too)."""
        self.children[:] = [c for c in self.children if c not in children]
        self._stop(children)
        for child in children:
            if child.ready_file is not None:
                child.ready_file.unlink(missing_ok=True)

    def restart_monolith(self, services: list[str]) -> None:
        """Serve only ``services`` in the monolith from now on, without dropping a request:
        a new web server first, the front door switched to it, the old one stopped
        gracefully; then worker, beat and consumers with the new ``LEAGUE_SERVICE``."""
        env = {**self.base_env, "LEAGUE_SERVICE": ",".join(services)}
        self.monolith_env = env
        old_web = [c for c in self.children if c.name == "web"]
        if self.front_door is not None:
            port = free_port()
            self.spawn(Child("web", self.web_argv("127.0.0.1", port, self.workers)), env)
            wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
            self.monolith = f"127.0.0.1:{port}"
            self.switch_routes(dict(self.front_door.upstreams))
            self.stop_children(old_web)
        # Stopped together: each may take its whole graceful stop (a consumer finishes its
        # receive in flight), so the restart costs the longest of them, not their sum.
        replaced = [c for c in self.children if c.name in ("worker", "beat") or c.name.startswith("consume-")]
        self.stop_children(replaced)
        started: list[Child] = []
        for child in replaced:
            if child.name in ("worker", "beat"):
                started.append(Child(child.name, child.argv))
        # One consumer per service the monolith serves now (a moved one's runs with the service).
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        for service in monolith_consumers(services):
            started.append(Child(f"consume-{service}", [*manage, "consume", "--service", service]))
        for child in started:
            self.spawn(child, env, ready=True)
        # The restart is over when their start-ups are: split_service --back pauses next.
        self.wait_ready(started)
        if self.front_door is None:  # no front door: the web restarts in place (a short gap)
            for child in old_web:
                self.stop_children([child])
                self.spawn(Child("web", child.argv), env)
        self.say(f"monolith  now serves {', '.join(services)} (LEAGUE_SERVICE={','.join(services)})")

    def bin(self, name: str) -> str:
        return os.path.join(os.path.dirname(sys.executable), name)

    def say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def spawn(self, child: Child, env: dict[str, str], output: Any = None, *, ready: bool = False) -> None:
        """Start ``child``; with ``ready``, it names a file to say when its start-up is over
        (``READY_FILE``, events/readiness.py) for ``wait_ready``."""
        if ready:
            ready_dir = settings.DATA_DIR / "ready"
            ready_dir.mkdir(parents=True, exist_ok=True)
            child.ready_file = ready_dir / f"{child.name.replace('/', '-')}.{secrets.token_hex(4)}"
            env = {**env, "READY_FILE": str(child.ready_file)}
        child.env, child.output = env, output
        child.proc = self._popen(child)
        self.children.append(child)
        self.say(f"started   {child.name} (pid {child.proc.pid})")

    def wait_ready(self, children: list[Child], timeout: float = READY_TIMEOUT) -> None:
        """Wait until each of ``children`` has said its start-up is over (or has exited: the
        supervision restarts it), ``timeout`` at most: a start-up (Django, boto3, Celery) costs
        a second or more of CPU each, and the cutover's pause must not share the machine with
        it. Past ``timeout`` it goes on and says which did not say so."""
        started = time.monotonic()

        def starting(child: Child) -> bool:
            alive = child.proc is not None and child.proc.poll() is None
            return alive and child.ready_file is not None and not child.ready_file.exists()

        waiting = [c for c in children if starting(c)]
        while waiting and time.monotonic() - started < timeout:
            time.sleep(0.1)
            waiting = [c for c in waiting if starting(c)]
        if waiting:
            self.say(f"not ready {', '.join(c.name for c in waiting)} after {timeout:.0f} s; going on")
        elif children:
            self.say(f"ready     {', '.join(c.name for c in children)} ({time.monotonic() - started:.1f} s)")

    @staticmethod
    def _popen(child: Child) -> subprocess.Popen:
        # Own process group: Ctrl-C in the terminal reaches only runstack, which then
        # stops each child in order. A restarted child says its start-up is over again.
        if child.ready_file is not None:
            child.ready_file.unlink(missing_ok=True)
        return subprocess.Popen(
            child.argv,
            env=child.env,
            start_new_session=True,
            stdout=child.output,
            stderr=subprocess.STDOUT if child.output else None,
        )

    def ensure_admin(self) -> str:
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        User = get_user_model()
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin")
        user = User.objects.filter(username=username).first()
        if user is None:
            password = os.environ.get("DJANGO_SUPERUSER_PASSWORD") or secrets.token_urlsafe(12)
            user = User.objects.create_superuser(username, os.environ.get("DJANGO_SUPERUSER_EMAIL", ""), password)
            if "DJANGO_SUPERUSER_PASSWORD" in os.environ:
                self.say(f"admin     created user {username!r} with the password in DJANGO_SUPERUSER_PASSWORD")
            else:
                self.password_file.unlink(missing_ok=True)
                fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(password + "\n")
                self.say(f"admin     created user {username!r} with password {password} (kept in {self.password_file})")
        elif self.password_file.exists():
            self.say(f"admin     user {username!r}, password in {self.password_file}")
        else:
            self.say(f"admin     user {username!r} (a new password: manage.py changepassword {username})")
        token, _ = Token.objects.get_or_create(user=user)
        return token.key

    @property
    def password_file(self):
        return settings.DATA_DIR / "admin-password"

    def banner(self, base_url: str, token: str, web_url: str | None = None) -> None:
        from rest_framework.authtoken.models import Token

        user = Token.objects.select_related("user").get(key=token).user
        rows = [("Front door", f"{base_url}/ (nginx; routes by path, see docs/DEPLOY.md)")] if web_url else []
        rows += [
            ("League page", f"{base_url}/"),
            ("API", f"{base_url}/api/teams/"),
            ("Admin", f"{base_url}/admin/"),
            ("Transfers replica", f"{base_url}/api/transfers/teams/"),
            ("API token", token),
            # Which role the token has: the admin is a superuser (every permission). Give
            # people their own users with a role (admin > Users > Groups) for daily work.
            ("Token role", f"{user.get_username()} ({roles.describe(user)})"),
        ]
        if web_url:
            rows.append(("Web (direct)", f"{web_url}/ (behind the front door)"))
        width = max(len(k) for k, _ in rows)
        self.say("")
        for key, value in rows:
            self.say(f"  {key.ljust(width)}  {value}")
        self.say(f"\n  export TOKEN={token}\n  Ctrl-C stops everything.\n")

    def supervise(self) -> int | None:
        """Restart a child that dies (at most 5 times a minute, like a process manager);
        one that keeps dying stops the stack with exit code 1."""
        while not self.stop.wait(0.5):
            self.check_front_door()
            try:
                self.placements.poll()
            except Exception as exc:  # a bad deployment.json must not take the stack down
                self.say(f"could not apply {deployment.DEPLOYMENT}: {exc}")
            for child in self.children:
                if child.proc and child.proc.poll() is not None:
                    now = time.monotonic()
                    child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                    if len(child.restarts) > 5:
                        self.shutdown()
                        raise CommandError(
                            f"{child.name} exited with code {child.proc.returncode} 6 times within a minute; "
                            "stopped the stack."
                        )
                    self.say(f"restarted {child.name}: it exited with code {child.proc.returncode}")
                    if self.emulator and child.name == self.emulator[0]:
                        self.restart_emulator(child)
                    else:
                        child.proc = self._popen(child)
        self.say("stopping ...")
        return None

    def check_front_door(self) -> None:
        """Start a front door that died again, with the routes it had (5 times a minute at most)."""
        with self.front_door_lock:
            door = self.front_door
            if door is None or door.running:
                return
            code = door.proc.returncode if door.proc else None
            now = time.monotonic()
            self.front_door_restarts = [t for t in self.front_door_restarts if now - t < 60] + [now]
            if len(self.front_door_restarts) > 5:
                self.shutdown()
                raise CommandError(f"the front door (nginx) exited 6 times within a minute; see {door.error_log}")
            routes, default = dict(door.upstreams), door.default or self.monolith
            door.stop()
            try:
                door.start(routes, default)
                self.say(f"restarted front door: nginx exited with code {code}")
            except FrontDoorError as exc:
                self.say(f"could not restart the front door ({exc}); trying again")

    def restart_emulator(self, child: Child) -> None:
        """Start the emulator again and restore the bus on it before the relay publishes: SNS drops
        what reaches a topic without subscriptions, and a row whose topic is missing is
        failed. The worker (the relay) is paused meanwhile; consumers wait for their queues."""
        from events import aws

        paused = [c.proc for c in self.children if c.name == "worker" and c.proc and c.proc.poll() is None]
        for worker in paused:
            worker.send_signal(signal.SIGSTOP)
        try:
            assert self.emulator is not None
            kind, endpoint = self.emulator
            child.proc = self._popen(child)
            emulators.wait_ready(kind, endpoint, timeout=90, proc=child.proc)
            aws.reset()
            call_command("setup_bus", verbosity=0, stdout=open(os.devnull, "w"))
            self.say(f"restored  the bus on the restarted {kind} (setup_bus)")
        except Exception as exc:  # the stack keeps running; a person can finish the job
            self.say(f"could not restore the bus on {child.name} ({exc}); run `manage.py setup_bus`")
        finally:
            for worker in paused:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGCONT)

    def shutdown(self) -> None:
        # The front door first: no new requests reach what is stopping. The emulator last:
        # the others still talk to it while they stop (a consumer releases its messages, a
        # web worker deletes its broadcast queue).
        door, self.front_door = self.front_door, None
        if door is not None:
            door.stop(timeout=10)
        if self.monolith:
            self.stack_file.unlink(missing_ok=True)
        users = [c for c in reversed(self.children) if c.name not in emulators.KINDS]
        self._stop(users)
        self._stop([c for c in self.children if c.name in emulators.KINDS])
        self.children.clear()

    @staticmethod
    def _stop(children: list[Child]) -> None:
        for child in children:
            if child.proc and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            if not child.proc:
                continue
            try:
                child.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
