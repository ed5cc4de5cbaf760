"""The relay's sweep with its batches overlapped (the next one is claimed while one is
published) and the outbox's room for HOT lease updates: the guarantees of events/relay.py
(per-subject order, the lease, at least once) hold with two batches in flight."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.db import connection, transaction
from django.utils import timezone

import events
from events import relay
from events.models import OutboxMessage, OutboxState

TABLE = OutboxMessage._meta.db_table


def _write(n: int, *, subjects: int | None = None) -> None:
    """``n`` events through ``events.publish``: on ``subjects`` subjects in turn (a subject's
    events follow each other), or one subject each."""
    with transaction.atomic():
        for i in range(n):
            subject = i % subjects + 1 if subjects else i + 1
            events.publish("team.created", subject=subject, data={"id": subject, "name": f"Team {i}", "short_name": "TM"})


def _update_counts() -> tuple[int, int]:
    """(updates, HOT updates) of the outbox table, as the statistics collector has them."""
    with connection.cursor() as c:
        c.execute("SELECT pg_stat_clear_snapshot()")
        c.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = %s", [TABLE])
        return c.fetchone()


def _flushed_counts(at_least: int) -> tuple[int, int]:
    """The counts once this backend's pending statistics reached shared memory (they are
    flushed when it goes idle): polls until ``n_tup_upd`` reaches ``at_least``, 10 s at most."""
    deadline = time.monotonic() + 10
    while True:
        with connection.cursor() as c:
            c.execute("SELECT pg_stat_force_next_flush()")
        counts = _update_counts()
        if counts[0] >= at_least or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # the claim commits, as in the relay, so its updates are counted
def test_on_postgres_the_lease_update_is_hot():
    """The claim's lease (``claimed_until``, ``claim_token``: no index covers them) is an
    update PostgreSQL can make HOT, on the row's own page and with no index entry, when the
    page has room: the outbox table keeps free space on each page (``fillfactor``). Without it
    the freshly written pages are full and almost every lease is a new tuple on another page
    plus an entry in every index."""
    _write(600)
    before, before_hot = _flushed_counts(0)
    claimed = relay.claim(600, token=uuid.uuid4())
    assert len(claimed) == 600
    after, after_hot = _flushed_counts(before + 600)
    assert after - before == 600, (before, after)
    assert (after_hot - before_hot) / 600 >= 0.9, f"{after_hot - before_hot} of 600 lease updates were HOT"


def _tokens_in_flight() -> int:
    """How many claims hold pending rows right now (seen from the test's own connection)."""
    return (
        OutboxMessage.objects.filter(state=OutboxState.PENDING, claim_token__isnull=False)
        .values("claim_token")
        .distinct()
        .count()
    )


class WaitsForTheNextClaim(relay.NullPublisher):
    """On its first call, waits (5 s at most) until a second claim holds rows: the batch
    after this one, claimed while this one is being published."""

    def __init__(self) -> None:
        self.claims_seen_during_first_publish = 0
        self.calls = 0

    def publish(self, event_type, rows):
        self.calls += 1
        if self.calls == 1:
            deadline = time.monotonic() + 5
            while _tokens_in_flight() < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            self.claims_seen_during_first_publish = _tokens_in_flight()
        return super().publish(event_type, rows)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # the claims commit, and are seen from the publisher
def test_on_postgres_the_next_batch_is_claimed_while_one_is_published(settings):
    settings.OUTBOX_SWEEP_BATCH_SIZE = 10
    _write(35)
    publisher = WaitsForTheNextClaim()
    result = relay.relay(publisher)
    assert publisher.claims_seen_during_first_publish == 2
    assert result.published == 35 and result.batches == 4
    assert not OutboxMessage.objects.exclude(state=OutboxState.PUBLISHED).exists()


class ChecksOrder(relay.NullPublisher):
    """Records, for each row it publishes, whether its subject's previous row was already
    marked published in the database at that moment."""

    def __init__(self) -> None:
        self.published: list[int] = []
        self.too_early: list[int] = []
        self.lock = threading.Lock()

    def publish(self, event_type, rows):
        for row in rows:
            older = OutboxMessage.objects.filter(aggregate_key=row.aggregate_key, id__lt=row.pk)
            if older.exclude(state=OutboxState.PUBLISHED).exists():
                self.too_early.append(row.pk)
        with self.lock:
            self.published.extend(row.pk for row in rows)
        return super().publish(event_type, rows)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_on_postgres_a_subjects_next_row_is_published_only_after_its_previous_one_is_marked(settings):
    """Two batches in flight: the batch claimed ahead never holds a row whose subject has a
    row in the batch being published (the claim skips a row while an older one of its
    subject is unpublished, leased or not), and the marks land before the next claim's
    rows go out."""
    settings.OUTBOX_SWEEP_BATCH_SIZE = 10
    _write(120, subjects=7)
    publisher = ChecksOrder()
    result = relay.relay(publisher)
    assert result.published == 120
    assert publisher.too_early == []
    by_subject: dict[str, list[int]] = {}
    for pk in publisher.published:
        by_subject.setdefault(OutboxMessage.objects.get(pk=pk).aggregate_key, []).append(pk)
    assert len(by_subject) == 7 and all(pks == sorted(pks) for pks in by_subject.values())


class SlowFirstBatch(relay.NullPublisher):
    """The first batch takes ``seconds``; later ones record how much lease their rows have
    left when they are sent."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls = seconds, 0
        self.lease_left: list[float] = []

    def publish(self, event_type, rows):
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.seconds)  # a slow SNS, not a synchronisation
        else:
            until = min(
                OutboxMessage.objects.filter(pk__in=[r.pk for r in rows]).values_list("claimed_until", flat=True)
            )
            self.lease_left.append((until - timezone.now()).total_seconds())
        return super().publish(event_type, rows)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_on_postgres_a_batch_claimed_ahead_has_its_lease_renewed_from_its_claim(settings):
    """The lease of the batch claimed ahead runs from its claim, not from when its turn to be
    published comes: after a slow publish of the batch before it, it is renewed before it is
    sent, and never goes out on a lease nearly run out."""
    settings.OUTBOX_SWEEP_BATCH_SIZE = 10
    settings.OUTBOX_LEASE_SECONDS = 3
    _write(20)
    publisher = SlowFirstBatch(2.2)
    assert relay.relay(publisher).published == 20
    assert publisher.lease_left and min(publisher.lease_left) > 2, publisher.lease_left


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_on_postgres_a_sweep_that_fails_gives_back_the_batch_it_claimed_ahead(settings):
    """A sweep whose publish fails releases the batch it claimed ahead at once, instead of
    leaving it leased until the lease runs out."""
    settings.OUTBOX_SWEEP_BATCH_SIZE = 10
    _write(40)

    class Breaks(relay.NullPublisher):
        def publish(self, event_type, rows):
            deadline = time.monotonic() + 5  # let the claim ahead land, then fail
            while _tokens_in_flight() < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            raise KeyboardInterrupt  # not an error the publisher reports per row: the sweep ends

    with pytest.raises(KeyboardInterrupt):
        relay.relay(Breaks())
    leased = OutboxMessage.objects.filter(state=OutboxState.PENDING, claimed_until__gt=timezone.now())
    assert leased.count() == 10  # the batch being published keeps its lease until it runs out
    assert relay.relay(relay.NullPublisher()).published == 30  # the other 30 are due at once
