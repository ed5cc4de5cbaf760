"""The CloudEvents 1.0 envelope (structured JSON mode) that travels as the SQS body.

Attributes: specversion, id, source, type, time, subject, datacontenttype, data, and the
extensions dataversion, sequence, correlationid, causationid, and (when OpenTelemetry is
on, events/telemetry.py) the distributed-tracing extension's traceparent and tracestate:
the W3C trace context of the span that wrote the event.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

SPECVERSION = "1.0"
REQUIRED = ("specversion", "id", "source", "type", "time", "subject", "data", "sequence")


class EnvelopeError(ValueError):
    """The message body is not a CloudEvents envelope this bus can read."""


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    source: str
    subject: str
    time: datetime
    sequence: int
    data: dict[str, Any]
    dataversion: str = "1"
    correlationid: str | None = None
    causationid: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None

    @classmethod
    def from_envelope(cls, envelope: dict[str, Any]) -> Event:
        if not isinstance(envelope, dict):
            raise EnvelopeError("envelope is not a JSON object")
        missing = [k for k in REQUIRED if k not in envelope]
        if missing:
            raise EnvelopeError(f"envelope lacks {', '.join(missing)}")
        if envelope["specversion"] != SPECVERSION:
            raise EnvelopeError(f"specversion {envelope['specversion']!r} is not {SPECVERSION}")
        if not isinstance(envelope["data"], dict):
            raise EnvelopeError("data is not a JSON object")
        try:
            time = datetime.fromisoformat(str(envelope["time"]).replace("Z", "+00:00"))
            sequence = int(envelope["sequence"])
            uuid.UUID(str(envelope["id"]))
        except (TypeError, ValueError) as exc:
            raise EnvelopeError(f"bad id, time or sequence: {exc}") from None
        return cls(
            id=str(envelope["id"]),
            type=str(envelope["type"]),
            source=str(envelope["source"]),
            subject=str(envelope["subject"]),
            time=time,
            sequence=sequence,
            data=envelope["data"],
            dataversion=str(envelope.get("dataversion", "1")),
            correlationid=envelope.get("correlationid"),
            causationid=envelope.get("causationid"),
            traceparent=_text(envelope.get("traceparent")),
            tracestate=_text(envelope.get("tracestate")),
        )

    @classmethod
    def from_body(cls, body: str) -> Event:
        try:
            envelope = json.loads(body)
        except (TypeError, ValueError) as exc:
            raise EnvelopeError(f"body is not JSON: {exc}") from None
        return cls.from_envelope(envelope)


def build(
    *,
    event_id: str,
    source: str,
    type: str,
    time: datetime,
    subject: str,
    sequence: int,
    data: dict[str, Any],
    dataversion: int,
    correlationid: str | None,
    causationid: str | None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": event_id,
        "source": source,
        "type": type,
        "time": time.isoformat().replace("+00:00", "Z"),
        "subject": subject,
        "datacontenttype": "application/json",
        "dataversion": str(dataversion),
        "sequence": sequence,
        "data": data,
    }
    if correlationid:
        envelope["correlationid"] = correlationid
    if causationid:
        envelope["causationid"] = causationid
    if traceparent:
        envelope["traceparent"] = traceparent
        if tracestate:
            envelope["tracestate"] = tracestate
    return envelope


def _text(value: Any) -> str | None:
    """A tracing attribute as text, or None: a malformed one must not cost the event."""
    return value if isinstance(value, str) and 0 < len(value) <= 512 else None
