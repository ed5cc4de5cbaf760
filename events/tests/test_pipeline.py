import json

from django.db import transaction

import events
from events import aws, relay
from events.consumer import Consumer
from events.models import InboxMessage, OutboxMessage, OutboxState


def _create(team_id, name="Ajax"):
    with transaction.atomic():
        return events.publish("team.created", subject=team_id, data={"id": team_id, "name": name, "short_name": "TM"})


def test_relay_publishes_to_sns_and_the_consumer_handles_once(probe_bus, recorder):
    row = _create(1)
    assert probe_bus.relay() == 1
    row.refresh_from_db()
    assert row.state == OutboxState.PUBLISHED and row.sns_message_id and row.published_at
    assert probe_bus.consume("probe") == 1
    assert [e.id for e in recorder.seen] == [str(row.event_id)]
    assert InboxMessage.objects.filter(event_id=row.event_id).count() == 1


def test_redelivered_event_is_skipped_by_the_inbox(probe_bus, recorder):
    row = _create(1)
    probe_bus.drain()
    # Send the same envelope again straight to the queue, as a redelivery would.
    url = aws.queue_url(aws.queue_name("probe"))
    aws.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps(row.envelope))
    probe_bus.drain()
    assert len(recorder.seen) == 1
    assert probe_bus.consumed["probe"].duplicates == 1
    # The stop line's "handled" counts the first delivery only, not the skipped copy.
    assert (probe_bus.consumed["probe"].received, probe_bus.consumed["probe"].handled) == (2, 1)


def test_failing_handler_keeps_the_message_and_the_inbox_row_rolls_back(probe_bus, recorder):
    recorder.fail_subjects.add("1")
    _create(1)
    probe_bus.relay()
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)
    consumer.poll(wait_seconds=0)
    assert consumer.stats.failed == 1
    assert InboxMessage.objects.count() == 0
    # Fixed: the message comes back after its visibility back-off and is handled.
    recorder.fail_subjects.clear()
    url = aws.queue_url(aws.queue_name("probe"))
    attrs = aws.queue_attributes(url, "ApproximateNumberOfMessagesNotVisible")
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_undecodable_and_foreign_messages_go_to_the_dlq_with_a_reason(probe_bus, recorder):
    sqs = aws.client("sqs")
    url = aws.queue_url(aws.queue_name("probe"))
    sqs.send_message(QueueUrl=url, MessageBody="not json {")
    row = _create(1)
    foreign = dict(row.envelope, source="/somebody/else", id="00000000-0000-0000-0000-000000000001")
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(foreign))
    probe_bus.consume("probe")
    assert recorder.seen == []
    dlq = aws.queue_url(aws.queue_name("probe", dlq=True))
    got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"])["Messages"]
    reasons = sorted(m["MessageAttributes"]["reason"]["StringValue"] for m in got)
    assert len(reasons) == 2
    assert reasons[0].startswith("body is not JSON")
    assert "is not this bus's '/league/teams'" in reasons[1]


def test_unhandled_type_is_acknowledged(probe_bus, recorder):
    sqs = aws.client("sqs")
    url = aws.queue_url(aws.queue_name("probe"))
    with transaction.atomic():
        row = events.publish("team.deleted", subject=1, data={"id": 1, "name": "Ajax"})
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(row.envelope))
    probe_bus.consume("probe")
    assert probe_bus.consumed["probe"].received == 1
    assert aws.queue_attributes(url, "ApproximateNumberOfMessages")["ApproximateNumberOfMessages"] == "0"


def test_publish_failure_backs_off_then_fails_for_good(probe_bus, settings):
    """A transient error backs off; a missing topic (retrying cannot fix it) fails the row
    at once, saying so; requeue puts it back."""
    row = _create(1)

    class Unreachable:
        def publish(self, event_type, rows):
            return {r.pk: ConnectionError("SNS unreachable") for r in rows}

    result = relay.relay(Unreachable())
    row.refresh_from_db()
    assert result.retried == 1 and row.state == OutboxState.PENDING and row.attempts == 1
    assert row.next_attempt_at is not None
    assert relay.relay().published == 0  # not due yet: backing off
    OutboxMessage.objects.update(next_attempt_at=None)
    settings.BUS_PREFIX = "nobus"  # topics of this prefix do not exist
    aws.reset()
    relay.relay()
    row.refresh_from_db()
    assert row.state == OutboxState.FAILED and row.attempts == 2 and row.failure == "topic_missing"
    assert "does not exist. Run `manage.py setup_bus`" in row.last_error
    assert relay.requeue(OutboxMessage.objects.all()) == 1
    row.refresh_from_db()
    assert row.state == OutboxState.PENDING and row.attempts == 0


def test_a_row_waits_while_an_older_row_of_its_subject_is_unpublished(probe_bus):
    first = _create(1)
    with transaction.atomic():
        second = events.publish("team.renamed", subject=1, data={"id": 1, "name": "B", "old_name": "Ajax", "short_name": "TM"})
    other = _create(2, "PSV")
    OutboxMessage.objects.filter(pk=first.pk).update(next_attempt_at="2999-01-01T00:00:00Z")
    assert relay.relay().published == 1  # only subject 2
    second.refresh_from_db()
    other.refresh_from_db()
    assert second.state == OutboxState.PENDING and other.state == OutboxState.PUBLISHED
    OutboxMessage.objects.filter(pk=first.pk).update(next_attempt_at=None)
    assert relay.relay().published == 2


def test_topic_arns_resolve_by_exact_name_not_substring(aws_mock, settings, db):
    sns = aws.client("sns")
    # A longer name containing the wanted one, created first.
    sns.create_topic(Name="leaguemanager-team-created-v2")
    wanted = sns.create_topic(Name="leaguemanager-team-created")["TopicArn"]
    aws.reset()
    assert aws.topic_arn("team.created") == wanted


def test_a_slow_publish_keeps_its_lease_so_no_other_relay_takes_the_rows(probe_bus, settings):
    """A batch that takes longer than the lease to publish renews it between PublishBatch
    calls; without that, another relay would claim and publish the same rows again."""
    import time
    import uuid

    settings.OUTBOX_LEASE_SECONDS = 1
    for i in range(1, 31):
        _create(i)  # 30 rows: three PublishBatch calls of 10
    stolen = []

    class SlowPublisher(relay.NullPublisher):
        def publish(self, event_type, rows):
            time.sleep(0.6)
            stolen.extend(relay.claim(100, token=uuid.uuid4()))  # another relay, meanwhile
            return super().publish(event_type, rows)

    result = relay.relay_once(SlowPublisher())
    assert stolen == []
    assert result.published == 30


def test_a_failed_entry_of_a_batch_is_retried_alone(probe_bus):
    rows = [_create(i) for i in range(1, 13)]  # two PublishBatch calls: 10 + 2
    bad = rows[3].pk

    class OneEntryRefused(relay.SnsPublisher):
        def publish(self, event_type, chunk):
            results = super().publish(event_type, [r for r in chunk if r.pk != bad])
            if any(r.pk == bad for r in chunk):
                results[bad] = RuntimeError("InternalError: try again")
            return results

    result = relay.relay_once(OneEntryRefused())
    assert (result.published, result.retried) == (11, 1)
    row = OutboxMessage.objects.get(pk=bad)
    assert row.state == OutboxState.PENDING and row.attempts == 1 and "InternalError" in row.last_error
    OutboxMessage.objects.filter(pk=bad).update(next_attempt_at=None)
    assert relay.relay().published == 1  # alone, the others are not sent again
    assert probe_bus.consume("probe") == 12


def test_topic_arns_are_listed_once_per_process(probe_bus):
    calls = []
    aws.reset()
    aws.client("sns", budget=relay.call_budget()).meta.events.register(
        "before-call.sns.ListTopics", lambda **kw: calls.append(1)
    )
    for i in range(1, 4):
        _create(i)
        relay.relay()
    assert len(calls) == 1


def test_published_rows_past_retention_are_purged(probe_bus, settings):
    from datetime import timedelta

    from django.utils import timezone

    old, recent, pending = _create(1), _create(2), _create(3)
    relay.relay()
    OutboxMessage.objects.filter(pk=pending.pk).update(state=OutboxState.PENDING)
    OutboxMessage.objects.filter(pk=old.pk).update(published_at=timezone.now() - timedelta(days=8))
    settings.OUTBOX_RETENTION = timedelta(days=7)
    from events.tasks import purge_outbox

    assert purge_outbox() == 1
    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {recent.pk, pending.pk}


def test_beat_runs_the_relay_every_second_and_the_purge():
    from league.celery import app

    app.finalize()
    schedule = app.conf.beat_schedule
    assert schedule["relay-outbox"]["task"] == "events.relay_outbox"
    assert schedule["relay-outbox"]["schedule"].total_seconds() == 1.0
    assert schedule["purge-outbox"]["task"] == "events.purge_outbox"


def test_an_envelope_whose_id_is_not_a_uuid_goes_to_the_dlq(probe_bus, recorder):
    row = _create(1)
    url = aws.queue_url(aws.queue_name("probe"))
    aws.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps(dict(row.envelope, id="not-a-uuid")))
    probe_bus.consume("probe")
    assert recorder.seen == [] and probe_bus.consumed["probe"].dead_lettered == 1
