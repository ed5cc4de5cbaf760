"""``events.publish`` on PostgreSQL: the write gate's share-locked read, the sequence bump
and the outbox row are one statement, and with ``OUTBOX_WAKEUP=notify`` the relay's wake-up
is a ``NOTIFY`` in that same statement (delivered at commit, never on rollback) instead of a
Celery kick."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

import events
from devtools.testing import wait_until
from events import context, publisher, wakeup
from events.models import OutboxMessage, OutboxState

pytestmark = pytest.mark.postgres


def _statements(queries: CaptureQueriesContext) -> list[str]:
    """The statements of a publish; each reads the write gate (events/gate.py) share-locked
    before anything else."""
    sqls = [
        q["sql"]
        for q in queries.captured_queries
        if not q["sql"].upper().startswith(("SET ", "SAVEPOINT", "RELEASE", "ROLLBACK TO"))
    ]
    for sql in sqls:
        assert sql.startswith('WITH g AS (SELECT state FROM "events_servicegate" WHERE service = '), sql
        assert " FOR SHARE)" in sql, sql
    return sqls


@pytest.mark.django_db
def test_publish_is_one_statement_and_writes_what_the_orm_wrote(settings):
    settings.OUTBOX_KICK = False
    with transaction.atomic():
        events.publish("team.created", subject=5, data={"id": 5, "name": "Ajax", "short_name": "TM"})
        token = context.correlation_id.set("req-1")
        try:
            with CaptureQueriesContext(connection) as queries:
                row = events.publish(
                    "team.renamed", subject=5, data={"id": 5, "name": "AFC", "old_name": "Ajax", "short_name": "TM"}
                )
        finally:
            context.correlation_id.reset(token)
    assert len(_statements(queries)) == 1, _statements(queries)
    stored = OutboxMessage.objects.get(pk=row.pk)
    assert (stored.sequence, stored.envelope["sequence"], row.sequence, row.envelope["sequence"]) == (2, 2, 2, 2)
    assert stored.envelope == row.envelope and stored.envelope["data"]["name"] == "AFC"
    assert (stored.type, stored.subject, stored.aggregate_key, stored.state) == (
        "team.renamed",
        "5",
        "team:5",
        OutboxState.PENDING,
    )
    assert stored.event_id == uuid.UUID(row.envelope["id"]) and stored.correlation_id == "req-1"
    assert stored.created_at is not None and stored.attempts == 0 and stored.claim_token is None
    assert stored.sns_message_id == "" and stored.failure == "" and stored.last_error == ""


@pytest.mark.django_db(transaction=True)
def test_a_closed_gate_is_refused_by_the_same_statement_which_then_writes_nothing(settings):
    """No sequence bumped, no row, no wake-up: the refused write leaves no trace even inside
    a transaction that goes on (the API's rolls back; this one commits what else it did)."""
    from events import gate
    from events.models import SubjectSequence

    settings.OUTBOX_KICK, settings.OUTBOX_WAKEUP = True, "notify"
    with transaction.atomic():
        events.publish("team.created", subject=7, data={"id": 7, "name": "Ajax", "short_name": "TM"})
    gate.pause("teams", note="closed for the test")
    listener = _listener()
    try:
        with transaction.atomic():
            with CaptureQueriesContext(connection) as queries:
                with pytest.raises(gate.ServicePaused) as refused:
                    events.publish(
                        "team.renamed", subject=7, data={"id": 7, "name": "AFC", "old_name": "Ajax", "short_name": "TM"}
                    )
        assert len(_statements(queries)) == 1
        assert (refused.value.service, refused.value.state) == ("teams", gate.PAUSED)
        assert not listener.wait(0.5)
    finally:
        listener.close()
        gate.open_("teams")
    assert SubjectSequence.objects.get(key="team:7").last == 1
    assert list(OutboxMessage.objects.values_list("type", flat=True)) == ["team.created"]


@pytest.mark.django_db
def test_sequences_stay_per_subject_and_consecutive(settings):
    settings.OUTBOX_KICK = False
    with transaction.atomic():
        for subject in (1, 2, 1, 1, 2):
            events.publish(
                "team.created", subject=subject, data={"id": subject, "name": f"T{subject}", "short_name": "TM"}
            )
    seen = list(OutboxMessage.objects.order_by("id").values_list("subject", "sequence"))
    assert seen == [("1", 1), ("2", 1), ("1", 2), ("1", 3), ("2", 2)]


def _listener() -> wakeup.Listener:
    listener = wakeup.Listener()
    assert not listener.wait(0)  # nothing pending from before
    return listener


@pytest.mark.django_db(transaction=True)
def test_notify_wakes_a_listener_at_commit_and_not_on_rollback(settings, monkeypatch):
    settings.OUTBOX_KICK, settings.OUTBOX_WAKEUP = True, "notify"
    kicks = []
    monkeypatch.setattr(publisher, "_kick_relay", lambda: kicks.append(1))
    listener = _listener()
    try:
        with pytest.raises(ZeroDivisionError):
            with transaction.atomic():
                events.publish("team.created", subject=1, data={"id": 1, "name": "A", "short_name": "TM"})
                raise ZeroDivisionError
        assert not listener.wait(0.5)
        with transaction.atomic():
            with CaptureQueriesContext(connection) as queries:
                events.publish("team.created", subject=2, data={"id": 2, "name": "B", "short_name": "TM"})
            assert not listener.wait(0.2)  # not before commit
        assert len(_statements(queries)) == 1  # the NOTIFY rides on the insert
        assert listener.wait(5)
        assert kicks == []  # no Celery kick
    finally:
        listener.close()


@pytest.mark.django_db(transaction=True)
def test_without_notify_the_celery_kick_stays(settings, monkeypatch):
    settings.OUTBOX_KICK, settings.OUTBOX_WAKEUP = True, "celery"
    kicks = []
    monkeypatch.setattr(publisher, "_kick_relay", lambda: kicks.append(1))
    listener = _listener()
    try:
        with transaction.atomic():
            events.publish("team.created", subject=1, data={"id": 1, "name": "A", "short_name": "TM"})
        assert kicks == [1] and not listener.wait(0.2)
    finally:
        listener.close()


@pytest.mark.django_db(transaction=True)
def test_a_listening_relay_sweeps_on_the_wake_up_not_on_its_interval(settings, monkeypatch):
    """The long-running relay with a 60 s interval publishes a row within seconds of its commit."""
    import threading

    from events import relay

    settings.OUTBOX_KICK, settings.OUTBOX_WAKEUP = True, "notify"
    sweeps: list[int] = []
    first_sweep_done = threading.Event()
    real_relay = relay.relay

    def counting(publisher=None, **kwargs):
        sweeps.append(1)
        try:
            return real_relay(relay.NullPublisher(), **kwargs)
        finally:
            first_sweep_done.set()

    monkeypatch.setattr(relay, "relay", counting)
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(relay, stop), daemon=True)
    thread.start()
    try:
        # The first sweep is over (found nothing): from now on only a wake-up makes it sweep.
        assert first_sweep_done.wait(10), "the relay never swept"
        with transaction.atomic():
            row = events.publish("team.created", subject=1, data={"id": 1, "name": "A", "short_name": "TM"})
        wait_until(
            OutboxMessage.objects.filter(pk=row.pk, state=OutboxState.PUBLISHED).exists,
            timeout=10,
            what="the row published on its wake-up (the interval is 60 s)",
            interval=0.05,
        )
    finally:
        stop.set()
        with transaction.atomic():  # one more wake-up lets the loop see the stop
            events.publish("team.created", subject=2, data={"id": 2, "name": "B", "short_name": "TM"})
        thread.join(15)
    assert len(sweeps) >= 2 and not thread.is_alive()


def _serve(relay, stop) -> None:
    from django.db import connection as conn

    try:
        relay.run(stop, interval=60)
    finally:
        conn.close()


@pytest.mark.django_db
def test_the_statement_is_prepared_on_the_server_once_it_repeats(settings):
    """Parsing and planning the statement cost more than running it: psycopg binds its
    parameters on the server and prepares it on a connection once it repeats, so a
    long-lived connection plans it once. It stays one statement with what the ORM wrote."""
    settings.OUTBOX_KICK = False

    def prepared() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'WITH g AS (%%'")
            return cursor.fetchone()[0]

    before = prepared()
    rows = []
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        for n in range(8):
            rows.append(
                events.publish(
                    "team.renamed",
                    subject=9,
                    data={"id": 9, "name": f"Ajax {n}", "old_name": "Ajax", "short_name": "AJX"},
                )
            )
    assert len(_statements(queries)) == 8
    assert prepared() == before + 1
    stored = list(OutboxMessage.objects.filter(pk__in=[r.pk for r in rows]).order_by("sequence"))
    assert [r.sequence for r in stored] == list(range(1, 9))
    assert [r.envelope["data"]["name"] for r in stored] == [f"Ajax {n}" for n in range(8)]
    assert all(r.envelope["sequence"] == r.sequence for r in stored)


@pytest.mark.django_db
def test_every_column_gets_the_rows_value_whether_default_or_not(settings):
    """The statement prepares a fixed default once per process; a row holding any other
    value in any column gets that value written, as ``Model.save`` would write it."""
    from django.utils import timezone

    settings.OUTBOX_KICK = False
    now = timezone.now().replace(microsecond=0)
    odd = {
        "state": OutboxState.FAILED,
        "published_at": now,
        "sns_message_id": "m-1",
        "attempts": 3,
        "next_attempt_at": now,
        "claimed_until": now,
        "claim_token": uuid.uuid4(),
        "last_error": "boom",
        "correlation_id": "c-1",
        "causation_id": "e-0",
        "request": "POST /api/teams/",
        "request_at": now,
        "failure": "rejected",
        "retrying_since": now,
    }
    with transaction.atomic():
        for values in ({}, odd):
            row = OutboxMessage(
                event_id=uuid.uuid4(),
                type="team.created",
                subject="5",
                aggregate_key="team:5",
                sequence=0,
                envelope={"sequence": 0},
                **values,
            )
            publisher._insert_with_sequence(row, gate_of="teams", notify=False)
            stored = OutboxMessage.objects.get(pk=row.pk)
            for name, value in values.items():
                assert getattr(stored, name) == value, name
            if not values:
                fresh = OutboxMessage()
                for name in odd:
                    assert getattr(stored, name) == getattr(fresh, name), name


def _prepare_threshold(tmp_path, value: str | None) -> subprocess.CompletedProcess[str]:
    """``prepare_threshold`` as the settings hand it to psycopg on PostgreSQL, with
    ``DATABASE_PREPARE_THRESHOLD`` set to ``value`` (unset: None). No connection is made."""
    from devtools.testing import child_env

    env = child_env(
        "http://127.0.0.1:1", DATABASE_URL="postgres://league@db.example:5432/league", DATA_DIR=str(tmp_path)
    )
    env.pop("DATABASE_PREPARE_THRESHOLD", None)
    if value is not None:
        env["DATABASE_PREPARE_THRESHOLD"] = value
    return subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.DATABASES['default']['OPTIONS'])"],
        env={**env, "DJANGO_SETTINGS_MODULE": "league.settings"},
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("value", "expected"), [(None, 5), ("2", 2), ("0", 0), ("off", None), (" OFF ", None)])
def test_the_prepare_threshold_is_five_runs_by_default_and_can_be_off(tmp_path, value, expected):
    done = _prepare_threshold(tmp_path, value)
    assert done.returncode == 0, done.stderr
    assert f"'prepare_threshold': {expected}" in done.stdout


@pytest.mark.parametrize("value", ["never", "-1", "2.5"])
def test_a_prepare_threshold_that_is_not_a_count_is_refused_with_what_to_set(tmp_path, value):
    done = _prepare_threshold(tmp_path, value)
    assert done.returncode != 0
    assert "DATABASE_PREPARE_THRESHOLD" in done.stderr and "'off'" in done.stderr
