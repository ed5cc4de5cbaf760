"""Test helpers for the bus: moto in-process, a real ``moto_server`` process, and a
driver that drains the outbox and the queues synchronously (like Sentry's
``outbox_runner``), so end-to-end tests are short and deterministic."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests

from . import aws, relay, topology
from .consumer import Consumer, Stats
from .netutil import free_port, wait_for_http


def start_moto_server(port: int) -> subprocess.Popen:
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for_http(f"http://127.0.0.1:{port}/moto-api/")
    return proc


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
    """A real ``moto_server`` process on loopback."""
    port = free_port()
    proc = start_moto_server(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def moto_server(moto_server_url, settings) -> Iterator[str]:
    """Point the bus at the running ``moto_server``, with its state reset for this test."""
    requests.post(f"{moto_server_url}/moto-api/reset", timeout=5)
    settings.AWS_ENDPOINT_URL = moto_server_url
    aws.reset()
    yield moto_server_url
    aws.reset()
