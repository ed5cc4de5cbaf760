import pytest
from django.db import transaction

import events
from events.catalogue import UnknownEventType
from events.models import OutboxMessage
from events.publisher import InvalidEventData, PublishOutsideTransaction


@pytest.mark.django_db(transaction=True)
def test_publish_outside_a_transaction_is_an_error_and_writes_nothing():
    with pytest.raises(PublishOutsideTransaction, match="transaction.atomic"):
        events.publish("team.created", subject=1, data={"id": 1, "name": "Ajax", "short_name": "TM"})
    assert OutboxMessage.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_publish_commits_and_rolls_back_with_the_transaction():
    with transaction.atomic():
        events.publish("team.created", subject=1, data={"id": 1, "name": "Ajax", "short_name": "TM"})
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            events.publish("team.created", subject=2, data={"id": 2, "name": "PSV", "short_name": "TM"})
            raise ZeroDivisionError("after the event, before commit")
    assert list(OutboxMessage.objects.values_list("subject", flat=True)) == ["1"]


@pytest.mark.django_db
def test_envelope_is_cloudevents_with_sequence_per_aggregate():
    with transaction.atomic():
        a1 = events.publish("team.created", subject=7, data={"id": 7, "name": "Ajax", "short_name": "TM"})
        a2 = events.publish("team.renamed", subject=7, data={"id": 7, "name": "AFC Ajax", "old_name": "Ajax", "short_name": "TM"})
        b1 = events.publish("team.created", subject=8, data={"id": 8, "name": "PSV", "short_name": "TM"})
    env = a1.envelope
    assert env["specversion"] == "1.0"
    assert env["source"] == "/league/teams"
    assert env["type"] == "team.created"
    assert env["subject"] == "7"
    assert env["datacontenttype"] == "application/json"
    assert env["dataversion"] == "2"  # the type's current version
    assert env["id"] == str(a1.event_id)
    assert env["time"].endswith("Z")
    assert env["data"] == {"id": 7, "name": "Ajax", "short_name": "TM"}
    assert (a1.sequence, a2.sequence, b1.sequence) == (1, 2, 1)
    assert a1.aggregate_key == "team:7"


@pytest.mark.django_db
def test_bad_payload_is_the_writers_error():
    with pytest.raises(InvalidEventData, match="team.created data at name"):
        with transaction.atomic():
            events.publish("team.created", subject=1, data={"id": 1, "name": "", "short_name": "TM"})
    with pytest.raises(UnknownEventType, match="not in events/catalogue.py"):
        with transaction.atomic():
            events.publish("team.exploded", subject=1, data={})
    assert OutboxMessage.objects.count() == 0


@pytest.mark.django_db
def test_correlation_and_causation_ids_travel_in_the_envelope():
    from events import context

    with context.bound(correlation="req-123", causation="evt-9"), transaction.atomic():
        row = events.publish("team.created", subject=1, data={"id": 1, "name": "Ajax", "short_name": "TM"})
    assert row.envelope["correlationid"] == "req-123"
    assert row.envelope["causationid"] == "evt-9"
