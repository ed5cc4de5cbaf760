"""Security checks: anonymous users cannot write, a token does not open the admin,
production settings refuse to start half-configured, and the bus accepts only its own
messages."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authtoken.models import Token
from rest_framework.views import APIView

WRITE_METHODS = ("post", "put", "patch", "delete")


def _drf_write_endpoints() -> list[tuple[str, str]]:
    """(path, method) of every DRF view in the URL conf that accepts a write method; path
    parameters filled with a plausible value (the permission check comes before lookup)."""
    found: list[tuple[str, str]] = []

    def walk(patterns, prefix: str) -> None:
        for p in patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                walk(p.url_patterns, route)
            elif isinstance(p, URLPattern):
                view = getattr(p.callback, "cls", None)
                if view is None or not issubclass(view, APIView):
                    continue
                path = "/" + re.sub(r"<(?:\w+:)?\w+>", "1", route.replace("^", "").replace("$", ""))
                for method in WRITE_METHODS:
                    if hasattr(view, method):
                        found.append((path, method))

    walk(get_resolver().url_patterns, "")
    return found


def test_the_url_conf_has_write_endpoints_to_check():
    paths = {path for path, _ in _drf_write_endpoints()}
    assert "/api/teams/" in paths
    if "transfers" in settings.ACTIVE_SERVICES:
        assert "/api/transfers/" in paths


@pytest.mark.django_db
@pytest.mark.parametrize("path,method", _drf_write_endpoints())
def test_anonymous_writes_are_refused(api_client, path, method):
    """Every write endpoint answers 401/403 to an anonymous request and writes nothing."""
    from events.models import OutboxMessage

    response = getattr(api_client, method)(path, data={}, format="json")
    assert response.status_code in (401, 403), (path, method, response.status_code)
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_a_bad_token_is_refused(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert api_client.post("/api/teams/", {"name": "X"}, format="json").status_code == 401


@pytest.mark.django_db
def test_a_service_token_does_not_open_the_admin(client, user):
    """A non-staff user's API token gives no access to the admin: it redirects to login."""
    token = Token.objects.create(user=user)
    response = client.get("/admin/", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    client.force_login(user)  # a session of a non-staff user does not either
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_the_admin_opens_for_staff(client, django_user_model):
    staff = django_user_model.objects.create_user(username="staff", password="pw-staff-123", is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/").status_code == 200


def _production_env(tmp_path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE")}
    env.update(
        DEBUG="false",
        DATA_DIR=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="example.com",
    )
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=settings.BASE_DIR,
    )


@pytest.mark.parametrize(
    "missing,message",
    [("SECRET_KEY", "SECRET_KEY is not set"), ("ALLOWED_HOSTS", "ALLOWED_HOSTS is not set")],
)
@pytest.mark.slow
def test_production_refuses_to_start_without(tmp_path, missing, message):
    env = _production_env(tmp_path)
    env.pop(missing)
    done = _manage("check", env=env)
    assert done.returncode != 0
    assert message in done.stderr


@pytest.mark.slow
def test_production_refuses_an_empty_secret_key(tmp_path):
    done = _manage("check", env=_production_env(tmp_path, SECRET_KEY=""))
    assert done.returncode != 0
    assert "SECRET_KEY is not set" in done.stderr


@pytest.mark.slow
def test_check_deploy_is_clean_with_production_settings(tmp_path):
    done = _manage("check", "--deploy", "--fail-level", "WARNING", env=_production_env(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNINGS" not in done.stdout + done.stderr
    assert "no issues" in done.stdout


# ------------------------------------------------------------------------- the bus
def test_every_queue_policy_admits_only_this_bus_topics(aws_mock, db):
    """Each service queue lets SNS send only from this bus's topics of the types the
    service handles; the DLQs accept no topic at all."""
    from events import aws, registry, topology

    topology.ensure()
    for service in topology.consuming_services():
        url = aws.queue_url(aws.queue_name(service))
        [statement] = json.loads(aws.queue_attributes(url, "Policy")["Policy"])["Statement"]
        assert statement["Effect"] == "Allow"
        assert statement["Action"] == "sqs:SendMessage"
        assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
        allowed = statement["Condition"]["ArnEquals"]["aws:SourceArn"]
        allowed = [allowed] if isinstance(allowed, str) else allowed
        assert sorted(allowed) == sorted(aws.topic_arn(t) for t in registry.subscriptions(service))
        assert all(arn.split(":")[-1].startswith(f"{settings.BUS_PREFIX}-") for arn in allowed)
        dlq = aws.queue_url(aws.queue_name(service, dlq=True))
        dlq_policy = aws.client("sqs").get_queue_attributes(QueueUrl=dlq, AttributeNames=["Policy"])
        dlq_policy = dlq_policy.get("Attributes", {}).get("Policy")
        assert not dlq_policy or "sns.amazonaws.com" not in dlq_policy


@pytest.mark.parametrize("source", ["/league/transfers", "/somebody/else", "league/teams"])
def test_consumer_dead_letters_an_event_from_another_source(bus, source):
    """A well-formed team.created that does not come from the teams service of this bus
    (another service of the bus, or outside it) is not handled: it goes to the DLQ."""
    import uuid

    from events import aws
    from events.consumer import Consumer
    from events.models import InboxMessage

    envelope = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": source,
        "type": "team.created",
        "time": "2026-07-01T12:00:00Z",
        "subject": "1",
        "datacontenttype": "application/json",
        "data": {"id": 1, "name": "Forged", "players": []},
        "dataversion": "1",
        "sequence": 1,
    }
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=aws.queue_url(aws.queue_name("fixtures")), MessageBody=json.dumps(envelope))
    stats = Consumer("fixtures", wait_seconds=0, check_topology=False).run(drain=True)
    assert stats.dead_lettered == 1
    assert not InboxMessage.objects.exists()
    dlq = sqs.receive_message(QueueUrl=aws.queue_url(aws.queue_name("fixtures", dlq=True)), MessageAttributeNames=["All"])
    [message] = dlq["Messages"]
    assert json.loads(message["Body"])["id"] == envelope["id"]
    assert "not this bus" in message["MessageAttributes"]["reason"]["StringValue"]
