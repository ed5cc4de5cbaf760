"""How long the bus keeps things: queue and DLQ retention, and the inbox's window.

- A source queue keeps a message ``BUS_QUEUE_RETENTION_SECONDS`` (4 days); its DLQ keeps
  it ``BUS_DLQ_RETENTION_SECONDS`` (14 days, SQS's maximum). A dead-lettered message keeps
  its first enqueue time, so a DLQ must keep messages longer than its source queue, or a
  message that failed late in its life would expire in the DLQ at once.
- The inbox (the duplicate filter) keeps a row at least as long as its message can still
  be delivered again: in the DLQ until the DLQ's retention, or replayed from the outbox
  until the outbox's retention, then up to a queue's retention after ``redrive_dlq`` or
  ``replay_events`` sent it again. ``INBOX_RETENTION`` may ask for longer, never for less.
- A service's own records that messages depend on are kept for the same window
  (``inbox_retention``) and purged by what the service registers here (``register_purge``,
  run by ``purge_registered``: beat hourly, and ``purge_events``):
  - teams' ``Move`` (its decision per transfer) is kept that long after the last message
    about its transfer reached teams (``asked_at``; teams/services.py): a message published
    before it can still arrive until then, and a later one renews it. Its subject's sequence
    (``move:<transfer id>``) goes with it: no answer about that transfer can follow;
  - a transfer's sequence (``transfer:<id>``, transfers/services.py) is kept that long after
    the transfer finished (it publishes nothing after), so it outlives its subject's events
    in the outbox, the queues and the DLQs.
  A sequence row that is gone would restart its subject at 1; these subjects publish no more.
  Long-lived subjects (``team:``, ``player:``, ``season:``) keep their row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from .models import InboxMessage, SubjectSequence

SQS_MIN_RETENTION = 60
SQS_MAX_RETENTION = 14 * 24 * 3600


def queue_retention() -> int:
    """Seconds a source queue keeps a message; checked against its DLQ's."""
    queue, dlq = int(settings.BUS_QUEUE_RETENTION_SECONDS), int(settings.BUS_DLQ_RETENTION_SECONDS)
    for name, value in (("BUS_QUEUE_RETENTION_SECONDS", queue), ("BUS_DLQ_RETENTION_SECONDS", dlq)):
        if not SQS_MIN_RETENTION <= value <= SQS_MAX_RETENTION:
            raise ImproperlyConfigured(f"{name} is {value}; SQS allows {SQS_MIN_RETENTION} to {SQS_MAX_RETENTION}.")
    if dlq <= queue:
        raise ImproperlyConfigured(
            f"BUS_DLQ_RETENTION_SECONDS ({dlq}) must be longer than BUS_QUEUE_RETENTION_SECONDS ({queue}): "
            "a dead-lettered message keeps its first enqueue time."
        )
    return queue


def dlq_retention() -> int:
    queue_retention()  # validates both
    return int(settings.BUS_DLQ_RETENTION_SECONDS)


def redelivery_horizon() -> timedelta:
    """The longest a handled message can still come back (see the module docstring)."""
    kept = max(timedelta(seconds=dlq_retention()), settings.OUTBOX_RETENTION)
    return kept + timedelta(seconds=queue_retention())


def inbox_retention() -> timedelta:
    return max(settings.INBOX_RETENTION, redelivery_horizon())


def purge_inbox(older_than: timedelta | None = None) -> int:
    """Delete inbox rows handled before the window; a window shorter than the redelivery
    horizon is an error (a redelivered event would run its handler again)."""
    window = inbox_retention() if older_than is None else older_than
    if window < redelivery_horizon():
        raise ValueError(
            f"inbox rows must be kept at least {redelivery_horizon().days} days "
            "(the longest a message can still be redelivered)"
        )
    deleted, _ = InboxMessage.objects.filter(handled_at__lt=timezone.now() - window).delete()
    return deleted


# A service's purge: given the cut-off (rows whose last use is older may go), the rows deleted.
Purge = Callable[[datetime], int]
_purges: dict[str, Purge] = {}


def register_purge(name: str, purge: Purge) -> None:
    """Called by a service's ``AppConfig.ready``: ``purge`` runs with every retention round."""
    _purges[name] = purge


def purge_registered() -> dict[str, int]:
    """Run every registered purge with the cut-off ``now - inbox_retention()``; rows deleted
    per purge, by name."""
    cutoff = timezone.now() - inbox_retention()
    return {name: _purges[name](cutoff) for name in sorted(_purges)}


def purge_sequences(aggregate: str, subjects: Iterable[object]) -> int:
    """Delete the sequence rows of ``aggregate``'s ``subjects`` (subjects that publish no more)."""
    deleted = 0
    batch: list[str] = []
    for subject in subjects:
        batch.append(f"{aggregate}:{subject}")
        if len(batch) == 1000:
            deleted += SubjectSequence.objects.filter(key__in=batch).delete()[0]
            batch = []
    if batch:
        deleted += SubjectSequence.objects.filter(key__in=batch).delete()[0]
    return deleted
