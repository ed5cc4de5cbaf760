"""End to end on real parts: REST -> outbox -> Celery relay -> moto_server (SNS -> SQS)
-> ``manage.py consume`` -> the transfers replica."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from django.core.management import call_command

from devtools import testing
from events.models import OutboxMessage, OutboxState

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def child_env(moto_url: str) -> dict[str, str]:
    return testing.child_env(moto_url, OUTBOX_KICK="true")


def manage(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(testing.manage_argv(*args), env=env, capture_output=True, text=True, timeout=timeout)


wait_until = testing.wait_until


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
