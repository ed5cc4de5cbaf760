"""One id follows a request: X-Request-ID -> the events it writes (correlationid) -> the
consumers' log lines; an event written by a handler has the handled event as its cause."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from django.db import transaction

import events
from devtools.testing import BusDriver
from events import context, registry, topology
from events.models import OutboxMessage
from league.logging import formatter


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every log line, rendered as in production (JSON through league/logging.py)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter(json=True))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(old_level)


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_request_id_is_echoed_or_made(client, db):
    given = client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")
    assert given["X-Request-ID"] == "abc-123"
    made = client.get("/healthz")
    assert len(made["X-Request-ID"]) == 36
    unusable = client.get("/healthz", HTTP_X_REQUEST_ID="no spaces or <tags> please")
    assert unusable["X-Request-ID"] != "no spaces or <tags> please"


def test_one_id_from_the_request_to_the_transfers_consumer_log(auth_client, bus, json_log):
    rid = "req-7f3a-follow-me"

    response = auth_client.post("/api/teams/", {"name": "Ajax"}, format="json", HTTP_X_REQUEST_ID=rid)

    assert response.status_code == 201
    assert response["X-Request-ID"] == rid
    row = OutboxMessage.objects.get(type="team.created")
    assert row.envelope["correlationid"] == rid
    assert "causationid" not in row.envelope

    bus.drain()

    logged = lines(json_log)
    request_line = next(x for x in logged if x["logger"] == "league.request" and "/api/teams/" in x["event"])
    assert request_line["correlation_id"] == rid
    handled = [
        x
        for x in logged
        if x["logger"] == "events.consumer" and x["event"].startswith("consumer transfers:") and " handled " in x["event"]
    ]
    assert handled, logged
    assert handled[0]["level"] == "info"
    assert handled[0]["correlation_id"] == rid
    assert handled[0]["causation_id"] == str(row.event_id)
    assert str(row.event_id) in handled[0]["event"]
    # Outside the request and the handler nothing is bound.
    assert context.correlation_id.get() is None


def test_an_event_written_by_a_handler_is_caused_by_the_handled_event(aws_mock, db):
    def rename_on_create(event):
        events.publish("team.renamed", subject=event.subject, data={"id": 1, "name": "AFC Ajax", "old_name": "Ajax", "short_name": "TM"})

    probe = registry.Handler(service="probe", event_type="team.created", func=rename_on_create)
    registry._handlers.append(probe)
    try:
        topology.ensure(["probe"])
        with context.bound(correlation="corr-1"), transaction.atomic():
            created = events.publish("team.created", subject=1, data={"id": 1, "name": "Ajax", "short_name": "TM"})
        BusDriver(services=["probe"]).drain()
    finally:
        registry._handlers.remove(probe)

    renamed = OutboxMessage.objects.get(type="team.renamed")
    assert renamed.envelope["correlationid"] == "corr-1"
    assert renamed.envelope["causationid"] == str(created.event_id)
