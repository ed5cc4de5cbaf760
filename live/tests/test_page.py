"""The league page at ``/``: what a visitor sees, read from each service's published
queries (``events.queries``), with the whole league built through the API and the bus."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model

from events import queries

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]  # an end-to-end flow


def text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.fixture
def league(bus, auth_client):
    """Four teams, a season with a result on matchday 1, two transfers: all through the API."""
    ids = {}
    for name, players in [
        ("Reds", [("Ann Smith", "GK"), ("Bo Lind", "ST")]),
        ("Blues", [("Cy Wu", "DEF")]),
        ("Greens", []),
        ("Whites", []),
    ]:
        response = auth_client.post(
            "/api/teams/",
            {"name": name, "players": [{"name": n, "position": p} for n, p in players]},
            format="json",
        )
        assert response.status_code == 201, response.content
        ids[name] = response.json()
    bus.drain()
    season = auth_client.post("/api/seasons/", {"name": "2026/27", "starts_on": "2026-08-01"}, format="json")
    assert season.status_code == 201, season.content
    season_id = season.json()["id"]
    md1 = auth_client.get(f"/api/seasons/{season_id}/fixtures/?matchday=1").json()
    md1 = md1["results"] if isinstance(md1, dict) else md1
    first = md1[0]
    assert (
        auth_client.patch(
            f"/api/fixtures/{first['id']}/", {"home_goals": 3, "away_goals": 1}, format="json"
        ).status_code
        == 200
    )
    reds, blues = ids["Reds"], ids["Blues"]
    bo = next(p for p in reds["players"] if p["name"] == "Bo Lind")
    transfer = auth_client.post(
        "/api/transfers/",
        {"player_id": bo["id"], "from_team_id": reds["id"], "to_team_id": blues["id"], "fee": "250000.00"},
        format="json",
    )
    assert transfer.status_code == 201, transfer.content
    bus.drain()
    return {"teams": ids, "season_id": season_id, "first": first, "transfer": transfer.json()}


def test_the_page_shows_the_table_both_matchdays_transfers_and_squads(client, league):
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    page = text(html)
    # The current season's table: all four teams, the winner of the first game on 3 points.
    first = league["first"]
    winner = re.search(rf'<tr id="standing-{first["home_team"]["id"]}" data-played="1" data-points="3">', html)
    assert winner, html
    assert "2026/27" in page
    for name in ("Reds", "Blues", "Greens", "Whites"):
        assert name in page
    # Last matchday: the result; next matchday: the game still to play on matchday 1.
    last = html.split('id="last-matchday"')[1].split("</section>")[0]
    assert "MD1" in last and "3–1" in last
    assert ">v<" in last  # the games of matchday 1 still to play
    nxt = html.split('id="next-matchday"')[1].split("</section>")[0]
    assert "MD2" in nxt and ">v<" in nxt and "–" not in nxt
    # The transfer with its state after the saga, and the squads after the move.
    row = html.split(f'id="transfer-{league["transfer"]["id"]}"')[1].split("</tr>")[0]
    assert "Bo Lind" in row and "Reds → Blues" in text(row) and "completed" in row and "250,000" in row
    blues = html.split(f'id="team-{league["teams"]["Blues"]["id"]}"')[1].split("</details>")[0]
    assert "Bo Lind" in blues and "Cy Wu" in blues and "2 players" in text(blues)
    # Readable on a phone, links to the API docs, no CDN.
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert 'href="/api/docs/"' in html
    assert "https://" not in html and "http://" not in html
    assert 'sse-connect="/live/events"' in html


def test_the_fragment_is_the_same_content_without_the_page(client, league):
    fragment = client.get("/live/league").content.decode()
    assert "<html" not in fragment and 'id="standings"' in fragment and 'id="squads"' in fragment


def test_staff_see_the_admin_link_and_visitors_do_not(client, db):
    assert 'href="/admin/"' not in client.get("/").content.decode()
    staff = get_user_model().objects.create_user("desk", password="pw-desk-12345", is_staff=True)
    client.force_login(staff)
    assert 'href="/admin/"' in client.get("/").content.decode()


def test_an_empty_league_says_how_to_start(client, db):
    page = text(client.get("/").content.decode())
    assert "No season is scheduled yet" in page and "No team yet" in page and "No transfer yet" in page


def test_a_section_whose_service_runs_elsewhere_is_named_not_an_error(client, db, monkeypatch):
    monkeypatch.delitem(queries._queries, "transfers.recent")
    response = client.get("/")
    assert response.status_code == 200
    assert "the transfers service does not run in this process" in text(response.content.decode())


def test_the_stream_needs_an_asgi_server(client, db):
    """Under WSGI an open stream would hold a worker: 204 tells EventSource not to retry."""
    assert client.get("/live/events").status_code == 204
