"""The ASGI web server (uvicorn: runstack, compose's monolith) on PostgreSQL holds no
connection per request. Django runs each request's sync code on a thread of its own under
ASGI, so a persistent connection (``CONN_MAX_AGE`` > 0) is left behind by every request
until its thread is collected: under traffic the web alone used up PostgreSQL's 100
connections and writes failed with "too many clients" (a 500 in CI's cutover test).
Django's advice, followed in ``league/asgi.py``: no persistent connections under ASGI."""

from __future__ import annotations

import psycopg
import pytest
import requests
from django.db import connection
from rest_framework.authtoken.models import Token

from devtools.testing import database_url
from events import topology
from live.testing import web_instances

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REQUESTS = 60


def open_connections() -> int:
    """Connections to this test's database other than this process's own."""
    name = connection.settings_dict["NAME"]
    with psycopg.connect(database_url().replace(f"/{name}", "/postgres"), autocommit=True) as admin:
        return admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
            [name, connection.cursor().connection.info.backend_pid],
        ).fetchone()[0]


def test_requests_to_the_asgi_web_leave_no_connection_behind(moto_server, django_user_model):
    topology.ensure()
    user = django_user_model.objects.create_superuser("desk", "desk@example.com", "pw-desk-12345")
    token = Token.objects.create(user=user).key
    with web_instances(1, moto_server, CONN_MAX_AGE="60") as (web,):
        before = open_connections()
        with requests.Session() as http:
            for i in range(REQUESTS):
                r = http.post(
                    f"{web.url}/api/teams/",
                    json={"name": f"Conn Rovers {i}"},
                    headers={"Authorization": f"Token {token}"},
                    timeout=10,
                )
                assert r.status_code == 201, r.text
                assert http.get(f"{web.url}/api/teams/", timeout=10).status_code == 200
        after = open_connections()
    assert after - before <= 2, f"{after - before} connections left open by {REQUESTS * 2} requests"
