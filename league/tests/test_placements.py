"""runstack's side of the way back (league/placements.py): the monolith takes the service
back before the pause, and the switch back is a route change reported at once, with the
service's own processes stopped after it. A stand-in for runstack's process handling records
what the placements ask of it, in order."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from cutover import deployment
from league.placements import Placements


class Runstack:
    """What ``Placements`` calls on ``runstack``, recorded."""

    def __init__(self) -> None:
        self.monolith = "127.0.0.1:8001"
        self.base_env: dict[str, str] = {}
        self.log: list[tuple[Any, ...]] = []
        self.placements: Placements | None = None

    def restart_monolith(self, services: list[str]) -> None:
        self.log.append(("restart monolith", tuple(services)))

    def switch_routes(self, routes: dict[str, str]) -> None:
        self.log.append(("routes", dict(routes)))

    def stop_children(self, children: list[str]) -> None:
        self.log.append(("stop", tuple(children)))

    def write_stack(self) -> None:
        assert self.placements is not None
        report = self.placements.report()
        self.log.append(("stack.json", {s: r["state"] for s, r in report["services"].items()}))

    def say(self, line: str) -> None:
        pass


@pytest.fixture
def moved(settings, tmp_path) -> tuple[Placements, Runstack]:
    """transfers moved out: the monolith runs without it, its own processes serve its paths."""
    settings.DATA_DIR = tmp_path
    deployment.place(tmp_path, "transfers", database_url="postgres://x/own", state=deployment.MOVED)
    runstack = Runstack()
    placements = Placements(runstack)  # type: ignore[arg-type]
    runstack.placements = placements
    placements.changed()
    placements.running["transfers"] = {
        "web": "127.0.0.1:9001",
        "state": deployment.SERVING,
        "children": ["transfers/web", "transfers/consume"],
        "env": {},
    }
    assert "transfers" not in placements.monolith_services
    return placements, runstack


def test_the_monolith_takes_the_service_back_before_the_pause(moved, tmp_path):
    placements, runstack = moved
    deployment.place(tmp_path, "transfers", state=deployment.REJOINING)

    placements.reconcile()

    assert ("restart monolith", ("teams", "transfers", "fixtures")) in runstack.log
    assert "transfers" in placements.report()["monolith"]["services"]
    # Its own processes keep running and serving its paths until the switch.
    assert not [e for e in runstack.log if e[0] == "stop"]
    assert all("transfers" in e[1] for e in runstack.log if e[0] == "routes")
    assert placements.running["transfers"]["state"] == deployment.SERVING


def test_the_switch_back_is_a_route_change_reported_before_the_processes_stop(moved, tmp_path):
    placements, runstack = moved
    deployment.place(tmp_path, "transfers", state=deployment.REJOINING)
    placements.reconcile()
    runstack.log.clear()

    deployment.place(tmp_path, "transfers", state=deployment.RETURNING)
    placements.reconcile()

    # No process starts inside the pause; the routes go to the monolith and stack.json says
    # so (what split_service waits for) before the own processes are stopped.
    assert runstack.log[:3] == [
        ("routes", {}),
        ("stack.json", {"transfers": deployment.STANDBY}),
        ("stop", ("transfers/web", "transfers/consume")),
    ]
    assert not [e for e in runstack.log if e[0] == "restart monolith"]
    assert runstack.log[-1] == ("stack.json", {})


def test_a_failed_way_back_drops_the_service_from_the_monolith_again(moved, tmp_path):
    placements, runstack = moved
    deployment.place(tmp_path, "transfers", state=deployment.REJOINING)
    placements.reconcile()
    runstack.log.clear()

    deployment.place(tmp_path, "transfers", state=deployment.MOVED)  # split_service --back failed before the switch
    placements.reconcile()

    assert runstack.log[0] == ("restart monolith", ("teams", "fixtures"))
    assert placements.running["transfers"]["state"] == deployment.SERVING
    assert not [e for e in runstack.log if e[0] == "stop"]


class RestartingRunstack(Runstack):
    """As runstack's ``restart_monolith`` does: the new web comes up and the routes switch to
    it (writing stack.json), then the old web, worker, beat and consumers are replaced."""

    def restart_monolith(self, services: list[str]) -> None:
        super().restart_monolith(services)
        assert self.placements is not None
        self.log.append(("stack.json mid-restart", tuple(self.placements.report()["monolith"]["services"])))
        self.log.append(("restart finished", tuple(services)))


@pytest.mark.parametrize(
    ("state", "before", "after"),
    [
        (deployment.REJOINING, ("teams", "fixtures"), ("teams", "transfers", "fixtures")),  # the way back, step 1
        (deployment.MOVED, ("teams", "transfers", "fixtures"), ("teams", "fixtures")),  # a failed way back
    ],
)
def test_stack_json_says_what_the_monolith_serves_once_its_restart_has_finished(moved, tmp_path, state, before, after):
    """split_service waits on stack.json for the monolith's restart (the way back's step 1,
    before the pause). Reported while the restart is still under way, the command would go
    on into the pause and its switch would wait there for runstack to finish restarting."""
    placements, _ = moved
    runstack = RestartingRunstack()
    runstack.placements = placements
    placements.stack = runstack  # type: ignore[assignment]
    if state == deployment.MOVED:
        deployment.place(tmp_path, "transfers", state=deployment.REJOINING)
        placements.reconcile()
        runstack.log.clear()
    deployment.place(tmp_path, "transfers", state=state)

    placements.reconcile()

    mid = [e for e in runstack.log if e[0] == "stack.json mid-restart"]
    assert mid == [("stack.json mid-restart", before)]
    assert tuple(placements.report()["monolith"]["services"]) == after


def test_a_restart_stops_the_old_worker_beat_and_consumers_together(monkeypatch, settings, tmp_path):
    """Each old process may take its whole graceful stop (a consumer finishes its receive in
    flight): stopped together they cost the longest of them, not the sum, and
    ``split_service`` waits for the whole restart (the way back's step 1, the way out's
    resume) within its timeout."""
    from league.management.commands import runstack

    settings.DATA_DIR = tmp_path
    cmd = runstack.Command()
    old = [runstack.Child(n, [n]) for n in ("web", "worker", "beat", "consume-teams", "consume-transfers")]
    cmd.children = list(old)
    cmd.base_env = {}
    stops: list[list[str]] = []
    monkeypatch.setattr(
        runstack.Command, "_stop", staticmethod(lambda children: stops.append([c.name for c in children]))
    )
    monkeypatch.setattr(
        runstack.Command, "spawn", lambda self, child, env, output=None, ready=False: self.children.append(child)
    )

    cmd.restart_monolith(["teams", "fixtures"])

    assert ["worker", "beat", "consume-teams", "consume-transfers"] in stops
    assert not [s for s in stops if s in (["worker"], ["beat"], ["consume-teams"], ["consume-transfers"])]
    assert {"worker", "beat", "consume-teams", "consume-fixtures"} <= {c.name for c in cmd.children}


def test_a_restart_is_over_once_the_new_processes_have_started_up(monkeypatch, settings, tmp_path):
    """A start-up (Django, boto3, Celery) costs a second or more of CPU each: the restart of
    the way back's step 1 ends when the new worker, beat and consumers have said theirs is
    over (events/readiness.py), so the pause after it does not share the machine with them.
    Real processes stand in for them, each saying so a second after it starts."""
    from league.management.commands import runstack

    settings.DATA_DIR = tmp_path
    cmd = runstack.Command()
    cmd.children = [runstack.Child(n, [n]) for n in ("web", "worker", "beat", "consume-teams")]
    cmd.base_env = {}
    monkeypatch.setattr(runstack.Command, "_stop", staticmethod(lambda children: None))
    real_spawn = runstack.Command.spawn
    slow_start = "import os, time; time.sleep(1); open(os.environ['READY_FILE'], 'w').write(str(os.getpid()))"

    def spawn(self, child, env, output=None, ready=False):
        child.argv = [sys.executable, "-c", slow_start if ready else "pass"]
        real_spawn(self, child, dict(os.environ, **env), output, ready=ready)

    monkeypatch.setattr(runstack.Command, "spawn", spawn)
    cmd.restart_monolith(["teams", "transfers"])

    new = [c for c in cmd.children if c.name in ("worker", "beat", "consume-teams", "consume-transfers")]
    try:
        assert len(new) == 4
        assert all(c.ready_file is not None and c.ready_file.read_text() == str(c.proc.pid) for c in new)
    finally:
        for c in new:
            c.proc.wait(10)
    cmd.stop_children(new)  # a stopped child's ready file goes with it
    assert not list((tmp_path / "ready").iterdir())
