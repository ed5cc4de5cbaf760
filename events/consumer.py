"""The consumer: reads a service's SQS queue and runs its handlers.

Promises:
- Effectively once: each handler runs inside ``transaction.atomic()`` together with an
  inbox row keyed by (event id, handler); a redelivered event finds the row and is
  skipped, so its side effects happen once. The messages of one receive (up to 10) share
  one transaction, a savepoint each, so a batch costs one commit.
- Nothing is lost: a message is deleted only after every handler committed (or was a
  duplicate). A failing handler leaves the message for redelivery, with visibility
  backing off by receive count; SQS redrive moves it to the DLQ after the bound.
- The DLQ is for messages that fail their handler, never for our infrastructure:
  - *Database outage.* The consumer does not receive while its database does not answer
    (``SELECT 1`` before every receive; back-off 0.5, 1, 2 ... s up to
    ``CONSUMER_DB_BACKOFF_MAX_SECONDS``; one log line when it goes away, one when it is
    back). When the database fails after a receive (the transaction cannot open, or dies
    mid-batch, or at commit), the batch rolls back and its messages stay **in hand**,
    kept invisible by the heartbeat, until the database answers; then the batch runs
    again. Why in hand rather than re-sending a copy and deleting the original (which
    also resets SQS's receive count): holding costs no SQS write, cannot duplicate a
    message (a crash between send and delete would), keeps FIFO order and the original
    message id, and the one receive it spent is the one that will run the handler. The
    copy is the fallback only where holding is impossible: a stop signal while the
    database is still down, or a hold reaching ``MAX_HOLD_SECONDS`` (SQS caps a
    message's visibility at 12 h from its receive); such a message goes back as a copy
    with the original body and attributes, and the original is deleted, so the receive
    does not count towards ``maxReceiveCount``. A handler that keeps raising a database
    error while the database answers is a handler failure after 3 rounds (bounded).
  - *Lock conflicts.* Competing consumers take the messages of a batch in one order
    (aggregate, subject, sequence), so handlers that lock their subject's rows lock them
    in the same order. A deadlock or serialization failure that happens anyway rolls the
    batch back and runs it again in-process (``CONSUMER_CONFLICT_RETRIES`` times, with
    jitter), logged as what it is and counted in ``league_consumer_conflicts_total``; it
    never sends a message back to SQS. Only when the retries run out are the messages
    treated as failed (visibility back-off).
- *A service being moved* (``events/gate.py``): the batch's transaction takes the
  service's gate row in share mode first; a closed gate rolls the batch back and gives its
  messages back at once, and the consumer receives nothing until the gate opens again
  (``moved``: never). A pause waits for the batch under way, so no batch of the service
  commits in this database after the pause.
- An undecodable message, one not from this bus, or one whose ``data`` breaks its type's
  JSON Schema in the catalogue goes to the DLQ at once with the reason as a message
  attribute. An event type the service does not handle is acknowledged and logged.
- Every message this consumer holds stays invisible to others: a heartbeat thread extends
  the visibility of all of them (the one in hand, the rest of its batch, the handled ones
  waiting for the commit, a batch held through an outage) when a third of the timeout
  has passed since the receive or the last extension.
- No network call inside a transaction: decoding, validation and dead-lettering happen
  before the batch's transaction opens; deletes, visibility changes and releases after
  it ends; the heartbeat runs in its own thread.
- SIGTERM/SIGINT: stop receiving (a long poll in progress is cut short, and whatever it
  returned meanwhile is released at once), finish the message in hand, release the
  unstarted ones (visibility 0), flush deletes, return.
- Broadcast (``broadcast=True``): an instance queue of its own, subscribed at start,
  tagged with a heartbeat, unsubscribed and deleted at stop; ``reap_queues`` removes the
  leftovers of an instance that died. Broadcast handlers update in-process state: they
  run without the inbox and the database check (every instance must run them) and must
  be idempotent.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
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

from . import aws, broadcasting, catalogue, context, gate, metrics, registry, telemetry
from .envelope import EnvelopeError, Event
from .models import InboxMessage

log = logging.getLogger("events.consumer")

# SQLSTATEs of a lost race between transactions: retrying the transaction is the cure.
CONFLICT_SQLSTATES = {"40P01": "deadlock", "40001": "serialization failure"}


class ConsumerConfigError(RuntimeError):
    """The queue or its topology is not as it must be; the message says what to do."""


class Duplicate(Exception):
    trace_as_error = False  # an OpenTelemetry span records a skip, not a failure


class BatchRolledBack(Exception):
    """Leaves a receive's transaction by rollback: a handler's database error broke it."""


class StopReceiving(BaseException):
    """Raised by a signal handler to cut a long poll short."""


def conflict_kind(exc: BaseException) -> str | None:
    """'deadlock' / 'serialization failure' / 'database is locked' when ``exc`` is a lost
    race between transactions (worth retrying at once), else None."""
    for err in (exc, exc.__cause__):
        code = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
        if code in CONFLICT_SQLSTATES:
            return CONFLICT_SQLSTATES[code]
    if isinstance(exc, OperationalError) and "database is locked" in str(exc):  # SQLite
        return "database is locked"
    return None


@dataclass(eq=False)
class Work:
    """One decoded message of a batch and what its handlers did in the current attempt."""

    message: dict[str, Any]
    event: Event
    handlers: list[registry.Handler]
    handled: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    @property
    def lock_order(self) -> tuple[str, str, int, str]:
        aggregate = catalogue.EVENT_TYPES[self.event.type].aggregate
        return aggregate, self.event.subject, self.event.sequence, self.event.id


@dataclass
class Attempt:
    """One run of a batch's transaction."""

    done: list[Work] = field(default_factory=list)
    failed: list[tuple[Work, Exception]] = field(default_factory=list)
    unstarted: list[Work] = field(default_factory=list)
    committed: bool = False
    conflict: str | None = None  # what kind of race rolled it back
    db_error: BaseException | None = None  # the database failed: rolled back, keep in hand
    culprit: Work | None = None  # the message whose handler hit the database error
    paused: BaseException | None = None  # the service's gate closed: rolled back, given back


class DatabaseGate:
    """Whether the consumer's database answers. The consumer asks before every receive, so
    an outage holds the queue's messages in SQS instead of spending their receives."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.down_since: float | None = None
        self.last_error: BaseException | None = None

    def answers(self) -> bool:
        try:
            _close_old_connections()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except DatabaseError as exc:
            self.last_error = exc
            if not connection.in_atomic_block:
                with contextlib.suppress(DatabaseError):
                    connection.close()
            return False

    def wait_until_up(self) -> bool:
        """Block until the database answers; False if stopped first. One log line when the
        database goes away, one when it is back: not one per check."""
        delay = 0.5
        cap = float(settings.CONSUMER_DB_BACKOFF_MAX_SECONDS)
        while not self.consumer.stop.is_set():
            if self.answers():
                if self.down_since is not None:
                    log.warning(
                        "consumer %s: database back after %.0f s; receiving again",
                        self.consumer.service,
                        time.monotonic() - self.down_since,
                    )
                    self.down_since = None
                return True
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.error(
                    "consumer %s: database unreachable (%s); not receiving until it answers (checking every %s s at most)",
                    self.consumer.service,
                    first_line(self.last_error),
                    cap,
                )
            self.consumer.stop.wait(delay)
            delay = min(delay * 2, cap)
        return False


class Heartbeat:
    """Keeps every message this consumer holds invisible to other consumers: from its
    receive until it is deleted, released, backed off or dead-lettered. One daemon thread
    per consumer, started on first use, extends (in batches of 10) each held message whose
    receive or last extension is a third of a visibility timeout old (a margin for a slow
    machine or a slow SQS call)."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        # Held during the extension calls, so that once ``drop`` returns, a message handed
        # back (visibility 0) is never extended again behind the consumer's back.
        self._lock = threading.Lock()
        self._held: dict[str, list[Any]] = {}  # receipt handle -> [message, last extended]
        self._thread: threading.Thread | None = None

    def hold(self, messages: Iterable[dict[str, Any]]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="visibility-heartbeat", daemon=True)
            self._thread.start()
        now = time.monotonic()
        with self._lock:
            for m in messages:
                self._held[m["ReceiptHandle"]] = [m, now]

    def drop(self, messages: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            for m in messages:
                self._held.pop(m["ReceiptHandle"], None)

    @property
    def held(self) -> int:
        return len(self._held)

    def _beat(self) -> None:
        while True:
            time.sleep(max(settings.CONSUMER_VISIBILITY_TIMEOUT / 6, 0.2))
            try:
                self.beat()
            except Exception:  # never let the heartbeat thread die
                log.exception("consumer %s: heartbeat failed", self.consumer.service)

    def beat(self) -> None:
        timeout = settings.CONSUMER_VISIBILITY_TIMEOUT
        with self._lock:
            now = time.monotonic()
            due = [entry for entry in self._held.values() if now - entry[1] >= timeout / 3]
            if not due:
                return
            log.info(
                "consumer %s: extending the visibility of %d held message(s) by %s s",
                self.consumer.service,
                len(due),
                timeout,
            )
            self.consumer.extend_visibility([entry[0] for entry in due], timeout)
            for entry in due:
                entry[1] = now


@dataclass
class Stats:
    """Per message: each received one is handled (a handler ran), a duplicate (every
    handler had handled it already), ignored, failed or dead-lettered."""

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
    # A batch held through a database outage goes back as fresh copies after this long:
    # SQS refuses to extend a message's visibility past 12 h from its receive.
    MAX_HOLD_SECONDS = 11 * 3600
    # Rounds in which a handler's database error recurs although the database answers,
    # before it counts as a handler failure (e.g. a statement timeout on every try).
    DB_ERROR_STRIKES = 3

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
        self.database = DatabaseGate(self)
        self._receive_trouble: str | None = None  # "missing" / "unreachable" while receives fail

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
        response: dict[str, Any] = {}
        try:
            try:
                self.receiving = True
                if self.stop.is_set():
                    return []
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
            finally:
                self.receiving = False
        except StopReceiving:
            # The signal came during the long poll or as it returned (even in the
            # ``finally`` above, before the flag was cleared): whatever this receive got
            # goes back at once, and the consumer stops as for any other signal.
            self.receiving = False
            self.release(response.get("Messages", []))
            return []
        return _stamp_received(response.get("Messages", []))

    def interrupt(self) -> None:
        """From a signal handler: stop; cut a long poll short (what it returned meanwhile
        is released by ``receive``)."""
        self.stop.set()
        if self.receiving:
            raise StopReceiving()

    def poll(self, *, wait_seconds: int | None = None) -> int:
        """One receive, once the database answers: handle the messages, delete the done
        ones. Returns how many messages the receive brought."""
        if not self.broadcast and not (self.database.wait_until_up() and self.wait_while_gated()):
            return 0
        try:
            messages = self.receive(self.wait_seconds if wait_seconds is None else wait_seconds)
        except Exception as exc:  # SQS unreachable or the queue gone: back off and keep going
            self._receive_failed(exc)
            self.stop.wait(2)
            return 0
        self._receive_recovered()
        if messages:
            self.stats.received += len(messages)
            self.heartbeat.hold(messages)
            try:
                self.process(messages)
            finally:
                self.heartbeat.drop(messages)  # anything still held waits out its visibility
        return len(messages)

    def wait_while_gated(self) -> bool:
        """While this service's write gate is closed in this database (``events/gate.py``:
        the service is being moved, or has moved), receive nothing: the queue keeps its
        messages for the service's consumer wherever it runs. False if stopped first."""
        said: str | None = None
        while not self.stop.is_set():
            try:
                state = gate.current(self.service)
            except DatabaseError:
                return True  # the database gate's business (checked before every receive)
            if state == gate.OPEN:
                if said is not None:
                    log.warning("consumer %s: the service's gate is open again; receiving", self.service)
                return True
            if state != said:
                said = state
                log.warning(
                    "consumer %s: the service's gate is %s in this database (split_service); not receiving%s",
                    self.service,
                    state,
                    ": it runs on its own database now, stop this consumer" if state == gate.MOVED else "",
                )
            self.stop.wait(1.0)
        return False

    def _receive_failed(self, exc: Exception) -> None:
        """Log once per state change, not every 2 s. A missing queue (e.g. an emulator
        restarted empty) is waited for: its URL is resolved again on the next receive, so
        the consumer resumes by itself once ``setup_bus`` has recreated it."""
        missing = _queue_missing(exc)
        if missing:
            self._queue_url = self._dlq_url = None
        state = "missing" if missing else "unreachable"
        if state == self._receive_trouble:
            return
        self._receive_trouble = state
        if missing:
            log.error(
                "consumer %s: queue %s does not exist; waiting for it (run `manage.py setup_bus`)",
                self.service,
                self.queue_name,
            )
        else:
            log.warning("consumer %s: receive failed (%s); retrying every 2 s", self.service, exc)

    def _receive_recovered(self) -> None:
        if self._receive_trouble is not None:
            log.warning("consumer %s: queue %s answers again; consuming", self.service, self.queue_name)
            self._receive_trouble = None

    def process(self, messages: list[dict[str, Any]]) -> None:
        """Sort a receive out without the database, then run the handlers of what is left
        in one transaction (or again, after a conflict or an outage)."""
        batch: list[Work] = []
        acknowledged: list[dict[str, Any]] = []
        for message in messages:
            try:
                event = self.decode(message)
            except EnvelopeError as exc:
                if self.dead_letter(message, str(exc)):
                    acknowledged.append(message)
                continue
            handlers = registry.handlers(service=self.service, event_type=event.type, broadcast=self.broadcast)
            if not handlers:
                self.stats.ignored += 1
                log.info("consumer %s: no handler for %s %s; acknowledged", self.service, event.type, event.id)
                acknowledged.append(message)
                continue
            batch.append(Work(message, event, handlers))
        self.delete(acknowledged)
        # One order for every consumer: handlers that lock their subject's rows take the
        # locks in the same order, which keeps competing batches from deadlocking.
        batch.sort(key=lambda w: w.lock_order)
        self.handle_batch(batch)

    def handle_batch(self, pending: list[Work]) -> None:
        conflicts = 0
        strikes: Counter[str] = Counter()
        held_since = time.monotonic()
        while pending:
            if self.stop.is_set():
                self.release([w.message for w in pending])
                return
            attempt = self.transact(pending)
            if attempt.paused is not None:
                log.warning("consumer %s: %s; %d message(s) given back", self.service, attempt.paused, len(pending))
                self.release([w.message for w in pending])
                return
            self.fail(attempt.failed)  # handler failures are final, whatever became of the batch
            if attempt.committed:
                self.record(attempt.done)
                self.delete([w.message for w in attempt.done])
                if attempt.unstarted:
                    self.release([w.message for w in attempt.unstarted])
                return
            failed = {id(w) for w, _ in attempt.failed}
            pending = [w for w in pending if id(w) not in failed]
            if attempt.conflict:
                conflicts += 1
                metrics.consumer_conflict(self.service, attempt.conflict)
                if conflicts > settings.CONSUMER_CONFLICT_RETRIES:
                    log.error(
                        "consumer %s: %s %d times in a row; giving up on the batch of %d (redelivered after back-off)",
                        self.service,
                        attempt.conflict,
                        conflicts,
                        len(pending),
                    )
                    self.fail([(w, RuntimeError(attempt.conflict)) for w in pending])
                    return
                log.warning(
                    "consumer %s: %s with another transaction; batch of %d rolled back, retrying it in-process "
                    "(%d of %d)",
                    self.service,
                    attempt.conflict,
                    len(pending),
                    conflicts,
                    settings.CONSUMER_CONFLICT_RETRIES,
                )
                time.sleep(random.uniform(0, 0.05 * 2**conflicts))
                continue
            log.error(
                "consumer %s: database error during the batch (%s); %d message(s) rolled back and kept in hand",
                self.service,
                first_line(attempt.db_error),
                len(pending),
            )
            if self.database.answers():
                # Not an outage (or a very short one): a handler's own database error,
                # e.g. a statement timeout, must not loop for ever outside SQS's count.
                suspects = [attempt.culprit] if attempt.culprit is not None else pending
                for w in suspects:
                    strikes[w.event.id] += 1
                hopeless = [w for w in pending if strikes[w.event.id] >= self.DB_ERROR_STRIKES]
                if hopeless:
                    self.fail([(w, attempt.db_error or RuntimeError("database error")) for w in hopeless])
                    pending = [w for w in pending if strikes[w.event.id] < self.DB_ERROR_STRIKES]
                self.stop.wait(0.2)
            if not self.database.wait_until_up() or time.monotonic() - held_since > self.MAX_HOLD_SECONDS:
                self.hand_back([w.message for w in pending])
                return

    def decode(self, message: dict[str, Any]) -> Event:
        """The message's event, checked against the catalogue: known type, this bus's
        source, data valid for the type's schema. No database, no network."""
        event = Event.from_body(message.get("Body", ""))
        self.check_source(event)
        problem = catalogue.data_error(event.type, event.data)
        if problem:
            raise EnvelopeError(problem)
        return event

    def transact(self, pending: Sequence[Work]) -> Attempt:
        """Run the handlers of ``pending`` in one transaction, a savepoint each. Makes no
        network call: what to delete, release or back off is decided after it ends."""
        attempt = Attempt()
        try:
            with contextlib.nullcontext() if self.broadcast else transaction.atomic():
                if not self.broadcast:
                    # Held until the batch commits: a pause waits for it (events/gate.py).
                    gate.check_writable(self.service)
                for work in pending:
                    if self.stop.is_set():
                        attempt.unstarted.append(work)
                        continue
                    try:
                        self.handle(work)
                    except (OperationalError, InterfaceError):
                        attempt.culprit = work
                        raise
                    except Exception as exc:
                        attempt.failed.append((work, exc))
                        count = receive_count(work.message)
                        log.error(
                            "consumer %s: handler failed on %s %s (message %s, receive %s): %s",
                            self.service,
                            work.event.type,
                            work.event.id,
                            work.message.get("MessageId"),
                            count,
                            exc,
                            exc_info=exc,
                        )
                        continue
                    attempt.done.append(work)
                # A connection lost inside a handler's savepoint leaves the batch marked
                # for rollback, and leaving the block would then roll back *silently*:
                # the messages handled before it must not be deleted.
                if not self.broadcast and connection.needs_rollback:
                    raise BatchRolledBack()
        except gate.ServicePaused as exc:
            attempt.paused = exc
            return attempt
        except (DatabaseError, BatchRolledBack) as exc:
            attempt.conflict = conflict_kind(exc)
            attempt.db_error = None if attempt.conflict else exc
            return attempt
        attempt.committed = True
        return attempt

    def handle(self, work: Work) -> None:
        """Run every handler of one message (inside the batch's transaction)."""
        work.handled, work.duplicates = [], []
        for h in work.handlers:
            try:
                self.run_handler(h, work.event, work.message)
                work.handled.append(h.name)
            except Duplicate:
                work.duplicates.append(h.name)

    def record(self, done: Iterable[Work]) -> None:
        """Count what a committed batch did (never before the commit: a batch may run twice)."""
        for work in done:
            for _ in work.handled:
                metrics.event_handled(self.service, work.event)
            for name in work.duplicates:
                metrics.event_duplicate(self.service, work.event)
                log.info("consumer %s: %s already handled %s; skipped", self.service, name, work.event.id)
            # A message counts once: handled if any handler ran, else a duplicate.
            if work.handled:
                self.stats.handled += 1
                self.stats.by_type[work.event.type] = self.stats.by_type.get(work.event.type, 0) + 1
            else:
                self.stats.duplicates += 1

    def fail(self, failed: Iterable[tuple[Work, BaseException]]) -> None:
        """Handler failures: leave each message for redelivery after its back-off."""
        for work, _exc in failed:
            self.stats.failed += 1
            metrics.event_failed(self.service, work.message)
            self.change_visibility(work.message, visibility_backoff(receive_count(work.message)))

    def check_source(self, event: Event) -> None:
        try:
            et = catalogue.get(event.type)
        except catalogue.UnknownEventType:
            raise EnvelopeError(f"unknown event type {event.type!r}") from None
        expected = f"{settings.BUS_SOURCE_PREFIX}/{et.source}"
        if event.source != expected:
            raise EnvelopeError(f"source {event.source!r} is not this bus's {expected!r} for {event.type}")

    def run_handler(self, h: registry.Handler, event: Event, message: dict[str, Any] | None = None) -> None:
        with (
            context.bound(correlation=event.correlationid, causation=event.id),
            telemetry.handling(self.service, h.name, event),
        ):
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
    # Each one lets the heartbeat go of its messages first, and none runs inside a
    # transaction.
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
        """Give unstarted messages back at once (visibility 0) instead of after the timeout."""
        for message in messages:
            self.change_visibility(message, 0)

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
                    MessageAttributes=_copyable_attributes(message),
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


def first_line(exc: BaseException | None) -> str:
    """An exception as one log-friendly line (psycopg's messages span several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def receive_count(message: dict[str, Any]) -> int:
    return int((message.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))


def _copyable_attributes(message: dict[str, Any]) -> dict[str, Any]:
    keep = ("DataType", "StringValue", "BinaryValue")
    return {
        name: {k: v for k, v in attr.items() if k in keep}
        for name, attr in (message.get("MessageAttributes") or {}).items()
    }


def _inbox_insert(
    event: Event, handler: str, *, service: str = "", message: dict[str, Any] | None = None
) -> int | None:
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


def _queue_missing(exc: Exception) -> bool:
    if isinstance(exc, ConsumerConfigError | aws.QueueMissing):
        return True
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


def _close_old_connections() -> None:
    """Drop a broken or expired connection between messages (a database restart must not
    kill the consumer). Not inside an atomic block: that is a test's transaction."""
    from django.db import connection

    if not connection.in_atomic_block:
        close_old_connections()


__all__ = ["Consumer", "ConsumerConfigError", "DatabaseGate", "Stats", "visibility_backoff"]
