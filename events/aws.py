"""Clients and names for SNS/SQS.

Names: a topic per event type ``{BUS_PREFIX}-{type with dots as dashes}``, a shared queue
per service ``{BUS_PREFIX}-{service}`` with its dead-letter queue ``...-dlq``.

Where the bus is, by configuration alone: with no ``AWS_ENDPOINT_URL`` the clients use
boto3's own endpoint resolution (AWS itself, in ``AWS_REGION``) and credential chain
(environment, profile, container or instance role, web identity); with one, that endpoint
(an emulator, a VPC endpoint) with whatever credentials the same chain finds. Nothing here
invents credentials: whoever starts an emulator hands its processes the emulator's
(``devtools.emulators.client_env``). Endpoints configured outside this setting (boto3's own
``AWS_ENDPOINT_URL_*`` variables, a profile's ``endpoint_url``) are ignored, so the setting
is the one place that says where the bus is.

Clients are made once per process, endpoint and budget, and shared by every thread: botocore
clients are thread-safe (sessions are not, so a client is made under a lock), and making one
costs 100-200 ms of CPU, which a thread started later (a consumer's receive and
acknowledgement threads, a relay's publisher) would otherwise pay again. A forked child (a
Celery prefork worker) makes its own: the key includes the process id.

Topic ARNs are resolved once per process by exact name and cached (SNS bills per
request). Never by substring: ``...-team-created`` must not match ``...-team-created-v2``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config
from django.conf import settings

_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()
_lock = threading.Lock()
_topic_arns: dict[str, str] = {}


def config(**options: Any) -> Config:
    """A botocore ``Config`` that leaves where the bus is to ``AWS_ENDPOINT_URL`` alone."""
    return Config(ignore_configured_endpoint_urls=True, **options)


def bounded_config(budget: float) -> Config:
    """Timeouts and attempts such that one call, retries and their back-off included, ends
    within ``budget`` seconds (standard retry mode sleeps at most 1, 2, 4 ... s between
    attempts; SNS sends no retry-after header)."""
    attempts = 1 if budget < 6 else 2 if budget < 20 else 3
    per_attempt = (budget - (2 ** (attempts - 1) - 1)) / attempts
    connect = min(2.0, per_attempt / 4)
    return config(
        retries={"total_max_attempts": attempts, "mode": "standard"},
        connect_timeout=connect,
        read_timeout=per_attempt - connect,
    )


def _client_kwargs(budget: float | None = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "region_name": settings.AWS_REGION,
        "config": bounded_config(budget)
        if budget is not None
        else config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30),
    }
    if settings.AWS_ENDPOINT_URL:
        kwargs["endpoint_url"] = settings.AWS_ENDPOINT_URL
    return kwargs


def _shared(key: tuple[Any, ...], make: Any) -> Any:
    key = (os.getpid(), *key)
    found = _clients.get(key)
    if found is None:
        with _clients_lock:
            found = _clients.get(key)
            if found is None:
                found = _clients[key] = make()
    return found


def client(service: str, *, budget: float | None = None) -> Any:
    """The process's boto3 client for ``sns`` or ``sqs`` at the configured endpoint,
    shared by every thread. With ``budget``, every call of the client (retries included)
    gives up within that many seconds (``bounded_config``)."""
    key = ("client", service, settings.AWS_ENDPOINT_URL, settings.AWS_REGION, budget)
    return _shared(key, lambda: boto3.session.Session().client(service, **_client_kwargs(budget)))


def quick_client(service: str) -> Any:
    """An SNS/SQS client that fails fast (one attempt, short timeouts), for probes and
    the admin page: a probe that hangs for the default retries is worse than a "no"."""
    timeout = settings.HEALTH_CHECK_TIMEOUT
    key = ("quick", service, settings.AWS_ENDPOINT_URL, settings.AWS_REGION, timeout)

    def make() -> Any:
        kwargs = _client_kwargs()
        kwargs["config"] = config(
            retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=timeout, read_timeout=timeout
        )
        return boto3.session.Session().client(service, **kwargs)

    return _shared(key, make)


def endpoint_label() -> str:
    """Where the bus's clients go, for people: the endpoint URL, or "AWS <region>"."""
    kwargs = _client_kwargs()
    return kwargs.get("endpoint_url") or f"AWS {kwargs['region_name']}"


def reset() -> None:
    """Forget clients (every thread's) and cached ARNs (tests that start a new AWS emulator)."""
    with _clients_lock:
        _clients.clear()
    with _lock:
        _topic_arns.clear()


def fifo() -> bool:
    return bool(getattr(settings, "BUS_FIFO", False))


def topic_name(event_type: str) -> str:
    name = f"{settings.BUS_PREFIX}-{event_type.replace('.', '-')}"
    return f"{name}.fifo" if fifo() else name


def queue_name(service: str, *, dlq: bool = False, instance: str | None = None) -> str:
    name = f"{settings.BUS_PREFIX}-{service}"
    if instance:
        name = f"{name}-{instance}"
    if dlq:
        name = f"{name}-dlq"
    return f"{name}.fifo" if fifo() else name


def list_topic_arns(sns: Any = None) -> dict[str, str]:
    """Every topic on the account, by exact name."""
    arns: dict[str, str] = {}
    for page in (sns or client("sns")).get_paginator("list_topics").paginate():
        for topic in page.get("Topics", []):
            arn = topic["TopicArn"]
            arns[arn.rsplit(":", 1)[-1]] = arn
    return arns


class TopicMissing(LookupError):
    pass


def topic_arn(event_type: str, sns: Any = None) -> str:
    """The ARN of ``event_type``'s topic, resolved by exact name once per process
    (with ``sns``, the client to list the topics with)."""
    name = topic_name(event_type)
    arn = _topic_arns.get(name)
    if arn:
        return arn
    with _lock:
        if name not in _topic_arns:
            _topic_arns.update(list_topic_arns(sns))
        if name not in _topic_arns:
            raise TopicMissing(f"SNS topic {name!r} does not exist. Run `manage.py setup_bus`.")
        return _topic_arns[name]


def remember_topic(name: str, arn: str) -> None:
    with _lock:
        _topic_arns[name] = arn


class QueueMissing(LookupError):
    pass


def queue_url(name: str) -> str:
    sqs = client("sqs")
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        raise QueueMissing(f"SQS queue {name!r} does not exist. Run `manage.py setup_bus`.") from None


def queue_attributes(url: str, *names: str) -> dict[str, str]:
    return client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=list(names) or ["All"])["Attributes"]
