"""``runstack``'s side of a cutover: run each moved service where ``deployment.json`` says.

``split_service`` (cutover/split.py) writes what it wants into ``DATA_DIR/deployment.json``;
``runstack`` reads it at start and whenever it changes, and makes it so (``reconcile``):

- a service placed on its own database (state ``starting`` or later) gets its own process set:
  web (uvicorn on a free loopback port), Celery worker + beat (its relay, with its own broker
  folder and queue), and its consumer, all with ``DATABASE_URL`` = its database and
  ``LEAGUE_SERVICE`` = the service, under ``DATA_DIR/services/NAME``. It reports ``standby``
  once its web answers and the others have said their start-up is over
  (``events/readiness.py``), so that the pause that follows shares the machine with no
  process start-up;
- from ``switching`` on, the front door routes the service's paths to that web (``serving``);
- at ``moved`` the monolith is restarted without the service in ``LEAGUE_SERVICE``: a new web
  first, the front door switched to it, then the old one stopped gracefully (no request is
  dropped), then worker, beat and consumers; the moved service's monolith consumer is not
  started again;
- on the way back, at ``rejoining`` the monolith is restarted *with* the service (its gate
  there is still ``moved``: its consumer receives nothing, its writes are refused) while the
  service's own processes keep serving; ``stack.json`` says the monolith serves it once the
  whole restart has finished, the new processes' start-ups included (split_service's step 1
  waits for that, before the pause), so that runstack is idle, not still restarting, when the
  switch back asks for the routes, and the copy back does not share the machine with five
  start-ups; at ``returning`` the front door routes the service's
  paths to the monolith (``stack.json`` says so at once), and only then are its own processes
  stopped. So the way back's pause holds no process start and no process stop, as the way out's;
- a service removed from the file (a rollback) has its processes stopped and its route removed.

What runs is reported in ``DATA_DIR/stack.json`` (``cutover/deployment.py``), which
``split_service`` waits on. At a later start, ``runstack`` starts the monolith without the
moved services and each of them on its database (migrated first), routed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from cutover import deployment
from devtools.netutil import free_port, wait_for_http

if TYPE_CHECKING:
    from league.management.commands.runstack import Child, Command

# Before ``starting`` the new database is being prepared: nothing to run yet.
RUN_STATES = {deployment.STARTING, "paused", "copied", deployment.SWITCHING, deployment.MOVED, deployment.REJOINING}
ROUTED_STATES = {deployment.SWITCHING, deployment.MOVED, deployment.REJOINING}
# The way back: the monolith serves the service again from these states on.
BACK_STATES = {deployment.REJOINING, deployment.RETURNING}


def monolith_consumers(services: list[str]) -> list[str]:
    """The consumers the monolith runs while it serves ``services``: theirs, and those of
    handler modules that belong to no service a cutover moves (``EVENTS_HANDLER_MODULES``,
    e.g. the crash suite's probe), which stay with the monolith."""
    from events import topology

    return [s for s in topology.consuming_services() if s in services or s not in settings.SERVICES]


class Placements:
    def __init__(self, stack: Command) -> None:
        self.stack = stack
        self.data_dir = Path(settings.DATA_DIR)
        self.running: dict[str, dict[str, Any]] = {}  # service -> {"web": addr, "state": …, "children": [...]}
        self.seen: float | None = None
        self.monolith_services: list[str] = [s for s in settings.ACTIVE_SERVICES if s not in self.moved()]

    # ------------------------------------------------------------------ reading
    def moved(self) -> list[str]:
        return deployment.moved(self.data_dir)

    def wanted(self) -> dict[str, dict[str, Any]]:
        return deployment.load(self.data_dir)["services"]

    def changed(self) -> bool:
        try:
            mtime = (self.data_dir / deployment.DEPLOYMENT).stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime == self.seen:
            return False
        self.seen = mtime
        return True

    def monolith_env(self, env: dict[str, str]) -> dict[str, str]:
        """The monolith's children's environment: without the moved services."""
        if self.monolith_services != list(settings.ACTIVE_SERVICES):
            return {**env, "LEAGUE_SERVICE": ",".join(self.monolith_services)}
        return env

    # ---------------------------------------------------------------- reconcile
    def poll(self) -> None:
        if self.changed():
            self.reconcile()

    def reconcile(self) -> None:
        wanted = self.wanted()
        # Coming back (split_service --back): the monolith serves it again *before* its own
        # processes stop (normally at ``rejoining``, before the pause).
        returning = [s for s, p in wanted.items() if p.get("state") in BACK_STATES]
        back = [s for s in returning if s not in self.monolith_services]
        if back:
            self.restart_monolith([s for s in settings.SERVICES if s in self.monolith_services or s in back])
            self.stack.write_stack()
        # Routes first, reported at once: the pause of the way back ends when the monolith
        # takes the paths, not when the service's own processes have stopped.
        unrouted = [
            s
            for s, r in self.running.items()
            if r["state"] == deployment.SERVING and wanted.get(s, {}).get("state") not in ROUTED_STATES
        ]
        if unrouted:
            self.route()
            self.stack.write_stack()
        for service in list(self.running):
            if service not in wanted or wanted[service].get("state") not in RUN_STATES:
                self.stop(service)
        for service, placed in wanted.items():
            state = placed.get("state")
            if state not in RUN_STATES:
                continue
            if service not in self.running:
                self.start(service, placed["database_url"], migrate=state in ROUTED_STATES)
            if state in ROUTED_STATES and self.running[service]["state"] != deployment.SERVING:
                self.route()
        moved = [s for s in self.monolith_services if wanted.get(s, {}).get("state") == deployment.MOVED]
        if moved:
            self.restart_monolith([s for s in self.monolith_services if s not in moved])
        self.stack.write_stack()

    def restart_monolith(self, services: list[str]) -> None:
        """Restart the monolith serving ``services``; ``stack.json`` says it serves them once
        the restart has finished (new web, old one stopped, worker, beat and consumers
        replaced), not when the new web takes the routes half-way: ``split_service --back``
        waits on it before the pause (step 1), so that no restart still under way holds up the
        switch back inside the pause."""
        self.stack.restart_monolith(services)
        self.monolith_services = list(services)

    def start(self, service: str, url: str, *, migrate: bool) -> None:
        home = self.data_dir / "services" / service
        (home / "metrics").mkdir(parents=True, exist_ok=True)
        env = {
            **self.stack.base_env,
            "DATABASE_URL": url,
            "LEAGUE_SERVICE": service,
            "DATA_DIR": str(home),
            "PROMETHEUS_MULTIPROC_DIR": str(home / "metrics"),
            # Its own Celery queue: with a shared broker (CELERY_BROKER_URL) the monolith's
            # worker must not run this service's relay against the monolith's database.
            "CELERY_TASK_DEFAULT_QUEUE": f"league-{service}",
        }
        if migrate:  # a restart of runstack: the service's database may need new migrations
            subprocess.run(
                [sys.executable, str(settings.BASE_DIR / "manage.py"), "migrate", "--noinput", "-v", "0"],
                env=env,
                check=True,
            )
        port = free_port()
        address = f"127.0.0.1:{port}"
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        celery = [self.stack.bin("celery"), "-A", "league"]
        children: list[Child] = [
            self.stack.child(f"{service}/web", self.stack.web_argv("127.0.0.1", port, 1), env),
            self.stack.child(f"{service}/worker", [*celery, "worker", "-l", "warning", "-P", "solo"], env, ready=True),
            self.stack.child(
                f"{service}/beat",
                [*celery, "beat", "-l", "warning", "-s", str(home / "celerybeat-schedule")],
                env,
                ready=True,
            ),
        ]
        from events import topology

        if service in topology.consuming_services():
            children.append(
                self.stack.child(f"{service}/consume", [*manage, "consume", "--service", service], env, ready=True)
            )
        wait_for_http(f"http://{address}/healthz", timeout=60)
        # Placed once their start-ups are over: split_service pauses the writes next.
        self.stack.wait_ready(children)
        self.running[service] = {"web": address, "state": deployment.STANDBY, "children": children, "env": env}
        self.stack.say(f"placed    {service} on its own database (web {address}, on standby)")

    def stop(self, service: str) -> None:
        running = self.running.pop(service)
        if running["state"] == deployment.SERVING:  # its paths to the monolith before it stops
            self.route()
        self.stack.stop_children(running["children"])
        self.stack.say(f"removed   the own processes of {service}")

    def route(self) -> None:
        """Route every service whose state says so to its own web; the rest to the monolith."""
        wanted = self.wanted()
        routes = {s: r["web"] for s, r in self.running.items() if wanted.get(s, {}).get("state") in ROUTED_STATES}
        self.stack.switch_routes(routes)
        for service, running in self.running.items():
            running["state"] = deployment.SERVING if service in routes else deployment.STANDBY

    def report(self) -> dict[str, Any]:
        return {
            "monolith": {"web": self.stack.monolith, "services": list(self.monolith_services)},
            "services": {s: {"web": r["web"], "state": r["state"]} for s, r in self.running.items()},
        }
