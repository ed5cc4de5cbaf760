"""The relay's claim and sweep: on PostgreSQL one ``UPDATE ... RETURNING``
takes and leases the due rows; the envelope travels as the text the database holds (never
decoded and encoded again); the sweeper moves ``OUTBOX_SWEEP_BATCH_SIZE`` rows a batch. The
guarantees of events/relay.py hold on both databases: claim tokens, the lease, per-subject
order, outcome writes only under our claim."""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

import events
from events import relay, tasks
from events.models import OutboxMessage, OutboxState


def _publish(subject: int, name: str = "") -> OutboxMessage:
    with transaction.atomic():
        return events.publish("team.created", subject=subject, data={"id": subject, "name": name or f"Team {subject}", "short_name": "TM"})


class Recording(relay.NullPublisher):
    def __init__(self) -> None:
        self.bodies: dict[int, str] = {}
        self.calls = 0

    def publish(self, event_type, rows):
        self.calls += 1
        for row in rows:
            self.bodies[row.pk] = row.body()
        return super().publish(event_type, rows)


@pytest.mark.django_db
def test_claim_leases_due_rows_in_id_order_under_its_token(settings):
    rows = [_publish(i) for i in range(1, 6)]
    token = uuid.uuid4()
    claimed = relay.claim(3, token=token)
    assert [r.pk for r in claimed] == [r.pk for r in rows[:3]]
    assert {r.type for r in claimed} == {"team.created"} and all(r.attempts == 0 for r in claimed)
    assert [str(r.event_id) for r in claimed] == [str(r.event_id) for r in rows[:3]]
    leased = OutboxMessage.objects.filter(claim_token=token)
    assert sorted(leased.values_list("pk", flat=True)) == [r.pk for r in rows[:3]]
    assert all(r.claimed_until is not None for r in leased)
    # a second relay gets the rest, not the leased ones
    assert [r.pk for r in relay.claim(10, token=uuid.uuid4())] == [r.pk for r in rows[3:]]
    assert relay.claim(10, token=uuid.uuid4()) == []


@pytest.mark.django_db
def test_claim_keeps_per_subject_order(settings):
    first = _publish(7, "a")
    second = _publish(7, "b")
    other = _publish(8)
    claimed = relay.claim(10, token=uuid.uuid4())
    assert [r.pk for r in claimed] == [first.pk, other.pk]  # the second of subject 7 waits
    assert second.pk not in [r.pk for r in relay.claim(10, token=uuid.uuid4())]


@pytest.mark.django_db
def test_the_message_body_is_the_stored_envelope(settings):
    row = _publish(1, 'Quote " and ünïcode')
    recorder = Recording()
    assert relay.relay_once(recorder).published == 1
    assert json.loads(recorder.bodies[row.pk]) == OutboxMessage.objects.get(pk=row.pk).envelope


@pytest.mark.django_db
def test_the_sweeper_moves_large_batches(settings):
    settings.OUTBOX_BATCH_SIZE = 10
    settings.OUTBOX_SWEEP_BATCH_SIZE = 50
    with transaction.atomic():
        for i in range(1, 121):
            events.publish("team.created", subject=i, data={"id": i, "name": f"Team {i}", "short_name": "TM"})
    recorder = Recording()
    result = relay.relay(recorder)
    assert result.published == 120 and result.batches == 3
    assert not OutboxMessage.objects.exclude(state=OutboxState.PUBLISHED).exists()


@pytest.mark.django_db
def test_the_celery_sweep_uses_the_sweep_batch_size(settings, monkeypatch):
    settings.OUTBOX_SWEEP_BATCH_SIZE = 40
    seen = []
    monkeypatch.setattr(relay, "claim", lambda limit, **_: seen.append(limit) or [])
    tasks.relay_outbox()
    assert seen == [40]


@pytest.mark.postgres
@pytest.mark.django_db
def test_on_postgres_the_claim_is_one_update_returning():
    rows = [_publish(i) for i in range(1, 4)]
    with CaptureQueriesContext(connection) as queries:
        claimed = relay.claim(10, token=uuid.uuid4())
    assert [r.pk for r in claimed] == [r.pk for r in rows]
    statements = [
        q["sql"] for q in queries.captured_queries if not q["sql"].upper().startswith(("SET ", "SAVEPOINT", "RELEASE"))
    ]
    assert len(statements) == 1, statements
    assert statements[0].lstrip().upper().startswith("UPDATE") and "RETURNING" in statements[0].upper()


@pytest.mark.postgres
@pytest.mark.django_db
def test_on_postgres_a_claimed_envelope_is_not_decoded():
    row = _publish(1)
    (claimed,) = relay.claim(10, token=uuid.uuid4())
    assert "envelope" in claimed.get_deferred_fields()  # not read into Python objects
    assert json.loads(claimed.body()) == OutboxMessage.objects.get(pk=row.pk).envelope


@pytest.mark.postgres
@pytest.mark.django_db
def test_on_postgres_the_per_subject_check_probes_its_index_whatever_the_statistics_say():
    """A large published history and a few pending rows: ANALYZE's sample then holds no
    pending row, the planner believes none exist, and the old ``NOT EXISTS`` anti-join read
    the whole unpublished-subject index for every candidate (``Join Filter``): quadratic in the
    backlog, 12 ms instead of 3 for a claim of 100 at 10 M rows (bench due_query_scale). The
    check must stay an index probe by subject and id."""
    table = OutboxMessage._meta.db_table
    with connection.cursor() as c:
        c.execute(
            f"""
            INSERT INTO {table} (event_id, type, subject, aggregate_key, sequence, envelope, state, created_at,
                                 published_at, sns_message_id, attempts, last_error, correlation_id,
                                 causation_id, request, failure)
            SELECT gen_random_uuid(), 'team.created', (g % 200 + 1)::text, 'team:' || (g % 200 + 1), g / 200 + 1,
                   '{{}}'::jsonb, 'published', now(), now(), 'm' || g, 1, '', '', '', '', ''
            FROM generate_series(1, 20000) AS g
            """
        )
        c.execute(f"ANALYZE {table}")  # statistics from a table with no pending row
    for subject in range(1, 101):
        _publish(subject)
    plan = _explain_claim(100)
    assert "Join Filter" not in plan, plan
    assert "Index Cond: ((aggregate_key" in plan.replace("((aggregate_key)::text", "(aggregate_key"), plan


def _explain_claim(limit: int) -> str:
    """Claim ``limit`` rows (there must be that many due), then EXPLAIN the statement it ran."""
    seen: list[tuple[str, object]] = []

    def capture(execute, sql, params, many, context):
        if "SKIP LOCKED" in sql:
            seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        assert len(relay.claim(limit, token=uuid.uuid4())) == limit
    ((sql, params),) = seen
    with connection.cursor() as c:
        c.execute("EXPLAIN " + sql, params)
        return "\n".join(line for (line,) in c.fetchall())


def _pending_backlog(n: int) -> None:
    """``n`` pending rows, one subject each, in one statement, then fresh statistics."""
    table = OutboxMessage._meta.db_table
    with connection.cursor() as c:
        c.execute(
            f"""
            INSERT INTO {table} (event_id, type, subject, aggregate_key, sequence, envelope, state, created_at,
                                 sns_message_id, attempts, last_error, correlation_id, causation_id, request, failure)
            SELECT gen_random_uuid(), 'team.created', g::text, 'team:' || g, 1, '{{}}'::jsonb, 'pending', now(),
                   '', 0, '', '', '', '', ''
            FROM generate_series(1, %s) AS g
            """,
            [n],
        )
        c.execute(f"ANALYZE {table}")


@pytest.mark.postgres
@pytest.mark.django_db
def test_on_postgres_a_large_backlog_is_claimed_from_its_head_not_sorted_whole():
    """50,000 pending rows: the claim must walk the pending index in id order and stop at its
    limit, not read and sort the whole backlog (seq scan + top-N sort) for every claim. A
    guard on the plan's shape: the per-subject probe's selectivity is a guess, and a guess
    that low could make a sort look cheaper."""
    _pending_backlog(50_000)
    plan = _explain_claim(500)
    assert "Sort" not in plan and "Seq Scan" not in plan, plan
    assert "Index Scan using outbox_pending" in plan, plan


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # the claim's transaction is its own, as in the relay
def test_on_postgres_a_claim_is_never_jit_compiled():
    """The claim's estimated cost grows with the backlog (the per-subject probe's selectivity
    is a guess) and crossed PostgreSQL's ``jit_above_cost``: with 50,000 pending rows each
    claim spent 120 ms compiling a plan that ran in 2.5 ms (relay_null_publisher: 4,510
    events/s). The claim runs in its transaction as the relay runs it, and is explained there."""
    _pending_backlog(50_000)
    plans: list[dict] = []

    def explain_first(execute, sql, params, many, context):
        if "SKIP LOCKED" in sql and not sql.startswith("EXPLAIN"):
            with connection.cursor() as c:  # same connection, same transaction and settings
                c.execute("SAVEPOINT explain_claim")
                c.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
                plans.append(c.fetchone()[0][0])
                c.execute("ROLLBACK TO SAVEPOINT explain_claim")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain_first):
        assert len(relay.claim(500, token=uuid.uuid4())) == 500
    (plan,) = plans
    assert "JIT" not in plan, plan["JIT"]
