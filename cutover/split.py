"""``split_service``: move one service out of the running monolith to a database of its own,
without losing or doubling an event. Run against the monolith (its ``DATABASE_URL`` and
``DATA_DIR``), with ``runstack`` supervising it; docs/MIGRATION.md tells the whole story.

The steps, and why this order:

1. **create and migrate the new database** (the service's migrations only, as its own
   deployment would run them); the service's gate there is closed until step 6;
2. **start the service on it**: the supervisor starts its web, relay and consumer against
   the new database (``cutover/supervisor.py``: ``runstack`` through ``deployment.json`` by
   default, or docker compose with ``--supervisor compose``). They come up *before* the pause,
   idle behind their closed gate (the consumer receives nothing, the web is not routed),
   so that the pause does not include a process start;
3. **pause its writes in the monolith** (``events/gate.py``): its API answers 503 with
   ``Retry-After`` (reads keep working), its consumer gives its batch back and stops
   receiving (its queue keeps the messages), and the pause waits for the writes under way;
4. **publish its remaining outbox rows**: the monolith's relay publishes them (each exactly
   once: nothing is carried over as pending);
5. **copy and verify** its rows, inbox, sequence counters, unpublished outbox rows and
   accounts in one snapshot (``cutover/copy.py``: row counts and a checksum per table); its
   published outbox rows (history, needed by nothing that publishes or handles an event)
   follow in step 7, outside the pause;
6. **switch**: the new database's gate opens and the front door routes the service's paths
   to its web. This is the point of no automatic return: from here the new database may
   take writes;
7. **resume**: the monolith's gate for the service becomes ``moved`` for good (its tables
   there are read-only leftovers, removed by ``--cleanup``), its published outbox history is
   copied (new ids in the new database, which already writes its own; verified by event id),
   and the supervisor restarts the monolith without the service in ``LEAGUE_SERVICE``.

A failure (or Ctrl-C) before step 6 rolls back to the monolith as it was: its gate opens,
the new processes stop, and a database this command created is dropped. A crash (kill -9)
leaves ``deployment.json`` saying how far it got; running the command again rolls back
what an unfinished run did before step 6 and starts over, or finishes a run that passed it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import environ
import requests
from django.conf import settings
from django.db import connections

from events import gate
from events.models import OutboxMessage, OutboxState

from . import copy as copying
from . import deployment
from .supervisor import RunstackSupervisor, SplitError, Supervisor, SupervisorError

TARGET = "split_target"
STEPS = [
    "create and migrate the new database",
    "start {service} on the new database",
    "pause the writes of {service} in the monolith",
    "publish the last outbox rows of {service}",
    "copy and verify the rows of {service}",
    "switch the front door to {service}",
    "resume: the monolith drops {service}",
]
BACK_STEPS = [
    "start {service} in the monolith again, behind its gate",
    "pause the writes of {service} in its own database",
    "publish the last outbox rows of {service} there",
    "copy and verify the rows of {service} back into the monolith",
    "switch {service} back to the monolith",
    "close the own database of {service}",
]


def mask(url: str) -> str:
    """The URL without its password (for output and logs)."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def database_config(url: str) -> dict[str, Any]:
    try:
        cfg = environ.Env.db_url_config(url)
    except Exception as exc:
        raise SplitError(f"--database-url {mask(url)!r} is not a database URL ({exc})") from exc
    engine = cfg.get("ENGINE", "")
    if not engine.endswith(("postgresql", "sqlite3")):
        raise SplitError(f"--database-url {mask(url)!r}: use postgres://… or sqlite:///…")
    if engine.endswith("sqlite3"):
        if not cfg.get("NAME") or cfg["NAME"] == ":memory:":
            raise SplitError("--database-url: a SQLite database must be a file (sqlite:////path/to/file.sqlite3)")
        cfg["OPTIONS"] = (
            dict(settings.DATABASES["default"].get("OPTIONS", {}))
            if _monolith_is_sqlite()
            else {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            }
        )
    return cfg


def _monolith_is_sqlite() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")


def same_database(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["ENGINE"] != b["ENGINE"]:
        return False
    if a["ENGINE"].endswith("sqlite3"):
        return Path(a["NAME"]).resolve() == Path(b["NAME"]).resolve()
    return (a.get("HOST") or "localhost", str(a.get("PORT") or 5432), a["NAME"]) == (
        b.get("HOST") or "localhost",
        str(b.get("PORT") or 5432),
        b["NAME"],
    )


def connect_target(url: str) -> None:
    cfg = database_config(url)
    forget_target()
    # configure_settings fills the defaults Django adds to every DATABASES entry.
    connections.settings[TARGET] = connections.configure_settings({"default": cfg})["default"]


def forget_target() -> None:
    """Close the target's connection and drop the cached wrapper (it keeps its settings)."""
    if TARGET in connections.settings:
        with contextlib.suppress(Exception):
            connections[TARGET].close()
        with contextlib.suppress(AttributeError, KeyError):
            del connections[TARGET]
        del connections.settings[TARGET]


def _pg_admin(cfg: dict[str, Any]):
    import psycopg

    return psycopg.connect(
        host=cfg.get("HOST") or "localhost",
        port=cfg.get("PORT") or 5432,
        user=cfg.get("USER") or None,
        password=cfg.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
        connect_timeout=10,
    )


def create_database(url: str) -> bool:
    """Create the database if it does not exist; True if this call created it."""
    cfg = database_config(url)
    if cfg["ENGINE"].endswith("sqlite3"):
        path = Path(cfg["NAME"])
        path.parent.mkdir(parents=True, exist_ok=True)
        return not path.exists()
    with _pg_admin(cfg) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [cfg["NAME"]]).fetchone():
            return False
        from psycopg import sql

        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cfg["NAME"])))
        return True


def drop_database(url: str) -> None:
    cfg = database_config(url)
    forget_target()
    if cfg["ENGINE"].endswith("sqlite3"):
        for suffix in ("", "-wal", "-shm"):
            Path(cfg["NAME"] + suffix).unlink(missing_ok=True)
        return
    from psycopg import sql

    with _pg_admin(cfg) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(cfg["NAME"])))


def migrate(service: str, url: str) -> None:
    env = {**os.environ, "LEAGUE_SERVICE": service, "DATABASE_URL": url}
    result = subprocess.run(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), "migrate", "--noinput"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise SplitError(f"migrating the new database failed (exit {result.returncode}):\n{tail}")


def pending_outbox(service: str, using: str = "default") -> int:
    q = copying._aggregate_rows("aggregate_key", service)
    return OutboxMessage.objects.using(using).filter(q, state=OutboxState.PENDING).count()


@dataclass
class Timing:
    step: str
    seconds: float


# What runs between "writes paused" and "writes resumed", each way the same phases in the
# same order (the way back differs only in which database is paused and which is copied
# into). Each is printed as ``phase: <name>: <seconds> s`` when it ends, and the summary
# adds them up (bench/cutover_bench.py reads them).
PAUSE_PHASES = (
    "wait for the writes under way",
    "publish the last outbox rows",
    *copying.COPY_PHASES,
    "open the gate",
    "route the front door",
    "check a request through the front door",
)


@dataclass
class Phase:
    name: str
    seconds: float


class Output(Protocol):
    """Where a move writes its lines: a text stream, or a management command's ``stdout``."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


@dataclass
class Split:
    service: str
    url: str
    out: Output
    timeout: float = 120.0  # for the supervisor's steps (processes started, routes switched)
    drain_timeout: float = 60.0  # for the monolith's relay to publish the service's last rows
    progress: Callable[[int, int], Any] | None = None  # (total, done) -> bar; see the command
    timings: list[Timing] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)  # the pause's, in order (PAUSE_PHASES)
    paused_at: float | None = None
    pause_seconds: float | None = None
    # Who starts, routes and restarts the processes (cutover/supervisor.py); runstack by default.
    supervisor: Supervisor | None = None

    def __post_init__(self) -> None:
        if self.supervisor is None:
            self.supervisor = RunstackSupervisor(self.data_dir, timeout=self.timeout, say=self.say)

    @property
    def sup(self) -> Supervisor:
        assert self.supervisor is not None
        return self.supervisor

    @property
    def data_dir(self) -> Path:
        return Path(settings.DATA_DIR)

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time one phase of the pause; printed when it ends (not when it fails)."""
        started = time.monotonic()
        yield
        seconds = time.monotonic() - started
        self.phases.append(Phase(name, seconds))
        self.say(f"    phase: {name}: {seconds:.3f} s")

    # ------------------------------------------------------------------ checks
    def preflight(self) -> None:
        """Everything that can be known before changing anything."""
        if self.service not in settings.SERVICES:
            raise SplitError(f"unknown service {self.service!r}: choose one of {', '.join(settings.SERVICES)}")
        if self.service not in settings.ACTIVE_SERVICES:
            raise SplitError(
                f"{self.service} is not served by this deployment (LEAGUE_SERVICE={settings.LEAGUE_SERVICE}): "
                "run split_service with the monolith's settings"
            )
        cfg = database_config(self.url)
        if same_database(cfg, settings.DATABASES["default"]):
            raise SplitError(
                "--database-url names the monolith's own database: give the new service a database of its own"
            )
        try:
            self.sup.preflight(self.service, self.url)
        except SupervisorError as exc:
            raise SplitError(str(exc)) from exc

    # --------------------------------------------------------------------- run
    def run(self) -> None:
        previous = deployment.placement(self.data_dir, self.service)
        if previous and previous.get("state") == deployment.MOVED:
            self.say(f"{self.service} has already moved to {mask(previous['database_url'])}.")
            self.url = previous["database_url"]
            connect_target(self.url)
            self.copy_history()
            self.finish_resume()
            return
        if previous and previous.get("state") == deployment.SWITCHING:
            self.say(f"An earlier run passed the switch: finishing it ({mask(previous['database_url'])}).")
            self.url = previous["database_url"]
            connect_target(self.url)
            self.preflight()
            self.step(6, self.switch)
            self.step(7, self.resume)
            self.summary()
            return
        if previous:
            self.say(
                f"An earlier run stopped before the switch (state {previous.get('state')}): rolling it back first."
            )
            self.rollback(previous)
        self.preflight()
        connect_target(self.url)
        try:
            self.step(1, self.prepare)
            self.step(2, self.start)
            self.step(3, self.pause)
            self.step(4, self.drain)
            self.step(5, self.copy)
        except BaseException as exc:
            self.say(f"failed before the switch: {exc}")
            self.rollback(deployment.placement(self.data_dir, self.service))
            self.say(f"rolled back: {self.service} runs in the monolith as before; its writes are open again.")
            raise
        try:
            self.step(6, self.switch)
            self.step(7, self.resume)
        except BaseException as exc:
            raise SplitError(self.after_switch_help(exc)) from exc
        self.summary()

    def step(self, number: int, action: Callable[[], None], steps: list[str] = STEPS) -> None:
        name = steps[number - 1].format(service=self.service)
        self.say(f"step {number}/{len(steps)}: {name} ...")
        started = time.monotonic()
        action()
        seconds = time.monotonic() - started
        self.timings.append(Timing(name, seconds))
        self.say(f"step {number}/{len(steps)}: {name}: done in {seconds:.2f} s")

    # ------------------------------------------------------------------- steps
    def prepare(self) -> None:
        created = create_database(self.url)
        deployment.place(
            self.data_dir,
            self.service,
            database_url=self.url,
            created_database=created,
            state="preparing",
            started_at=time.time(),
        )
        if not created:
            connect_target(self.url)
            existing = _existing_rows(self.service)
            if existing:
                raise SplitError(
                    f"the database {mask(self.url)} already holds {existing} row(s) of {self.service}: "
                    "give an empty (or new) database"
                )
        migrate(self.service, self.url)
        connect_target(self.url)
        gate.pause(self.service, using=TARGET, note="split_service: closed until the copy is verified")

    def start(self) -> None:
        deployment.place(self.data_dir, self.service, state=deployment.STARTING)
        self.sup.start(self.service, self.url)

    def pause(self) -> None:
        self.paused_at = time.monotonic()  # writes that start from here are refused
        with self.phase(PAUSE_PHASES[0]):
            gate.pause(self.service, note=f"split_service: moving to {mask(self.url)}")
        deployment.place(self.data_dir, self.service, state="paused")

    def drain(self, using: str = "default") -> None:
        with self.phase(PAUSE_PHASES[1]):
            self._drain(using)

    def _drain(self, using: str) -> None:
        deadline = time.monotonic() + self.drain_timeout
        left = pending_outbox(self.service, using)
        total = left
        bar = self.progress(total, 0) if self.progress and total else None
        while left:
            if time.monotonic() > deadline:
                raise SplitError(
                    f"the {'monolith' if using == 'default' else self.service}'s relay did not publish the last "
                    f"{left} outbox row(s) of {self.service} within "
                    f"{self.drain_timeout:.0f} s: is the Celery worker running? (manage.py bus_status)"
                )
            time.sleep(0.1)
            now = pending_outbox(self.service, using)
            if bar is not None:
                bar.update(left - now)
            left = now
        if bar is not None:
            bar.close()

    def copy(self) -> None:
        total = sum(n for _, n in copying.counts(self.service, "default", history=False))
        bar = self.progress(total, 0) if self.progress else None
        reports = copying.copy(
            self.service,
            source="default",
            target=TARGET,
            history=False,  # the published outbox rows follow after the pause (copy_history)
            progress=(bar.update if bar is not None else lambda n: None),
            phase=self.phase,
        )
        if bar is not None:
            bar.close()
        deployment.place(self.data_dir, self.service, state="copied")
        width = max(len(r.label) for r in reports)
        for r in reports:
            self.say(f"    {r.label.ljust(width)}  {r.rows:>8} rows  {r.checksum[:16] or '(by name)'}")

    def switch(self) -> None:
        # The point of no automatic return: recorded before the new gate opens.
        deployment.place(self.data_dir, self.service, state=deployment.SWITCHING)
        with self.phase(PAUSE_PHASES[-3]):
            gate.open_(self.service, using=TARGET)
        with self.phase(PAUSE_PHASES[-2]):
            front_door = self.sup.route(self.service)
        with self.phase(PAUSE_PHASES[-1]):
            self.probe(front_door, self.service)
        if self.paused_at is not None:
            self.pause_seconds = time.monotonic() - self.paused_at

    def resume(self) -> None:
        gate.mark_moved(self.service, note=f"split_service: moved to {mask(self.url)}")
        deployment.place(self.data_dir, self.service, state=deployment.MOVED, moved_at=time.time())
        self.copy_history()
        self.finish_resume()

    def copy_history(self) -> None:
        """The service's published outbox rows, after the pause: history for replay_events
        and the admin, which nothing needs to publish or handle an event."""
        placed = deployment.placement(self.data_dir, self.service) or {}
        if placed.get("history_copied"):
            return
        total = copying.history_rows(self.service, "default").count()
        bar = self.progress(total, 0) if self.progress and total else None
        report = copying.copy_history(
            self.service, source="default", target=TARGET, progress=(bar.update if bar is not None else lambda n: None)
        )
        if bar is not None:
            bar.close()
        deployment.place(self.data_dir, self.service, history_copied=True)
        self.say(f"    {report.label}  {report.rows:>8} rows  {report.checksum[:16]} (copied after the pause)")

    def finish_resume(self) -> None:
        self.sup.resume(self.service)

    # ----------------------------------------------------------------- helpers
    def rollback(self, placed: dict[str, Any] | None) -> None:
        """Undo a run that stopped before the switch: open the monolith's gate, stop the new
        processes, drop the database if this command created it."""
        if placed and placed.get("state") in (deployment.SWITCHING, deployment.MOVED):
            raise SplitError(
                f"{self.service} passed the switch (state {placed['state']}): it is not rolled back automatically. "
                "See docs/MIGRATION.md, 'Going back'."
            )
        if gate.current(self.service) == gate.PAUSED:
            gate.open_(self.service)
        deployment.unplace(self.data_dir, self.service)
        self.sup.stop(self.service)
        if placed and placed.get("created_database"):
            drop_database(placed["database_url"])
            self.say(f"dropped the database this command created ({mask(placed['database_url'])})")

    # ------------------------------------------------------------- the way back
    def back(self) -> None:
        """Bring a moved service back into the monolith: the same steps in the other
        direction. As on the way out, the processes that take over start before the pause:
        step 1 restarts the monolith with the service (idle behind its ``moved`` gate there,
        while its own processes keep serving) and ends once runstack has finished that
        restart, so runstack is idle when the switch asks it for the routes; then its own
        database pauses, drains and is
        copied back, and the switch only opens the monolith's gate and routes the paths (no
        process starts or stops inside the pause); its own processes stop after it. Before
        step 5 a failure reopens the service where it is (and the monolith drops it again);
        from step 5 on, running ``--back`` again finishes."""
        placed = deployment.placement(self.data_dir, self.service)
        if not placed or placed.get("state") not in (deployment.MOVED, deployment.REJOINING, deployment.RETURNING):
            raise SplitError(f"{self.service} has not moved out of this monolith: nothing to bring back")
        if placed.get("cleaned_up_at"):
            raise SplitError(
                f"the monolith's tables of {self.service} were removed (--cleanup): run split_service "
                f"{self.service} in reverse by hand (migrate it back with LEAGUE_SERVICE including it), see docs/MIGRATION.md"
            )
        self.url = placed["database_url"]
        stack = deployment.stack(self.data_dir)
        if stack is None or not stack.get("front_door"):
            raise SplitError(f"no runstack with a front door supervises DATA_DIR {self.data_dir}: start it first")
        connect_target(self.url)
        if placed.get("state") in (deployment.MOVED, deployment.REJOINING):
            try:
                self.step(1, self.rejoin, BACK_STEPS)
                self.step(2, self.pause_moved, BACK_STEPS)
                self.step(3, lambda: self.drain(using=TARGET), BACK_STEPS)
                self.step(4, self.copy_back, BACK_STEPS)
            except BaseException as exc:
                self.say(f"failed before the switch back: {exc}")
                gate.open_(self.service, using=TARGET)
                deployment.place(self.data_dir, self.service, state=deployment.MOVED)  # the monolith drops it again
                self.say(f"{self.service} keeps running on its own database; its writes are open again.")
                raise
        self.step(5, self.switch_back, BACK_STEPS)
        self.step(6, self.close_moved, BACK_STEPS)
        self.summary(back=True)

    def rejoin(self) -> None:
        """Before the pause: the monolith runs the service again (its gate there stays
        ``moved``: it takes no write and its consumer receives nothing)."""
        deployment.place(self.data_dir, self.service, state=deployment.REJOINING)
        self.wait_stack(
            lambda s: self.service in s.get("monolith", {}).get("services", []),
            f"runstack to restart the monolith with {self.service}, behind its gate",
        )

    def pause_moved(self) -> None:
        self.paused_at = time.monotonic()
        with self.phase(PAUSE_PHASES[0]):
            gate.pause(self.service, using=TARGET, note="split_service --back: moving back to the monolith")

    def copy_back(self) -> None:
        # As on the way out, the published outbox rows (history) follow after the pause
        # (close_moved): nothing needs them to publish or handle an event.
        reports = copying.copy(
            self.service, source=TARGET, target="default", shared_target=True, history=False, phase=self.phase
        )
        width = max(len(r.label) for r in reports)
        for r in reports:
            self.say(f"    {r.label.ljust(width)}  {r.rows:>8} rows  {r.checksum[:16]}")

    def switch_back(self) -> None:
        """Open the monolith's gate and route the paths there: the monolith already runs the
        service (step 1), so this waits for a route switch only, not for a process."""
        with self.phase(PAUSE_PHASES[-3]):
            gate.open_(self.service)
        with self.phase(PAUSE_PHASES[-2]):
            deployment.place(self.data_dir, self.service, state=deployment.RETURNING)
            stack = self.wait_stack(
                lambda s: (
                    self.service in s.get("monolith", {}).get("services", [])
                    and s.get("services", {}).get(self.service, {}).get("state") != deployment.SERVING
                ),
                f"runstack to route {self.service} to the monolith again",
            )
        with self.phase(PAUSE_PHASES[-1]):
            self.probe(stack["front_door"], "monolith")
        if self.paused_at is not None:
            self.pause_seconds = time.monotonic() - self.paused_at

    def probe(self, front_door: str, upstream_wanted: str) -> None:
        """A read of the service through the front door answers 200 from ``upstream_wanted``."""
        from frontdoor.routes import ROUTES

        probe = front_door.rstrip("/") + ROUTES[self.service][0]
        response = requests.get(probe, timeout=10)
        upstream = response.headers.get("X-League-Upstream")
        if response.status_code != 200 or upstream != upstream_wanted:
            wanted = "the monolith" if upstream_wanted == "monolith" else upstream_wanted
            raise SplitError(f"GET {probe} answered {response.status_code} from {upstream!r}, not 200 from {wanted}")

    def close_moved(self) -> None:
        """After the pause: the service's published outbox history is copied back (rows the
        monolith already holds are skipped), its own processes stop, its database is closed."""
        report = copying.copy_history(self.service, source=TARGET, target="default")
        self.say(f"    {report.label}  {report.rows:>8} rows  {report.checksum[:16]} (copied after the pause)")
        self.wait_stack(
            lambda s: self.service not in s.get("services", {}), f"runstack to stop the own processes of {self.service}"
        )
        gate.mark_moved(self.service, using=TARGET, note="split_service --back: moved back to the monolith")
        deployment.unplace(self.data_dir, self.service)

    def wait_stack(self, ok: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """``--back`` is runstack's only (it checks for a runstack first): wait on its stack.json."""
        return RunstackSupervisor(self.data_dir, timeout=self.timeout, say=self.say).wait(ok, what)

    def after_switch_help(self, exc: BaseException) -> str:
        placed = deployment.placement(self.data_dir, self.service) or {}
        return (
            f"failed after the switch: {exc}\n"
            f"State: {self.service} runs on {mask(self.url)} (deployment state {placed.get('state')}); "
            f"the monolith's gate for it is {gate.current(self.service)}; {self.sup.describe()}.\n"
            f"To finish: run `manage.py split_service {self.service}` again (it continues from here).\n"
            f"To go back once it has finished: `manage.py split_service {self.service} --back` (docs/MIGRATION.md)."
        )

    def summary(self, *, back: bool = False) -> None:
        width = max(len(t.step) for t in self.timings) if self.timings else 10
        self.say("")
        self.say(f"  {'step'.ljust(width)}  seconds")
        for t in self.timings:
            self.say(f"  {t.step.ljust(width)}  {t.seconds:7.2f}")
        if self.phases:
            self.say(f"\n  {'the pause, phase by phase'.ljust(width)}  seconds")
            for p in self.phases:
                self.say(f"  {p.name.ljust(width)}  {p.seconds:7.2f}")
        steps = "steps 2 to 5" if back else "steps 3 to 6"
        if self.pause_seconds is not None:
            self.say(f"\n  The writes of {self.service} were paused for {self.pause_seconds:.2f} s ({steps}).")
        if back:
            self.say(
                f"  {self.service} runs in the monolith again; {mask(self.url)} is no longer used (drop it when satisfied)."
            )
            return
        self.say(
            f"  {self.service} now runs on {mask(self.url)}. `manage.py split_service --cleanup {self.service}` "
            "removes its leftover tables from the monolith once you are satisfied."
        )


def _existing_rows(service: str) -> int:
    from django.db.utils import DatabaseError

    total = 0
    for part in copying.owned(service, accounts=False):  # accounts may exist in a shared database
        try:
            total += part.rows(TARGET).count()
        except DatabaseError:
            connections[TARGET].close()  # not migrated yet: no tables, no rows
    return total


def plan(service: str, url: str) -> list[str]:
    lines = [f"Plan: move {service} from the monolith ({mask(_monolith_url())}) to {mask(url)}"]
    lines += [f"  step {i}/{len(STEPS)}: {s.format(service=service)}" for i, s in enumerate(STEPS, 1)]
    lines.append("Rows to copy:")
    rows = copying.counts(service, "default", history=False)
    width = max(len(label) for label, _ in rows)
    lines += [f"  {label.ljust(width)}  {n:>8}" for label, n in rows]
    lines.append(f"  {'total'.ljust(width)}  {sum(n for _, n in rows):>8}")
    lines.append(
        f"Published outbox rows of {service} copied after the pause (step 7): "
        f"{copying.history_rows(service, 'default').count()}"
    )
    lines.append(f"Pending outbox rows of {service} (published in step 4): {pending_outbox(service)}")
    return lines


def _monolith_url() -> str:
    return os.environ.get("DATABASE_URL") or f"sqlite:///{settings.DATABASES['default']['NAME']}"


def cleanup(service: str, out: Output) -> None:
    """Remove ``service``'s leftover tables and bus rows from the monolith's database."""
    from django.apps import apps
    from django.db import connection, transaction
    from django.db.migrations.recorder import MigrationRecorder

    placed = deployment.placement(Path(settings.DATA_DIR), service)
    if not placed or placed.get("state") != deployment.MOVED or gate.current(service) != gate.MOVED:
        raise SplitError(
            f"{service} has not moved out of this monolith (deployment state "
            f"{(placed or {}).get('state', 'none')}, gate {gate.current(service)}): nothing to clean up"
        )
    if service not in apps.app_configs:
        raise SplitError(
            f"run --cleanup with {service} in LEAGUE_SERVICE (the default, all): its models name the tables"
        )
    models_ = list(apps.get_app_config(service).get_models(include_auto_created=True))
    bus_parts = [p for p in copying.owned(service) if p.label.startswith("events.")]
    with transaction.atomic():
        for part in bus_parts:
            n = part.rows("default")._raw_delete("default")
            out.write(f"  deleted {n} {part.label} row(s)\n")
    # Outside the block: SQLite's schema editor refuses to run inside a transaction.
    with connection.schema_editor() as editor:
        for model in reversed(models_):
            if not model._meta.auto_created:
                editor.delete_model(model)  # its many-to-many tables with it
                out.write(f"  dropped table {model._meta.db_table}\n")
    MigrationRecorder.Migration.objects.filter(app=service).delete()
    deployment.place(Path(settings.DATA_DIR), service, cleaned_up_at=time.time())
