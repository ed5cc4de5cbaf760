"""Operations on queues: move dead letters back, replay stored events, report status."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db.models import Count, Min
from django.utils import timezone

from . import aws, registry, topology
from .models import OutboxMessage, OutboxState


def _attrs(message: dict[str, Any]) -> dict[str, Any]:
    keep = {k: v for k, v in message.get("MessageAttributes", {}).items() if k not in ("reason", "source_queue")}
    return {
        k: {"DataType": v["DataType"], "StringValue": v["StringValue"]} for k, v in keep.items() if "StringValue" in v
    }


def _send_batch(url: str, entries: list[dict[str, Any]]) -> int:
    if not entries:
        return 0
    response = aws.client("sqs").send_message_batch(QueueUrl=url, Entries=entries)
    failed = response.get("Failed", [])
    if failed:
        raise RuntimeError(f"SQS refused {len(failed)} message(s): {failed[0].get('Message')}")
    return len(response.get("Successful", []))


def redrive_dlq(service: str, *, limit: int | None = None, on_moved: Callable[[int], None] | None = None) -> int:
    """Move messages from ``service``'s DLQ back to its queue. A message is deleted from
    the DLQ only after the queue accepted it (at worst a duplicate, which the inbox absorbs)."""
    sqs = aws.client("sqs")
    dlq = aws.queue_url(aws.queue_name(service, dlq=True))
    queue = aws.queue_url(aws.queue_name(service))
    moved = 0
    while limit is None or moved < limit:
        messages = sqs.receive_message(
            QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"], VisibilityTimeout=60
        ).get("Messages", [])
        if not messages:
            break
        entries = []
        for i, m in enumerate(messages):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": m["Body"], "MessageAttributes": _attrs(m)}
            if aws.fifo():
                entry.update(MessageGroupId="redrive", MessageDeduplicationId=m["MessageId"])
            entries.append(entry)
        _send_batch(queue, entries)
        sqs.delete_message_batch(
            QueueUrl=dlq, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        )
        moved += len(messages)
        if on_moved:
            on_moved(len(messages))
    return moved


def replay_queryset(
    service: str,
    *,
    event_type: str | None = None,
    subject: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Any:
    types = registry.subscriptions(service)
    # Published rows only: a pending or failed row may have an older unpublished row of
    # its subject, and sending it would break the per-subject order the relay keeps.
    qs = OutboxMessage.objects.filter(type__in=types, state=OutboxState.PUBLISHED).order_by("id")
    if event_type:
        qs = qs.filter(type=event_type)
    if subject:
        qs = qs.filter(subject=subject)
    if since:
        qs = qs.filter(created_at__gte=since)
    if until:
        qs = qs.filter(created_at__lt=until)
    return qs


def replay(service: str, queryset: Any, *, on_sent: Callable[[int], None] | None = None) -> int:
    """Send stored envelopes straight to ``service``'s queue (not through SNS, so no other
    service sees them again). The consumers' inbox drops what was already handled."""
    queue = aws.queue_url(aws.queue_name(service))
    sent, batch = 0, []
    for row in queryset.only("id", "event_id", "type", "aggregate_key", "envelope").iterator(chunk_size=500):
        entry: dict[str, Any] = {
            "Id": str(row.pk),
            "MessageBody": json.dumps(row.envelope, separators=(",", ":")),
            "MessageAttributes": {
                "type": {"DataType": "String", "StringValue": row.type},
                "id": {"DataType": "String", "StringValue": str(row.event_id)},
            },
        }
        if aws.fifo():
            entry.update(MessageGroupId=row.aggregate_key, MessageDeduplicationId=f"replay-{row.event_id}")
        batch.append(entry)
        if len(batch) == 10:
            sent += _send_batch(queue, batch)
            on_sent and on_sent(len(batch))
            batch = []
    if batch:
        sent += _send_batch(queue, batch)
        on_sent and on_sent(len(batch))
    return sent


def outbox_status() -> list[dict[str, Any]]:
    """Per event type: pending, failed, published counts and the oldest pending age (s)."""
    now = timezone.now()
    rows: dict[str, dict[str, Any]] = {}
    for r in OutboxMessage.objects.values("type", "state").annotate(n=Count("id"), oldest=Min("created_at")):
        row = rows.setdefault(
            r["type"], {"type": r["type"], "pending": 0, "failed": 0, "published": 0, "oldest_pending_s": None}
        )
        row[r["state"]] = r["n"]
        if r["state"] == OutboxState.PENDING and r["oldest"]:
            row["oldest_pending_s"] = round((now - r["oldest"]).total_seconds(), 1)
    return [rows[k] for k in sorted(rows)]


MISSING_QUEUE = "queue missing: run setup_bus"
MISSING_DLQ = "DLQ missing: run setup_bus"


def queue_status() -> list[dict[str, Any]]:
    """Per service queue: visible, in flight, and DLQ depth (None where a queue is
    missing), and ``state``: "ok", or which queue is missing and what to do."""
    out = []
    for spec in topology.queue_specs():
        row: dict[str, Any] = {"queue": spec.name, "visible": None, "in_flight": None, "dlq": None, "state": "ok"}
        try:
            attrs = aws.queue_attributes(
                aws.queue_url(spec.name), "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"
            )
            row["visible"] = int(attrs["ApproximateNumberOfMessages"])
            row["in_flight"] = int(attrs["ApproximateNumberOfMessagesNotVisible"])
        except aws.QueueMissing:
            row["state"] = MISSING_QUEUE
        try:
            dlq = aws.queue_attributes(aws.queue_url(spec.dlq_name), "ApproximateNumberOfMessages")
            row["dlq"] = int(dlq["ApproximateNumberOfMessages"])
        except aws.QueueMissing:
            row["state"] = MISSING_QUEUE if row["state"] != "ok" else MISSING_DLQ
        out.append(row)
    return out
