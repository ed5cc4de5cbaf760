"""The event trace (events/trace.py): one request's journey as a timeline, from the HTTP
request through every outbox row, publish, receive and handle, gathered from each service."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from events import trace
from events.models import InboxMessage, OutboxMessage

pytestmark = pytest.mark.slow  # end-to-end flows across the services, read back as traces

RID = "trace-transfer-0001"


def create_team(client, name, players=()):
    body = {"name": name, "players": [{"name": n, "position": p} for n, p in players]}
    response = client.post("/api/teams/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def transfer(bus, auth_client) -> dict:
    """A completed transfer, requested with X-Request-ID = RID; the bus drained."""
    reds = create_team(auth_client, "Reds", [("Ann Smith", "GK")])
    blues = create_team(auth_client, "Blues")
    bus.drain()
    response = auth_client.post(
        "/api/transfers/",
        {"player_id": reds["players"][0]["id"], "from_team_id": reds["id"], "to_team_id": blues["id"], "fee": "1"},
        format="json",
        HTTP_X_REQUEST_ID=RID,
    )
    assert response.status_code == 201, response.content
    bus.drain()
    assert auth_client.get(f"/api/transfers/{response.json()['id']}/").json()["state"] == "completed"
    return response.json()


def test_rows_record_the_request_and_each_hop(transfer):
    requested = OutboxMessage.objects.get(type="transfer.requested")
    assert (requested.correlation_id, requested.causation_id) == (RID, "")
    assert requested.request == "POST /api/transfers/"
    assert requested.request_at <= requested.created_at <= requested.published_at
    taken = InboxMessage.objects.get(event_id=requested.event_id)
    assert (taken.service, taken.correlation_id) == ("teams", RID)
    assert taken.received_at <= taken.started_at <= taken.handled_at
    assert taken.queued_at is not None  # SQS SentTimestamp
    # The teams handler's event: caused by the request, not written by a request.
    moved = OutboxMessage.objects.get(type="player.transferred")
    assert (moved.correlation_id, moved.causation_id, moved.request) == (RID, str(requested.event_id), "")


def test_the_trace_of_a_transfer_shows_every_hop_in_order(transfer):
    found = trace.gather(RID)
    hops = found.hops()
    rows = OutboxMessage.objects.filter(correlation_id=RID)
    handled = InboxMessage.objects.filter(correlation_id=RID)
    # transfer.requested (transfers) -> player.transferred (teams) -> transfer.completed (transfers)
    assert set(rows.values_list("type", flat=True)) == {
        "transfer.requested",
        "player.transferred",
        "transfer.completed",
    }
    assert handled.count() == 2  # teams took the request; transfers took the move

    assert hops[0].kind == "request" and hops[0].title == "POST /api/transfers/" and hops[0].offset_ms == 0
    kinds = [(h.kind, h.event_id) for h in hops]
    for row in rows:
        assert ("written", str(row.event_id)) in kinds
        assert ("published", str(row.event_id)) in kinds
    for row in handled:
        assert ("received", str(row.event_id)) in kinds and ("handled", str(row.event_id)) in kinds
    # A timeline: in time order, each hop after the one it follows (one clock here).
    assert [h.at for h in hops] == sorted(h.at for h in hops)
    assert all(h.after_ms is not None and h.after_ms >= 0 for h in hops[1:]), [(h.title, h.after_ms) for h in hops]
    # Causation: the teams handler of transfer.requested caused player.transferred ...
    teams_handled = next(h for h in hops if h.kind == "handled" and h.title == "transfer.requested handled by teams")
    assert "caused player.transferred" in teams_handled.detail
    assert "sns" not in teams_handled.detail.lower()
    published = next(h for h in hops if h.kind == "published" and h.title.startswith("transfer.requested"))
    assert OutboxMessage.objects.get(type="transfer.requested").sns_message_id in published.detail
    # ... and the saga ends with transfers handling the move (the transfer completed).
    back = next(h for h in hops if h.kind == "handled" and h.title == "player.transferred handled by transfers")
    assert back.depth == 2
    assert found.services == ["teams", "transfers"]
    assert not found.unfinished and not found.errors


def test_the_admin_trace_page_and_the_links_to_it(transfer, admin_client):
    page = admin_client.get(f"/admin/events/trace/{RID}/")
    assert page.status_code == 200
    html = page.content.decode()
    for kind in ("request", "written", "published", "received", "handled"):
        assert f'data-kind="{kind}"' in html
    assert "POST /api/transfers/" in html and "transfer.requested handled by teams" in html
    link = f'href="/admin/events/trace/{RID}/"'
    outbox = admin_client.get("/admin/events/outboxmessage/").content.decode()
    inbox = admin_client.get("/admin/events/inboxmessage/").content.decode()
    assert link in outbox and link in inbox
    row = OutboxMessage.objects.get(type="transfer.requested")
    assert link in admin_client.get(f"/admin/events/outboxmessage/{row.pk}/change/").content.decode()
    inbox_row = InboxMessage.objects.get(event_id=row.event_id)
    assert link in admin_client.get(f"/admin/events/inboxmessage/{inbox_row.pk}/change/").content.decode()

    # The admin index lists the trace page; its search box redirects to the trace; a bad id is a 400 with a message, not a 500.
    assert 'href="/admin/events/trace/">Event trace</a>' in admin_client.get("/admin/").content.decode()
    assert admin_client.get("/admin/events/trace/").status_code == 200
    assert admin_client.get("/admin/events/trace/", {"id": RID})["Location"] == f"/admin/events/trace/{RID}/"
    bad = admin_client.get("/admin/events/trace/", {"id": "no spaces/or slashes"})
    assert bad.status_code == 400 and b"1-128 letters" in bad.content
    unknown = admin_client.get("/admin/events/trace/nobody-sent-this/")
    assert unknown.status_code == 200 and b'id="trace-empty"' in unknown.content


def test_the_trace_page_needs_the_outbox_view_permission(client, django_user_model, db):
    django_user_model.objects.create_user("staff", password="pw-staff-123", is_staff=True)
    client.login(username="staff", password="pw-staff-123")
    assert client.get(f"/admin/events/trace/{RID}/").status_code == 403


def test_the_internal_endpoint_answers_only_with_the_token(client, settings, transfer):
    url = f"/internal/trace/{RID}/"
    settings.INTERNAL_TOKEN = ""
    disabled = client.get(url, HTTP_AUTHORIZATION="Bearer anything")
    assert disabled.status_code == 403 and "set INTERNAL_TOKEN" in disabled.json()["detail"]
    settings.INTERNAL_TOKEN = "s3cret-internal-token"
    assert client.get(url).status_code == 403
    assert client.get(url, HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    bad = client.get("/internal/trace/no%20spaces/", HTTP_AUTHORIZATION="Bearer s3cret-internal-token")
    assert bad.status_code == 400 and "correlation id" in bad.json()["detail"]
    part = client.get(url, HTTP_AUTHORIZATION="Bearer s3cret-internal-token").json()
    assert {r["type"] for r in part["outbox"]} >= {"transfer.requested", "player.transferred"}
    assert {r["service"] for r in part["inbox"]} >= {"teams", "transfers"}


@pytest.mark.parametrize(
    "header", ["s3cret-internal-token", "Token s3cret-internal-token", "Basic s3cret-internal-token", "Bearer", ""]
)
def test_the_internal_token_counts_only_in_the_bearer_scheme(client, settings, header):
    settings.INTERNAL_TOKEN = "s3cret-internal-token"

    response = client.get(f"/internal/trace/{RID}/", HTTP_AUTHORIZATION=header)

    assert response.status_code == 403
    assert "Bearer" in response.json()["detail"]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_case_insensitive(client, settings, db, scheme):
    settings.INTERNAL_TOKEN = "s3cret-internal-token"

    response = client.get(f"/internal/trace/{RID}/", HTTP_AUTHORIZATION=f"{scheme} s3cret-internal-token")

    assert response.status_code == 200


@pytest.fixture
def teams_part_server(settings) -> Iterator[dict]:
    """A stand-in for the teams service's web: serves ``state["part"]`` at
    /internal/trace/<id>/ to callers with the token, on a free loopback port."""
    state: dict = {"part": {"outbox": [], "inbox": []}, "auth": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            state["auth"].append(self.headers.get("Authorization"))
            ok = self.headers.get("Authorization") == "Bearer s3cret-internal-token"
            body = json.dumps(state["part"] if ok else {"detail": "no"}).encode()
            self.send_response(200 if ok else 403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_port}"
    settings.INTERNAL_TOKEN = "s3cret-internal-token"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_microservices_the_parts_of_each_service_are_merged(transfer, settings, teams_part_server, admin_client):
    """Split as in the microservices deployment: the teams rows live only in the 'teams
    service' (served over its internal endpoint); this database keeps the rest. The trace
    joins them; a service that does not answer is named, and the rest still shows."""
    full = trace.local_part(RID)
    teams_part = {
        "service": "teams",
        "outbox": [r for r in full["outbox"] if r["service"] == "teams"],
        "inbox": [r for r in full["inbox"] if r["service"] == "teams"],
    }
    assert teams_part["outbox"] and teams_part["inbox"]
    OutboxMessage.objects.filter(correlation_id=RID, envelope__source="/league/teams").delete()
    InboxMessage.objects.filter(correlation_id=RID, service="teams").delete()
    teams_part_server["part"] = teams_part
    down = "http://127.0.0.1:9"  # discard port: nothing listens
    settings.TRACE_SERVICE_URLS = [teams_part_server["url"], down]
    settings.TRACE_FETCH_TIMEOUT = 2.0

    merged = trace.gather(RID)

    assert teams_part_server["auth"] == ["Bearer s3cret-internal-token"]
    assert sorted(r["event_id"] for r in merged.outbox) == sorted(r["event_id"] for r in full["outbox"])
    assert len(merged.inbox) == len(full["inbox"])
    assert merged.errors == [f"{down}: unreachable (ConnectionError)"]
    hops = merged.hops()
    teams_handled = next(h for h in hops if h.title == "transfer.requested handled by teams")
    assert "caused player.transferred" in teams_handled.detail
    assert teams_handled.link == ""  # a row of another service: no admin page here
    page = admin_client.get(f"/admin/events/trace/{RID}/").content.decode()
    assert "transfer.requested handled by teams" in page and "Part of the trace is missing" in page

    # Without the token nobody is asked, and the page says why.
    settings.INTERNAL_TOKEN = ""
    alone = trace.gather(RID)
    assert "INTERNAL_TOKEN is not set here" in alone.errors[0] and len(alone.inbox) < len(full["inbox"])
    settings.INTERNAL_TOKEN = "s3cret-internal-token"

    # Rows a service sends that are not trace rows are left out, not a 500.
    teams_part_server["part"] = {"outbox": [{"event_id": "x"}, "junk"], "inbox": [None, {"handler": 1}]}
    settings.TRACE_SERVICE_URLS = [teams_part_server["url"]]
    assert admin_client.get(f"/admin/events/trace/{RID}/").status_code == 200

    # The same merge, deduplicated, when every service answers with rows already here.
    teams_part_server["part"] = teams_part
    settings.TRACE_SERVICE_URLS = [teams_part_server["url"], teams_part_server["url"]]
    twice = trace.gather(RID)
    assert len(twice.outbox) == len(full["outbox"]) and len(twice.inbox) == len(full["inbox"]) and not twice.errors


@pytest.mark.django_db(transaction=True)
def test_the_parts_come_over_the_real_internal_endpoint(bus, auth_client, live_server, settings, monkeypatch):
    """The page's service asks a running web (``live_server``) with the token; here the
    caller's own database part is hidden, so every row of the trace came over HTTP."""
    response = auth_client.post("/api/teams/", {"name": "Blues"}, format="json", HTTP_X_REQUEST_ID="over-http-1")
    assert response.status_code == 201
    bus.drain()
    real_local_part = trace.local_part
    caller = threading.get_ident()
    monkeypatch.setattr(
        trace,
        "local_part",
        lambda cid: {"outbox": [], "inbox": []} if threading.get_ident() == caller else real_local_part(cid),
    )
    settings.INTERNAL_TOKEN = "s3cret-internal-token"
    settings.TRACE_SERVICE_URLS = [live_server.url]

    found = trace.gather("over-http-1")

    assert not found.errors
    assert [r["type"] for r in found.outbox] == ["team.created"]
    assert {r["handler"].split(":")[0] for r in found.inbox} == {"transfers", "fixtures"}
    assert all(not r["local"] for r in found.outbox + found.inbox)
    kinds = [h.kind for h in found.hops()]
    assert kinds[0] == "request" and kinds.count("handled") == 2
