"""The event catalogue as an AsyncAPI 3.0 document (``manage.py asyncapi``).

Generated from the code that runs, so it cannot drift: channels are the SNS topics
(``aws.topic_name``), messages the CloudEvents envelope with each type's ``data`` schema
from ``catalogue.py``, ``send`` operations the publishing service, ``receive`` operations
every handler in ``registry`` with the queue it reads. The committed copy is
``docs/asyncapi.yaml``; ``manage.py asyncapi --check`` (run by the tests) fails when it is
stale.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from django.conf import settings

from . import aws, catalogue, envelope, registry

VERSION = "3.0.0"
DEFAULT_PATH = "docs/asyncapi.yaml"


def envelope_schema() -> dict[str, Any]:
    """CloudEvents 1.0, structured JSON mode, with this bus's extensions."""
    return {
        "type": "object",
        "description": (
            "CloudEvents 1.0 envelope in structured JSON mode: the SQS message body (raw delivery "
            "from SNS). `type` and `id` also travel as SNS/SQS message attributes."
        ),
        "required": ["specversion", "id", "source", "type", "time", "subject", "data", "sequence"],
        "properties": {
            "specversion": {"type": "string", "const": envelope.SPECVERSION},
            "id": {"type": "string", "format": "uuid", "description": "Unique per event; the inbox key."},
            "source": {"type": "string", "description": "`/league/<publishing service>`."},
            "type": {"type": "string", "description": "The event type, e.g. `team.created`."},
            "time": {"type": "string", "format": "date-time", "description": "When the change committed."},
            "subject": {"type": "string", "description": "The aggregate's id (what `sequence` counts)."},
            "datacontenttype": {"type": "string", "const": "application/json"},
            "dataversion": {"type": "string", "description": "Version of the `data` schema."},
            "sequence": {
                "type": "integer",
                "minimum": 1,
                "description": (
                    "Per-aggregate sequence number. SNS/SQS do not keep order: consumers drop an event "
                    "older than what they have."
                ),
            },
            "correlationid": {
                "type": "string",
                "description": "The X-Request-ID of the request that started the chain of events.",
            },
            "causationid": {"type": "string", "description": "The id of the event whose handler wrote this one."},
            "traceparent": {
                "type": "string",
                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                "description": (
                    "CloudEvents distributed-tracing extension: the W3C trace context of the span that "
                    "wrote the event (present when OpenTelemetry is on). A handler's span continues it."
                ),
            },
            "tracestate": {
                "type": "string",
                "description": "CloudEvents distributed-tracing extension: W3C `tracestate`, vendor trace data.",
            },
            "data": {"type": "object"},
        },
    }


def message_attributes_schema(event_type: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "SNS message attributes (SQS message attributes on delivery).",
        "properties": {
            "type": {"type": "string", "const": event_type},
            "id": {"type": "string", "format": "uuid"},
        },
    }


def _handlers() -> list[registry.Handler]:
    """The services' handlers (not test probes), in a stable order."""
    return sorted(
        (h for h in registry.handlers() if h.service in settings.SERVICES),
        key=lambda h: (h.event_type, h.service, h.name),
    )


def build() -> dict[str, Any]:
    types = [et for et in catalogue.EVENT_TYPES.values() if not et.retired]
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    schemas: dict[str, Any] = {"CloudEventsEnvelope": envelope_schema()}
    messages: dict[str, Any] = {}
    handlers = _handlers()

    for et in types:
        topic = aws.topic_name(et.name)
        # One message per version of the data: the current one under the type's name, each
        # older one as "<type>.v<n>" (consumers accept every version they know).
        channel_messages: dict[str, Any] = {}
        for version, schema in et.schemas.items():
            current = version == et.version
            key = et.name if current else f"{et.name}.v{version}"
            data_ref = f"{key}.data"
            schemas[data_ref] = copy.deepcopy(schema)
            message: dict[str, Any] = {
                "name": key,
                "title": f"{et.name} (data version {version}{', current' if current else ''})",
                "summary": et.description,
                "contentType": "application/json",
                "correlationId": {
                    "description": "The request that started the chain of events.",
                    "location": "$message.payload#/correlationid",
                },
                "headers": message_attributes_schema(et.name),
                "payload": {
                    "allOf": [
                        {"$ref": "#/components/schemas/CloudEventsEnvelope"},
                        {
                            "type": "object",
                            "properties": {
                                "type": {"const": et.name},
                                "source": {"const": f"{settings.BUS_SOURCE_PREFIX}/{et.source}"},
                                "dataversion": {"const": str(version)},
                                "data": {"$ref": f"#/components/schemas/{data_ref}"},
                            },
                        },
                    ]
                },
                "tags": [{"name": et.source}, {"name": f"aggregate:{et.aggregate}"}],
            }
            if et.examples and current:
                message["examples"] = [{"payload": example} for example in et.examples]
            messages[key] = message
            channel_messages[key] = {"$ref": f"#/components/messages/{key}"}
        channels[et.name] = {
            "address": topic,
            "title": et.name,
            "description": f"SNS topic of `{et.name}`. {et.description}",
            "messages": channel_messages,
            "bindings": {"sns": {"name": topic, "bindingVersion": "0.1.0"}},
        }
        every_version = [{"$ref": f"#/channels/{et.name}/messages/{key}"} for key in channel_messages]
        message_ref = [{"$ref": f"#/channels/{et.name}/messages/{et.name}"}]
        operations[f"{et.source}.send.{et.name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{et.name}"},
            "title": f"{et.source} publishes {et.name}",
            "summary": (
                f"Written to the {et.source} outbox in the transaction of the change; the relay publishes it "
                "at least once."
            ),
            "messages": message_ref,
            "tags": [{"name": et.source}],
        }
        for h in (h for h in handlers if h.event_type == et.name):
            queue = aws.queue_name(h.service)
            operations[f"{h.service}.receive.{et.name}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{et.name}"},
                "title": f"{h.service} handles {et.name}",
                "summary": (
                    f"`{h.func.__module__}.{h.func.__qualname__}`"
                    + (
                        ", on every instance (broadcast: one queue per running consumer)."
                        if h.broadcast
                        else f", from the shared queue `{queue}` (one instance per event; DLQ `{queue}-dlq`)."
                    )
                ),
                "messages": every_version,
                "bindings": {
                    "sqs": {
                        "queues": [
                            {
                                "name": queue,
                                "fifoQueue": aws.fifo(),
                                "deadLetterQueue": {"name": aws.queue_name(h.service, dlq=True), "fifoQueue": aws.fifo()},
                            }
                        ],
                        "bindingVersion": "0.2.0",
                    }
                },
                "tags": [{"name": h.service}],
            }

    return {
        "asyncapi": VERSION,
        "info": {
            "title": "League Manager event bus",
            "version": "1.0.0",
            "description": (
                "Events between the teams, transfers and fixtures services, on SNS (one topic per event "
                "type) and SQS (one queue per consuming service, with a dead-letter queue). Delivery is at "
                "least once and unordered: consumers deduplicate by event `id` and order by `sequence`.\n\n"
                "Generated by `manage.py asyncapi` from events/catalogue.py and the handler registry; do not "
                "edit by hand."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "aws": {
                "host": "sns.{region}.amazonaws.com",
                "protocol": "sns",
                "description": "Amazon SNS topics, delivering to SQS queues. Locally: moto.",
                "variables": {"region": {"default": settings.AWS_REGION}},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def render() -> str:
    header = "# Generated by `manage.py asyncapi`. Do not edit: change events/catalogue.py and regenerate.\n"
    return header + yaml.safe_dump(build(), sort_keys=False, allow_unicode=True, width=100)
