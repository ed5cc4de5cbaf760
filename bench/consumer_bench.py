"""Consumer throughput on the transfers service's real queue vs a bare receive + delete
loop on the same queue with the same messages."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid

from django.utils import timezone

from . import common
from .common import Result, Timer

SERVICE = "transfers"


def envelopes(n: int, start: int) -> list[dict]:
    from events import envelope

    out = []
    for i in range(start, start + n):
        out.append(
            envelope.build(
                event_id=str(uuid.uuid4()),
                source="/league/teams",
                type="team.created",
                time=timezone.now(),
                subject=str(i),
                sequence=1,
                data={
                    "id": i,
                    "name": f"Team {i}",
                    "players": [
                        {"id": i * 10 + 1, "name": f"Keeper {i}", "position": "GK"},
                        {"id": i * 10 + 2, "name": f"Striker {i}", "position": "ST"},
                    ],
                },
                dataversion=1,
                correlationid=None,
                causationid=None,
            )
        )
    return out


def fill(url: str, bodies: list[dict]) -> None:
    """What SNS raw delivery puts on the queue: the envelope as the body, type/id attributes."""
    from events import aws

    sqs = aws.client("sqs")
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {
                    "Id": str(j),
                    "MessageBody": json.dumps(b, separators=(",", ":")),
                    "MessageAttributes": {
                        "type": {"DataType": "String", "StringValue": b["type"]},
                        "id": {"DataType": "String", "StringValue": b["id"]},
                    },
                }
                for j, b in enumerate(bodies[start : start + 10])
            ],
        )


def bare_loop(url: str) -> int:
    """The baseline: receive (same parameters as the consumer) + delete_message_batch until empty."""
    from django.conf import settings

    from events import aws

    sqs = aws.client("sqs")
    n = 0
    while True:
        msgs = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=settings.CONSUMER_VISIBILITY_TIMEOUT,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not msgs:
            return n
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)]
        )
        n += len(msgs)


def noop_handler(event) -> None:
    """Stands in for the transfers handler: the consumer's own work stays (decode, source
    check, the inbox row and its transaction, heartbeat thread, delete)."""


def noop_many(events) -> None:
    """Stands in for the handler's set-based form."""


class noop_handlers:
    """Swap the transfers team.created handler for ``noop_handler`` in the registry."""

    def __enter__(self) -> None:
        from events import registry

        self.saved = list(registry._handlers)
        registry._handlers[:] = [
            dataclasses.replace(h, func=noop_handler, many=noop_many if h.many else None)
            if (h.service, h.event_type) == (SERVICE, "team.created")
            else h
            for h in self.saved
        ]

    def __exit__(self, *exc: object) -> None:
        from events import registry

        registry._handlers[:] = self.saved


def _rounds(quick: bool) -> dict[str, list[float]]:
    """Alternating rounds: consumer with the no-op handler, consumer with the real handler,
    the bare loop; each drains ``per_round`` fresh messages from the transfers queue."""
    from events import aws
    from events.consumer import Consumer

    per_round, rounds = (100, 3) if quick else (100, 8)
    url = aws.queue_url(aws.queue_name(SERVICE))
    common.wait_empty(SERVICE)
    rates: dict[str, list[float]] = {"noop": [], "real": [], "bare": []}
    start = 1_000_000
    fill(url, envelopes(20, start))  # warm-up: imports, connections, the first queries
    start += 20
    Consumer(SERVICE, wait_seconds=0, check_topology=False).run(drain=True)
    sides = ["noop", "real", "bare"]
    for r in range(rounds):
        for side in sides[r % 3 :] + sides[: r % 3]:
            fill(url, envelopes(per_round, start))
            start += per_round
            with Timer() as t:
                if side == "bare":
                    assert bare_loop(url) == per_round
                else:
                    with noop_handlers() if side == "noop" else contextlib.nullcontext():
                        stats = Consumer(SERVICE, wait_seconds=0, check_topology=False).run(drain=True)
                    assert stats.handled == per_round and not stats.failed, stats
            rates[side].append(per_round / t.seconds)
    return rates


def consumer_vs_boto3(quick: bool) -> list[Result]:
    rates = _rounds(quick)
    n = len(rates["bare"])
    base = common.median(rates["bare"])
    noop, real = common.median(rates["noop"]), common.median(rates["real"])
    return [
        Result(
            "consumer_vs_boto3",
            "events/s",
            noop,
            base,
            noop / base,
            "ratio >= 0.8",
            noop / base >= 0.8,
            f"no-op handler (inbox row + transaction kept); {n} rounds of 100 team.created on the transfers queue, "
            "sides rotating, median round",
            {"consumer_rounds": rates["noop"], "bare_rounds": rates["bare"]},
        ),
        Result(
            "consumer_real_vs_boto3",
            "events/s",
            real,
            base,
            real / base,
            "ratio >= 0.5",
            real / base >= 0.5,
            "the real transfers handler (replica team + 2 players + inbox row, one transaction); same rounds",
            {"consumer_rounds": rates["real"], "bare_rounds": rates["bare"]},
        ),
    ]
