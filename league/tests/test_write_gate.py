"""The write gate (``events/gate.py``) as clients meet it: while a service is being moved
its API answers 503 with Retry-After (a problem document), its admin too, reads keep
working, and its clock (the transfer sweeper) skips quietly. Nothing half-written."""

from __future__ import annotations

import pytest

from events import gate
from events.models import OutboxMessage


@pytest.mark.django_db
def test_a_paused_service_refuses_writes_with_503_and_keeps_reads(auth_client):
    from teams.models import Team

    gate.pause("teams")
    response = auth_client.post("/api/teams/", {"name": "Ajax"}, format="json")

    assert response.status_code == 503
    assert response["Retry-After"] == str(gate.RETRY_AFTER_SECONDS)
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["code"] == "service_paused"
    assert "being moved" in response.json()["detail"]
    assert Team.objects.count() == 0 and OutboxMessage.objects.count() == 0  # nothing half-written
    assert auth_client.get("/api/teams/").status_code == 200  # reads keep working

    gate.open_("teams")
    assert auth_client.post("/api/teams/", {"name": "Ajax"}, format="json").status_code == 201


@pytest.mark.django_db
def test_only_the_paused_service_is_refused(auth_client):
    gate.pause("fixtures")
    gate.pause("transfers")
    assert auth_client.post("/api/teams/", {"name": "Ajax"}, format="json").status_code == 201
    gate.pause("teams")
    assert auth_client.post("/api/teams/", {"name": "Benfica"}, format="json").status_code == 503


@pytest.mark.django_db
def test_a_moved_service_says_where_it_went(auth_client):
    gate.mark_moved("teams")
    response = auth_client.post("/api/teams/", {"name": "Ajax"}, format="json")
    assert response.status_code == 503
    assert response.json()["code"] == "service_moved"
    assert "moved to its own database" in response.json()["detail"]


@pytest.mark.django_db
def test_an_admin_write_to_a_paused_service_is_a_503_not_a_500(admin_client):
    from teams.models import Team

    gate.pause("teams")
    inlines = {f"{prefix}-{k}": "0" for prefix in ("players", "players-2") for k in ("TOTAL_FORMS", "INITIAL_FORMS")}
    response = admin_client.post("/admin/teams/team/add/", {"name": "Ajax", **inlines})
    assert response.status_code == 503
    assert response["Retry-After"] == str(gate.RETRY_AFTER_SECONDS)
    assert b"being moved" in response.content
    assert not Team.objects.exists()


def test_the_sweeper_task_skips_a_paused_service_quietly(db):
    from transfers import tasks
    from transfers.factories import TransferFactory

    TransferFactory(expires_at="2000-01-01T00:00:00Z")
    gate.pause("transfers")
    assert tasks.expire_transfers() == 0  # no traceback every 5 s during a move


@pytest.mark.django_db
def test_an_admin_login_is_a_signed_cookie_that_any_service_with_the_key_accepts(client, admin_user, settings):
    """Behind the front door /admin/login/ is the monolith's and /admin/transfers/ may be the
    moved service's: the session lives in the cookie, not in one database's table."""
    from django.contrib.sessions.models import Session
    from django.test import Client

    assert client.post("/admin/login/", {"username": "admin", "password": "password"}).status_code == 302
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert not Session.objects.exists()
    other = Client()  # another process: only the cookie travels
    other.cookies[settings.SESSION_COOKIE_NAME] = cookie
    assert other.get("/admin/transfers/transfer/").status_code == 200
    settings.SECRET_KEY = "another-key-another-deployment-0123456789"
    assert other.get("/admin/transfers/transfer/").status_code == 302  # to the login: not trusted
