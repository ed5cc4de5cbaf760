"""End to end on real parts: REST -> outbox -> Celery relay -> moto_server (SNS -> SQS)
-> ``manage.py consume`` -> the transfers replica."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from events.models import OutboxMessage, OutboxState

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def database_url() -> str:
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def child_env(moto_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        AWS_ENDPOINT_URL=moto_url,
        DATA_DIR=str(settings.DATA_DIR),
        CELERY_BROKER_URL="filesystem://",
        CONSUMER_WAIT_SECONDS="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def manage(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=settings.BASE_DIR,
    )


def wait_until(predicate, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def celery_worker_process(moto_server, settings):
    """A real Celery worker on the filesystem broker, sharing this test's database."""
    shutil.rmtree(settings.DATA_DIR / "broker" / "out", ignore_errors=True)
    (settings.DATA_DIR / "broker" / "out").mkdir(parents=True, exist_ok=True)
    celery = os.path.join(os.path.dirname(sys.executable), "celery")
    proc = subprocess.Popen(
        [celery, "-A", "league", "worker", "-P", "solo", "-l", "warning"],
        env=child_env(moto_server),
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_team_created_over_rest_reaches_the_transfers_replica(moto_server, celery_worker_process, auth_client, settings):
    settings.OUTBOX_KICK = True
    call_command("setup_bus", verbosity=0)

    response = auth_client.post("/api/teams/", {"name": "Ajax"}, format="json")
    assert response.status_code == 201, response.content
    team_id = response.json()["id"]

    # The on-commit kick reached the worker, whose relay published the row to SNS.
    row = OutboxMessage.objects.get(type="team.created")
    wait_until(
        lambda: OutboxMessage.objects.filter(pk=row.pk, state=OutboxState.PUBLISHED).exists(),
        timeout=30,
        what="the Celery worker to publish the outbox row",
    )

    done = manage("consume", "--service", "transfers", "--drain", "--no-startup", env=child_env(moto_server))
    assert done.returncode == 0, done.stderr
    assert "handled 1" in done.stdout

    replica = auth_client.get("/api/transfers/teams/").json()
    items = replica["results"] if isinstance(replica, dict) else replica
    assert [(t["id"] if "id" in t else t["team_id"], t["name"]) for t in items] == [(team_id, "Ajax")]
