"""Relay benchmarks: against a bare boto3 PublishBatch loop, against the seed's
list-topics-then-Publish-per-event relay, and on the database alone (NullPublisher)."""

from __future__ import annotations

import json

from django.db import connection, transaction
from django.utils import timezone

from . import common
from .common import Result, Timer

OUTBOX = common.OUTBOX
TYPES = ("team.created", "team.renamed")


def make_rows(n: int, *, offset: int = 0) -> None:
    """``n`` pending outbox rows through ``events.publish`` (real envelopes, sequences),
    half team.created, half team.renamed, each on a subject of its own."""
    import events

    with transaction.atomic():
        for i in range(offset + 1, offset + n + 1):
            if i % 2 == 1:
                events.publish("team.created", subject=i, data={"id": i, "name": f"Team {i}", "players": [], "short_name": "TM"})
            else:
                events.publish("team.renamed", subject=i, data={"id": i, "name": f"Team {i}b", "old_name": f"Team {i}", "short_name": "TM"})


def pending_envelopes() -> list[tuple[str, dict, str]]:
    from events.models import OutboxMessage

    return list(
        OutboxMessage.objects.filter(state="pending").order_by("id").values_list("type", "envelope", "event_id")
    )


def boto3_loop(messages: list[tuple[str, dict, str]]) -> None:
    """The baseline: PublishBatch of the same messages to the same topics, 10 a call,
    with the ARNs known and the bodies serialized before the clock starts."""
    from events import aws

    sns = aws.client("sns")
    by_type: dict[str, list[dict]] = {}
    for t, env, eid in messages:
        by_type.setdefault(t, []).append(
            {
                "Id": str(len(by_type.get(t, []))),
                "Message": json.dumps(env, separators=(",", ":")),
                "MessageAttributes": {
                    "type": {"DataType": "String", "StringValue": t},
                    "id": {"DataType": "String", "StringValue": str(eid)},
                },
            }
        )
    arns = {t: aws.topic_arn(t) for t in by_type}
    # Same shape as the relay: per claimed batch of OUTBOX_BATCH_SIZE rows, per type, 10 a call.
    for t, entries in by_type.items():
        for start in range(0, len(entries), 10):
            chunk = entries[start : start + 10]
            for j, e in enumerate(chunk):
                e["Id"] = str(j)
            r = sns.publish_batch(TopicArn=arns[t], PublishBatchRequestEntries=chunk)
            assert len(r.get("Successful", [])) == len(chunk), r.get("Failed")


def seed_relay() -> int:
    """The seed's approach: per pending row, list the topics, find the ARN by substring,
    Publish one message, mark the row published."""
    from events import aws
    from events.models import OutboxMessage

    sns = aws.client("sns")
    n = 0
    for row in OutboxMessage.objects.filter(state="pending").order_by("id"):
        name = aws.topic_name(row.type)
        arn = next(t["TopicArn"] for t in sns.list_topics()["Topics"] if name in t["TopicArn"])
        r = sns.publish(TopicArn=arn, Message=json.dumps(row.envelope))
        row.state = "published"
        row.published_at = timezone.now()
        row.sns_message_id = r["MessageId"]
        row.save(update_fields=["state", "published_at", "sns_message_id"])
        n += 1
    return n


def _reset() -> None:
    common.truncate(OUTBOX, "events_subjectsequence")


def warm_up(n: int = 50) -> float:
    """A round before the emulator's first figure, not measured: topics, queues, connections
    and the emulator's own code paths are warm (LocalStack's first row measured cold was
    0.75 where later rows gave 0.95). ``n`` rows through the relay and the same through a bare
    PublishBatch loop, drained. Returns its seconds."""
    from events import relay

    drainer = common.start_drainer()
    try:
        with Timer() as t:
            _reset()
            make_rows(n)
            boto3_loop(pending_envelopes())
            assert relay.relay(relay.SnsPublisher()).published == n
            common.wait_empty()
    finally:
        common.stop(drainer)
        _reset()
    return t.seconds


def relay_vs_boto3(quick: bool) -> Result:
    from events import relay

    n, rounds = (300, 2) if quick else (400, 3)
    drainer = common.start_drainer()
    try:
        relay_rates, bare_rates = [], []
        for r in range(rounds):
            _reset()
            make_rows(n, offset=r * n)
            msgs = pending_envelopes()
            with Timer() as t:
                boto3_loop(msgs)
            bare_rates.append(n / t.seconds)
            common.wait_empty()
            with Timer() as t:
                res = relay.relay(relay.SnsPublisher())
            assert res.published == n, res
            relay_rates.append(n / t.seconds)
            common.wait_empty()
    finally:
        common.stop(drainer)
    value, base = max(relay_rates), max(bare_rates)
    return Result(
        "relay_vs_boto3",
        "events/s",
        value,
        base,
        value / base,
        "ratio >= 0.9",
        value / base >= 0.9,
        f"{n} events x {rounds} rounds (team.created/team.renamed, 2 queues subscribed, drained concurrently); best round each",
        {"relay_rounds": relay_rates, "boto3_rounds": bare_rates},
    )


def relay_vs_seed(quick: bool) -> Result:
    from events import relay

    n, rounds = (150, 2) if quick else (300, 2)
    drainer = common.start_drainer()
    try:
        relay_rates, seed_rates = [], []
        for r in range(rounds):
            _reset()
            make_rows(n, offset=r * n)
            with Timer() as t:
                assert seed_relay() == n
            seed_rates.append(n / t.seconds)
            common.wait_empty()
            _reset()
            make_rows(n, offset=r * n)
            with Timer() as t:
                assert relay.relay(relay.SnsPublisher()).published == n
            relay_rates.append(n / t.seconds)
            common.wait_empty()
    finally:
        common.stop(drainer)
    value, base = max(relay_rates), max(seed_rates)
    return Result(
        "relay_vs_seed",
        "events/s",
        value,
        base,
        value / base,
        "ratio >= 5",
        value / base >= 5,
        f"{n} events x {rounds} rounds; seed = list_topics + substring match + Publish + row.save per event",
        {"relay_rounds": relay_rates, "seed_rounds": seed_rates},
    )


# ----------------------------------------------------------------------------- database side
def bulk_pending(n: int) -> None:
    """``n`` pending rows with realistic envelopes, in one INSERT ... SELECT."""
    with connection.cursor() as c:
        c.execute(
            f"""
            INSERT INTO {OUTBOX} (event_id, type, subject, aggregate_key, sequence, envelope, state,
                                  created_at, sns_message_id, attempts, last_error,
                                  correlation_id, causation_id, request, failure)
            SELECT gen_random_uuid(), 'team.created', g::text, 'team:' || g, 1,
                   jsonb_build_object('specversion', '1.0', 'id', gen_random_uuid(), 'source', '/league/teams',
                                      'type', 'team.created', 'time', now(), 'subject', g::text,
                                      'datacontenttype', 'application/json', 'dataversion', '1', 'sequence', 1,
                                      'data', jsonb_build_object('id', g, 'name', 'Team ' || g, 'players', '[]'::jsonb)),
                   'pending', now(), '', 0, '', '', '', '', ''
            FROM generate_series(1, %s) AS g
            """,
            [n],
        )


def back_to_pending() -> None:
    with connection.cursor() as c:
        c.execute(f"UPDATE {OUTBOX} SET state='pending', published_at=NULL, sns_message_id='', claimed_until=NULL")
    common.vacuum(OUTBOX)


def bare_update(batch: int) -> int:
    """The baseline: one statement per batch that takes the next due rows and marks them
    published (claim + mark with no lease, no ordering check, no Python objects)."""
    total = 0
    with connection.cursor() as c:
        while True:
            c.execute(
                f"""
                UPDATE {OUTBOX} SET state='published', published_at=now(), sns_message_id='null-' || id
                WHERE id IN (SELECT id FROM {OUTBOX} WHERE state='pending' ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
                """,
                [batch],
            )
            if not c.rowcount:
                return total
            total += c.rowcount


def relay_null_publisher(quick: bool) -> Result:
    from django.conf import settings

    from events import relay

    n, rounds = (10_000, 2) if quick else (50_000, 3)
    batch = settings.OUTBOX_SWEEP_BATCH_SIZE  # what relay() claims a batch; the baseline moves the same
    _reset()
    bulk_pending(n)
    common.vacuum(OUTBOX)
    relay_rates, bare_rates = [], []
    for _ in range(rounds):
        with Timer() as t:
            assert relay.relay(relay.NullPublisher()).published == n
        relay_rates.append(n / t.seconds)
        back_to_pending()
        with Timer() as t:
            assert bare_update(batch) == n
        bare_rates.append(n / t.seconds)
        back_to_pending()
    _reset()
    value, base = max(relay_rates), max(bare_rates)
    return Result(
        "relay_null_publisher",
        "events/s",
        value,
        base,
        value / base,
        "value >= 25000 events/s",
        value >= 25_000,
        f"{n} rows, batch {batch}; baseline: one UPDATE ... WHERE id IN (SELECT ... LIMIT {batch} FOR UPDATE SKIP LOCKED) per batch",
        {"relay_rounds": relay_rates, "bare_update_rounds": bare_rates},
    )
