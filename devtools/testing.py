"""Test helpers for the bus: moto in-process, a real emulator process (``moto_server``, or
LocalStack with ``BUS_EMULATOR=localstack``: see ``devtools.emulators``), and a driver that drains the outbox and the queues synchronously (like Sentry's
``outbox_runner``), so end-to-end tests are short and deterministic."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from devtools import emulators
from events import aws, relay, topology
from events.consumer import Consumer, Stats


def pytest_configure(config) -> None:
    """Tests never reach AWS: they run moto in-process or start an emulator themselves, so the
    test processes (and the processes they start) hold the emulator's credentials and no other."""
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(name, None)
    os.environ.update(emulators.CREDENTIALS)


@dataclass
class BusDriver:
    services: list[str]
    consumed: dict[str, Stats] = field(default_factory=dict)

    def relay(self) -> int:
        return relay.relay().published

    def consume(self, service: str) -> int:
        stats = Consumer(service, wait_seconds=0, check_topology=False).run(drain=True)
        total = self.consumed.setdefault(service, Stats())
        total.received += stats.received
        total.handled += stats.handled
        total.duplicates += stats.duplicates
        total.failed += stats.failed
        total.dead_lettered += stats.dead_lettered
        return stats.received

    def drain(self, *, rounds: int = 20) -> None:
        """Relay and consume until nothing moves (bounded)."""
        for _ in range(rounds):
            moved = self.relay()
            for service in self.services:
                moved += self.consume(service)
            if not moved:
                return
        raise AssertionError(f"the bus did not settle within {rounds} rounds")


@pytest.fixture
def aws_mock(settings) -> Iterator[None]:
    """moto in-process: every SNS/SQS call stays in this process."""
    from moto import mock_aws

    settings.AWS_ENDPOINT_URL = None
    settings.OUTBOX_KICK = False
    aws.reset()
    with mock_aws():
        yield
    aws.reset()


@pytest.fixture
def bus(aws_mock, db) -> BusDriver:
    """The bus set up on moto in-process, with a synchronous drain()."""
    topology.ensure()
    return BusDriver(services=topology.consuming_services())


@pytest.fixture(scope="session")
def moto_server_url() -> Iterator[str]:
    """A real emulator process on loopback: ``moto_server``, or the one ``BUS_EMULATOR``
    names (CI runs the process tests on both)."""
    emulator = emulators.start(emulators.selected())
    try:
        yield emulator.url
    finally:
        emulator.stop()


@pytest.fixture
def moto_server(moto_server_url, settings) -> Iterator[str]:
    """Point the bus at the running emulator, with its SNS/SQS state emptied for this test."""
    emulators.reset(moto_server_url, region=settings.AWS_REGION)
    settings.AWS_ENDPOINT_URL = moto_server_url
    aws.reset()
    yield moto_server_url
    aws.reset()


def database_url() -> str:
    """A URL for the database this test process uses (the test database), so that the
    processes a test starts share it."""
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def child_env(moto_url: str, **extra: str) -> dict[str, str]:
    """The environment for a process a test starts: this test's database, the given
    moto_server, this checkout's data dir."""
    from django.conf import settings

    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        **emulators.client_env(moto_url),
        DATA_DIR=str(settings.DATA_DIR),
        CELERY_BROKER_URL="filesystem://",
        CONSUMER_WAIT_SECONDS="1",
        OUTBOX_KICK="false",
        PYTHONUNBUFFERED="1",
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(extra)
    return env


def manage_argv(*args: str) -> list[str]:
    from django.conf import settings

    return [sys.executable, str(settings.BASE_DIR / "manage.py"), *args]


class _RolledBack(Exception):
    pass


def rolled_back(*steps: Callable[[], Any]) -> Any:
    """Run ``steps`` in order inside a transaction that is then rolled back, and return what
    the last one returned: two ways of reaching a state (a set-based write and one row at a
    time, say) start from the same database and can be compared."""
    from django.db import transaction

    result: list[Any] = []
    try:
        with transaction.atomic():
            for step in steps:
                out = step()
            result.append(out)
            raise _RolledBack
    except _RolledBack:
        return result[0]


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds naming ``what``."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
