"""``Idempotency-Key`` on every POST under ``/api/``: a retried POST is answered, not done again.

The guarantee, per authenticated user (writes need credentials; an anonymous request is
refused by its view and the key plays no part):

- The first request with a key claims it: a row unique on (user, key) is committed before
  the request's work starts, so of concurrent requests with one key exactly one does the work.
- While it runs, another request with that key is answered ``409`` (code
  ``idempotency_key_in_progress``, ``Retry-After: 1``): retry it; it does not wait.
- Once it is answered, the same key with the same request (method, path and body, byte for
  byte) gets that first response again (status, body, ``Location``) with
  ``Idempotent-Replayed: true``, and nothing is done again; the same key with another
  request is a ``422`` (code ``idempotency_key_reused``).
- A response is kept when the request reached its endpoint's work: 2xx, and a 409/422 a
  rule answered. Any other (a malformed body's 400, 401, 403, 404, 413, 429, a 5xx, a 503
  while a service moves) releases the key: a retry with it runs again.
- Keys are kept ``IDEMPOTENCY_KEY_TTL`` (24 h): an older key is free again (it is not
  looked at), and ``purge`` (Celery beat, hourly: ``idempotency.purge_keys``) deletes them.
- If the process dies between the work's commit and keeping its response, the key stays
  claimed until it expires (answered 409): the outcome is unknown, so the request is not
  done again; read the resource, or retry with a new key.

A key is 1 to 255 printable ASCII characters (a UUID is usual); anything else is a 400.
Every deployment installs this app, so each service keeps the keys of its own POSTs in its
own database, and the front door passes the header through.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from kernel.api import problem_response

from .models import IdempotencyKey

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_VALID = re.compile(r"^[\x21-\x7e]{1,255}$")
# The outcomes of the endpoint's work: kept and answered again.
_KEPT = {409, 422}

log = logging.getLogger("idempotency")


def ttl() -> timedelta:
    return settings.IDEMPOTENCY_KEY_TTL


def purge(older_than: timedelta | None = None) -> int:
    """Delete the keys older than ``older_than`` (default: ``IDEMPOTENCY_KEY_TTL``)."""
    cutoff = timezone.now() - (older_than if older_than is not None else ttl())
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def _problem(request: HttpRequest, status: int, detail: str, code: str) -> HttpResponse:
    return problem_response(request, status, detail, code=code)


def _user_id(request: HttpRequest) -> int | None:
    """The user the API's authentication finds (a token, or a session with its CSRF
    token), or ``None``: then the view refuses the request itself."""
    from rest_framework.exceptions import APIException
    from rest_framework.request import Request
    from rest_framework.settings import api_settings

    drf_request = Request(request, authenticators=[cls() for cls in api_settings.DEFAULT_AUTHENTICATION_CLASSES])
    try:
        user = drf_request.user
    except APIException:
        return None
    return user.pk if user is not None and user.is_authenticated else None


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What "the same request" means: SHA-256 of the method, the path and the body."""
    digest = hashlib.sha256()
    for part in (method, path):
        digest.update(part.encode() + b"\0")
    digest.update(body)
    return digest.hexdigest()


def _claim(user_id: int, key: str, fingerprint: str) -> IdempotencyKey | None:
    """Claim the key (``None``), or the row of the request that holds it."""
    now = timezone.now()
    for _ in range(3):
        try:
            with transaction.atomic():
                IdempotencyKey.objects.create(user_id=user_id, key=key, fingerprint=fingerprint, created_at=now)
            return None
        except IntegrityError:
            held = IdempotencyKey.objects.filter(user_id=user_id, key=key).first()
        if held is not None and held.created_at >= now - ttl():
            return held
        if held is not None:  # expired, not purged yet: free again
            IdempotencyKey.objects.filter(pk=held.pk, created_at=held.created_at).delete()
    # Claimed and released by others under our feet every time: answer "in progress".
    return IdempotencyKey(user_id=user_id, key=key, fingerprint=fingerprint, created_at=now)


def _answer_held(request: HttpRequest, held: IdempotencyKey, fingerprint: str) -> HttpResponse:
    if held.fingerprint != fingerprint:
        return _problem(
            request,
            422,
            f"This {HEADER} was used for another request (another method, path or body). "
            "Use a new key for a new request.",
            "idempotency_key_reused",
        )
    if held.status is None:
        response = _problem(
            request,
            409,
            f"A request with this {HEADER} is in progress (since {held.created_at.isoformat()}): "
            "retry it for its response.",
            "idempotency_key_in_progress",
        )
        response["Retry-After"] = "1"
        return response
    response = HttpResponse(bytes(held.body), status=held.status, content_type=held.content_type or None)
    if held.location:
        response["Location"] = held.location
    response[REPLAYED_HEADER] = "true"
    return response


class IdempotencyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        key = request.headers.get(HEADER)
        if key is None or request.method != "POST" or not request.path_info.startswith("/api/"):
            return self.get_response(request)
        if not _VALID.match(key):
            return _problem(
                request,
                400,
                f"The {HEADER} header must be 1 to 255 printable ASCII characters (a UUID, say).",
                "invalid_idempotency_key",
            )
        user_id = _user_id(request)
        if user_id is None:
            return self.get_response(request)
        try:
            body = request.body
        except Exception:  # too large, or unreadable: the view answers it (413/400), nothing is kept
            return self.get_response(request)
        request_print = fingerprint(request.method or "", request.path, body)
        held = _claim(user_id, key, request_print)
        if held is not None:
            return _answer_held(request, held, request_print)
        claimed = IdempotencyKey.objects.filter(user_id=user_id, key=key, status__isnull=True)
        try:
            response = self.get_response(request)
        except BaseException:
            claimed.delete()
            raise
        if (200 <= response.status_code < 300 or response.status_code in _KEPT) and not response.streaming:
            claimed.update(
                status=response.status_code,
                content_type=response.get("Content-Type", ""),
                location=response.get("Location", ""),
                body=response.content,
            )
        else:
            claimed.delete()
        return response
