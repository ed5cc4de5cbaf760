"""OpenTelemetry (league/telemetry.py, events/telemetry.py): one transfer is one trace, from
the HTTP request through the teams service and back, producer -> consumer through the
envelope's ``traceparent``; nothing is installed or written without the OTLP endpoint."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from django.db import transaction
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util._once import Once

import events
from events.models import OutboxMessage
from league import telemetry

RID = "otel-transfer-0001"


def _install(provider) -> object:
    """Make ``provider`` the global one (the API allows one per process: tests reset it)."""
    saved = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace.set_tracer_provider(provider)
    return saved


def _restore(saved) -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = saved


@pytest.fixture
def otel_spans() -> Iterator[InMemorySpanExporter]:
    """The SDK with the in-memory exporter and the project's instrumentations."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = _install(provider)
    telemetry.instrument(provider)
    try:
        yield exporter
    finally:
        telemetry.uninstrument()
        _restore(saved)


def create_team(client, name, players=()):
    body = {"name": name, "players": [{"name": n, "position": p} for n, p in players]}
    response = client.post("/api/teams/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


def test_one_transfer_is_one_trace_from_the_request_through_teams_and_back(otel_spans, bus, auth_client):
    reds = create_team(auth_client, "Reds", [("Ann Smith", "GK")])
    blues = create_team(auth_client, "Blues")
    bus.drain()
    otel_spans.clear()

    response = auth_client.post(
        "/api/transfers/",
        {"player_id": reds["players"][0]["id"], "from_team_id": reds["id"], "to_team_id": blues["id"], "fee": "1"},
        format="json",
        HTTP_X_REQUEST_ID=RID,
    )
    assert response.status_code == 201, response.content
    bus.drain()
    assert auth_client.get(f"/api/transfers/{response.json()['id']}/").json()["state"] == "completed"

    spans = otel_spans.get_finished_spans()
    request = next(s for s in spans if s.kind == SpanKind.SERVER and s.attributes.get("league.correlation_id") == RID)
    trace_id = request.context.trace_id
    ours = {s.context.span_id: s for s in spans if s.context.trace_id == trace_id}
    names = [s.name for s in ours.values()]
    for hop in (
        "publish transfer.requested",  # transfers, in the request
        "send transfer.requested",  # the relay
        "handle transfer.requested",  # teams moves the player ...
        "publish player.transferred",
        "send player.transferred",
        "handle player.transferred",  # ... and transfers completes the transfer
        "publish transfer.completed",
        "send transfer.completed",
    ):
        assert names.count(hop) == 1, (hop, sorted(names))
    # Every span of the saga hangs from the request span: one trace, not pieces.
    one = {s.name: s for s in ours.values()}
    for name in names:
        if name != request.name:
            assert request in ancestors(one[name], ours) or one[name] is request, name
    # Producer -> consumer: each handler's parent is the span that wrote its event, through
    # the envelope's W3C traceparent.
    assert one["handle transfer.requested"].parent.span_id == one["publish transfer.requested"].context.span_id
    assert one["handle player.transferred"].parent.span_id == one["publish player.transferred"].context.span_id
    assert one["publish player.transferred"].parent.span_id == one["handle transfer.requested"].context.span_id
    assert one["send transfer.requested"].parent.span_id == one["publish transfer.requested"].context.span_id
    assert one["handle transfer.requested"].kind == SpanKind.CONSUMER
    assert one["publish transfer.requested"].kind == SpanKind.PRODUCER
    row = OutboxMessage.objects.get(type="transfer.requested")
    publish = one["publish transfer.requested"]
    assert (
        row.envelope["traceparent"]
        == f"00-{trace_id:032x}-{publish.context.span_id:016x}-{publish.context.trace_flags:02x}"
    )
    assert one["send transfer.requested"].attributes["messaging.message.id"] == row.sns_message_id
    assert one["handle transfer.requested"].attributes["league.correlation_id"] == RID
    # botocore's own spans: the SNS publish (named for its topic) and the SQS calls.
    assert any(s.name == "leaguemanager-transfer-requested send" for s in spans), sorted({s.name for s in spans})
    assert any(s.name == "SQS.ReceiveMessage" for s in spans)


def test_a_handler_failure_is_an_error_span_and_a_bad_traceparent_starts_a_new_trace(otel_spans, aws_mock, db):
    from devtools.testing import BusDriver
    from events import registry, topology

    def explode(event):
        raise RuntimeError("boom")

    registry._handlers.append(registry.Handler(service="probe", event_type="team.created", func=explode))
    try:
        topology.ensure(["probe"])
        with transaction.atomic():
            row = events.publish("team.created", subject=1, data={"id": 1, "name": "Ajax", "short_name": "TM"})
            row.envelope["traceparent"] = "00-not-a-trace-context"
            row.save(update_fields=["envelope"])
        BusDriver(services=["probe"]).relay()
        BusDriver(services=["probe"]).consume("probe")
    finally:
        registry._handlers[:] = [h for h in registry._handlers if h.service != "probe"]
    handle = next(s for s in otel_spans.get_finished_spans() if s.name == "handle team.created")
    assert handle.status.status_code.name == "ERROR" and "boom" in handle.status.description
    assert handle.parent is None  # the malformed context was ignored, the event still handled


def test_off_by_default_nothing_installed_and_no_traceparent(db, settings):
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = ""
    assert telemetry.setup() is False
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with transaction.atomic():
        row = events.publish("team.created", subject=7, data={"id": 7, "name": "Ajax", "short_name": "TM"})
    assert "traceparent" not in row.envelope and "tracestate" not in row.envelope


def test_off_publish_starts_no_span_and_passes_a_received_context_on(db, settings, monkeypatch):
    """At no cost: without an SDK, ``publish`` does not go through a tracer at all; an
    event written by a handler still carries the context the handler received."""
    from opentelemetry import context as otel_context

    from events import telemetry as bus_telemetry

    assert not isinstance(trace.get_tracer_provider(), TracerProvider)

    def no_tracer():
        raise AssertionError("a tracer was asked for with no SDK installed")

    received = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with transaction.atomic():
        plain = events.publish("team.created", subject=8, data={"id": 8, "name": "Ajax", "short_name": "TM"})
        monkeypatch.setattr(bus_telemetry, "_tracer", no_tracer)
        token = otel_context.attach(bus_telemetry._parent({"traceparent": received}))  # as in a handler
        try:
            chained = events.publish("team.created", subject=9, data={"id": 9, "name": "PSV", "short_name": "PS"})
        finally:
            otel_context.detach(token)
    assert "traceparent" not in plain.envelope
    assert chained.envelope["traceparent"] == received


@pytest.fixture
def otlp_collector() -> Iterator[dict]:
    """A stand-in OTLP/HTTP receiver on loopback: records each POST's path and body."""
    got: dict = {"posts": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            got["posts"].append((self.path, self.headers.get("Content-Type"), body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    got["url"] = f"http://127.0.0.1:{server.server_port}"
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()


def test_with_the_endpoint_set_spans_are_exported_over_otlp(otlp_collector, settings, monkeypatch, db):
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = otlp_collector["url"]
    settings.OTEL_SERVICE_NAME = "league-test"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_collector["url"])
    saved = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    try:
        assert telemetry.setup() is True
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        with transaction.atomic():
            row = events.publish("team.created", subject=8, data={"id": 8, "name": "Ajax", "short_name": "TM"})
        assert row.envelope["traceparent"].startswith("00-")
        assert provider.force_flush(10_000)
    finally:
        telemetry.uninstrument()
        provider = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider):
            provider.shutdown()
        _restore(saved)
    paths = [(path, ctype) for path, ctype, _ in otlp_collector["posts"]]
    assert ("/v1/traces", "application/x-protobuf") in paths
    assert any(b"publish team.created" in body and b"league-test" in body for _, _, body in otlp_collector["posts"])


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_across_processes_the_relay_and_each_consumer_export_into_the_requests_trace(
    otel_spans, otlp_collector, moto_server, auth_client, settings
):
    """Real processes (``relay_outbox --once``, ``consume --drain`` per service), each with
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, export over OTLP/HTTP; their spans join the trace
    of the request made here, through the traceparent stored in each envelope."""
    import subprocess

    from django.core.management import call_command
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from devtools import testing

    call_command("setup_bus", verbosity=0)
    bus = testing.BusDriver(services=["transfers"])
    reds = create_team(auth_client, "Reds", [("Ann Smith", "GK")])
    blues = create_team(auth_client, "Blues")
    bus.drain()  # the transfers replica knows both teams (in this process)
    otel_spans.clear()
    response = auth_client.post(
        "/api/transfers/",
        {"player_id": reds["players"][0]["id"], "from_team_id": reds["id"], "to_team_id": blues["id"], "fee": "1"},
        format="json",
        HTTP_X_REQUEST_ID=RID,
    )
    assert response.status_code == 201, response.content
    request = next(s for s in otel_spans.get_finished_spans() if s.kind == SpanKind.SERVER)

    env = testing.child_env(moto_server, OTEL_EXPORTER_OTLP_ENDPOINT=otlp_collector["url"])
    for argv in (
        ("relay_outbox", "--once"),
        ("consume", "--service", "teams", "--drain", "--wait", "0", "--no-startup"),
        ("relay_outbox", "--once"),
        ("consume", "--service", "transfers", "--drain", "--wait", "0", "--no-startup"),
    ):
        done = subprocess.run(testing.manage_argv(*argv), env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    assert auth_client.get(f"/api/transfers/{response.json()['id']}/").json()["state"] == "completed"

    exported = []  # (service.name, span) from every process
    for _, _, body in otlp_collector["posts"]:
        message = ExportTraceServiceRequest.FromString(body)
        for resource_spans in message.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name")
            exported += [(service, s) for scope in resource_spans.scope_spans for s in scope.spans]
    in_trace = {s.name: s for _, s in exported if s.trace_id == request.context.trace_id.to_bytes(16, "big")}
    for hop in ("send transfer.requested", "handle transfer.requested", "publish player.transferred"):
        assert hop in in_trace, (hop, sorted({s.name for _, s in exported}))
    for hop in ("send player.transferred", "handle player.transferred", "publish transfer.completed"):
        assert hop in in_trace, (hop, sorted(in_trace))
    publish = next(s for s in otel_spans.get_finished_spans() if s.name == "publish transfer.requested")
    assert in_trace["handle transfer.requested"].parent_span_id == publish.context.span_id.to_bytes(8, "big")
    assert in_trace["handle player.transferred"].parent_span_id == in_trace["publish player.transferred"].span_id
    assert {service for service, _ in exported} == {"league"}


def test_a_request_sampled_out_still_passes_its_decision_on(db):
    """With a sampler that drops the request, the envelope still carries the context (flag
    not sampled), so the consumers' parent-based sampler drops their hops too."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = _install(provider)
    try:
        with transaction.atomic():
            row = events.publish("team.created", subject=9, data={"id": 9, "name": "Ajax", "short_name": "TM"})
    finally:
        _restore(saved)
    flags = int(row.envelope["traceparent"].rsplit("-", 1)[1], 16)
    assert flags & 1 == 0  # a valid context whose sampled flag is off
    assert exporter.get_finished_spans() == ()
