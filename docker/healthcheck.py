"""Container health checks for docker-compose.yml (the slim image has no curl).

    python docker/healthcheck.py http /healthz     # web: the path answers 200
    python docker/healthcheck.py worker            # Celery worker on this host answers a ping
    python docker/healthcheck.py broker            # beat: the Celery broker is reachable
    python docker/healthcheck.py consumer [NAME]   # consumer: database and its SQS queue answer
    python docker/healthcheck.py aws               # AWS answers with this process's credentials

Exit 0 when healthy, 1 otherwise, with one line saying why. HEALTHCHECK_PORT (default
8000) is the web port, for a host that runs several webs side by side.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "league.settings")


def check_http(path: str = "/healthz") -> str:
    port = os.environ.get("HEALTHCHECK_PORT", "8000")
    # As if through the TLS proxy: with DEBUG off, SECURE_SSL_REDIRECT would answer 301.
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"X-Forwarded-Proto": "https"})
    with urllib.request.urlopen(request, timeout=4) as response:
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}")
    return f"{path} 200"


def check_worker() -> str:
    from league.celery import app

    node = f"celery@{socket.gethostname()}"
    replies = app.control.ping(destination=[node], timeout=5)
    if not replies:
        raise RuntimeError(f"{node} did not answer a ping")
    return f"{node} pong"


def check_broker() -> str:
    from league.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=5)
    return "broker reachable"


def check_consumer(service: str | None = None) -> str:
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    from events import aws

    if not service and len(settings.ACTIVE_SERVICES) != 1:
        raise RuntimeError(f"name the consumer's service: LEAGUE_SERVICE={settings.LEAGUE_SERVICE} runs several")
    service = service or settings.ACTIVE_SERVICES[0]
    connection.ensure_connection()
    aws.client("sqs").get_queue_url(QueueName=aws.queue_name(service))
    return f"database and queue {aws.queue_name(service)} reachable"


def check_aws() -> str:
    """AWS answers with the credentials boto3's chain finds here (STS needs no permission)."""
    import boto3
    from botocore.config import Config

    sts = boto3.client(
        "sts",
        region_name=os.environ.get("AWS_REGION") or "eu-west-1",
        config=Config(ignore_configured_endpoint_urls=True, connect_timeout=3, read_timeout=5),
    )
    return f"AWS answers as {sts.get_caller_identity()['Arn']}"


CHECKS = {
    "http": check_http,
    "worker": check_worker,
    "broker": check_broker,
    "consumer": check_consumer,
    "aws": check_aws,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in CHECKS:
        print(f"usage: healthcheck.py {{{'|'.join(CHECKS)}}} [ARG]", file=sys.stderr)
        return 2
    try:
        print(CHECKS[argv[0]](*argv[1:]))
    except Exception as exc:  # any failure is "unhealthy", said in one line
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
