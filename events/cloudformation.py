"""The bus as a CloudFormation template (``manage.py setup_bus --format cloudformation``).

Everything ``setup_bus`` makes, from the same source (``events/topology.py``: names,
attributes, policies, subscriptions), plus the IAM role of each service's processes
(``events/iam.py``): a stack deployed from it is what ``setup_bus`` would have made, and
``setup_bus --check`` against it finds no drift.

- A topic per event type; per consuming service a queue and its DLQ (redrive with
  ``CONSUMER_MAX_RECEIVE_COUNT``, the retentions, SQS-managed encryption on both), the queue
  policy that admits only its topics, and a raw-delivery subscription per handled type.
- Per service with a part on the bus and per runtime role (``relay``, ``consumer``,
  ``web``) an IAM role with exactly its generated statements, assumable by ECS tasks and EC2
  instances; its ARN is an output (``TeamsRelayRoleArn`` ...). Roles are unnamed (IAM names
  them after the stack): deploying needs ``CAPABILITY_IAM`` only.
- The setup role is not in the stack: whoever deploys the stack holds those rights.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from . import aws, catalogue, iam, retention, topology

RUNTIME_ROLES = ("relay", "consumer", "web")
TRUSTED = ["ecs-tasks.amazonaws.com", "ec2.amazonaws.com"]


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in text.replace("_", "-").replace(".", "-").split("-"))


def topic_id(event_type: str) -> str:
    return f"Topic{_camel(event_type)}"


def queue_id(service: str, *, dlq: bool = False) -> str:
    return f"Queue{_camel(service)}{'Dlq' if dlq else ''}"


def _sub(value: str) -> Any:
    return {"Fn::Sub": value} if "${" in value else value


def _statement(statement: dict[str, Any]) -> dict[str, Any]:
    return {**statement, "Resource": [_sub(r) for r in statement["Resource"]]}


def template() -> dict[str, Any]:
    resources: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    fifo = aws.fifo()
    types = [n for n, et in catalogue.EVENT_TYPES.items() if not et.retired]
    for name in types:
        props: dict[str, Any] = {"TopicName": aws.topic_name(name)}
        if fifo:
            props.update(FifoTopic=True, ContentBasedDeduplication=False)
        resources[topic_id(name)] = {"Type": "AWS::SNS::Topic", "Properties": props}
    for spec in topology.queue_specs():
        dlq, queue = queue_id(spec.service, dlq=True), queue_id(spec.service)
        encryption = {"SqsManagedSseEnabled": True}
        fifo_props = {"FifoQueue": True} if fifo else {}
        resources[dlq] = {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": spec.dlq_name,
                "MessageRetentionPeriod": retention.dlq_retention(),
                **encryption,
                **fifo_props,
            },
        }
        resources[queue] = {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": spec.name,
                "VisibilityTimeout": settings.CONSUMER_VISIBILITY_TIMEOUT,
                "ReceiveMessageWaitTimeSeconds": min(settings.CONSUMER_WAIT_SECONDS, 20),
                "MessageRetentionPeriod": retention.queue_retention(),
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]},
                    "maxReceiveCount": settings.CONSUMER_MAX_RECEIVE_COUNT,
                },
                **encryption,
                **fifo_props,
            },
        }
        # The same document setup_bus sets (topology.queue_policy), its ARNs as references;
        # topic ARNs in name order, as setup_bus sorts them.
        document = topology.queue_policy("QUEUE", [])
        statement = document["Statement"][0]
        statement["Resource"] = {"Fn::GetAtt": [queue, "Arn"]}
        handled = sorted(spec.event_types, key=aws.topic_name)
        statement["Condition"]["ArnEquals"]["aws:SourceArn"] = [{"Ref": topic_id(t)} for t in handled]
        resources[f"{queue}Policy"] = {
            "Type": "AWS::SQS::QueuePolicy",
            "Properties": {"Queues": [{"Ref": queue}], "PolicyDocument": document},
        }
        for event_type in spec.event_types:
            resources[f"{queue}Sub{_camel(event_type)}"] = {
                "Type": "AWS::SNS::Subscription",
                "Properties": {
                    "TopicArn": {"Ref": topic_id(event_type)},
                    "Protocol": "sqs",
                    "Endpoint": {"Fn::GetAtt": [queue, "Arn"]},
                    "RawMessageDelivery": True,
                },
            }
        outputs[f"{queue}Url"] = {"Value": {"Ref": queue}}
    for service in iam.services():
        for role in RUNTIME_ROLES:
            statements = iam.statements(service, role, iam.CLOUDFORMATION)
            if not statements:
                continue
            role_id = f"{_camel(service)}{_camel(role)}Role"
            resources[role_id] = {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "Description": f"League Manager: the {role} processes of {service}",
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Effect": "Allow", "Principal": {"Service": TRUSTED}, "Action": "sts:AssumeRole"}
                        ],
                    },
                    "Policies": [
                        {
                            "PolicyName": f"{service}-{role}-bus",
                            "PolicyDocument": {
                                "Version": "2012-10-17",
                                "Statement": [_statement(s) for s in statements],
                            },
                        }
                    ],
                },
            }
            outputs[f"{role_id}Arn"] = {"Value": {"Fn::GetAtt": [role_id, "Arn"]}}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"League Manager event bus ({settings.BUS_PREFIX}): SNS topics, SQS queues, IAM roles",
        "Resources": resources,
        "Outputs": outputs,
    }


def render() -> str:
    """Compact JSON: CloudFormation takes a template body of at most 51,200 bytes inline
    (the indented one is larger); ``python -m json.tool`` shows it indented."""
    return json.dumps(template(), separators=(",", ":"))
