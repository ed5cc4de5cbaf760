"""The bus's shape on SNS/SQS, created idempotently and checked for drift.

- One topic per event type in the catalogue.
- Per consuming service: a shared queue (competing consumers) with a dead-letter queue
  (``RedrivePolicy``, ``maxReceiveCount``), subscribed with raw message delivery to the
  topics it has handlers for. The queue policy lets only those topics send to it. Every
  queue and DLQ is encrypted at rest with SQS-managed keys.
- ``check`` reports drift; what the caller's credentials may not read is reported as
  unverified, naming the permission (``setup_bus --check`` with a runtime role).
- The same shape as a CloudFormation template: ``events/cloudformation.py``; each
  process's rights: ``events/iam.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings

from . import aws, catalogue, registry, retention


@dataclass
class QueueSpec:
    service: str
    name: str
    dlq_name: str
    event_types: list[str]


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)


def consuming_services() -> list[str]:
    """Services with handlers in this process (LEAGUE_SERVICE decides which apps, and so
    which handlers, are loaded)."""
    return sorted({h.service for h in registry.handlers(broadcast=False)})


def queue_specs(services: list[str] | None = None) -> list[QueueSpec]:
    return [
        QueueSpec(
            service=s,
            name=aws.queue_name(s),
            dlq_name=aws.queue_name(s, dlq=True),
            event_types=registry.subscriptions(s),
        )
        for s in (services if services is not None else consuming_services())
    ]


# Encryption at rest on every queue and DLQ: SQS-managed keys (no KMS key to run or pay for).
ENCRYPTION = {"SqsManagedSseEnabled": "true"}


def queue_policy(queue_arn: str, topic_arns: list[str]) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "bus-topics-only",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": sorted(topic_arns)}},
            }
        ],
    }


def _queue_attrs(*, queue_arn: str, dlq_arn: str, topic_arns: list[str]) -> dict[str, str]:
    attrs = {
        "VisibilityTimeout": str(settings.CONSUMER_VISIBILITY_TIMEOUT),
        "ReceiveMessageWaitTimeSeconds": str(min(settings.CONSUMER_WAIT_SECONDS, 20)),
        "MessageRetentionPeriod": str(retention.queue_retention()),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.CONSUMER_MAX_RECEIVE_COUNT)}
        ),
        "Policy": json.dumps(queue_policy(queue_arn, topic_arns)),
        **ENCRYPTION,
    }
    return attrs


def _fifo_attrs() -> dict[str, str]:
    return {"FifoQueue": "true"} if aws.fifo() else {}


def ensure_topics() -> dict[str, str]:
    sns = aws.client("sns")
    arns = {}
    for name, et in catalogue.EVENT_TYPES.items():
        if et.retired:
            continue
        attrs = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if aws.fifo() else {}
        arn = sns.create_topic(Name=aws.topic_name(name), Attributes=attrs)["TopicArn"]
        aws.remember_topic(aws.topic_name(name), arn)
        arns[name] = arn
    return arns


def _ensure_queue(name: str, attributes: dict[str, str]) -> tuple[str, bool]:
    sqs = aws.client("sqs")
    try:
        url = aws.queue_url(name)
    except aws.QueueMissing:
        return sqs.create_queue(QueueName=name, Attributes={**attributes, **_fifo_attrs()})["QueueUrl"], True
    if attributes:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url, False


def queue_arn(url: str) -> str:
    return aws.queue_attributes(url, "QueueArn")["QueueArn"]


def subscriptions_of(topic_arn: str) -> list[dict[str, Any]]:
    subs = []
    for page in aws.client("sns").get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
        subs.extend(page.get("Subscriptions", []))
    return subs


def ensure_subscriptions(q_arn: str, wanted: dict[str, str], all_topics: dict[str, str]) -> list[str]:
    """Subscribe ``q_arn`` with raw delivery to ``wanted`` topics, and unsubscribe it from
    this bus's other topics. Returns what changed."""
    sns = aws.client("sns")
    changed = []
    for event_type, t_arn in all_topics.items():
        mine = [s for s in subscriptions_of(t_arn) if s["Endpoint"] == q_arn]
        if event_type in wanted:
            if not mine:
                sns.subscribe(
                    TopicArn=t_arn,
                    Protocol="sqs",
                    Endpoint=q_arn,
                    Attributes={"RawMessageDelivery": "true"},
                    ReturnSubscriptionArn=True,
                )
                changed.append(f"subscribed to {event_type}")
            else:
                for s in mine:
                    attrs = sns.get_subscription_attributes(SubscriptionArn=s["SubscriptionArn"])["Attributes"]
                    if attrs.get("RawMessageDelivery") != "true":
                        sns.set_subscription_attributes(
                            SubscriptionArn=s["SubscriptionArn"],
                            AttributeName="RawMessageDelivery",
                            AttributeValue="true",
                        )
                        changed.append(f"raw delivery on for {event_type}")
        else:
            for s in mine:
                sns.unsubscribe(SubscriptionArn=s["SubscriptionArn"])
                changed.append(f"unsubscribed from {event_type}")
    return changed


def ensure(services: list[str] | None = None) -> Report:
    """Create or update topics, queues, DLQs, policies and subscriptions. Idempotent."""
    report = Report()
    dlq_attrs = {"MessageRetentionPeriod": str(retention.dlq_retention()), **ENCRYPTION}  # validated first
    topics = ensure_topics()
    for spec in queue_specs(services):
        dlq_url, created = _ensure_queue(spec.dlq_name, dlq_attrs)
        if created:
            report.created.append(spec.dlq_name)
        dlq_arn = queue_arn(dlq_url)
        wanted = {t: topics[t] for t in spec.event_types}
        # The queue ARN is needed for its own policy: create first, then set attributes.
        url, created = _ensure_queue(spec.name, {})
        q_arn = queue_arn(url)
        aws.client("sqs").set_queue_attributes(
            QueueUrl=url, Attributes=_queue_attrs(queue_arn=q_arn, dlq_arn=dlq_arn, topic_arns=list(wanted.values()))
        )
        (report.created if created else report.updated).append(spec.name)
        for change in ensure_subscriptions(q_arn, wanted, topics):
            report.updated.append(f"{spec.name}: {change}")
    return report


def check(services: list[str] | None = None, unverified: list[str] | None = None) -> list[str]:
    """What differs from the wanted shape; empty when all matches. With ``unverified``, what
    these credentials may not read is listed there (with the permission AWS refused) and
    the check goes on; without, an access-denied error is raised."""
    drift: list[str] = []
    try:
        existing = aws.list_topic_arns()
    except ClientError as exc:
        _unverifiable(exc, "the bus's topics", unverified, "sns", "ListTopics", "*")
        return drift
    topics = {}
    for name, et in catalogue.EVENT_TYPES.items():
        if et.retired:
            continue
        tname = aws.topic_name(name)
        if tname not in existing:
            drift.append(f"topic {tname} is missing")
        else:
            topics[name] = existing[tname]
    for spec in queue_specs(services):
        try:
            drift.extend(check_queue(spec, topics, unverified))
        except ClientError as exc:
            _unverifiable(exc, f"queue {spec.name}", unverified, "sqs", "", spec.name)
    return drift


def _unverifiable(
    error: ClientError, what: str, unverified: list[str] | None, service: str, operation: str, resource: str
) -> None:
    """Record that ``what`` could not be read for want of a permission, or raise."""
    from . import iam

    permission = iam.missing_permission(error, service=service, operation=operation, resource=resource)
    if unverified is None or permission is None:
        raise error
    unverified.append(f"{what}: cannot verify, these credentials lack {permission}")


def check_queue(spec: QueueSpec, topics: dict[str, str], unverified: list[str] | None = None) -> list[str]:
    """Drift of one service's queue: missing queue or DLQ, redrive, policy, subscriptions
    (``unverified`` as in ``check``)."""
    drift: list[str] = []
    try:
        url = aws.queue_url(spec.name)
    except aws.QueueMissing:
        return [f"queue {spec.name} is missing"]
    try:
        dlq_attrs = aws.queue_attributes(aws.queue_url(spec.dlq_name), "All")
        dlq_arn = dlq_attrs["QueueArn"]
        drift += _retention_drift(spec.dlq_name, dlq_attrs, retention.dlq_retention())
        drift += _encryption_drift(spec.dlq_name, dlq_attrs)
    except aws.QueueMissing:
        drift.append(f"dead-letter queue {spec.dlq_name} is missing")
        dlq_arn = None
    attrs = aws.queue_attributes(url, "All")
    drift += _retention_drift(spec.name, attrs, retention.queue_retention())
    drift += _encryption_drift(spec.name, attrs)
    q_arn = attrs["QueueArn"]
    redrive = json.loads(attrs.get("RedrivePolicy") or "{}")
    if not redrive:
        drift.append(f"queue {spec.name} has no redrive policy")
    elif dlq_arn and redrive.get("deadLetterTargetArn") != dlq_arn:
        drift.append(f"queue {spec.name} redrives to {redrive.get('deadLetterTargetArn')}, not {spec.dlq_name}")
    elif int(redrive.get("maxReceiveCount", 0)) != settings.CONSUMER_MAX_RECEIVE_COUNT:
        drift.append(
            f"queue {spec.name} maxReceiveCount is {redrive.get('maxReceiveCount')}, "
            f"not {settings.CONSUMER_MAX_RECEIVE_COUNT}"
        )
    wanted_arns = sorted(topics[t] for t in spec.event_types if t in topics)
    policy = json.loads(attrs.get("Policy") or "{}")
    if policy != queue_policy(q_arn, wanted_arns):
        drift.append(f"queue {spec.name} policy does not admit exactly this bus's topics {spec.event_types}")
    for event_type in spec.event_types:
        if event_type not in topics:
            continue
        try:
            drift += _check_subscription(spec, event_type, topics[event_type], q_arn)
        except ClientError as exc:
            what = f"subscription {aws.topic_name(event_type)} -> {spec.name}"
            _unverifiable(exc, what, unverified, "sns", "ListSubscriptionsByTopic", topics[event_type])
    for event_type, t_arn in topics.items():
        if event_type in spec.event_types:
            continue
        try:
            if any(s["Endpoint"] == q_arn for s in subscriptions_of(t_arn)):
                drift.append(
                    f"queue {spec.name} is subscribed to {aws.topic_name(event_type)}, which it does not handle"
                )
        except ClientError as exc:
            what = f"no stray subscription {aws.topic_name(event_type)} -> {spec.name}"
            _unverifiable(exc, what, unverified, "sns", "ListSubscriptionsByTopic", t_arn)
    return drift


def _check_subscription(spec: QueueSpec, event_type: str, topic_arn: str, q_arn: str) -> list[str]:
    drift: list[str] = []
    mine = [s for s in subscriptions_of(topic_arn) if s["Endpoint"] == q_arn]
    if not mine:
        return [f"queue {spec.name} is not subscribed to {aws.topic_name(event_type)}"]
    sub_attrs = aws.client("sns").get_subscription_attributes(SubscriptionArn=mine[0]["SubscriptionArn"])["Attributes"]
    if sub_attrs.get("RawMessageDelivery") != "true":
        drift.append(f"subscription {aws.topic_name(event_type)} -> {spec.name} lacks raw delivery")
    return drift


def _retention_drift(name: str, attrs: dict[str, str], wanted: int) -> list[str]:
    have = int(attrs.get("MessageRetentionPeriod") or 0)
    return [] if have == wanted else [f"queue {name} retention is {have} s, not {wanted} s"]


def _encryption_drift(name: str, attrs: dict[str, str]) -> list[str]:
    encrypted = attrs.get("SqsManagedSseEnabled") == "true" or bool(attrs.get("KmsMasterKeyId"))
    return [] if encrypted else [f"queue {name} is not encrypted at rest (SqsManagedSseEnabled)"]
