"""/metrics: outbox gauges read from the database at scrape time, relay and consumer
counters kept by the process that does the work."""

from __future__ import annotations

import json
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import events
from events import aws, metrics
from events.models import OutboxMessage, OutboxState


def _publish(subject: int) -> OutboxMessage:
    with transaction.atomic():
        return events.publish("team.created", subject=subject, data={"id": subject, "name": f"Team {subject}", "short_name": "TM"})


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_outbox_gauges_come_from_the_database(client, db):
    old = _publish(1)
    OutboxMessage.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    _publish(2)
    failed = _publish(3)
    OutboxMessage.objects.filter(pk=failed.pk).update(state=OutboxState.FAILED)

    samples = scrape(client)

    assert samples[("league_outbox_pending", (("type", "team.created"),))] == 2
    assert samples[("league_outbox_failed_rows", (("type", "team.created"),))] == 1
    assert 299 < samples[("league_outbox_oldest_pending_age_seconds", ())] < 400


def test_empty_outbox_has_no_age(client, db):
    assert scrape(client)[("league_outbox_oldest_pending_age_seconds", ())] == 0


def test_gauges_have_a_sample_at_zero_for_every_type(client, db):
    """An empty outbox is 0 pending and 0 failed for each event type, not no sample at all
    (an alert on ``league_outbox_pending > 0`` needs the series to exist)."""
    samples = scrape(client)
    from events import catalogue

    for event_type, declared in catalogue.EVENT_TYPES.items():
        if not declared.retired:
            assert samples[("league_outbox_pending", (("type", event_type),))] == 0
            assert samples[("league_outbox_failed_rows", (("type", event_type),))] == 0


def test_relay_and_consumer_count_what_they_do(client, bus):
    published = value("league_outbox_published_total", type="team.created")
    batches = value("league_relay_batch_duration_seconds_count")
    handled = value("league_events_handled_total", service="transfers", type="team.created")
    lag = value("league_event_handling_lag_seconds_count", service="transfers", type="team.created")
    dupes = value("league_events_duplicate_total", service="transfers", type="team.created")

    row = _publish(1)
    bus.drain()
    # The same envelope again, as SQS may redeliver it: the inbox skips it.
    aws.client("sqs").send_message(
        QueueUrl=aws.queue_url(aws.queue_name("transfers")),
        MessageBody=json.dumps(row.envelope),
        MessageAttributes={"type": {"DataType": "String", "StringValue": "team.created"}},
    )
    bus.drain()

    samples = scrape(client)
    assert samples[("league_outbox_published_total", (("type", "team.created"),))] == published + 1
    assert value("league_relay_batch_duration_seconds_count") >= batches + 1
    assert value("league_events_handled_total", service="transfers", type="team.created") == handled + 1
    assert value("league_event_handling_lag_seconds_count", service="transfers", type="team.created") == lag + 1
    assert value("league_events_duplicate_total", service="transfers", type="team.created") == dupes + 1
    assert samples[("league_outbox_pending", (("type", "team.created"),))] == 0  # nothing pending


def test_relay_counts_failures(bus, settings):
    from events import relay

    class Refusing:
        def __init__(self, error):
            self.error = error

        def publish(self, event_type, rows):
            return {row.pk: self.error for row in rows}

    retried = value("league_outbox_publish_retries_total", type="team.created")
    failed = value("league_outbox_failed_total", type="team.created")
    row = _publish(1)
    relay.relay_once(Refusing(RuntimeError("throttled")))  # transient: retried
    OutboxMessage.objects.filter(pk=row.pk).update(next_attempt_at=None)
    relay.relay_once(Refusing(relay.EntryFailed("InvalidParameter", "Message too long", True)))  # failed

    assert value("league_outbox_publish_retries_total", type="team.created") == retried + 1
    assert value("league_outbox_failed_total", type="team.created") == failed + 1


def test_consumer_counts_failed_handling_by_type(bus, monkeypatch):
    from events import registry

    failed = value("league_events_failed_total", service="transfers", type="team.created")
    handler = registry.handlers(service="transfers", event_type="team.created")[0]

    def boom(event):
        raise RuntimeError("handler bug")

    broken = registry.Handler(service=handler.service, event_type=handler.event_type, func=boom)
    monkeypatch.setattr(registry, "_handlers", [broken if h is handler else h for h in registry._handlers])
    _publish(1)
    bus.relay()
    bus.consume("transfers")

    assert value("league_events_failed_total", service="transfers", type="team.created") == failed + 1


def test_message_type_falls_back_to_the_body():
    assert metrics.message_type({"Body": json.dumps({"type": "team.renamed"})}) == "team.renamed"
    assert metrics.message_type({"Body": "not json"}) == "unknown"
    assert metrics.message_type({"MessageAttributes": {"type": {"StringValue": "player.added"}}}) == "player.added"


def test_multiprocess_mode_adds_up_the_processes(client, db, tmp_path, monkeypatch):
    """With PROMETHEUS_MULTIPROC_DIR set, /metrics reads every process's files."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"league_outbox_oldest_pending_age_seconds" in response.content
