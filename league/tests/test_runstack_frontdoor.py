"""``runstack``'s front door without the whole stack: ``switch_routes`` (what the cutover
calls) moves a service's routes gracefully and records them in DATA_DIR/stack.json; a bad
route leaves the routes as they were; without nginx runstack says so in one line and
``switch_routes`` explains what is missing."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management.base import CommandError

from devtools import requires
from devtools.netutil import free_port
from frontdoor.nginx import FrontDoor
from frontdoor.testing import Upstream, get
from league.management.commands.runstack import Command


@pytest.fixture
def servers():
    made = {name: Upstream(name) for name in ("monolith", "transfers")}
    yield made
    for u in made.values():
        u.close()


@pytest.fixture
def command(settings, tmp_path, servers):
    requires.program(not FrontDoor.available(), "nginx", "nginx")
    settings.DATA_DIR = tmp_path
    cmd = Command(stdout=io.StringIO())
    door = cmd.front_door_for("127.0.0.1", free_port())
    assert door is not None
    cmd.monolith = servers["monolith"].address
    door.start({}, cmd.monolith)
    cmd.front_door = door
    cmd.write_stack()
    yield cmd
    cmd.shutdown()


def test_switch_routes_moves_a_service_and_records_it(command, servers, tmp_path):
    door = command.front_door
    assert get(door, "/api/transfers/")[1] == "monolith"
    stack = json.loads((tmp_path / "stack.json").read_text())
    assert stack["front_door"] == door.url and stack["monolith"]["web"] == command.monolith
    assert stack["monolith"]["services"] == ["teams", "transfers", "fixtures"] and stack["routes"] == {}
    command.switch_routes({"transfers": servers["transfers"].address})
    status, header, body = get(door, "/api/transfers/1/")
    assert (status, header, body["upstream"]) == (200, "transfers", "transfers")
    assert get(door, "/api/teams/")[1] == "monolith"
    stack = json.loads((tmp_path / "stack.json").read_text())
    assert stack["routes"] == {"transfers": servers["transfers"].address} and "services" in stack
    assert "transfers -> " in command.stdout.getvalue()
    command.switch_routes({})  # and back
    assert get(door, "/api/transfers/1/")[1] == "monolith"


def test_a_bad_route_is_refused_and_the_routes_stay(command, servers):
    command.switch_routes({"transfers": servers["transfers"].address})
    with pytest.raises(CommandError, match="no front-door routes for payments"):
        command.switch_routes({"payments": "127.0.0.1:1"})
    with pytest.raises(CommandError, match="(?s)host not found.*the running configuration stays"):
        command.switch_routes({"transfers": "no-such-host.invalid:80"})
    assert get(command.front_door, "/api/transfers/")[1] == "transfers"


def test_shutdown_stops_the_front_door_first_and_forgets_the_stack(command, tmp_path):
    door = command.front_door
    command.shutdown()
    assert not door.running and command.front_door is None
    assert not (tmp_path / "stack.json").exists()


def test_a_dead_front_door_is_started_again_with_its_routes(command, servers):
    command.switch_routes({"transfers": servers["transfers"].address})
    command.front_door.proc.kill()
    command.front_door.proc.wait(5)
    command.check_front_door()
    assert command.front_door.running and get(command.front_door, "/api/transfers/")[1] == "transfers"
    assert "restarted front door" in command.stdout.getvalue()


def test_without_nginx_one_line_says_what_the_front_door_needs(settings, tmp_path, monkeypatch):
    settings.DATA_DIR = tmp_path
    monkeypatch.setattr(FrontDoor, "available", classmethod(lambda cls: False))
    cmd = Command(stdout=io.StringIO())
    assert cmd.front_door_for("127.0.0.1", 8000) is None
    out = cmd.stdout.getvalue().strip().splitlines()
    assert out == [
        "front door off: it needs Debian's nginx (apt-get install nginx); the web server serves 8000 directly"
    ]
    with pytest.raises(CommandError, match="no front door runs .*apt-get install nginx"):
        cmd.switch_routes({"transfers": "127.0.0.1:8011"})
    assert cmd.front_door_lock.acquire(blocking=False)  # the refused switch let go of the lock


def test_the_monolith_keeps_the_consumers_of_handler_modules_no_cutover_moves():
    """runstack starts (and after a move restarts) one consumer per service the monolith
    serves, plus those of EVENTS_HANDLER_MODULES' own services (the crash suite's probe,
    loaded here as in its processes): leaving them out stopped the probe's consumer."""
    import events.tests.probe_handlers  # noqa: F401 - registers the "probe" service's handlers
    from league.placements import monolith_consumers

    assert monolith_consumers(["teams", "transfers", "fixtures"]) == ["fixtures", "probe", "teams", "transfers"]
    assert monolith_consumers(["teams", "fixtures"]) == ["fixtures", "probe", "teams"]
    assert monolith_consumers(["teams"]) == ["probe", "teams"]
