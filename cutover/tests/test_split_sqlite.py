"""``split_service`` against the embedded stack (the README's first command: ``runstack`` on
SQLite, moto_server, the filesystem broker, Debian's nginx as the front door), as a person
would run it from a second terminal:

- a failure before the switch (the monolith's relay stopped, so its last transfers event
  cannot be published in time) rolls everything back: the command exits non-zero, the
  monolith takes transfers' writes again, the new processes are gone, the database the
  command created is dropped;
- run again, it moves transfers to a SQLite file of its own: the front door sends
  /api/transfers/ there, a transfer requested afterwards completes (the saga crosses the two
  databases), the event written before the failed attempt was published once and handled;
- afterwards nothing writes the monolith's leftover transfers tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from devtools import requires
from devtools.netutil import free_port
from frontdoor.nginx import FrontDoor

BASE_DIR = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _wait(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def _table_digest(path: Path, tables: list[str]) -> str:
    digest = hashlib.sha256()
    with sqlite3.connect(path) as conn:
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY 1'):
                digest.update(repr(row).encode())
    return digest.hexdigest()


@pytest.fixture
def stack(tmp_path):
    requires.program(not FrontDoor.available(), "nginx", "nginx")
    # --port, the web behind the front door (--port + 1) and the emulator's, all outside the
    # kernel's ephemeral range (devtools.netutil.free_port).
    port = free_port(span=3)
    emulator_port = port + 2
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS", "AWS_ENDPOINT"))}
    for key in ("DATABASE_URL", "LEAGUE_SERVICE", "CELERY_BROKER_URL", "REQUIRE_POSTGRES"):
        env.pop(key, None)
    env.update(DATA_DIR=str(data), PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING", CONSUMER_WAIT_SECONDS="1")
    log = tmp_path / "runstack.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "runstack",
                "--port",
                str(port),
                "--emulator-port",
                str(emulator_port),
                "--workers",
                "1",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait(lambda: "Ctrl-C stops everything" in log.read_text(), 180, "runstack's banner", log)
        token = re.search(r"export TOKEN=(\S+)", log.read_text()).group(1)
        yield {"url": f"http://127.0.0.1:{port}", "env": env, "data": data, "log": log, "token": token, "tmp": tmp_path}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _split(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "split_service", *args],
        cwd=BASE_DIR,
        env=stack["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _shell(stack, code: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=BASE_DIR,
        env=stack["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# A transfers event whose publication is backing off (not due for an hour).
BACKING_OFF = """
import datetime, uuid
from django.utils import timezone
from events.models import OutboxMessage
OutboxMessage.objects.create(
    event_id=uuid.uuid4(), type="transfer.requested", subject="999999", aggregate_key="transfer:999999",
    sequence=1, envelope={}, attempts=1, last_error="throttled",
    retrying_since=timezone.now(), next_attempt_at=timezone.now() + datetime.timedelta(hours=1),
)
"""


def test_split_rolls_back_a_failure_then_moves_transfers_out_of_the_running_monolith(stack):
    api = requests.Session()
    api.headers["Authorization"] = f"Token {stack['token']}"
    url = stack["url"]
    teams = [api.post(f"{url}/api/teams/", json={"name": f"Club {i}"}).json()["id"] for i in range(2)]
    player = api.post(f"{url}/api/teams/{teams[0]}/players/", json={"name": "Ann Smith", "position": "GK"}).json()
    _wait(
        lambda: any(t["id"] == teams[1] for t in api.get(f"{url}/api/transfers/teams/").json()["results"]),
        60,
        "the transfers replica to know both teams",
        stack["log"],
    )
    target = stack["tmp"] / "transfers.sqlite3"

    # 1. A failure before the switch: one of transfers' events is backing off (SNS failed
    #    for it a moment ago; its next try is an hour away), so step 4 cannot finish within
    #    --drain-timeout and the command rolls back.
    first = api.post(
        f"{url}/api/transfers/",
        json={"player_id": player["id"], "from_team_id": teams[0], "to_team_id": teams[1], "fee": "5.00"},
    )
    assert first.status_code == 201, first.text
    _wait(
        lambda: api.get(f"{url}/api/transfers/{first.json()['id']}/").json()["state"] == "completed",
        60,
        "the first transfer to complete in the monolith",
        stack["log"],
    )
    _shell(stack, BACKING_OFF)
    failed = _split(stack, "transfers", "--database-url", f"sqlite:///{target}", "--yes", "--drain-timeout", "3")
    assert failed.returncode != 0
    assert "did not publish the last 1 outbox row(s) of transfers within 3 s" in failed.stderr
    assert "rolled back" in failed.stdout
    assert not target.exists()  # the database it created is dropped
    stack_doc = json.loads((stack["data"] / "stack.json").read_text())
    assert "transfers" not in stack_doc["services"]
    assert "transfers" not in json.loads((stack["data"] / "deployment.json").read_text())["services"]
    assert _shell(stack, "from events import gate; print(gate.current('transfers'))").split()[-1] == "open"
    _shell(stack, "from events.models import OutboxMessage as O; O.objects.filter(subject='999999').delete()")

    # 2. Run again: transfers moves out.
    moved = _split(stack, "transfers", "--database-url", f"sqlite:///{target}", "--yes")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    for n in range(1, 8):
        assert f"step {n}/7:" in moved.stdout
    assert re.search(r"The writes of transfers were paused for \d+\.\d+ s", moved.stdout)
    answer = api.get(f"{url}/api/transfers/")
    assert answer.headers["X-League-Upstream"] == "transfers"
    assert [t["id"] for t in answer.json()["results"]] == [first.json()["id"]]  # the copied history
    assert api.get(f"{url}/api/teams/").headers["X-League-Upstream"] == "monolith"

    # 3. The saga across the two databases: a transfer back, requested through the front door.
    monolith = stack["data"] / "league.sqlite3"
    leftovers = ["transfers_transfer", "transfers_teamreplica", "transfers_playerreplica", "transfers_teamssync"]
    before = _table_digest(monolith, leftovers)
    back = api.post(
        f"{url}/api/transfers/",
        json={"player_id": player["id"], "from_team_id": teams[1], "to_team_id": teams[0], "fee": "7.00"},
    )
    assert back.status_code == 201, back.text
    assert back.json()["id"] > first.json()["id"]  # the new database's ids continue the copied ones
    _wait(
        lambda: api.get(f"{url}/api/transfers/{back.json()['id']}/").json()["state"] == "completed",
        60,
        "the transfer requested after the move to complete",
        stack["log"],
    )
    squad = [p["id"] for p in api.get(f"{url}/api/teams/{teams[0]}/players/").json()]
    assert player["id"] in squad
    # 4. Nothing wrote the monolith's leftover transfers tables meanwhile.
    assert _table_digest(monolith, leftovers) == before
    with sqlite3.connect(monolith) as conn:
        assert conn.execute("SELECT state FROM events_servicegate WHERE service = 'transfers'").fetchone() == ("moved",)

    # 5. The way back: transfers returns to the monolith with what it wrote on its own.
    returned = _split(stack, "transfers", "--back", "--yes")
    assert returned.returncode == 0, returned.stdout + returned.stderr
    assert re.search(r"The writes of transfers were paused for \d+\.\d+ s \(steps 2 to 5\)", returned.stdout)
    answer = api.get(f"{url}/api/transfers/")
    assert answer.headers["X-League-Upstream"] == "monolith"
    assert sorted(t["id"] for t in answer.json()["results"]) == [first.json()["id"], back.json()["id"]]
    again = api.post(
        f"{url}/api/transfers/",
        json={"player_id": player["id"], "from_team_id": teams[0], "to_team_id": teams[1], "fee": "9.00"},
    )
    assert again.status_code == 201, again.text
    assert again.json()["id"] > back.json()["id"]
    _wait(
        lambda: api.get(f"{url}/api/transfers/{again.json()['id']}/").json()["state"] == "completed",
        60,
        "a transfer requested after the way back to complete",
        stack["log"],
    )
    assert "transfers" not in json.loads((stack["data"] / "deployment.json").read_text())["services"]
    with sqlite3.connect(target) as conn:  # the service's own database takes no write again
        assert conn.execute("SELECT state FROM events_servicegate WHERE service = 'transfers'").fetchone() == ("moved",)
