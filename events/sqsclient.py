"""The consumer's SQS calls on its queue: receive, delete, visibility, hand-back, DLQ.

Promises:
- Every call that ends the consumer's hold on a message (delete, visibility change,
  release, hand-back, dead-letter) first lets the heartbeat go of it (events/heartbeat.py),
  so a message given back is never extended again behind the consumer's back.
- None of these calls runs inside a transaction. After a batch commits, its deletes and
  visibility changes go to ``Acks``: in the pipelined loop a thread of their own sends
  them in order while the next batch runs (the heartbeat keeps each message until its
  call is sent); ``flush`` waits for every one of them before the consumer stops.
- A failed delete or visibility change is logged, never raised: the message comes back
  after its visibility timeout and the inbox absorbs the redelivery.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings

from . import aws
from .heartbeat import Heartbeat
from .inbox import stamp_received

log = logging.getLogger("events.consumer")


class ConsumerConfigError(RuntimeError):
    """The queue or its topology is not as it must be; the message says what to do."""


def receive_count(message: dict[str, Any]) -> int:
    return int((message.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))


def copyable_attributes(message: dict[str, Any]) -> dict[str, Any]:
    keep = ("DataType", "StringValue", "BinaryValue")
    return {
        name: {k: v for k, v in attr.items() if k in keep}
        for name, attr in (message.get("MessageAttributes") or {}).items()
    }


def queue_missing(exc: Exception) -> bool:
    if isinstance(exc, ConsumerConfigError | aws.QueueMissing):
        return True
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


class QueueClient:
    """One consumer's queue (and its DLQ), with the heartbeat that guards what it holds."""

    def __init__(self, service: str, queue_name: str, stats: Any) -> None:
        self.service = service
        self.queue_name = queue_name
        self.stats = stats
        self._queue_url: str | None = None
        self._dlq_url: str | None = None
        self.heartbeat = Heartbeat(service, self.extend_visibility)

    # ------------------------------------------------------------------ urls
    @property
    def queue_url(self) -> str:
        if self._queue_url is None:
            try:
                self._queue_url = aws.queue_url(self.queue_name)
            except aws.QueueMissing as exc:
                raise ConsumerConfigError(str(exc)) from None
        return self._queue_url

    @queue_url.setter
    def queue_url(self, url: str | None) -> None:
        self._queue_url = url

    @property
    def dlq_url(self) -> str:
        if self._dlq_url is None:
            try:
                self._dlq_url = aws.queue_url(aws.queue_name(self.service, dlq=True))
            except aws.QueueMissing as exc:
                raise ConsumerConfigError(str(exc)) from None
        return self._dlq_url

    def forget_urls(self) -> None:
        """The queue vanished (an emulator restarted empty): resolve it again next time."""
        self._queue_url = self._dlq_url = None

    # ------------------------------------------------------------------ calls
    def receive(self, wait_seconds: int) -> list[dict[str, Any]]:
        """One receive; what it returns is held by the heartbeat before this returns."""
        response = aws.client("sqs").receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=settings.CONSUMER_VISIBILITY_TIMEOUT,
            MessageSystemAttributeNames=[
                "ApproximateReceiveCount",
                "SentTimestamp",
                *(["MessageGroupId"] if aws.fifo() else []),
            ],
            MessageAttributeNames=["All"],
        )
        messages = stamp_received(response.get("Messages", []))
        if messages:
            self.heartbeat.hold(messages)
        return messages

    def delete(self, messages: Iterable[dict[str, Any]]) -> None:
        messages = list(messages)
        self.heartbeat.drop(messages)
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        for start in range(0, len(entries), 10):
            try:
                response = aws.client("sqs").delete_message_batch(
                    QueueUrl=self.queue_url, Entries=entries[start : start + 10]
                )
                for bad in response.get("Failed", []):
                    log.warning(
                        "consumer %s: delete failed: %s (it will be redelivered and deduplicated)", self.service, bad
                    )
            except Exception as exc:
                log.warning(
                    "consumer %s: delete batch failed (%s); messages will be redelivered and deduplicated",
                    self.service,
                    exc,
                )

    def change_visibility(self, message: dict[str, Any], seconds: int) -> None:
        self.heartbeat.drop([message])
        try:
            aws.client("sqs").change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=seconds
            )
        except Exception as exc:
            log.warning("consumer %s: could not change visibility: %s", self.service, exc)

    def extend_visibility(self, messages: list[dict[str, Any]], seconds: int) -> None:
        """The heartbeat's call (it holds its lock; do not drop here)."""
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": seconds}
                for i, m in enumerate(chunk)
            ]
            try:
                response = aws.client("sqs").change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
                for bad in response.get("Failed", []):
                    log.warning("consumer %s: could not extend visibility: %s", self.service, bad)
            except Exception as exc:
                log.warning("consumer %s: could not extend visibility: %s", self.service, exc)

    def release(self, messages: Iterable[dict[str, Any]]) -> None:
        """Give messages back at once (visibility 0) instead of after the timeout: one
        batch call per 10."""
        messages = list(messages)
        self.heartbeat.drop(messages)
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for i, m in enumerate(chunk)
            ]
            try:
                response = aws.client("sqs").change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
                for bad in response.get("Failed", []):
                    log.warning("consumer %s: could not release a message: %s", self.service, bad)
            except Exception as exc:
                log.warning("consumer %s: could not release %d message(s): %s", self.service, len(chunk), exc)

    def hand_back(self, messages: Iterable[dict[str, Any]]) -> None:
        """Give messages back *without spending a receive*: send a copy with the original
        body and attributes, then delete the original (SQS counts receives per message).
        For messages the consumer could not handle because of the database, never because
        of their handler. A crash between the two calls leaves both; the inbox absorbs it."""
        messages = list(messages)
        self.heartbeat.drop(messages)
        sqs = aws.client("sqs")
        for message in messages:
            extra: dict[str, Any] = {}
            if aws.fifo():
                group = (message.get("Attributes") or {}).get("MessageGroupId") or "redelivered"
                extra = {"MessageGroupId": group, "MessageDeduplicationId": uuid.uuid4().hex}
            try:
                sqs.send_message(
                    QueueUrl=self.queue_url,
                    MessageBody=message.get("Body") or "",
                    MessageAttributes=copyable_attributes(message),
                    **extra,
                )
            except Exception as exc:
                log.warning(
                    "consumer %s: could not hand message %s back (%s); it returns after its visibility timeout",
                    self.service,
                    message.get("MessageId"),
                    exc,
                )
                continue
            self.delete([message])
        if messages:
            log.warning(
                "consumer %s: handed %d message(s) back as fresh copies (database still unavailable)",
                self.service,
                len(messages),
            )

    def dead_letter(self, message: dict[str, Any], reason: str) -> bool:
        """Send to the DLQ with the reason; True when sent (the original may be deleted)."""
        log.error("consumer %s: message %s to the DLQ: %s", self.service, message.get("MessageId"), reason)
        extra = {"MessageGroupId": "dead-letters", "MessageDeduplicationId": message["MessageId"]} if aws.fifo() else {}
        try:
            aws.client("sqs").send_message(
                QueueUrl=self.dlq_url,
                MessageBody=message.get("Body") or "(empty)",
                MessageAttributes={
                    "reason": {"DataType": "String", "StringValue": reason[:1000]},
                    "source_queue": {"DataType": "String", "StringValue": self.queue_name},
                },
                **extra,
            )
        except Exception as exc:
            log.warning(
                "consumer %s: could not dead-letter message %s: %s", self.service, message.get("MessageId"), exc
            )
            self.heartbeat.drop([message])
            return False
        self.stats.dead_lettered += 1
        return True


class Acks:
    """The calls that follow a commit (deletes, back-offs, releases). Inline (``threaded``
    False): each runs at once in the caller's thread. Threaded: one thread sends them in
    order while the caller goes on; ``flush`` waits until every call sent so far is done."""

    def __init__(self, service: str, *, threaded: bool) -> None:
        self.service = service
        self.threaded = threaded
        # Bounded: when SQS lags, the batch loop waits here rather than piling up
        # acknowledged messages that the heartbeat would have to keep extending.
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=8)
        self._thread: threading.Thread | None = None

    def send(self, call: Callable[[], None]) -> None:
        if not self.threaded:
            call()
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="consumer-acks", daemon=True)
            self._thread.start()
        self._queue.put(call)

    def _run(self) -> None:
        while True:
            call = self._queue.get()
            try:
                if call is not None:
                    call()
            except Exception:  # the calls log their own failures; never let the thread die
                log.exception("consumer %s: acknowledging failed", self.service)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        if self._thread is not None:
            self._queue.join()
