"""``manage.py runstack``: the whole system on one machine, one command.

With nothing configured it uses embedded parts: SQLite, ``moto_server`` on loopback (or
LocalStack with ``--emulator localstack``, installed into its own environment on first use),
a Celery broker on the filesystem. With ``DATABASE_URL``, ``CELERY_BROKER_URL`` or
``AWS_ENDPOINT_URL`` set it uses those instead. It migrates, sets up the bus, makes sure
an admin exists (a superuser: its API token is printed with its role; a new admin's
password is kept in ``DATA_DIR/admin-password``, mode 0600, and the path is printed on
every run) and a service account for the transfers service's export reads
(``TEAMS_SERVICE_TOKEN`` of the children, unless set), then supervises: Celery worker and beat, one
consumer per service and the web server (uvicorn, ASGI: the league page's live streams
hold no worker each; every worker process consumes its own broadcast queue). All of them
write their Prometheus counters to one ``PROMETHEUS_MULTIPROC_DIR`` (``DATA_DIR/metrics``,
emptied at start), so ``/metrics`` adds up every process.

A child that dies is restarted (at most 5 times a minute). The embedded emulator keeps
the bus in memory, so a restarted one comes back empty: runstack pauses the Celery worker
(the relay), runs ``setup_bus`` again, and resumes it, and the consumers find their queues
again by themselves. Ctrl-C (or SIGTERM) stops everything cleanly and exits 0; a child
that keeps dying stops everything with exit code 1.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from events import emulators, roles, topology
from events.netutil import port_open, wait_for_http

from .service_account import ensure_service_account

SERVICE_USER = "transfers-service"


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    env: dict[str, str] | None = None
    output: Any = None
    restarts: list[float] = field(default_factory=list)


class Command(BaseCommand):
    help = "Run the whole system locally: moto, migrations, bus, Celery worker + beat, consumers, web."

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

    def handle(
        self, *args, host: str, port: int, emulator: str, emulator_port: int, demo: bool, workers: int, **options
    ):
        self.stop = threading.Event()
        self.children: list[Child] = []
        self.emulator: tuple[str, str] | None = None  # (kind, endpoint) of the emulator runstack started
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop.set())
        base_url = f"http://{host}:{port}"
        env = dict(os.environ)
        env.setdefault("TEAMS_SERVICE_URL", base_url)
        env.setdefault("DATA_DIR", str(settings.DATA_DIR))
        env["PYTHONUNBUFFERED"] = "1"
        # Every child counts into one folder, so /metrics of any web worker adds them all up.
        metrics_dir = settings.DATA_DIR / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        if port_open(host, port):
            raise CommandError(f"Port {port} on {host} is taken. Stop what runs there or pass --port.")
        try:
            if "AWS_ENDPOINT_URL" not in os.environ:
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
                env["AWS_ENDPOINT_URL"] = endpoint
                settings.AWS_ENDPOINT_URL = endpoint
            self.say(
                f"database  {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]} {settings.DATABASES['default']['NAME']}"
            )
            self.say(f"AWS       {env.get('AWS_ENDPOINT_URL') or 'real AWS'}")
            self.say(f"broker    {settings.CELERY_BROKER_URL}")
            call_command("migrate", interactive=False, verbosity=0)
            call_command("setup_bus", verbosity=0, stdout=open(os.devnull, "w"))
            token = self.ensure_admin()
            if "teams" in settings.ACTIVE_SERVICES and not os.environ.get("TEAMS_SERVICE_TOKEN"):
                # The transfers consumer's bootstrap reads GET /api/teams/export/, which
                # needs teams.export_team: a service account, not the admin's token.
                env["TEAMS_SERVICE_TOKEN"] = ensure_service_account(SERVICE_USER).key
            manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
            celery = [self.bin("celery"), "-A", "league"]
            self.spawn(
                Child(
                    "web",
                    [
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
                    ],
                ),
                env,
            )
            wait_for_http(f"{base_url}/healthz", timeout=30)
            self.spawn(Child("worker", [*celery, "worker", "-l", "warning", "-P", "solo"]), env)
            self.spawn(
                Child("beat", [*celery, "beat", "-l", "warning", "-s", str(settings.DATA_DIR / "celerybeat-schedule")]),
                env,
            )
            for service in topology.consuming_services():
                self.spawn(Child(f"consume-{service}", [*manage, "consume", "--service", service]), env)
            if demo:
                call_command("seed_demo")
            self.banner(base_url, token)
            return self.supervise()
        finally:
            self.shutdown()

    def bin(self, name: str) -> str:
        return os.path.join(os.path.dirname(sys.executable), name)

    def say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def spawn(self, child: Child, env: dict[str, str], output: Any = None) -> None:
        child.env, child.output = env, output
        child.proc = self._popen(child)
        self.children.append(child)
        self.say(f"started   {child.name} (pid {child.proc.pid})")

    @staticmethod
    def _popen(child: Child) -> subprocess.Popen:
        # Own process group: Ctrl-C in the terminal reaches only runstack, which then
        # stops each child in order.
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

    def banner(self, base_url: str, token: str) -> None:
        from rest_framework.authtoken.models import Token

        user = Token.objects.select_related("user").get(key=token).user
        rows = [
            ("League page", f"{base_url}/"),
            ("API", f"{base_url}/api/teams/"),
            ("Admin", f"{base_url}/admin/"),
            ("Transfers replica", f"{base_url}/api/transfers/teams/"),
            ("API token", token),
            # Which role the token has: the admin is a superuser (every permission). Give
            # people their own users with a role (admin > Users > Groups) for daily work.
            ("Token role", f"{user.get_username()} ({roles.describe(user)})"),
        ]
        width = max(len(k) for k, _ in rows)
        self.say("")
        for key, value in rows:
            self.say(f"  {key.ljust(width)}  {value}")
        self.say(f"\n  export TOKEN={token}\n  Ctrl-C stops everything.\n")

    def supervise(self) -> int | None:
        """Restart a child that dies (at most 5 times a minute, like a process manager);
        one that keeps dying stops the stack with exit code 1."""
        while not self.stop.wait(0.5):
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

    def restart_emulator(self, child: Child) -> None:
        """Start the emulator again and restore the bus on it before the relay publishes: SNS drops
        what reaches a topic without subscriptions, and a row whose topic is missing is
        failed. The worker (the relay) is paused meanwhile; consumers wait for their queues."""
        from events import aws

        paused = [c for c in self.children if c.name == "worker" and c.proc and c.proc.poll() is None]
        for worker in paused:
            worker.proc.send_signal(signal.SIGSTOP)
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
                if worker.proc and worker.proc.poll() is None:
                    worker.proc.send_signal(signal.SIGCONT)

    def shutdown(self) -> None:
        # The emulator last: the others still talk to it while they stop (a consumer
        # releases its messages, a web worker deletes its broadcast queue).
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
