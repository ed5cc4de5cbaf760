"""The front door on a real nginx (Debian's package: apt-get install nginx) in front of tiny
real HTTP servers on loopback: routing by prefix, the X-League-Upstream header, forwarded
headers, the unbuffered live stream, a graceful switch under load, a refused configuration,
a graceful stop."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devtools import requires
from devtools.netutil import free_port
from frontdoor import nginx as fd
from frontdoor.nginx import FrontDoor, FrontDoorError, render
from frontdoor.testing import Upstream, get


def nginx_pids(master: int) -> set[int]:
    return {master, *fd._children(master)}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def upstreams():
    made = {name: Upstream(name) for name in ("monolith", "teams", "transfers", "transfers-new")}
    yield made
    for u in made.values():
        u.close()


@pytest.fixture
def door(tmp_path):
    requires.program(not FrontDoor.available(), "nginx", "nginx")
    d = FrontDoor(tmp_path / "frontdoor", "127.0.0.1", free_port())
    yield d
    d.stop(timeout=5)


# ----------------------------------------------------------------------------- render alone


@pytest.mark.parametrize(
    "upstreams, default, listen, message",
    [
        ({"teams": "localhost"}, "127.0.0.1:1", "80", "upstream for teams is 'localhost': give host:port"),
        ({"payments": "127.0.0.1:1"}, "127.0.0.1:1", "80", "no front-door routes for payments"),
        ({}, "127.0.0.1:99999", "80", "upstream for monolith"),
        ({}, "127.0.0.1:1", "eighty", "listen is 'eighty'"),
    ],
)
def test_render_refuses_bad_input_with_a_clear_message(upstreams, default, listen, message):
    with pytest.raises(ValueError, match=message):
        render(upstreams, default, listen, prefix_dir="/tmp/fd")


def test_render_needs_no_root_paths():
    conf = render({"teams": "teams-web:8000"}, "web:8000", "8080", prefix_dir="/srv/fd", resolver="127.0.0.11")
    paths = [
        line.split()[1].rstrip(";") for line in conf.splitlines() if line.split()[:1] and "_path" in line.split()[0]
    ]
    assert len(paths) == 5 and all(p.startswith("/srv/fd/") for p in paths)
    assert "pid /srv/fd/nginx.pid;" in conf and "daemon off;" in conf and "user " not in conf
    assert 'set $league_upstream "teams-web:8000";' in conf and "resolver 127.0.0.11" in conf


def test_client_max_body_size_is_djangos_upload_limit(settings):
    assert fd.MAX_BODY_BYTES == settings.DATA_UPLOAD_MAX_MEMORY_SIZE


# ----------------------------------------------------------------------------- a real nginx


def test_routes_by_prefix_with_the_upstream_header(door, upstreams):
    u = upstreams
    door.start({"teams": u["teams"].address, "transfers": u["transfers"].address}, u["monolith"].address)
    expected = {
        "/api/teams/": "teams",
        "/api/teams": "teams",
        "/api/teams/3/players/": "teams",
        "/admin/teams/team/": "teams",
        "/api/transfers/teams/": "transfers",
        "/admin/transfers/": "transfers",
        "/api/seasons/": "monolith",  # fixtures has not moved: the monolith serves it
        "/api/teamsheet": "monolith",
        "/admin/": "monolith",
        "/": "monolith",
        "/healthz": "monolith",
    }
    for path, name in expected.items():
        status, header, body = get(door, path)
        assert (status, header, body["upstream"], body["path"]) == (200, name, name, path), path


def test_forwarded_headers(door, upstreams):
    door.start({}, upstreams["monolith"].address)
    _, _, body = get(
        door, "/x", headers={"X-Request-ID": "rid-123", "X-Forwarded-For": "10.0.0.9", "Idempotency-Key": "k-1"}
    )
    h = body["headers"]
    assert h["Idempotency-Key"] == "k-1"  # a retried POST is recognised behind the door too
    assert h["Host"] == f"127.0.0.1:{door.port}"
    assert h["X-Forwarded-For"] == "10.0.0.9, 127.0.0.1"
    assert h["X-Forwarded-Proto"] == "http"
    assert h["X-Request-ID"] == "rid-123"
    _, _, body = get(door, "/x", headers={"X-Forwarded-Proto": "https"})
    assert body["headers"]["X-Forwarded-Proto"] == "https"  # a TLS proxy in front said so
    assert len(body["headers"]["X-Request-ID"]) == 32  # none given: nginx made one


def test_errors_carry_the_header_and_big_bodies_stop_at_the_door(door, upstreams):
    closed = Upstream("gone")
    gone = closed.address
    closed.close()
    door.start({"fixtures": gone}, upstreams["monolith"].address)
    status, header, _ = get(door, "/api/seasons/")
    assert (status, header) == (502, "fixtures")
    status, header, _ = get(door, "/x", method="POST", body=b"x" * (fd.MAX_BODY_BYTES + 1))
    assert (status, header) == (413, "monolith")
    status, header, body = get(door, "/x", method="POST", body=b"x" * 100_000)
    assert (status, body["upstream"]) == (200, "monolith")


def test_the_live_stream_is_not_buffered(door, upstreams):
    door.start({}, upstreams["monolith"].address)
    sock = socket.create_connection((door.host, door.port), timeout=5)
    try:
        started = time.monotonic()
        sock.sendall(b"GET /live/events HTTP/1.1\r\nHost: x\r\n\r\n")
        seen = b""
        while b"data: first" not in seen:
            chunk = sock.recv(4096)
            assert chunk, seen
            seen += chunk
        assert time.monotonic() - started < 1.2, "the first event waited for the second: buffered"
        assert b"second" not in seen and b"X-League-Upstream: monolith" in seen
    finally:
        sock.close()


def test_switch_under_load_drops_nothing(door, upstreams):
    """A slow request in flight on the old upstream finishes 200 there; 200 requests fired
    by four clients before, during and after the reload all succeed; those started after
    switch() returned reach the new upstream."""
    u = upstreams
    door.start({"transfers": u["transfers"].address}, u["monolith"].address)
    results: list[tuple[float, int, str, str]] = []  # (started, status, header, upstream)
    errors: list[BaseException] = []
    lock = threading.Lock()
    sent = [0]

    def client() -> None:
        while True:
            with lock:
                if sent[0] >= 200:
                    return
                sent[0] += 1
            started = time.monotonic()
            try:
                status, header, body = get(door, "/api/transfers/1/", timeout=10)
                row = (started, status, header, body["upstream"] if isinstance(body, dict) else body)
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(exc)
                continue
            with lock:
                results.append(row)
            time.sleep(0.002)

    with ThreadPoolExecutor(max_workers=5) as pool:
        slow = pool.submit(get, door, "/api/transfers/slow")
        assert u["transfers"].slow_arrived.wait(10)  # it reached the old upstream and waits there
        clients = [pool.submit(client) for _ in range(4)]
        deadline = time.monotonic() + 20
        while len(results) < 40:
            assert time.monotonic() < deadline, "the clients made no progress"
            time.sleep(0.01)
        switch_started = time.monotonic()
        door.switch({"transfers": u["transfers-new"].address}, u["monolith"].address)
        switched = time.monotonic()
        for c in clients:
            c.result(timeout=60)
        status, header, body = slow.result(timeout=30)
    assert not errors, errors[:3]
    assert (status, header, body["upstream"]) == (200, "transfers", "transfers")
    assert len(results) == 200 and all(r[1:3] == (200, "transfers") for r in results), [
        r for r in results if r[1] != 200
    ]
    assert any(switch_started <= r[0] < switched for r in results), "no request was fired during the reload"
    assert {r[3] for r in results if r[0] < switch_started} == {"transfers"}
    assert {r[3] for r in results if r[0] >= switched} == {"transfers-new"}
    assert door.upstreams == {"transfers": u["transfers-new"].address} and door.generation == 2


def test_a_refused_configuration_leaves_the_running_one(door, upstreams):
    u = upstreams
    door.start({"teams": u["teams"].address}, u["monolith"].address)
    conf = door.conf_path.read_text()
    with pytest.raises(FrontDoorError, match=r"(?s)nginx -t refused .*host not found.*the running configuration stays"):
        door.switch({"teams": "no-such-host.invalid:8000"}, u["monolith"].address)
    assert door.conf_path.read_text() == conf and door.generation == 1
    status, header, body = get(door, "/api/teams/")
    assert (status, header, body["upstream"]) == (200, "teams", "teams")
    with pytest.raises(FrontDoorError, match="front-door routes: upstream for teams"):
        door.switch({"teams": "nonsense"}, u["monolith"].address)


def test_stop_is_graceful_and_leaves_nothing(door, upstreams):
    door.start({}, upstreams["monolith"].address)
    pids = nginx_pids(door.pid)
    assert len(pids) == 2  # master and one worker
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(get, door, "/slow")
        assert upstreams["monolith"].slow_arrived.wait(10)  # in flight at the upstream
        started = time.monotonic()
        assert door.stop(timeout=10) == 0
        assert 1.0 < time.monotonic() - started < 8
        status, _, body = slow.result(timeout=10)
    assert (status, body["upstream"]) == (200, "monolith")
    assert not any(alive(p) for p in pids)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((door.host, door.port), timeout=2)
    assert door.stop() is None  # twice is fine


def test_a_killed_master_leaves_no_worker_and_starts_again(door, upstreams):
    door.start({"teams": upstreams["teams"].address}, upstreams["monolith"].address)
    pids = nginx_pids(door.pid)
    os.kill(door.pid, 9)
    deadline = time.monotonic() + 5
    while door.running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert any(alive(p) for p in pids - {door.pid}), "its worker outlived it (and holds the port)"
    routes, default = dict(door.upstreams), door.default
    assert door.stop() == -9
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, "a worker was left behind"
        time.sleep(0.05)
    door.start(routes, default)
    assert get(door, "/api/teams/")[1] == "teams"


def test_clear_errors(door, upstreams, monkeypatch, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", door.port))
        taken.listen()
        with pytest.raises(FrontDoorError, match=f"port {door.port} on 127.0.0.1 is taken"):
            door.start({}, upstreams["monolith"].address)
    with pytest.raises(FrontDoorError, match="not running: start"):
        door.switch({}, upstreams["monolith"].address)
    monkeypatch.setattr(fd.shutil, "which", lambda name: None)
    monkeypatch.setattr(fd.os, "access", lambda *a: False)
    assert not FrontDoor.available()
    with pytest.raises(FrontDoorError, match="nginx not found: apt-get install nginx"):
        FrontDoor(tmp_path / "x", port=free_port()).start({}, upstreams["monolith"].address)


def test_nginx_runs_without_root_paths_as_its_user(door, upstreams):
    door.start({}, upstreams["monolith"].address)
    made = {p.name for p in door.prefix_dir.iterdir()}
    assert {"nginx.conf", "nginx.pid", "error.log", "access.log", "proxy_temp", "client_body_temp"} <= made
    assert int((door.prefix_dir / "nginx.pid").read_text()) == door.pid
    if os.geteuid() != 0:
        assert "user " not in door.conf_path.read_text()
