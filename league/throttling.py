"""Abuse limits: the API's request rates and the lock on password logins.

Guarantees kept here:

- **The client's address** (``client_address``) is the connection's peer, unless that peer is a
  trusted proxy (``TRUSTED_PROXIES``: addresses or networks, loopback by default, where
  runstack's front door connects from); then it is the last ``X-Forwarded-For`` entry, the one
  the proxy appended itself. Entries a client wrote before it are never believed, so a client
  cannot pick its own address.
- **API rates** (DRF throttles, ``API_THROTTLE_RATES``, each overridable from the environment,
  ``off`` for none): an anonymous client by its address (``anon``), a signed-in user by user
  (``user``), a user in the role Service accounts by user at its own rate (``service``; the
  transfers service's export reads and look-ups). Over the rate: ``429 Too Many Requests``, a
  problem document (``league/api.py``) with ``code: "throttled"`` and ``Retry-After`` in
  seconds.
- **Password logins** (the admin's and the browsable API's login form) are locked for
  ``LOGIN_LOCKOUT_SECONDS`` after ``LOGIN_FAILURE_LIMIT`` failures for one user name from one
  address, or ``LOGIN_FAILURE_LIMIT_PER_ADDRESS`` failures from one address whatever the name.
  While locked, a login, even with the right password, is answered ``429`` with
  ``Retry-After`` and a page that says when to try again; nothing checks the password. A
  successful login clears that user name's failures from that address.
- Counts live in Django's default cache (``CACHES``), which every process of the web server
  shares: files under ``DATA_DIR/cache`` by default (one host: runstack's web workers), Redis
  with ``CACHE_URL`` (compose, several hosts). A cache that does not answer limits nothing
  (logged as a warning): requests and logins are served, never a 500.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import escape
from rest_framework.throttling import SimpleRateThrottle

from kernel import roles

log = logging.getLogger("league.throttling")


# --------------------------------------------------------------------------------------
# The client's address
# --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def is_trusted_proxy(address: str) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in net for net in _networks(tuple(settings.TRUSTED_PROXIES)))


def client_address(request: HttpRequest) -> str:
    """The address of the client that sent ``request`` (see the module's docstring)."""
    peer = request.META.get("REMOTE_ADDR", "") or ""
    if is_trusted_proxy(peer):
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        if forwarded and _ip(forwarded[-1]) is not None:
            return str(_ip(forwarded[-1]))
    return peer


# --------------------------------------------------------------------------------------
# API rates
# --------------------------------------------------------------------------------------
def rate(scope: str) -> str | None:
    value = settings.API_THROTTLE_RATES.get(scope)
    return None if not value or str(value).strip().lower() in ("off", "none") else str(value)


class _Throttle(SimpleRateThrottle):
    """DRF's rate throttle with its rate read per request (settings may change under tests)
    and the client's address from ``client_address``."""

    def __init__(self) -> None:  # the rate is chosen per request, in allow_request
        pass

    def scope_for(self, request: Any) -> str | None:
        raise NotImplementedError

    def allow_request(self, request: Any, view: Any) -> bool:
        scope = self.scope_for(request)
        self.rate = rate(scope) if scope else None
        if self.rate is None:
            return True
        self.scope = scope
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # the cache is down: serve, do not fail every request
            log.warning("rate limit not checked: the cache did not answer (%s)", exc)
            return True

    def get_ident(self, request: Any) -> str:
        return client_address(request)

    def wait(self) -> float | None:
        # Whole seconds, at least 1: Retry-After is an integer.
        waited = super().wait()
        return None if waited is None else max(1, math.ceil(waited))


class AnonThrottle(_Throttle):
    """Anonymous clients, by address."""

    def scope_for(self, request: Any) -> str | None:
        return None if request.user and request.user.is_authenticated else "anon"

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class UserThrottle(_Throttle):
    """Signed-in users, by user; service accounts at their own rate."""

    def scope_for(self, request: Any) -> str | None:
        user = request.user
        if not (user and user.is_authenticated):
            return None
        if rate("user") == rate("service"):  # no query to tell them apart
            return "user"
        return "service" if user.groups.filter(name=roles.SERVICE_ACCOUNTS).exists() else "user"

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


# --------------------------------------------------------------------------------------
# Password logins
# --------------------------------------------------------------------------------------
def _keys(address: str, username: str) -> tuple[str, str]:
    # The name hashed: any text a client typed makes a short key every cache accepts.
    name = hashlib.sha256(username.casefold().encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"login-failures:{address}:{name}", f"login-failures:{address}"


def locked_for(address: str, username: str) -> int:
    """Seconds until logins of ``username`` from ``address`` are allowed again (0: now)."""
    now = time.time()
    until = max(cache.get(f"{key}:locked", 0) for key in _keys(address, username))
    return max(0, math.ceil(until - now))


def _count_failure(address: str, username: str) -> None:
    lockout = settings.LOGIN_LOCKOUT_SECONDS
    limits = (settings.LOGIN_FAILURE_LIMIT, settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS)
    for key, limit in zip(_keys(address, username), limits, strict=True):
        # Failures count within one lockout period of the first; the cache forgets them after.
        cache.add(key, 0, timeout=lockout)
        try:
            failures = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=lockout)
            failures = 1
        if failures >= limit:
            cache.set(f"{key}:locked", time.time() + lockout, timeout=lockout)


def _username(credentials: dict[str, Any]) -> str:
    from django.contrib.auth import get_user_model

    return str(credentials.get(get_user_model().USERNAME_FIELD) or credentials.get("username") or "")


def on_login_failed(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **_: Any) -> None:
    if request is not None:
        try:
            _count_failure(client_address(request), _username(credentials))
        except Exception as exc:
            log.warning("failed login not counted: the cache did not answer (%s)", exc)


def on_logged_in(sender: Any, request: HttpRequest | None, user: Any, **_: Any) -> None:
    if request is not None:
        try:
            cache.delete(_keys(client_address(request), user.get_username())[0])
        except Exception as exc:
            log.warning("login failures not cleared: the cache did not answer (%s)", exc)


def connect_signals() -> None:
    user_login_failed.connect(on_login_failed, dispatch_uid="league.throttling.failed")
    user_logged_in.connect(on_logged_in, dispatch_uid="league.throttling.logged_in")


def _login_paths() -> set[str]:
    paths = set()
    for name in ("admin:login", "rest_framework:login"):
        try:
            paths.add(reverse(name))
        except NoReverseMatch:
            pass
    return paths


def _lock_wait(request: HttpRequest) -> int:
    try:
        return locked_for(client_address(request), request.POST.get("username", ""))
    except Exception as exc:  # the cache is down: let the login form answer
        log.warning("login lock not checked: the cache did not answer (%s)", exc)
        return 0


class LoginLockMiddleware:
    """Answers a login attempt while its user name or address is locked: 429, no password check."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.paths: set[str] | None = None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            if self.paths is None:
                self.paths = _login_paths()
            if request.path in self.paths:
                wait = _lock_wait(request)
                if wait:
                    return locked_response(wait)
        return self.get_response(request)


def locked_response(wait: int) -> HttpResponse:
    minutes = max(1, math.ceil(wait / 60))
    text = (
        f"Too many failed logins from your address: logins are locked. "
        f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )
    response = HttpResponse(
        f'<!doctype html><html lang="en"><head><title>Login locked</title></head>'
        f"<body><h1>Login locked</h1><p>{escape(text)}</p></body></html>",
        status=429,
    )
    response["Retry-After"] = str(wait)
    return response
