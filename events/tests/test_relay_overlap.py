"""The relay's sweep with its batches overlapped (the next one is claimed while one is
published) and the outbox's room for HOT lease updates: the guarantees of events/relay.py
(per-subject order, the lease, at least once) hold with two batches in flight."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.db import connection, transaction

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
            events.publish("team.created", subject=subject, data={"id": subject, "name": f"Team {i}"})


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
