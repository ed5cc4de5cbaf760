"""Probes: /healthz answers while the process lives; /readyz checks the database, the
Celery broker and the bus, and names what fails."""

from __future__ import annotations

import pytest

from devtools.netutil import free_port


def test_healthz_answers_without_touching_anything(client, db, settings, django_assert_num_queries):
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"].startswith("max-age=0")


def test_readyz_is_ready_when_database_broker_and_bus_answer(client, bus):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok" and body["failing"] == []
    assert set(body["checks"]) == {"database", "broker", "bus"}
    assert all(c["ok"] for c in body["checks"].values())


def test_readyz_names_the_bus_when_sqs_is_down(client, db, settings):
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"  # a closed port
    settings.HEALTH_CHECK_TIMEOUT = 0.5

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["bus"]
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    assert "EndpointConnectionError" in body["checks"]["bus"]["error"]


def test_readyz_names_the_bus_when_the_topology_is_missing(client, aws_mock, db):
    """SNS answers but the queues were never created (``setup_bus`` not run)."""
    body = client.get("/readyz").json()
    assert body["failing"] == ["bus"]
    assert "setup_bus" in body["checks"]["bus"]["error"]


def test_readyz_names_the_broker_when_it_is_down(client, bus, settings, monkeypatch):
    from league.celery import app

    settings.HEALTH_CHECK_TIMEOUT = 0.5
    monkeypatch.setattr(app.conf, "broker_url", f"redis://127.0.0.1:{free_port()}/0")  # a closed port
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["broker"]


def test_readyz_names_the_database_when_it_fails(client, bus, monkeypatch):
    from django.db import OperationalError

    from league import health

    def broken() -> None:
        raise OperationalError("connection refused")

    monkeypatch.setitem(health.CHECKS, "database", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["database"]
    assert body["checks"]["database"]["error"] == "OperationalError: connection refused"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_refuse_writes(client, path):
    assert client.post(path).status_code == 405
