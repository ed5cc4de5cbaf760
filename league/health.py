"""Liveness and readiness probes.

- ``/healthz``: the process answers. No dependency is touched, so a database outage
  never makes an orchestrator restart every web process at once.
- ``/readyz``: this instance can do its work: the database answers, the Celery broker
  accepts a connection (the relay kick), and the bus is reachable with this service's
  queues in place. 200 with every check, or 503 with ``failing`` naming the parts that
  are not. Each check is bounded by ``HEALTH_CHECK_TIMEOUT`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from events import aws, topology


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> None:
    from celery import current_app

    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=settings.HEALTH_CHECK_TIMEOUT)


def check_bus() -> None:
    """SNS answers, and each consuming service of this deployment has its queue."""
    aws.quick_client("sns").list_topics()
    sqs = aws.quick_client("sqs")
    for spec in topology.queue_specs():
        try:
            sqs.get_queue_url(QueueName=spec.name)
        except sqs.exceptions.QueueDoesNotExist:
            raise RuntimeError(f"queue {spec.name} does not exist; run `manage.py setup_bus`") from None


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "broker": check_broker,
    "bus": check_bus,
}


def run_checks() -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, check in CHECKS.items():
        started = time.monotonic()
        try:
            check()
            results[name] = {"ok": True}
        except Exception as exc:
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        results[name]["ms"] = round((time.monotonic() - started) * 1000, 1)
    return results


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = run_checks()
    failing = [name for name, result in checks.items() if not result["ok"]]
    body = {"status": "unavailable" if failing else "ok", "failing": failing, "checks": checks}
    return JsonResponse(body, status=503 if failing else 200)
