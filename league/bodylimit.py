"""The request body limit, kept by the server entry points before Django reads anything.

Guarantee, under the ASGI entry point (``league/asgi.py``, uvicorn) and the WSGI one
(``league/wsgi.py``, gunicorn) alike, for every path:

- a body whose ``Content-Length`` is larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is a 413
  sent before one byte of the body is read (Django's ASGI handler would otherwise spool the
  whole body to a temporary file before any middleware runs); the connection is closed;
- a chunked body (``Transfer-Encoding: chunked``, no length) is read up to the limit: past
  it, reading stops and the answer is a 413; within it, Django gets the body with its
  length (it reads a body without ``Content-Length`` as empty). A WSGI server that cannot
  end a chunked body for the application (no ``wsgi.input_terminated``: wsgiref, Django's
  ``runserver``) gets a 411 for it instead of a body read as empty;
- under ``/api/`` the 413 is a problem document (``kernel.api``), elsewhere plain text.

``league.middleware.ApiMiddleware`` repeats the ``Content-Length`` check for any other way
Django is called (the test client, ``runserver``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from events import context

CHUNK = 64 * 1024


def _limit() -> int | None:
    from django.conf import settings

    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def _refusal(path: str, status: int, detail: str, code: str) -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers of a refusal sent before Django runs."""
    rid = context.new_id()
    if path.startswith("/api/"):
        from kernel import api

        document = api.problem(status, detail, code=code)
        document.update(instance=path, request_id=rid)
        body, content_type = json.dumps(document).encode(), api.PROBLEM_CONTENT_TYPE
    else:
        body, content_type = f"{detail}\n".encode(), "text/plain; charset=utf-8"
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        ("X-Request-ID", rid),
    ]
    return body, headers


def _too_large(limit: int) -> tuple[int, str, str]:
    return 413, f"The request body is larger than {limit} bytes. Send a smaller one.", "request_too_large"


BAD_LENGTH = (400, "The Content-Length header is not a number.", "invalid")
LENGTH_REQUIRED = (411, "Send the body with a Content-Length: this server cannot read a chunked body.", "length_required")


def _declared_length(raw: str | None) -> int | None | bool:
    """The Content-Length as a number, ``None`` when absent, ``False`` when not a number."""
    if raw is None or raw == "":
        return None
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdigit() else False


# ----------------------------------------------------------------------------------- ASGI
class AsgiBodyLimit:
    """Wraps an ASGI application (Django's) with the guarantee of this module."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = _limit()
        headers = scope.get("headers") or []
        length = _declared_length(_header(headers, b"content-length"))
        if length is False:
            return await _refuse(send, scope["path"], *BAD_LENGTH)
        if length is not None:
            if limit is not None and length > limit:
                return await _refuse(send, scope["path"], *_too_large(limit))
            return await self.app(scope, receive, send)
        if "chunked" not in (_header(headers, b"transfer-encoding") or "").lower():
            return await self.app(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if limit is not None and len(body) > limit:
                return await _refuse(send, scope["path"], *_too_large(limit))
            if not message.get("more_body", False):
                break
        kept = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"transfer-encoding")]
        scope = {**scope, "headers": [*kept, (b"content-length", str(len(body)).encode())]}
        return await self.app(scope, _replay(bytes(body), receive), send)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _replay(body: bytes, receive: Any) -> Callable[[], Any]:
    """A ``receive`` that hands over the body already read, then waits on the real one
    (for the client's disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict[str, Any]:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


async def _refuse(send: Any, path: str, status: int, detail: str, code: str) -> None:
    body, headers = _refusal(path, status, detail, code)
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------------- WSGI
class WsgiBodyLimit:
    """Wraps a WSGI application (Django's) with the guarantee of this module."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        limit = _limit()
        length = _declared_length(environ.get("CONTENT_LENGTH"))
        if length is False:
            return _refuse_wsgi(environ, start_response, *BAD_LENGTH)
        if length is not None:
            if limit is not None and length > limit:
                return _refuse_wsgi(environ, start_response, *_too_large(limit))
            return self.app(environ, start_response)
        if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return self.app(environ, start_response)
        if not environ.get("wsgi.input_terminated"):
            # The server hands over the raw stream (wsgiref, runserver): no end to read to.
            return _refuse_wsgi(environ, start_response, *LENGTH_REQUIRED)
        stream, body = environ["wsgi.input"], bytearray()
        while True:
            piece = stream.read(CHUNK if limit is None else min(CHUNK, limit + 1 - len(body)))
            if not piece:
                break
            body += piece
            if limit is not None and len(body) > limit:
                return _refuse_wsgi(environ, start_response, *_too_large(limit))
        environ["wsgi.input"] = io.BytesIO(bytes(body))
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.app(environ, start_response)


def _refuse_wsgi(environ: dict[str, Any], start_response: Callable[..., Any], status: int, detail: str, code: str) -> list[bytes]:
    from http import HTTPStatus

    body, headers = _refusal(environ.get("PATH_INFO", ""), status, detail, code)
    if not environ.get("SERVER_SOFTWARE", "").startswith("gunicorn"):
        # A hop-by-hop header is the server's to set (PEP 3333; wsgiref refuses it).
        headers = [(k, v) for k, v in headers if k != "Connection"]
    start_response(f"{status} {HTTPStatus(status).phrase}", headers)
    return [body]
