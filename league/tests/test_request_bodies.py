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


# --------------------------------------------------------------------------------------
# Body limits, kept by the server entry points (league/bodylimit.py) before Django reads
# --------------------------------------------------------------------------------------
LIMIT = 2_621_440  # Django's DATA_UPLOAD_MAX_MEMORY_SIZE, which settings keep


@pytest.fixture(params=["uvicorn", "gunicorn"])
def server(request, transactional_db):
    """The web app under a real server process on a free port: uvicorn (ASGI, as runstack
    and compose's monolith serve it) or gunicorn (WSGI), on this test's database."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    from devtools.netutil import free_port, wait_for_http
    from devtools.testing import child_env

    port = free_port()
    binary = os.path.join(os.path.dirname(sys.executable), request.param)
    if request.param == "uvicorn":
        argv = [binary, "league.asgi:application", "--lifespan", "off", "--no-access-log"]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
    else:
        argv = [binary, "league.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    # No bus is used: the address is a closed port.
    # A monolith's web serves transfers, which needs the teams URL: its own.
    env = child_env("http://127.0.0.1:9", TEAMS_SERVICE_URL=f"http://127.0.0.1:{port}")
    proc = subprocess.Popen(argv, cwd=settings.BASE_DIR, env=env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _read_response(sock, *, timeout: float = 15) -> tuple[int, bytes]:
    """Status and body of the one response on ``sock`` (read until the server closes or
    the declared length is in)."""
    import time

    sock.settimeout(timeout)
    data, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
            if lengths and len(body) >= int(lengths[0]):
                break
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            break
        if not piece:
            break
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), data[:300]
    return int(head.split()[1]), body


def _headers(path: str, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/api/teams/", "/admin/login/"])
def test_a_body_over_the_limit_by_its_length_is_refused_before_it_is_sent(server, path):
    """The client sends the headers of a 300 MB POST and not one byte of the body: the 413
    arrives anyway, so nothing waited for (or spooled) the body."""
    import socket

    with socket.create_connection(("127.0.0.1", server), timeout=15) as sock:
        sock.sendall(_headers(path, f"Content-Length: {300 * 1024 * 1024}"))

        status, body = _read_response(sock)

    assert status == 413, body[:300]
    if path.startswith("/api/"):
        problem = json.loads(body)
        assert problem["status"] == 413 and problem["code"] == "request_too_large"
        assert problem["instance"] == path and f"larger than {LIMIT} bytes" in problem["detail"]


@pytest.mark.slow
def test_a_chunked_body_is_read_only_up_to_the_limit(server):
    """A chunked body that never ends: the server stops reading at the limit and answers
    413 while the client is still sending."""
    import select
    import socket

    chunk = b"x" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", server), timeout=15) as sock:
        sock.sendall(_headers("/api/teams/", "Transfer-Encoding: chunked"))
        while sent < 8 * LIMIT:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        status, body = _read_response(sock)

    assert status == 413, body[:300]
    assert json.loads(body)["code"] == "request_too_large"
    assert sent < 8 * LIMIT  # the answer came while the body was still coming


@pytest.mark.slow
def test_a_chunked_body_within_the_limit_is_read(server, user):
    import requests
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=user).key

    def pieces():
        yield b'{"name": '
        yield b'"Chunked FC"}'

    response = requests.post(
        f"http://127.0.0.1:{server}/api/teams/",
        data=pieces(),  # a generator: requests sends it chunked, without a length
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        timeout=15,
    )

    assert response.status_code == 201, response.text[:300]
    assert Team.objects.get().name == "Chunked FC"


def test_a_chunked_body_under_a_wsgi_server_that_cannot_end_it_is_a_411(settings):
    """wsgiref (the server of ``runserver``) hands the raw stream over: a chunked body
    would be read as empty or wait forever, so it is a 411 asking for a length."""
    settings.TEAMS_SERVICE_URL = "http://teams.invalid"  # the monolith's web checks it has one
    import socket
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from league.wsgi import application

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    with make_server("127.0.0.1", 0, application, handler_class=Quiet) as httpd:
        thread = threading.Thread(target=httpd.handle_request, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", httpd.server_port), timeout=15) as sock:
            sock.sendall(_headers("/api/teams/", "Transfer-Encoding: chunked") + b"9\r\n{\"name\": \r\n")
            status, body = _read_response(sock)
        thread.join(15)

    assert status == 411, body[:300]
    assert json.loads(body)["code"] == "length_required"
