"""How a commit wakes the relay, by default: a ``NOTIFY`` wherever the database is
PostgreSQL (and the Celery worker LISTENs for it), the Celery kick where it is SQLite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction

import events
from devtools.testing import child_env, wait_until
from events import topology
from events.models import OutboxMessage, OutboxState


def _default_wakeup(database_url: str, tmp_path, **extra: str) -> str:
    """``OUTBOX_WAKEUP`` as the settings give it with ``database_url`` (and the variable unset
    unless ``extra`` sets it). No connection is made."""
    env = child_env("http://127.0.0.1:1", DATABASE_URL=database_url, DATA_DIR=str(tmp_path))
    env.pop("OUTBOX_WAKEUP", None)
    env.update(extra)
    done = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.OUTBOX_WAKEUP)"],
        env={**env, "DJANGO_SETTINGS_MODULE": "league.settings"},
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_default_wakeup_is_notify_on_postgresql(tmp_path):
    assert _default_wakeup("postgres://league@db.example:5432/league", tmp_path) == "notify"


def test_the_default_wakeup_is_the_celery_kick_on_sqlite(tmp_path):
    assert _default_wakeup(f"sqlite:///{tmp_path / 'league.sqlite3'}", tmp_path) == "celery"


def test_the_wakeup_can_still_be_chosen_on_postgresql(tmp_path):
    assert _default_wakeup("postgres://league@db.example:5432/league", tmp_path, OUTBOX_WAKEUP="celery") == "celery"


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_the_celery_worker_publishes_on_the_writers_notify(moto_server, settings, tmp_path):
    """With the defaults on PostgreSQL a commit sends a NOTIFY, no Celery task; the worker
    (which every stack runs: runstack, compose, a moved service) LISTENs and relays at once.
    No beat runs here, and no task is queued: only the worker's listener can publish."""
    settings.OUTBOX_KICK, settings.OUTBOX_WAKEUP = True, "notify"
    topology.ensure()
    env = child_env(moto_server, OUTBOX_KICK="true", CELERY_BROKER_URL=f"filesystem://{tmp_path}")
    env.pop("OUTBOX_WAKEUP", None)
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "league",
            "worker",
            "-P",
            "solo",
            "-l",
            "info",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        env=env,
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: _listening(), timeout=60, what="the worker to LISTEN for the writers' wake-up")
        with transaction.atomic():
            row = events.publish("team.created", subject=1, data={"id": 1, "name": "Reds", "short_name": "TM"})
        wait_until(
            lambda: OutboxMessage.objects.filter(pk=row.pk, state=OutboxState.PUBLISHED).exists(),
            timeout=15,
            what="the worker's relay to publish the row",
        )
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert worker.returncode == 0, output[-3000:]


def _listening() -> bool:
    from django.db import connection

    with connection.cursor() as c:
        c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN events_outbox' AND datname = current_database()"
        )
        return c.fetchone()[0] > 0
