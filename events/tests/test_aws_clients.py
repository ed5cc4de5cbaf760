"""The bus's boto3 clients: one per process, endpoint and budget, shared by every thread
(botocore clients are thread-safe), so that a thread started later (a consumer's receive
or acknowledgement thread, a relay's publisher) makes no client of its own."""

from __future__ import annotations

import threading

from events import aws


def _in_thread(func):
    out = []
    t = threading.Thread(target=lambda: out.append(func()))
    t.start()
    t.join(10)
    return out[0]


def test_a_new_thread_uses_the_client_the_process_already_has(aws_mock):
    main = aws.client("sqs")
    assert _in_thread(lambda: aws.client("sqs")) is main
    assert _in_thread(lambda: aws.quick_client("sqs")) is aws.quick_client("sqs")


def test_clients_differ_by_service_and_budget(aws_mock):
    assert aws.client("sqs") is not aws.client("sns")
    assert aws.client("sqs", budget=5) is not aws.client("sqs")
    assert aws.client("sqs", budget=5) is aws.client("sqs", budget=5)


def test_reset_forgets_the_clients_of_every_thread(aws_mock):
    before = _in_thread(lambda: aws.client("sqs"))
    aws.reset()
    assert aws.client("sqs") is not before
    assert aws.client("sqs").list_queues() is not None  # the new one works


def test_threads_that_ask_at_once_get_one_client(aws_mock):
    aws.reset()
    barrier = threading.Barrier(8)
    seen: list[object] = []

    def ask() -> None:
        barrier.wait()
        seen.append(aws.client("sqs"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(seen) == 8 and len({id(c) for c in seen}) == 1
