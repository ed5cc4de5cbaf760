"""Operations on the bus: replay sends published rows only, the inbox is
purged after the redelivery horizon, DLQs outlive their source queues, and a missing
queue is named, not shown as blank cells."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone

import events
from events import aws, retention, topology
from events.models import InboxMessage, OutboxMessage, OutboxState

DAY = 24 * 3600


def _create(team_id: int) -> OutboxMessage:
    with transaction.atomic():
        return events.publish("team.created", subject=team_id, data={"id": team_id, "name": f"Team {team_id}", "short_name": "TM"})


def _depth(name: str) -> int:
    return int(aws.queue_attributes(aws.queue_url(name), "ApproximateNumberOfMessages")["ApproximateNumberOfMessages"])


# ---- replay -----------------------------------------------------------------
def test_replay_sends_published_rows_only(bus, capsys):
    """A pending or failed row has not been published: replaying it would jump the
    per-subject order (an older row of its subject may still be unpublished)."""
    published = _create(1)
    bus.relay()
    pending = _create(2)
    failed = _create(3)
    OutboxMessage.objects.filter(pk=failed.pk).update(state=OutboxState.FAILED)
    call_command("replay_events", "--service", "transfers", "--type", "team.created")
    assert "1 event(s) replayed" in capsys.readouterr().out
    url = aws.queue_url(aws.queue_name("transfers"))
    bodies = [
        json.loads(m["Body"])["id"]
        for m in aws.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    ]
    # team.created of 1 reached transfers twice (publish + replay); 2 and 3 never.
    assert set(bodies) == {str(published.event_id)}
    assert str(pending.event_id) not in bodies and str(failed.event_id) not in bodies


def test_replay_help_says_published_rows_only():
    from events.management.commands.replay_events import Command

    assert "published" in Command.help


# ---- inbox retention --------------------------------------------------------
def test_inbox_rows_are_kept_while_a_message_can_still_be_redelivered(db, settings):
    settings.BUS_QUEUE_RETENTION_SECONDS = 4 * DAY
    settings.BUS_DLQ_RETENTION_SECONDS = 14 * DAY
    settings.INBOX_RETENTION = timedelta(days=1)  # asks for less than the horizon: not honoured
    now = timezone.now()
    for age_days in (1, 17, 19):
        row = InboxMessage.objects.create(
            event_id=f"00000000-0000-0000-0000-{age_days:012d}", handler="h", type="t", subject="s"
        )
        InboxMessage.objects.filter(pk=row.pk).update(handled_at=now - timedelta(days=age_days))
    assert retention.inbox_retention() >= timedelta(days=18)
    assert retention.purge_inbox() == 1
    assert sorted(InboxMessage.objects.values_list("event_id", flat=True)) == [
        __import__("uuid").UUID(f"00000000-0000-0000-0000-{d:012d}") for d in (1, 17)
    ]


def test_beat_purges_the_inbox_like_the_outbox():
    from league.celery import app

    app.finalize()
    assert app.conf.beat_schedule["purge-inbox"]["task"] == "events.purge_inbox"
    from events.tasks import purge_inbox

    assert purge_inbox.name == "events.purge_inbox"


def test_purge_command_purges_both_and_refuses_a_window_inside_the_horizon(db, settings, capsys):
    old = InboxMessage.objects.create(
        event_id="00000000-0000-0000-0000-000000000001", handler="h", type="t", subject="s"
    )
    InboxMessage.objects.filter(pk=old.pk).update(handled_at=timezone.now() - timedelta(days=60))
    call_command("purge_events")
    assert "1 inbox row(s)" in capsys.readouterr().out
    assert not InboxMessage.objects.exists()
    with pytest.raises(CommandError, match="inbox rows must be kept at least"):
        call_command("purge_events", "--inbox-days", "2")


# ---- queue retention --------------------------------------------------------
def test_dlqs_outlive_their_source_queues(aws_mock, db, settings):
    topology.ensure()
    for spec in topology.queue_specs():
        queue = int(aws.queue_attributes(aws.queue_url(spec.name), "MessageRetentionPeriod")["MessageRetentionPeriod"])
        dlq = int(
            aws.queue_attributes(aws.queue_url(spec.dlq_name), "MessageRetentionPeriod")["MessageRetentionPeriod"]
        )
        assert (queue, dlq) == (4 * DAY, 14 * DAY)


def test_setup_bus_check_notices_retention_drift(aws_mock, db, capsys):
    topology.ensure()
    sqs = aws.client("sqs")
    sqs.set_queue_attributes(
        QueueUrl=aws.queue_url(aws.queue_name("transfers", dlq=True)),
        Attributes={"MessageRetentionPeriod": str(4 * DAY)},
    )
    sqs.set_queue_attributes(
        QueueUrl=aws.queue_url(aws.queue_name("fixtures")), Attributes={"MessageRetentionPeriod": str(14 * DAY)}
    )
    with pytest.raises(CommandError, match="difference"):
        call_command("setup_bus", "--check")
    out = capsys.readouterr().out
    assert "leaguemanager-transfers-dlq retention is 345600 s, not 1209600 s" in out
    assert "leaguemanager-fixtures retention is 1209600 s, not 345600 s" in out
    call_command("setup_bus")
    call_command("setup_bus", "--check")


def test_a_dlq_retention_not_longer_than_the_queues_is_refused(aws_mock, db, settings):
    settings.BUS_QUEUE_RETENTION_SECONDS = 14 * DAY
    with pytest.raises(ImproperlyConfigured, match="longer than"):
        topology.ensure()


# ---- bus_status -------------------------------------------------------------
def test_bus_status_names_a_missing_queue(bus, capsys):
    aws.client("sqs").delete_queue(QueueUrl=aws.queue_url(aws.queue_name("transfers")))
    call_command("bus_status")
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("leaguemanager-transfers "))
    assert "queue missing: run setup_bus" in line
    fixtures = next(line for line in out.splitlines() if line.startswith("leaguemanager-fixtures "))
    assert fixtures.split()[1:4] == ["0", "0", "0"]


def test_a_consumer_waits_for_its_missing_queue_logs_once_and_resumes_by_itself(probe_bus, recorder, caplog):
    """moto restarted empty: the queue is gone until setup_bus recreates it. The consumer
    says so once (not every 2 s), and handles events again as soon as the queue is back."""
    import logging

    from events.consumer import Consumer

    consumer = Consumer("probe", wait_seconds=0, check_topology=False)
    consumer.stop.wait = lambda timeout=None: False  # no back-off sleeps in the test
    assert consumer.poll(wait_seconds=0) == 0
    sqs = aws.client("sqs")
    sqs.delete_queue(QueueUrl=aws.queue_url(aws.queue_name("probe")))
    with caplog.at_level(logging.WARNING, logger="events.consumer"):
        for _ in range(3):
            assert consumer.poll(wait_seconds=0) == 0
    missing = [r for r in caplog.records if "does not exist; waiting for it" in r.getMessage()]
    assert len(missing) == 1, [r.getMessage() for r in caplog.records]
    assert len(caplog.records) == 1
    topology.ensure(["probe"])  # what runstack does after restarting moto
    _create(7)
    probe_bus.relay()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="events.consumer"):
        assert consumer.poll(wait_seconds=0) == 1
    assert [e.subject for e in recorder.seen] == ["7"]
    assert any("answers again" in r.getMessage() for r in caplog.records)
