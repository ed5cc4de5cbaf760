"""Idempotency-Key on the API's POSTs (idempotency/middleware.py), through the real stack:
Django's test client (token authentication, the services, the database), and for
concurrency a real threaded HTTP server on PostgreSQL."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from conftest import with_roles
from events.models import OutboxMessage
from idempotency.middleware import fingerprint, purge
from idempotency.models import IdempotencyKey
from teams.models import Team
from transfers.factories import PlayerReplicaFactory, TeamReplicaFactory
from transfers.models import Transfer

TEAMS = "/api/teams/"


def post(client, path, body, key, **extra):
    return client.post(path, json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY=key, **extra)


def client_of(username: str) -> APIClient:
    user = with_roles(get_user_model().objects.create_user(username=username, password="pw-123-abc"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.mark.django_db
def test_a_retried_post_gets_the_first_response_and_creates_once(auth_client):
    first = post(auth_client, TEAMS, {"name": "Ajax"}, "key-1")
    again = post(auth_client, TEAMS, {"name": "Ajax"}, "key-1")

    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again["Content-Type"] == first["Content-Type"]
    assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert Team.objects.count() == 1
    assert OutboxMessage.objects.filter(type="team.created").count() == 1


@pytest.mark.django_db
def test_a_retried_transfer_request_is_recorded_once(auth_client):
    reds = TeamReplicaFactory(team_id=1, name="Reds")
    TeamReplicaFactory(team_id=2, name="Blues")
    PlayerReplicaFactory(team=reds, player_id=11, name="Ann", position="GK")
    body = {"player_id": 11, "from_team_id": 1, "to_team_id": 2, "fee": "10.00"}

    first = post(auth_client, "/api/transfers/", body, "transfer-1")
    again = post(auth_client, "/api/transfers/", body, "transfer-1")

    assert (first.status_code, again.status_code) == (201, 201)  # not 409 "in flight"
    assert again.json() == first.json()
    assert Transfer.objects.count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_a_422(auth_client):
    assert post(auth_client, TEAMS, {"name": "Ajax"}, "key-1").status_code == 201
    response = post(auth_client, TEAMS, {"name": "PSV"}, "key-1")

    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "idempotency_key_reused"
    assert not Team.objects.filter(name="PSV").exists()


@pytest.mark.django_db
def test_the_same_key_on_another_path_is_a_422(auth_client):
    team = post(auth_client, TEAMS, {"name": "Ajax"}, "key-1").json()
    response = post(auth_client, f"{TEAMS}{team['id']}/players/", {"name": "Ajax"}, "key-1")
    assert response.status_code == 422


@pytest.mark.django_db
def test_keys_are_per_user(auth_client):
    other = client_of("other-desk")
    assert post(auth_client, TEAMS, {"name": "Ajax"}, "shared").status_code == 201
    # Not the first user's response: the other user's request runs (and the name is taken).
    response = post(other, TEAMS, {"name": "Ajax"}, "shared")
    assert response.status_code == 409 and "Idempotent-Replayed" not in response
    assert response.json()["code"] == "conflict"


@pytest.mark.django_db
def test_a_rule_refusal_is_kept_and_answered_again(auth_client):
    """A 409 a rule answered is the request's outcome: the same key answers it again,
    even after the state changed."""
    taken = Team.objects.create(name="Ajax")
    assert post(auth_client, TEAMS, {"name": "Ajax"}, "key-1").status_code == 409
    taken.delete()
    again = post(auth_client, TEAMS, {"name": "Ajax"}, "key-1")
    assert again.status_code == 409 and again["Idempotent-Replayed"] == "true"
    assert not Team.objects.exists()


@pytest.mark.django_db
def test_a_malformed_request_releases_the_key(auth_client):
    assert post(auth_client, TEAMS, {"name": 5}, "key-1").status_code == 400
    assert post(auth_client, TEAMS, {"name": "Ajax"}, "key-1").status_code == 201
    assert Team.objects.count() == 1


@pytest.mark.django_db
def test_a_request_in_progress_is_a_409(auth_client, user):
    body = b'{"name": "Ajax"}'
    IdempotencyKey.objects.create(
        user=user, key="key-1", fingerprint=fingerprint("POST", TEAMS, body), created_at=timezone.now()
    )
    response = auth_client.post(TEAMS, body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_in_progress" and response["Retry-After"] == "1"
    assert not Team.objects.exists()


@pytest.mark.django_db
def test_a_key_is_kept_24_hours_then_free_and_purged(auth_client, settings):
    assert settings.IDEMPOTENCY_KEY_TTL == timedelta(hours=24)
    assert post(auth_client, TEAMS, {"name": "Ajax"}, "key-1").status_code == 201
    assert post(auth_client, TEAMS, {"name": "PSV"}, "key-2").status_code == 201
    IdempotencyKey.objects.filter(key="key-1").update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    IdempotencyKey.objects.filter(key="key-2").update(created_at=timezone.now() - timedelta(hours=23))

    # Expired: the key is free again and the request runs (the name is taken now).
    assert post(auth_client, TEAMS, {"name": "Ajax"}, "key-1").status_code == 409
    IdempotencyKey.objects.filter(key="key-1").update(created_at=timezone.now() - timedelta(hours=25))
    assert purge() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["key-2"]
    assert post(auth_client, TEAMS, {"name": "PSV"}, "key-2")["Idempotent-Replayed"] == "true"


def test_beat_purges_the_keys_hourly():
    from league.celery import app

    app.finalize()
    entry = app.conf.beat_schedule["purge-idempotency-keys"]
    assert entry["task"] == "idempotency.purge_keys" and entry["schedule"] == timedelta(hours=1)
    from idempotency.tasks import purge_keys

    assert purge_keys.name == "idempotency.purge_keys"


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "a b"])
def test_a_bad_key_is_a_400(auth_client, key):
    response = post(auth_client, TEAMS, {"name": "Ajax"}, key)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_idempotency_key"
    assert not Team.objects.exists()


@pytest.mark.django_db
def test_an_anonymous_post_is_refused_as_without_a_key(api_client):
    response = post(api_client, TEAMS, {"name": "Ajax"}, "key-1")
    assert response.status_code == 401
    assert not IdempotencyKey.objects.exists()


@pytest.mark.django_db
def test_without_a_key_every_post_runs(auth_client):
    assert auth_client.post(TEAMS, {"name": "Ajax"}, format="json").status_code == 201
    assert auth_client.post(TEAMS, {"name": "Ajax"}, format="json").status_code == 409
    assert not IdempotencyKey.objects.exists()


def test_every_post_documents_the_header(client, db):
    schema = client.get("/api/schema/?format=json").json()
    posts = [(path, item["post"]) for path, item in schema["paths"].items() if "post" in item]
    assert posts
    for path, op in posts:
        [header] = [p for p in op.get("parameters", []) if p["in"] == "header" and p["name"] == "Idempotency-Key"]
        assert header["required"] is False and header["schema"]["maxLength"] == 255, path
        assert "422" in op["responses"] and "409" in op["responses"], path


# --------------------------------------------------------------------------------------
# Concurrency: a real threaded server on PostgreSQL
# --------------------------------------------------------------------------------------
@pytest.fixture
def served(transactional_db, live_server, settings):
    settings.OUTBOX_KICK = False
    user = with_roles(get_user_model().objects.create_user(username="racer", password="pw-123-abc"))
    session = requests.Session()
    session.headers["Authorization"] = f"Token {Token.objects.create(user=user).key}"
    return live_server.url, session


@pytest.mark.postgres
def test_a_second_request_while_the_first_works_is_a_409_and_nothing_twice(served, monkeypatch):
    url, session = served
    from teams import services

    release, working = threading.Event(), threading.Event()
    create = services.team_create

    def held_create(**kwargs):
        working.set()
        assert release.wait(30)
        return create(**kwargs)

    monkeypatch.setattr(services, "team_create", held_create)
    headers = {"Idempotency-Key": "race-1"}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(session.post, f"{url}{TEAMS}", json={"name": "Ajax"}, headers=headers, timeout=30)
        assert working.wait(10)  # the first request is inside the work, its key claimed
        second = session.post(f"{url}{TEAMS}", json={"name": "Ajax"}, headers=headers, timeout=30)
        release.set()
        first = first.result()
    assert second.status_code == 409 and second.json()["code"] == "idempotency_key_in_progress"
    assert first.status_code == 201
    third = session.post(f"{url}{TEAMS}", json={"name": "Ajax"}, headers=headers, timeout=30)
    assert (third.status_code, third.json()) == (201, first.json())
    assert Team.objects.count() == 1


@pytest.mark.postgres
def test_concurrent_requests_with_one_key_create_one_thing(served):
    url, session = served
    headers = {"Idempotency-Key": "race-2"}
    start = threading.Barrier(8)

    def send(_):
        start.wait(10)
        return session.post(f"{url}{TEAMS}", json={"name": "Ajax"}, headers=headers, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409} and 201 in statuses, statuses
    # Each 409 is "in progress", never "name taken": nothing ran twice.
    assert all(r.json()["code"] == "idempotency_key_in_progress" for r in responses if r.status_code == 409)
    assert len({r.content for r in responses if r.status_code == 201}) == 1
    assert Team.objects.count() == 1
    assert OutboxMessage.objects.filter(type="team.created").count() == 1
