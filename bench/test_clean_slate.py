"""Between two benchmarks nothing of the first is left for the second: a row that fell
behind (moto at 50 writes/s) left thousands of messages and pending outbox rows, and the rows
after it measured that backlog instead of themselves (the fourth session's moto run)."""

from __future__ import annotations

import pytest
from django.db import transaction

import events
from bench import common
from events import aws
from events.models import OutboxMessage, OutboxState


@pytest.mark.django_db
def test_clean_slate_purges_every_queue_and_the_pending_outbox(bus):
    for subject in range(1, 26):
        with transaction.atomic():
            events.publish("team.created", subject=subject, data={"id": subject, "name": f"T{subject}", "short_name": "TM"})
    bus.relay()  # 25 messages on each subscribed queue
    with transaction.atomic():
        events.publish("team.created", subject=99, data={"id": 99, "name": "still pending", "short_name": "TM"})
    assert common.queue_depth(aws.queue_name("transfers")) == 25

    cleared = common.clean_slate()

    assert "25 messages on" in cleared and "1 pending outbox rows" in cleared, cleared
    assert all(common.queue_depth(aws.queue_name(s)) == 0 for s in bus.services)
    assert not OutboxMessage.objects.filter(state=OutboxState.PENDING).exists()
    assert OutboxMessage.objects.filter(state=OutboxState.PUBLISHED).count() == 25  # history kept
    assert common.clean_slate() == ""  # nothing left: the next row's log says nothing
