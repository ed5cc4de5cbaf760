"""``manage.py runstack`` on a fresh machine: one command brings the whole system up on
embedded parts (SQLite, moto_server, the filesystem broker), a team created over HTTP
reaches the transfers replica, and Ctrl-C stops everything with exit code 0."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
import requests
from django.conf import settings

from devtools import emulators
from devtools.netutil import free_port
from frontdoor.nginx import FrontDoor
from live.testing import Stream

# Also run again on LocalStack in CI (BUS_EMULATOR=localstack pytest -m emulator):
# `runstack --emulator localstack` installs and starts it by itself.
pytestmark = [pytest.mark.slow, pytest.mark.emulator]

# What a fresh machine does not have: runstack must bring its own.
UNSET = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "AWS_ENDPOINT_URL",
    "LEAGUE_SERVICE",
    "TEAMS_SERVICE_URL",
    "DJANGO_SETTINGS_MODULE",
)


def children_of(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Output:
    """Collects a process's output lines on a thread (the pipe never fills up)."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, *, timeout: float, proc: subprocess.Popen) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"runstack never printed {pattern!r}:\n" + "\n".join(self.lines[-60:]))

    def tail(self) -> str:
        return "\n".join(self.lines[-60:])


def replica_names(url: str) -> set[str]:
    body = requests.get(url, timeout=30).json()
    items = body["results"] if isinstance(body, dict) else body
    return {t["name"] for t in items}


WALKTHROUGH_IDS = ("REDS_ID", "ANN_ID", "BLUES_ID", "TRANSFER_ID", "SEASON_ID", "FIXTURE_ID")


def run_readme_walkthrough(base: str, token: str) -> dict[str, str]:
    """Run the README's bash blocks from "What happens when you create a team" to
    "Guarantees" against ``base``; returns the ids they took from the answers."""
    text = (Path(settings.BASE_DIR) / "README.md").read_text()
    part = text.split("## What happens when you create a team")[1].split("## Guarantees")[0]
    script = "\n".join(re.findall(r"```bash\n(.*?)```", part, flags=re.S))
    export = "export B=http://127.0.0.1:8000 TOKEN=<the printed API token>"
    assert export in script
    script = script.replace(export, f"export B={base} TOKEN={token}")
    script += "\necho\n" + "".join(f'echo "{name}=${name}"\n' for name in WALKTHROUGH_IDS)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    found = dict(line.split("=", 1) for line in done.stdout.splitlines() if line.split("=", 1)[0] in WALKTHROUGH_IDS)
    assert all(found.get(name, "").isdigit() for name in WALKTHROUGH_IDS), done.stdout + done.stderr
    return found


def forged_session(key: str, data_dir: Path, username: str = "admin") -> str:
    """A session cookie of ``username`` (read from runstack's SQLite database) signed with ``key``:
    what anyone who knows the key could make."""
    from django.core import signing
    from django.utils.crypto import salted_hmac

    with closing(sqlite3.connect(data_dir / "league.sqlite3")) as db:
        user_id, password = db.execute("SELECT id, password FROM auth_user WHERE username = ?", [username]).fetchone()
    session_hash = salted_hmac(
        "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash", password, secret=key, algorithm="sha256"
    ).hexdigest()
    session = {
        "_auth_user_id": str(user_id),
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": session_hash,
    }
    return signing.dumps(
        session,
        key=key,
        compress=True,
        salt="django.contrib.sessions.backends.signed_cookies",
        serializer=signing.JSONSerializer,
    )


def admin_page_status(base: str, session_cookie: str) -> int:
    """200: the admin index accepted the session; 302: it sent the client to log in."""
    response = requests.get(f"{base}/admin/", cookies={"sessionid": session_cookie}, allow_redirects=False, timeout=10)
    return response.status_code


def start_runstack(tmp_path: Path, *args: str, **extra_env: str) -> tuple[subprocess.Popen, Output, int]:
    """``manage.py runstack`` on fresh embedded parts in ``tmp_path``; returns the process, its
    output and --port."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(DATA_DIR=str(tmp_path), PYTHONUNBUFFERED="1", CONSUMER_WAIT_SECONDS="2", **extra_env)
    port, moto_port = free_port(span=2), free_port()
    argv = [sys.executable, "manage.py", "runstack", "--port", str(port), "--emulator", emulators.selected()]
    argv += ["--emulator-port", str(moto_port), "--workers", "1", *args]
    proc = subprocess.Popen(
        argv, cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return proc, Output(proc.stdout), port


def test_runstack_with_debug_off_serves_its_pages_and_their_static_files(tmp_path):
    proc, out, port = start_runstack(
        tmp_path,
        DEBUG="false",
        SECRET_KEY="a-key-for-this-test-only-0123456789-abcdefghijklmnopqrstuvwxyz",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="false",
    )
    base = f"http://127.0.0.1:{port}"
    descendants: set[int] = set()
    try:
        out.wait_for(r"API token\s+(\w+)", timeout=180, proc=proc)
        for path in ("/", "/admin/login/", "/api/docs/"):
            page = requests.get(f"{base}{path}", timeout=10)
            assert page.status_code == 200, (path, page.status_code, page.text[:500])
            # Every static file the page names is served (by its hashed name).
            assets = set(re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text))
            assert assets, (path, page.text[:500])
            for asset in assets:
                assert requests.get(f"{base}{asset}", timeout=10).status_code == 200, (path, asset)
        out.wait_for(rf"static\s+collected into {tmp_path / 'static'}", timeout=5, proc=proc)
        descendants = children_of(proc.pid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, out.tail()
    finally:
        if proc.poll() is None:
            descendants |= children_of(proc.pid)
            proc.kill()
            proc.wait()
        for pid in descendants:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        out.thread.join(10)


def test_runstack_brings_the_system_up_and_ctrl_c_stops_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    # A short visibility timeout: the killed consumer's long poll may still be open in
    # moto and take the next message into a dead socket (real SQS does the same); the
    # message then comes back after the visibility timeout, not the default 30 s.
    env.update(DATA_DIR=str(tmp_path), PYTHONUNBUFFERED="1", CONSUMER_WAIT_SECONDS="2", CONSUMER_VISIBILITY_TIMEOUT="5")
    port, moto_port = free_port(span=2), free_port()  # --port and the web behind the front door
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runstack",
            "--port",
            str(port),
            "--emulator",
            emulators.selected(),
            "--emulator-port",
            str(moto_port),
            "--workers",
            "1",
            "--demo",
        ],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = Output(proc.stdout)
    descendants: set[int] = set()
    try:
        token = out.wait_for(r"API token\s+(\w+)", timeout=120, proc=proc).group(1)
        base = f"http://127.0.0.1:{port}"
        # With Debian's nginx the front door answers on --port (the web server behind it on
        # loopback), and DATA_DIR/stack.json says so; without nginx the web server does.
        front = FrontDoor.available()
        assert requests.get(f"{base}/healthz", timeout=30).headers.get("X-League-Upstream") == (
            "monolith" if front else None
        )
        if front:
            out.wait_for(rf"Front door\s+{base}/", timeout=5, proc=proc)
            stack = json.loads((tmp_path / "stack.json").read_text())
            assert stack["front_door"] == base and stack["pid"] == proc.pid, stack
            assert requests.get(f"http://{stack['monolith']['web']}/healthz", timeout=30).status_code == 200
        else:
            out.wait_for(r"front door off: it needs Debian's nginx", timeout=5, proc=proc)
        # --demo seeded a believable league through the teams service.
        demo = requests.get(f"{base}/api/teams/?limit=100", timeout=30).json()
        assert demo["count"] >= 20, demo
        # The league page shows them, and its live stream is open (ASGI, own broadcast queue).
        page = requests.get(f"{base}/", timeout=10)
        assert page.status_code == 200 and demo["results"][0]["name"] in page.text
        stream = Stream(f"{base}/live/events")
        assert stream.opened.wait(10), "the live stream never opened\n" + out.tail()

        response = requests.post(
            f"{base}/api/teams/",
            json={"name": "Runstack Rovers"},
            headers={"Authorization": f"Token {token}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        stream.wait_for("Team Runstack Rovers created", timeout=20)
        stream.close()

        deadline = time.monotonic() + 20
        while "Runstack Rovers" not in replica_names(f"{base}/api/transfers/teams/?limit=100"):
            assert time.monotonic() < deadline, "the team never reached the transfers replica\n" + out.tail()
            time.sleep(0.2)
        descendants = children_of(proc.pid)
        assert len(descendants) >= 6, descendants  # moto, web (+ workers), worker, beat, consumers

        # A consumer that crashes is restarted, and events still flow.
        consumer_pid = int(out.wait_for(r"started\s+consume-transfers \(pid (\d+)\)", timeout=5, proc=proc).group(1))
        os.kill(consumer_pid, signal.SIGKILL)
        out.wait_for(r"restarted consume-transfers: it exited with code -9", timeout=10, proc=proc)
        response = requests.post(
            f"{base}/api/teams/",
            json={"name": "Phoenix Town"},
            headers={"Authorization": f"Token {token}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        deadline = time.monotonic() + 30
        while "Phoenix Town" not in replica_names(f"{base}/api/transfers/teams/?limit=100"):
            assert time.monotonic() < deadline, "events stopped after the consumer restart\n" + out.tail()
            time.sleep(0.2)
        descendants |= children_of(proc.pid)

        # /metrics adds up every process: the relay (Celery worker) and the consumers count.
        scraped = requests.get(f"{base}/metrics", timeout=10).text
        assert re.search(r'league_outbox_published_total\{type="team.created"\} [1-9]', scraped), scraped
        assert re.search(r'league_events_handled_total\{service="transfers",type="team.created"\} [1-9]', scraped)

        # The README's walkthrough, as written, on this --demo stack: ids come from answers.
        walk = run_readme_walkthrough(base, token)
        deadline = time.monotonic() + 30
        while requests.get(f"{base}/api/transfers/{walk['TRANSFER_ID']}/", timeout=30).json()["state"] != "completed":
            assert time.monotonic() < deadline, "the README's transfer never completed\n" + out.tail()
            time.sleep(0.2)
        blues = requests.get(f"{base}/api/teams/{walk['BLUES_ID']}/", timeout=30).json()
        assert [p["id"] for p in blues["players"]] == [int(walk["ANN_ID"])], blues
        fixture = requests.get(f"{base}/api/fixtures/{walk['FIXTURE_ID']}/", timeout=5).json()
        assert (fixture["home_goals"], fixture["away_goals"]) == (2, 1), fixture

        # Sessions are signed with this data directory's own key, which the web server uses;
        # a session cookie signed with the key printed in the source is refused.
        key = (tmp_path / "secret-key").read_text().strip()
        out.wait_for(
            rf"signing\s+SECRET_KEY of this data directory, kept in {tmp_path / 'secret-key'}", timeout=5, proc=proc
        )
        assert admin_page_status(base, forged_session(key, tmp_path)) == 200
        assert (
            admin_page_status(base, forged_session("insecure-development-key-do-not-use-in-production", tmp_path))
            == 302
        )

        # The emulator killed -9 comes back empty: runstack restarts it and restores the bus, the
        # consumers find their queues again, /readyz recovers; nobody acts.
        kind = emulators.selected()
        # 30 s with moto; LocalStack alone takes longer than that to start again.
        limit = 30 if kind == "moto" else 120
        moto_pid = int(out.wait_for(rf"started\s+{kind} \(pid (\d+)\)", timeout=5, proc=proc).group(1))
        os.kill(moto_pid, signal.SIGKILL)
        killed = time.monotonic()
        response = requests.post(
            f"{base}/api/teams/",
            json={"name": "Moto Wanderers"},
            headers={"Authorization": f"Token {token}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        out.wait_for(rf"restored\s+the bus on the restarted {kind}", timeout=limit, proc=proc)
        while "Moto Wanderers" not in replica_names(f"{base}/api/transfers/teams/?limit=100"):
            assert time.monotonic() - killed < limit, f"events did not flow again within {limit} s\n" + out.tail()
            time.sleep(0.2)
        while requests.get(f"{base}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() - killed < limit, "/readyz did not recover\n" + out.tail()
            time.sleep(0.2)
        descendants |= children_of(proc.pid)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, out.tail()
    finally:
        # Before the kill: a killed runstack's children belong to init, not to it.
        descendants |= children_of(proc.pid)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.thread.join(10)
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in descendants) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {pid for pid in descendants if alive(pid)}
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"runstack left processes behind: {left}"
    assert "stopping" in out.tail()
    assert not (tmp_path / "stack.json").exists()
    output = "\n".join(out.lines)
    assert "No hostname was supplied" not in output
    assert f"kept in {tmp_path / 'admin-password'}" in output
