"""The consumer: reads a service's SQS queue and runs its handlers.

Promises:
- Effectively once: each handler runs inside ``transaction.atomic()`` together with an
  inbox row keyed by (event id, handler); a redelivered event finds the row and is
  skipped, so its side effects happen once. The messages of one receive (up to 10) share
  one transaction, a savepoint each, so a batch costs one commit.
- Nothing is lost: a message is deleted only after every handler committed (or was a
  duplicate). A failing handler leaves the message for redelivery, with visibility
  backing off by receive count; SQS redrive moves it to the DLQ after the bound.
- An undecodable message, or one not from this bus, goes to the DLQ at once with the
  reason as a message attribute. An event type the service does not handle is
  acknowledged and logged.
- Long handlers keep their message: a heartbeat thread extends its visibility while the
  handler runs, so no other consumer gets it meanwhile.
- SIGTERM/SIGINT: stop receiving (a long poll in progress is cut short), finish the
  message in hand, release the unstarted ones (visibility 0), flush deletes, return.
- Broadcast (``broadcast=True``): an instance queue of its own, subscribed at start,
  tagged with a heartbeat, unsubscribed and deleted at stop; ``reap_queues`` removes the
  leftovers of an instance that died. Broadcast handlers update in-process state: they
  run without the inbox (every instance must run them) and must be idempotent.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)

from . import aws, broadcasting, catalogue, context, metrics, registry, telemetry
from .envelope import EnvelopeError, Event
from .models import InboxMessage

log = logging.getLogger("events.consumer")


class ConsumerConfigError(RuntimeError):
    """The queue or its topology is not as it must be; the message says what to do."""


class Duplicate(Exception):
    trace_as_error = False  # an OpenTelemetry span records a skip, not a failure


class BatchRolledBack(Exception):
    """Leaves a receive's transaction by rollback: a handler's database error broke it."""


class StopReceiving(BaseException):
    """Raised by a signal handler to cut a long poll short."""


class Heartbeat:
    """Extends the visibility of the message in hand while its handler runs longer than
    half of it. One daemon thread per consumer, started on first use: starting a thread
    per message cost more than many handlers do."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self._lock = threading.Lock()
        self._message: dict[str, Any] | None = None
        self._since = 0.0
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def track(self, message: dict[str, Any]) -> Iterator[None]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="visibility-heartbeat", daemon=True)
            self._thread.start()
        with self._lock:
            self._message, self._since = message, time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._message = None

    def _beat(self) -> None:
        while True:
            timeout = settings.CONSUMER_VISIBILITY_TIMEOUT
            time.sleep(max(timeout / 4, 0.25))
            with self._lock:
                message, since = self._message, self._since
                due = message is not None and time.monotonic() - since >= timeout / 2
                if due:
                    self._since = time.monotonic()
            if due and message is not None:
                log.info("consumer %s: handler still running; extending visibility by %s s", self.consumer.service, timeout)
                self.consumer.change_visibility(message, timeout)


@dataclass
class Stats:
    received: int = 0
    handled: int = 0
    duplicates: int = 0
    ignored: int = 0
    failed: int = 0
    dead_lettered: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def visibility_backoff(receive_count: int) -> int:
    """Seconds a failed message stays invisible: base, 2 x base, 4 x base, ... up to 15
    minutes (base ``CONSUMER_BACKOFF_BASE_SECONDS``, 2 s by default)."""
    return int(min(settings.CONSUMER_BACKOFF_BASE_SECONDS * 2 ** max(receive_count - 1, 0), 900))


class Consumer:
    def __init__(
        self,
        service: str,
        *,
        wait_seconds: int | None = None,
        stop: threading.Event | None = None,
        queue_name: str | None = None,
        check_topology: bool = True,
        broadcast: bool = False,
    ) -> None:
        self.service = service
        self.wait_seconds = settings.CONSUMER_WAIT_SECONDS if wait_seconds is None else wait_seconds
        self.stop = stop or threading.Event()
        self.broadcast = broadcast
        self.instance = broadcasting.instance_id() if broadcast else None
        self.queue_name = queue_name or aws.queue_name(service, instance=self.instance)
        self.check_topology = check_topology and not broadcast
        self.stats = Stats()
        self.receiving = False  # True while blocked in a long poll (a signal may cut it short)
        self._queue_url: str | None = None
        self._dlq_url: str | None = None
        self._instance_queue: broadcasting.InstanceQueue | None = None
        self.heartbeat = Heartbeat(self)
        self._db_broken = False

    # ----------------------------------------------------------------- setup
    @property
    def queue_url(self) -> str:
        if self._queue_url is None:
            try:
                self._queue_url = aws.queue_url(self.queue_name)
            except aws.QueueMissing as exc:
                raise ConsumerConfigError(str(exc)) from None
        return self._queue_url

    @property
    def dlq_url(self) -> str:
        if self._dlq_url is None:
            try:
                self._dlq_url = aws.queue_url(aws.queue_name(self.service, dlq=True))
            except aws.QueueMissing as exc:
                raise ConsumerConfigError(str(exc)) from None
        return self._dlq_url

    def verify(self) -> None:
        """Exit early with a clear message when the topology is not as it must be."""
        from . import topology

        _ = self.queue_url
        if not self.check_topology:
            return
        spec = next((s for s in topology.queue_specs([self.service]) if s.name == self.queue_name), None)
        if spec is None:
            raise ConsumerConfigError(f"Service {self.service!r} has no handlers: nothing to consume.")
        topics = aws.list_topic_arns()
        by_type = {t: topics[aws.topic_name(t)] for t in spec.event_types if aws.topic_name(t) in topics}
        drift = topology.check_queue(spec, by_type)
        missing = [t for t in spec.event_types if t not in by_type]
        drift += [f"topic {aws.topic_name(t)} is missing" for t in missing]
        if drift:
            raise ConsumerConfigError(
                f"The bus topology for {self.service!r} is not ready: {'; '.join(drift)}. Run `manage.py setup_bus`."
            )

    def open_instance_queue(self) -> None:
        """Broadcast: create, subscribe and tag this instance's own queue."""
        assert self.instance is not None
        self._instance_queue = broadcasting.InstanceQueue.create(self.service, self.instance, stop=self.stop)
        self._queue_url = self._instance_queue.url

    def close_instance_queue(self) -> None:
        if self._instance_queue is not None:
            self._instance_queue.delete()
            self._instance_queue = None

    def run_startup_hooks(self) -> None:
        for hook in registry.startup_hooks(self.service):
            log.info("consumer %s: running startup hook %s", self.service, hook.__qualname__)
            try:
                hook()
            except Exception as exc:  # e.g. the teams service not up yet: events still flow
                log.error("consumer %s: startup hook %s failed: %s", self.service, hook.__qualname__, exc)

    # ----------------------------------------------------------------- loop
    def run(self, *, drain: bool = False, max_messages: int | None = None) -> Stats:
        """Receive and handle until stopped. ``drain``: stop at the first empty receive."""
        if self.broadcast and self._instance_queue is None:
            self.open_instance_queue()
        try:
            while not self.stop.is_set():
                handled = self.poll(wait_seconds=min(self.wait_seconds, 1) if drain else self.wait_seconds)
                if drain and handled == 0:
                    break
                if max_messages is not None and self.stats.received >= max_messages:
                    break
        finally:
            if self.broadcast:
                self.close_instance_queue()
        return self.stats

    def receive(self, wait_seconds: int) -> list[dict[str, Any]]:
        self.receiving = True
        try:
            if self.stop.is_set():
                return []
            response = aws.client("sqs").receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=wait_seconds,
                VisibilityTimeout=settings.CONSUMER_VISIBILITY_TIMEOUT,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                MessageAttributeNames=["All"],
            )
        except StopReceiving:
            return []
        finally:
            self.receiving = False
        return _stamp_received(response.get("Messages", []))

    def interrupt(self) -> None:
        """From a signal handler: stop; cut a long poll short (nothing is in hand then;
        a message SQS handed out meanwhile comes back after its visibility timeout)."""
        self.stop.set()
        if self.receiving:
            raise StopReceiving()

    def poll(self, *, wait_seconds: int | None = None) -> int:
        """One receive: handle each message, delete the done ones in one batch."""
        try:
            messages = self.receive(self.wait_seconds if wait_seconds is None else wait_seconds)
        except Exception as exc:  # SQS unreachable: back off and keep going
            log.warning("consumer %s: receive failed (%s); retrying", self.service, exc)
            self.stop.wait(2)
            return 0
        done: list[dict[str, Any]] = []
        self._db_broken = False
        _close_old_connections()
        try:
            # One commit per receive: each handler runs in a savepoint of the batch's
            # transaction (with its inbox row); the messages are deleted after the commit.
            with contextlib.nullcontext() if self.broadcast else transaction.atomic():
                for index, message in enumerate(messages):
                    if self.stop.is_set() or self._db_broken:
                        self.release(messages[index:])
                        break
                    self.stats.received += 1
                    if self.handle(message):
                        done.append(message)
                # A connection lost inside a handler's savepoint leaves the batch marked
                # for rollback, and leaving the block would then roll back *silently*:
                # the messages handled before it must not be deleted.
                if not self.broadcast and (self._db_broken or connection.needs_rollback):
                    raise BatchRolledBack()
        except BatchRolledBack:
            log.error("consumer %s: the batch was rolled back (database error); its messages come back", self.service)
            done = []
            self.stop.wait(2)
        except (OperationalError, InterfaceError) as exc:
            # The commit failed: nothing of the batch was kept, so every message comes back.
            log.error("consumer %s: database unavailable at commit (%s); messages kept", self.service, exc)
            done = []
            self.stop.wait(2)
        self.delete(done)
        return len(messages)

    def handle(self, message: dict[str, Any]) -> bool:
        """Handle one message; True when it may be deleted."""
        _close_old_connections()
        try:
            try:
                event = Event.from_body(message.get("Body", ""))
                self.check_source(event)
            except EnvelopeError as exc:
                self.dead_letter(message, str(exc))
                return True
            handlers = registry.handlers(service=self.service, event_type=event.type, broadcast=self.broadcast)
            if not handlers:
                self.stats.ignored += 1
                log.info("consumer %s: no handler for %s %s; acknowledged", self.service, event.type, event.id)
                return True
            for h in handlers:
                try:
                    with self.heartbeat.track(message):
                        self.run_handler(h, event, message)
                    metrics.event_handled(self.service, event)
                except Duplicate:
                    self.stats.duplicates += 1
                    metrics.event_duplicate(self.service, event)
                    log.info("consumer %s: %s already handled %s; skipped", self.service, h.name, event.id)
            self.stats.handled += 1
            self.stats.by_type[event.type] = self.stats.by_type.get(event.type, 0) + 1
            return True
        except (OperationalError, InterfaceError) as exc:
            # The database is down: keep the message, back off, do not crash-loop.
            self.stats.failed += 1
            metrics.event_failed(self.service, message)
            log.error("consumer %s: database unavailable (%s); message kept, backing off", self.service, exc)
            self._db_broken = True
            self.change_visibility(message, 5)
            self.stop.wait(2)
            return False
        except Exception as exc:
            self.stats.failed += 1
            metrics.event_failed(self.service, message)
            count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            log.exception(
                "consumer %s: handler failed on message %s (receive %s): %s",
                self.service,
                message.get("MessageId"),
                count,
                exc,
            )
            self.change_visibility(message, visibility_backoff(count))
            return False
        finally:
            _close_old_connections()

    def check_source(self, event: Event) -> None:
        try:
            et = catalogue.get(event.type)
        except catalogue.UnknownEventType:
            raise EnvelopeError(f"unknown event type {event.type!r}") from None
        expected = f"{settings.BUS_SOURCE_PREFIX}/{et.source}"
        if event.source != expected:
            raise EnvelopeError(f"source {event.source!r} is not this bus's {expected!r} for {event.type}")

    def run_handler(self, h: registry.Handler, event: Event, message: dict[str, Any] | None = None) -> None:
        with context.bound(correlation=event.correlationid, causation=event.id), telemetry.handling(self.service, h.name, event):
            if h.broadcast:
                h.func(event)
                log.info("consumer %s: %s handled %s %s (broadcast)", self.service, h.name, event.type, event.id)
                return
            with transaction.atomic():
                inbox_id = _inbox_insert(event, h.name, service=self.service, message=message or {})
                if inbox_id is None:
                    raise Duplicate()
                h.func(event)
                _inbox_handled(inbox_id)
            log.info("consumer %s: %s handled %s %s", self.service, h.name, event.type, event.id)

    # ----------------------------------------------------------------- SQS calls
    def delete(self, messages: Iterable[dict[str, Any]]) -> None:
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
        try:
            aws.client("sqs").change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=seconds
            )
        except Exception as exc:
            log.warning("consumer %s: could not change visibility: %s", self.service, exc)

    def release(self, messages: Iterable[dict[str, Any]]) -> None:
        """Give unstarted messages back at once (visibility 0) instead of after the timeout."""
        for message in messages:
            self.change_visibility(message, 0)

    def dead_letter(self, message: dict[str, Any], reason: str) -> None:
        self.stats.dead_lettered += 1
        log.error("consumer %s: message %s to the DLQ: %s", self.service, message.get("MessageId"), reason)
        extra = {"MessageGroupId": "dead-letters", "MessageDeduplicationId": message["MessageId"]} if aws.fifo() else {}
        aws.client("sqs").send_message(
            QueueUrl=self.dlq_url,
            MessageBody=message.get("Body") or "(empty)",
            MessageAttributes={
                "reason": {"DataType": "String", "StringValue": reason[:1000]},
                "source_queue": {"DataType": "String", "StringValue": self.queue_name},
            },
            **extra,
        )


def _inbox_insert(event: Event, handler: str, *, service: str = "", message: dict[str, Any] | None = None) -> int | None:
    """Insert the inbox row; None when (event, handler) is already there, else its id. One
    statement (``ON CONFLICT DO NOTHING``) instead of a savepoint around an insert that may
    fail. On Postgres a concurrent insert of the same key waits for the other transaction
    and then finds the row: two consumers never both run a handler for one event. The row
    also records the hop for the trace: service, ids, queued/received/started times."""
    from django.db import connection
    from django.utils import timezone

    message = message or {}
    now = timezone.now()
    sent = message.get("Attributes", {}).get("SentTimestamp")
    queued = datetime.fromtimestamp(int(sent) / 1000, tz=UTC) if str(sent or "").isdigit() else None
    adapt = connection.ops.adapt_datetimefield_value
    table = connection.ops.quote_name(InboxMessage._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (event_id, handler, type, subject, sequence, handled_at, service, correlation_id, "
            "causation_id, queued_at, received_at, started_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (event_id, handler) DO NOTHING RETURNING id",
            [
                InboxMessage._meta.get_field("event_id").get_db_prep_value(uuid.UUID(event.id), connection),
                handler,
                event.type,
                event.subject,
                event.sequence,
                adapt(now),
                service,
                (event.correlationid or "")[:128],
                (event.causationid or "")[:64],
                adapt(queued),
                adapt(message.get(RECEIVED_AT) or now),
                adapt(now),
            ],
        )
        row = cursor.fetchone()
        return int(row[0]) if row is not None else None


def _inbox_handled(inbox_id: int) -> None:
    """The handler finished: its end time, in its own transaction (so it commits with it)."""
    from django.db import connection
    from django.utils import timezone

    table = connection.ops.quote_name(InboxMessage._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET handled_at = %s WHERE id = %s",
            [connection.ops.adapt_datetimefield_value(timezone.now()), inbox_id],
        )


# The time the consumer received a message, kept on the message dict (events/trace.py).
RECEIVED_AT = "LeagueReceivedAt"


def _stamp_received(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from django.utils import timezone

    now = timezone.now()
    for message in messages:
        message[RECEIVED_AT] = now
    return messages


def _close_old_connections() -> None:
    """Drop a broken or expired connection between messages (a database restart must not
    kill the consumer). Not inside an atomic block: that is a test's transaction."""
    from django.db import connection

    if not connection.in_atomic_block:
        close_old_connections()


def wait_for_database(stop: threading.Event, *, attempts: int = 30) -> bool:
    """Block until the database answers (or ``stop``): a consumer started before its
    database should wait, not crash-loop."""
    from django.db import connection

    for _ in range(attempts):
        try:
            connection.ensure_connection()
            return True
        except DatabaseError as exc:
            log.warning("database not ready (%s); waiting", exc)
            close_old_connections()
            if stop.wait(2):
                return False
    return False


__all__ = ["Consumer", "ConsumerConfigError", "Stats", "visibility_backoff", "wait_for_database"]
