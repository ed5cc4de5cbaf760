"""A transfer's sequence row (``transfer:<id>``) is kept while the transfer can publish and
its events can still be delivered, then purged by beat and by ``purge_events``
(events/retention.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

import events
from events import retention
from events.models import SubjectSequence
from events.tasks import purge_retained
from transfers.factories import TransferFactory
from transfers.models import Transfer, TransferState

pytestmark = pytest.mark.django_db


def transfer(state: TransferState, *, finished_ago: timedelta) -> int:
    t = TransferFactory(state=state)
    with transaction.atomic():
        events.next_sequence(f"transfer:{t.pk}")
    Transfer.objects.filter(pk=t.pk).update(updated_at=timezone.now() - finished_ago)
    return t.pk


def keys() -> set[str]:
    return set(SubjectSequence.objects.filter(key__startswith="transfer:").values_list("key", flat=True))


def test_finished_transfers_lose_their_sequence_after_the_redelivery_window():
    past = retention.inbox_retention() + timedelta(minutes=1)
    recent = retention.inbox_retention() - timedelta(minutes=1)
    completed = transfer(TransferState.COMPLETED, finished_ago=past)
    rejected = transfer(TransferState.REJECTED, finished_ago=past)
    cancelled_lately = transfer(TransferState.CANCELLED, finished_ago=recent)
    in_flight = transfer(TransferState.REQUESTED, finished_ago=past)  # may still publish
    cancelling = transfer(TransferState.CANCELLING, finished_ago=past)

    purge_retained()

    assert keys() == {f"transfer:{cancelled_lately}", f"transfer:{in_flight}", f"transfer:{cancelling}"}
    assert Transfer.objects.filter(pk__in=[completed, rejected]).count() == 2  # the transfers stay


def test_purge_events_purges_transfer_sequences(capsys):
    transfer(TransferState.COMPLETED, finished_ago=retention.inbox_retention() + timedelta(days=1))

    call_command("purge_events")

    assert "1 transfer sequences" in capsys.readouterr().out
    assert keys() == set()
