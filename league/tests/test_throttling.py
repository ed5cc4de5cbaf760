"""Abuse limits (league/throttling.py): the API answers 429 problem documents with Retry-After
over its rates, per anonymous address and per user; the address is the one the trusted proxy
saw; password logins lock after repeated failures, even for the right password; the counts
are shared by every process of the web server."""

from __future__ import annotations

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from conftest import with_roles
from devtools import requires
from devtools.netutil import free_port
from events import topology
from frontdoor.nginx import FrontDoor
from kernel import roles
from league import throttling
from live.testing import web_instances

RATES = {"anon": "3/min", "user": "4/min", "service": "6/min"}


@pytest.fixture
def rates(settings):
    settings.API_THROTTLE_RATES = RATES
    cache.clear()
    yield
    cache.clear()


def assert_throttled(response, *, within: int = 60) -> None:
    assert response.status_code == 429, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 429 and body["title"] == "Too Many Requests" and body["code"] == "throttled", body
    assert body["instance"] == "/api/teams/" and "request_id" in body
    assert 1 <= int(response["Retry-After"]) <= within


def test_an_anonymous_address_over_its_rate_gets_a_429_problem_with_retry_after(rates, db):
    client = APIClient()
    assert [client.get("/api/teams/").status_code for _ in range(3)] == [200, 200, 200]
    assert_throttled(client.get("/api/teams/"))
    # Another address still reads.
    assert APIClient(REMOTE_ADDR="203.0.113.9").get("/api/teams/").status_code == 200


def test_the_address_is_the_one_the_trusted_proxy_appended(rates, db):
    # Through the proxy (loopback): the last X-Forwarded-For entry counts, whatever came before it.
    for spoofed in ("6.6.6.6", "7.7.7.7", "8.8.8.8"):
        response = APIClient().get("/api/teams/", HTTP_X_FORWARDED_FOR=f"{spoofed}, 198.51.100.4")
        assert response.status_code == 200
    assert_throttled(APIClient().get("/api/teams/", HTTP_X_FORWARDED_FOR="9.9.9.9, 198.51.100.4"))
    assert APIClient().get("/api/teams/", HTTP_X_FORWARDED_FOR="198.51.100.5").status_code == 200
    # Not from a trusted proxy: X-Forwarded-For is ignored, the peer counts.
    direct = APIClient(REMOTE_ADDR="203.0.113.7")
    for n in range(3):
        assert direct.get("/api/teams/", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code == 200
    assert_throttled(direct.get("/api/teams/", HTTP_X_FORWARDED_FOR="10.0.0.99"))


def test_client_address_rules(settings, rf):
    settings.TRUSTED_PROXIES = ["127.0.0.1", "10.1.0.0/16"]
    assert (
        throttling.client_address(rf.get("/", REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="1.1.1.1, 2.2.2.2"))
        == "2.2.2.2"
    )
    assert throttling.client_address(rf.get("/", REMOTE_ADDR="10.2.0.1", HTTP_X_FORWARDED_FOR="2.2.2.2")) == "10.2.0.1"
    # A last entry that is not an address: the proxy's own address counts, not the junk.
    assert (
        throttling.client_address(rf.get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="x, junk")) == "127.0.0.1"
    )
    assert throttling.client_address(rf.get("/", REMOTE_ADDR="127.0.0.1")) == "127.0.0.1"


def test_a_user_is_counted_by_user_and_a_service_account_at_its_own_rate(rates, user):
    client = APIClient(REMOTE_ADDR="203.0.113.20")
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    assert [client.get("/api/teams/").status_code for _ in range(4)] == [200] * 4
    assert_throttled(client.get("/api/teams/"))
    # The same user from another address: the same count.
    other = APIClient(REMOTE_ADDR="203.0.113.21")
    other.credentials(HTTP_AUTHORIZATION=client._credentials["HTTP_AUTHORIZATION"])
    assert_throttled(other.get("/api/teams/"))
    # Anonymous reads from the first address are counted apart.
    assert APIClient(REMOTE_ADDR="203.0.113.20").get("/api/teams/").status_code == 200

    service = with_roles(get_user_model().objects.create_user("svc"), roles.SERVICE_ACCOUNTS)
    machine = APIClient(REMOTE_ADDR="203.0.113.20")
    machine.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=service).key}")
    assert [machine.get("/api/teams/").status_code for _ in range(6)] == [200] * 6
    assert_throttled(machine.get("/api/teams/"))


def test_writes_are_throttled_too(rates, auth_client):
    codes = [auth_client.post("/api/teams/", {"name": f"T{n}"}, format="json").status_code for n in range(5)]
    assert codes == [201, 201, 201, 201, 429]


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("boss", "", "right-password-123")


def admin_login(client, password: str, username: str = "boss"):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password})


def test_thirty_wrong_admin_logins_lock_it_even_for_the_right_password(settings, admin_user, monkeypatch):
    settings.LOGIN_FAILURE_LIMIT, settings.LOGIN_LOCKOUT_SECONDS = 5, 900
    cache.clear()
    client = APIClient(REMOTE_ADDR="203.0.113.30")
    codes = [admin_login(client, f"wrong-{n}").status_code for n in range(30)]
    # Five failures are answered by the form (200), then the lock answers.
    assert codes[:5] == [200] * 5 and set(codes[5:]) == {429}
    locked = admin_login(client, "right-password-123")
    assert locked.status_code == 429 and 1 <= int(locked["Retry-After"]) <= 900
    assert "Too many failed logins" in locked.content.decode() and "15 minutes" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    # Another address is not locked out of the same account.
    elsewhere = APIClient(REMOTE_ADDR="203.0.113.31")
    assert admin_login(elsewhere, "right-password-123").status_code == 302
    # After the lockout the right password works again, and clears the count.
    later = throttling.time.time() + 901
    monkeypatch.setattr(throttling.time, "time", lambda: later)
    assert admin_login(client, "right-password-123").status_code == 302


def test_one_address_trying_many_names_is_locked_too(settings, admin_user):
    settings.LOGIN_FAILURE_LIMIT, settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS = 5, 8
    cache.clear()
    client = APIClient(REMOTE_ADDR="203.0.113.40")
    codes = [admin_login(client, "x", username=f"user{n}").status_code for n in range(8)]
    assert codes == [200] * 8
    assert admin_login(client, "right-password-123").status_code == 429
    # The browsable API's login form is the same door.
    assert client.post("/api/auth/login/", {"username": "boss", "password": "right-password-123"}).status_code == 429


def test_a_successful_login_clears_the_failures_of_that_name(settings, admin_user):
    settings.LOGIN_FAILURE_LIMIT = 3
    cache.clear()
    client = APIClient(REMOTE_ADDR="203.0.113.50")
    for _ in range(2):
        assert admin_login(client, "wrong").status_code == 200
    assert admin_login(client, "right-password-123").status_code == 302
    client.logout()
    for _ in range(2):
        assert admin_login(client, "wrong").status_code == 200
    assert admin_login(client, "right-password-123").status_code == 302


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_count_is_shared_by_every_web_process(moto_server, tmp_path):
    """Two web server processes with runstack's defaults (the file cache under DATA_DIR): an
    address's requests count once, whichever process serves them."""
    topology.ensure()
    with web_instances(2, moto_server, API_THROTTLE_ANON="4/min", DATA_DIR=str(tmp_path)) as (first, second):
        codes = [requests.get(f"{web.url}/api/teams/", timeout=10).status_code for web in (first, second) * 2]
        assert codes == [200] * 4
        for web in (first, second):
            response = requests.get(f"{web.url}/api/teams/", timeout=10)
            assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
            assert response.headers["Content-Type"] == "application/problem+json"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_behind_the_front_door_a_client_cannot_choose_its_address(moto_server, tmp_path):
    """Through nginx, a client that writes its own X-Forwarded-For is still counted by the
    address nginx saw (the web server serves as runstack starts it)."""
    requires.program(not FrontDoor.available(), "nginx", "nginx")
    topology.ensure()
    with web_instances(1, moto_server, API_THROTTLE_ANON="3/min", DATA_DIR=str(tmp_path)) as (web,):
        door = FrontDoor(tmp_path / "frontdoor", "127.0.0.1", free_port())
        door.start({}, web.url.removeprefix("http://"))
        try:
            codes = [
                requests.get(
                    f"{door.url}/api/teams/", headers={"X-Forwarded-For": f"192.0.2.{n}"}, timeout=10
                ).status_code
                for n in range(4)
            ]
            assert codes == [200, 200, 200, 429]
        finally:
            door.stop(timeout=10)


def test_a_cache_that_does_not_answer_limits_nothing_and_breaks_nothing(settings, admin_user):
    # Redis on a port where nothing listens: every cache call fails.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    settings.API_THROTTLE_RATES = RATES
    client = APIClient(REMOTE_ADDR="203.0.113.60")
    assert [client.get("/api/teams/").status_code for _ in range(4)] == [200] * 4
    assert admin_login(client, "wrong").status_code == 200
    assert admin_login(client, "right-password-123").status_code == 302
