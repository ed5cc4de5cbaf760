"""The queue checks the crash suite's scenarios rely on, against moto: a message that a
consumer killed earlier still holds is in flight until its visibility timeout, and a
scenario that judges what a *stopped* consumer leaves behind waits that out first."""

from __future__ import annotations

import time

import pytest

from events import aws, topology
from faults import queues


@pytest.fixture
def probe_queue(aws_mock, db) -> str:
    topology.ensure(["probe"])
    return aws.queue_url(aws.queue_name("probe"))


def hold(url: str, seconds: int) -> None:
    """What a consumer killed with kill -9 leaves: a received message, never deleted."""
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=url, MessageBody="{}")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=seconds, WaitTimeSeconds=1)
    assert len(got.get("Messages", [])) == 1


def test_in_flight_counts_what_a_dead_consumer_holds(probe_queue):
    assert queues.in_flight("probe") == 0
    hold(probe_queue, 30)
    assert queues.in_flight("probe") == 1


def test_waiting_for_no_message_in_flight_names_the_queue_still_held_at_the_deadline(probe_queue):
    hold(probe_queue, 30)
    started = time.monotonic()
    assert queues.wait_none_in_flight(["probe"], timeout=0.5) == {"probe": 1}
    assert time.monotonic() - started < 5


def test_waiting_for_no_message_in_flight_returns_once_the_holds_time_out(probe_queue):
    hold(probe_queue, 2)
    started = time.monotonic()
    assert queues.wait_none_in_flight(["probe"], timeout=15) == {}
    waited = time.monotonic() - started
    assert 1.0 <= waited < 10, waited
    assert queues.in_flight("probe") == 0
