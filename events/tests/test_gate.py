"""The write gate (``events/gate.py``): while a service is being moved nothing of it commits
in the old database, and nothing is lost: writes are refused with 503 + Retry-After, the
consumer gives its messages back, and a pause waits for the writes under way."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections, transaction

import events
from devtools.testing import wait_until
from events import aws, gate
from events.consumer import Consumer
from events.models import InboxMessage, OutboxMessage, SubjectSequence


def _publish_team(team_id: int) -> None:
    with transaction.atomic():
        events.publish("team.created", subject=team_id, data={"id": team_id, "name": f"Team {team_id}", "short_name": "TM"})


def test_the_consumer_of_a_paused_service_gives_its_batch_back(transactional_db, probe_bus, recorder, monkeypatch):
    """A batch received just before the pause is rolled back and returned at once; the
    consumer then receives nothing until the gate opens; then each event is handled once."""
    gate.open_("probe")
    for team_id in (1, 2, 3):
        _publish_team(team_id)
    probe_bus.relay()
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)
    messages = consumer.receive(0)
    assert messages

    gate.pause("probe")
    consumer.process(messages)
    assert InboxMessage.objects.count() == 0
    attrs = aws.queue_attributes(consumer.queue_url, "ApproximateNumberOfMessages")
    assert int(attrs["ApproximateNumberOfMessages"]) == 3  # given back, visible at once

    stop = threading.Event()
    gated = Consumer("probe", wait_seconds=0, check_topology=False, stop=stop)
    # The consumer reads the gate before each receive: once it has read "paused" a few
    # times it has had every chance to receive, and must not have.
    reads: list[str] = []
    real_current = gate.current
    monkeypatch.setattr(gate, "current", lambda *a, **k: reads.append(real_current(*a, **k)) or reads[-1])
    worker = threading.Thread(target=gated.run)
    worker.start()
    try:
        wait_until(lambda: reads.count(gate.PAUSED) >= 3, timeout=20, what="the consumer reading the closed gate")
        assert gated.stats.received == 0  # paused: not even a receive
        gate.open_("probe")
        wait_until(lambda: InboxMessage.objects.count() == 3, timeout=10, what="the three events handled")
    finally:
        stop.set()
        worker.join(10)
    assert sorted(e.subject for e in recorder.seen) == ["1", "2", "3"]  # each once


# ------------------------------------------------------------------ real concurrency
def _a_backend_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_pause_waits_for_the_write_under_way_and_refuses_every_later_one():
    gate.open_("teams")
    published = threading.Event()
    release = threading.Event()
    marks: dict[str, float] = {}

    def writer() -> None:
        try:
            with transaction.atomic():
                events.publish("team.created", subject=1, data={"id": 1, "name": "Ajax", "short_name": "TM"})
                published.set()
                release.wait(10)
            marks["writer_committed"] = time.monotonic()
        finally:
            connections.close_all()

    def pauser() -> None:
        try:
            gate.pause("teams")
            marks["paused"] = time.monotonic()
        finally:
            connections.close_all()

    w = threading.Thread(target=writer)
    w.start()
    assert published.wait(10)
    p = threading.Thread(target=pauser)
    p.start()
    wait_until(_a_backend_waits_for_a_lock, timeout=10, what="the pause waiting for the writer's lock")
    assert "paused" not in marks  # the pause waits for the writer's share lock
    release.set()
    w.join(10)
    p.join(10)
    assert "paused" in marks and "writer_committed" in marks  # both went through once the writer let go
    assert OutboxMessage.objects.filter(aggregate_key="team:1").count() == 1

    with pytest.raises(gate.ServicePaused):
        _publish_team(2)
    assert not OutboxMessage.objects.filter(aggregate_key="team:2").exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_write_that_began_before_the_pause_cannot_commit_after_it():
    """The transaction started (and wrote a row) before the pause, and reaches publish
    after it: the gate is read in that transaction and refuses, so the whole write rolls back."""
    gate.open_("teams")
    started = threading.Event()
    go_on = threading.Event()
    outcome: list[BaseException | None] = []

    def writer() -> None:
        try:
            with transaction.atomic():
                SubjectSequence.objects.create(key="domain:row")  # the domain write, before the pause
                started.set()
                go_on.wait(10)
                events.publish("team.created", subject=1, data={"id": 1, "name": "Ajax", "short_name": "TM"})
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            outcome.append(exc)
        finally:
            connections.close_all()

    w = threading.Thread(target=writer)
    w.start()
    assert started.wait(10)
    gate.pause("teams")
    go_on.set()
    w.join(10)
    assert isinstance(outcome[0], gate.ServicePaused)
    assert not SubjectSequence.objects.filter(key="domain:row").exists() and not OutboxMessage.objects.exists()
