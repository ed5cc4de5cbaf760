"""Least privilege on the bus, generated from the topology (``events/topology.py``, the one
source of topics, queues and subscriptions) and the catalogue (who publishes what).

One IAM policy per service and role (``manage.py iam_policy SERVICE --role ROLE``; the
CloudFormation template's roles are the same statements):

- ``relay`` (the Celery worker and beat, ``relay_outbox``): ``sns:Publish`` on the topics of
  the event types the service publishes, nothing else of SNS but ``sns:ListTopics`` (it
  finds its topics' ARNs by exact name; listing has no resource-level permission). No SQS.
- ``consumer`` (``consume``): receive, delete, change visibility, get attributes and URL of
  its own queue and dead-letter queue, send to its own dead-letter queue (a message its
  handlers cannot take goes there with the reason); and, read-only, what the start-up check
  of its subscriptions reads. It sends to no other queue, its own included: a message it
  cannot handle for want of its database goes back after its visibility timeout.
- ``web`` (the web server): what the readiness probe reads (topics listed, its queues'
  URLs); with the live feed (``live``, each web process's own broadcast queue), the
  lifecycle of ``{prefix}-live-*`` queues and their subscriptions.
- ``setup`` (``setup_bus``, or whoever deploys the stack): creates and changes the topology:
  the bus's topics, the service's queues and DLQs, their policies and subscriptions.

No runtime role may create a topic or send to a service's queue: only SNS sends there (the
queue policy admits the bus's topics alone), so a forged event cannot be slipped into a
queue, and a service can publish only the event types the catalogue says it owns.
``SERVICE`` ``all`` is the monolith: the union of every service's rights for that role.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from . import aws, catalogue, registry, topology

ROLES = ("relay", "consumer", "web", "setup")
ALL = "all"
LIVE = "live"

SNS_READ = ["sns:ListTopics"]
CONSUMER_QUEUE = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
]
SUBSCRIPTIONS_READ = ["sns:ListSubscriptionsByTopic", "sns:GetSubscriptionAttributes"]
SETUP_SNS = [
    "sns:CreateTopic",
    "sns:GetTopicAttributes",
    "sns:SetTopicAttributes",
    "sns:Subscribe",
    "sns:Unsubscribe",
    "sns:ListSubscriptionsByTopic",
    "sns:GetSubscriptionAttributes",
    "sns:SetSubscriptionAttributes",
]
SETUP_SQS = ["sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SetQueueAttributes"]
BROADCAST_SQS = [
    "sqs:CreateQueue",
    "sqs:DeleteQueue",
    "sqs:GetQueueUrl",
    "sqs:GetQueueAttributes",
    "sqs:SetQueueAttributes",
    "sqs:TagQueue",
    "sqs:ListQueueTags",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
]
BROADCAST_SNS = ["sns:Subscribe", "sns:Unsubscribe", "sns:ListSubscriptionsByTopic"]


class UnknownService(ValueError):
    pass


@dataclass(frozen=True)
class Arns:
    """How ARNs are written: literally (``partition``, ``region``, ``account``), or as
    CloudFormation ``${AWS::...}`` references inside ``Fn::Sub``."""

    partition: str = "aws"
    region: str = "*"
    account: str = "*"

    def topic(self, name: str) -> str:
        return f"arn:{self.partition}:sns:{self.region}:{self.account}:{name}"

    def queue(self, name: str) -> str:
        return f"arn:{self.partition}:sqs:{self.region}:{self.account}:{name}"


CLOUDFORMATION = Arns("${AWS::Partition}", "${AWS::Region}", "${AWS::AccountId}")


def services() -> list[str]:
    """Services with a part on the bus in this process: publishers and consumers."""
    publishers = {et.source for et in catalogue.EVENT_TYPES.values() if not et.retired}
    return sorted(publishers | set(topology.consuming_services()) | _broadcasting())


def _broadcasting() -> set[str]:
    return {h.service for h in registry.handlers(broadcast=True)}


def _members(service: str) -> list[str]:
    known = services()
    if service == ALL:
        return known
    if service not in known:
        raise UnknownService(f"unknown service {service!r}: one of {', '.join([*known, ALL])}")
    return [service]


def published_types(service: str) -> list[str]:
    members = _members(service)
    return sorted(n for n, et in catalogue.EVENT_TYPES.items() if not et.retired and et.source in members)


def _live_types() -> list[str]:
    return sorted({t for s in _broadcasting() for t in registry.subscriptions(s, broadcast=True)})


def _statement(sid: str, actions: list[str], resources: list[str]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": sorted(resources)}


def _topic_arns(types: list[str], arns: Arns) -> list[str]:
    return [arns.topic(aws.topic_name(t)) for t in types]


def _queues(service: str) -> list[topology.QueueSpec]:
    consumers = set(topology.consuming_services())
    return topology.queue_specs([s for s in _members(service) if s in consumers])


def statements(service: str, role: str, arns: Arns | None = None) -> list[dict[str, Any]]:
    """The statements of ``service``'s ``role`` (``ROLES``), ARNs written by ``arns``."""
    arns = arns or Arns()
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    builders: dict[str, Callable[[str, Arns], list[dict[str, Any]]]] = {
        "relay": _relay,
        "consumer": _consumer,
        "web": _web,
        "setup": _setup,
    }
    return [s for s in builders[role](service, arns) if s["Action"] and s["Resource"]]


def policy(service: str, role: str, arns: Arns | None = None) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": statements(service, role, arns)}


def _relay(service: str, arns: Arns) -> list[dict[str, Any]]:
    return [
        _statement("PublishOwnEvents", ["sns:Publish"], _topic_arns(published_types(service), arns)),
        _statement("FindTopicsByName", SNS_READ, ["*"]),
    ]


def _consumer(service: str, arns: Arns) -> list[dict[str, Any]]:
    specs = _queues(service)
    topics = _topic_arns(sorted({t for s in specs for t in s.event_types}), arns)
    out = [
        _statement("OwnQueues", CONSUMER_QUEUE, [arns.queue(n) for s in specs for n in (s.name, s.dlq_name)]),
        _statement("DeadLetter", ["sqs:SendMessage"], [arns.queue(s.dlq_name) for s in specs]),
        _statement("CheckSubscriptions", SUBSCRIPTIONS_READ, [*topics, *(f"{t}:*" for t in topics)]),
        _statement("FindTopicsByName", SNS_READ, ["*"]),
    ]
    if LIVE in _members(service) and LIVE in _broadcasting():
        out += _broadcast(arns)
    return out


def _web(service: str, arns: Arns) -> list[dict[str, Any]]:
    specs = _queues(service)
    out = [
        _statement(
            "ReadinessProbe",
            ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
            [arns.queue(n) for s in specs for n in (s.name, s.dlq_name)],
        ),
        _statement("FindTopicsByName", SNS_READ, ["*"]),
    ]
    if _broadcasting():  # every web process of a deployment with the live feed runs one
        out += _broadcast(arns)
    return out


def _broadcast(arns: Arns) -> list[dict[str, Any]]:
    """A live feed's own queue (``{prefix}-live-{instance}``), made, subscribed and removed by
    the process that reads it; reaping what a crashed one left."""
    queues = arns.queue(f"{settings.BUS_PREFIX}-{LIVE}-*")
    topics = _topic_arns(_live_types(), arns)
    return [
        _statement("LiveFeedQueue", BROADCAST_SQS, [queues]),
        _statement("LiveFeedQueueList", ["sqs:ListQueues"], ["*"]),
        _statement("LiveFeedSubscriptions", BROADCAST_SNS, [*topics, *(f"{t}:*" for t in topics)]),
    ]


def _setup(service: str, arns: Arns) -> list[dict[str, Any]]:
    topics = [arns.topic(aws.topic_name(n)) for n, et in catalogue.EVENT_TYPES.items() if not et.retired]
    queues = [arns.queue(n) for s in _queues(service) for n in (s.name, s.dlq_name)]
    return [
        _statement("BusTopics", SETUP_SNS, [*topics, *(f"{t}:*" for t in topics)]),
        _statement("ServiceQueues", SETUP_SQS, queues),
        _statement("FindTopicsByName", SNS_READ, ["*"]),
    ]


# ------------------------------------------------------------------------ what a denial means
# Operations whose IAM action has another name.
_ACTION_OF_OPERATION = {"PublishBatch": "Publish", "SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage"}


DENIED_CODES = ("AccessDenied", "AccessDeniedException", "AuthorizationError", "AuthorizationErrorException")


def is_access_denied(error: BaseException) -> bool:
    """An AWS refusal for want of a permission (also when the error body could not be parsed
    and only the 403 and the code in its text are left)."""
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", "")) or str(getattr(error, "code", ""))
    if code in DENIED_CODES:
        return True
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    text = str(response.get("Error", {}).get("Message", ""))
    return status == 403 and any(f"<Code>{c}</Code>" in text for c in DENIED_CODES)


def missing_permission(error: BaseException, *, service: str, operation: str = "", resource: str = "") -> str | None:
    """For an access-denied error of ``service`` (``sns``, ``sqs``), the permission it lacked,
    e.g. ``sns:Publish on arn:aws:sns:...:leaguemanager-transfer-requested``: the action and
    resource AWS names in its message, else those of the call; None for any other error."""
    if not is_access_denied(error):
        return None
    response = getattr(error, "response", None) or {}
    message = str(response.get("Error", {}).get("Message", "")) or str(getattr(error, "message", ""))
    named = re.search(r"\b((?:sns|sqs):[A-Za-z]+)\b", message)
    operation = operation or str(getattr(error, "operation_name", "") or "")
    action = named.group(1) if named else f"{service}:{_ACTION_OF_OPERATION.get(operation, operation)}"
    on = re.search(r"on resource:?\s*(arn:\S+)", message)
    resource = on.group(1).rstrip(".") if on else resource
    return f"{action} on {resource}" if resource else action
