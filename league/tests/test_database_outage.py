"""A database outage as the web's clients see it: a real web server process (uvicorn, as
runstack and compose serve it) on a PostgreSQL database that stops accepting connections
(``ALLOW_CONNECTIONS false``, every open one terminated). The promise is kept in
``league/middleware.py`` (``DatabaseOutageMiddleware``)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator

import psycopg
import pytest
import requests
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.test import Client
from rest_framework.authtoken.models import Token

from devtools.testing import database_url, wait_until
from events import topology
from kernel.api import PROBLEM_CONTENT_TYPE
from league.middleware import database_outage
from live.testing import web_instances


@contextlib.contextmanager
def database_refusing_connections() -> Iterator[Callable[[], None]]:
    """The test database refuses every new connection and loses its open ones until
    ``end()`` (at the latest when the block is left)."""
    name = connection.settings_dict["NAME"]
    admin = psycopg.connect(database_url().replace(f"/{name}", "/postgres"), autocommit=True)
    ended = False

    def end() -> None:
        nonlocal ended
        if not ended:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            ended = True

    connection.close()
    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        [name],
    )
    try:
        yield end
    finally:
        end()
        admin.close()
        connection.close()


def _retry_after(response: requests.Response) -> int:
    value = response.headers.get("Retry-After", "")
    assert value.isdigit() and int(value) > 0, f"Retry-After {value!r} on {response.request.url}"
    return int(value)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_database_outage_is_a_503_with_retry_after_from_the_api_and_the_admin(moto_server, django_user_model):
    topology.ensure()
    staff = django_user_model.objects.create_superuser("desk", "desk@example.com", "pw-desk-12345")
    token = Token.objects.create(user=staff).key
    browser = Client()
    browser.force_login(staff)
    session = {"sessionid": browser.cookies["sessionid"].value}
    # The web signs sessions with the same key as this process, so the session made here is valid there.
    with web_instances(1, moto_server, SECRET_KEY=settings.SECRET_KEY) as (web,), requests.Session() as http:
        assert http.get(f"{web.url}/api/teams/", timeout=10).status_code == 200
        admin = http.get(f"{web.url}/admin/", cookies=session, timeout=10, allow_redirects=False)
        assert admin.status_code == 200 and "administration" in admin.text
        with database_refusing_connections() as end:
            read = http.get(f"{web.url}/api/teams/", timeout=10)
            write = http.post(
                f"{web.url}/api/teams/",
                json={"name": "Outage Rovers"},
                headers={"Authorization": f"Token {token}"},
                timeout=10,
            )
            for response in (read, write):
                assert response.status_code == 503, response.text
                assert response.headers["Content-Type"].startswith(PROBLEM_CONTENT_TYPE)
                body = response.json()
                assert body["status"] == 503 and body["code"] == "database_unavailable", body
                assert body["instance"] == "/api/teams/"
                _retry_after(response)
            admin = http.get(f"{web.url}/admin/", cookies=session, timeout=10, allow_redirects=False)
            page = http.get(f"{web.url}/", timeout=10)
            for response in (admin, page):
                assert response.status_code == 503, response.text[:500]
                assert response.headers["Content-Type"].startswith("text/html")
                assert "database" in response.text.lower()
                _retry_after(response)
            assert http.get(f"{web.url}/readyz", timeout=10).status_code == 503
            end()
            wait_until(
                lambda: http.get(f"{web.url}/api/teams/", timeout=10).status_code == 200,
                timeout=20,
                what="the API to answer again once the database is back",
            )
        assert http.get(f"{web.url}/admin/", cookies=session, timeout=10, allow_redirects=False).status_code == 200


def _django_error(cls: type[Exception], cause: Exception) -> Exception:
    try:
        raise cls(str(cause)) from cause
    except cls as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (_django_error(OperationalError, psycopg.OperationalError("connection refused")), True),
        (_django_error(InterfaceError, psycopg.InterfaceError("the connection is closed")), True),
        (_django_error(OperationalError, psycopg.errors.AdminShutdown("terminating connection")), True),
        (_django_error(OperationalError, psycopg.errors.TooManyConnections("too many clients")), True),
        (_django_error(OperationalError, psycopg.errors.DeadlockDetected("deadlock detected")), False),
        (_django_error(OperationalError, psycopg.errors.QueryCanceled("statement timeout")), False),
        (_django_error(OperationalError, sqlite3.OperationalError("database is locked")), True),
        (_django_error(OperationalError, sqlite3.OperationalError("no such table: x")), False),
        (ValueError("not a database error"), False),
    ],
    ids=lambda v: type(getattr(v, "__cause__", None) or v).__name__ if isinstance(v, Exception) else str(v),
)
def test_only_a_database_that_cannot_be_reached_counts_as_an_outage(error, outage):
    """A deadlock or a statement timeout is the database answering: not a 503 outage."""
    assert database_outage(error) is outage
