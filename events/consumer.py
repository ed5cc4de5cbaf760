"""The consumer: reads a service's SQS queue and runs its handlers, a batch (one receive,
up to 10 messages) at a time.

The promises this loop keeps (the others are kept where their mechanism lives: effectively
once by the inbox, events/inbox.py; the visibility of what the consumer holds by the
heartbeat, events/heartbeat.py; no receive while the database is down by the probe,
events/dbprobe.py; the SQS calls and their order after a commit by events/sqsclient.py):

- One transaction a batch, no savepoint: the handlers of a batch run optimistically in
  one ``transaction.atomic()``, and their inbox rows go in with one statement at its end.
  When a handler raises, the batch rolls back and runs again without that message (which
  backs off, below); the others commit once. Handlers run in one order for every
  consumer (aggregate, subject, sequence), so handlers that lock their subject's rows
  lock them in the same order.
- Set-based where a handler offers it (``many``, events/registry.py): a run of the
  batch's messages (in that order) whose only handler is the same one goes to its
  set-based form in one call, each message still with its own inbox row. When that call
  raises, the batch rolls back and runs again one message at a time, which names the
  message that failed; the rest of the batch's attempts stay one at a time.
- Pipelined: while a batch's transaction runs, the next receive is already in flight
  (one, never more: at most two receives, 20 messages, in hand, all covered by the
  heartbeat); the deletes and visibility changes of a committed batch go out in order
  from a thread of their own without holding up the next batch. Batches still run one
  after the other, so the order per subject is the order of the receives.
- Nothing is lost: a message is deleted only after its batch committed (or every handler
  had handled it already). A failing handler leaves its message for redelivery, with
  visibility backing off by receive count (``visibility_backoff``); SQS redrive moves it
  to the DLQ after the bound.
- The DLQ is for messages that fail their handler, never for our infrastructure:
  - *Database outage.* The consumer does not receive while its database does not answer
    (events/dbprobe.py). When the database fails after a receive (the transaction cannot
    open, or dies mid-batch, or at commit), the batch rolls back and its messages stay
    **in hand**, kept invisible by the heartbeat, until the database answers; then the
    batch runs again. Why in hand rather than re-sending a copy and deleting the original
    (which also resets SQS's receive count): holding costs no SQS write, cannot duplicate
    a message (a crash between send and delete would), keeps FIFO order and the original
    message id, and the one receive it spent is the one that will run the handler. The
    copy is the fallback only where holding is impossible: a stop signal while the
    database is still down, or a hold reaching ``MAX_HOLD_SECONDS`` (SQS caps a
    message's visibility at 12 h from its receive); such a message goes back as a copy
    with the original body and attributes, and the original is deleted, so the receive
    does not count towards ``maxReceiveCount``. A handler that keeps raising a database
    error while the database answers is a handler failure after 3 rounds (bounded).
  - *Lock conflicts.* A deadlock or serialization failure rolls the batch back and runs
    it again in-process (``CONSUMER_CONFLICT_RETRIES`` times, with jitter), logged as
    what it is and counted in ``league_consumer_conflicts_total``; it never sends a
    message back to SQS. Only when the retries run out are the messages treated as
    failed (visibility back-off).
- *A service being moved* (``events/gate.py``): the batch's transaction takes the
  service's gate row in share mode first; a closed gate rolls the batch back and gives its
  messages back at once, and the consumer receives nothing until the gate opens again
  (``moved``: never). A pause waits for the batch under way, so no batch of the service
  commits in this database after the pause.
- An undecodable message, one not from this bus, or one whose ``data`` breaks its type's
  JSON Schema in the catalogue goes to the DLQ at once with the reason as a message
  attribute. An event type the service does not handle is acknowledged and logged.
- No network call inside a transaction: decoding, validation and dead-lettering happen
  before the batch's transaction opens; deletes, visibility changes and releases after
  it ends; the heartbeat and the receive run in threads of their own.
- SIGTERM/SIGINT: stop; finish the message in hand and commit the batch so far; release
  the unstarted ones (visibility 0); let the receive in flight end (a long poll is never
  cut: the emulator or SQS would go on holding it and hand the next message to a closed
  connection, where it would wait out its visibility timeout) and release whatever it
  returned; flush the deletes; return. A stop therefore takes up to one long poll
  (``CONSUMER_WAIT_SECONDS``), and after it no message waits for a visibility timeout.
- A consumer that dies (kill -9) leaves what it held invisible for one visibility
  timeout (``CONSUMER_VISIBILITY_TIMEOUT``, short because the heartbeat extends whatever
  is held), then another consumer takes it and the inbox absorbs what had committed.
- Broadcast (``broadcast=True``): an instance queue of its own, subscribed at start,
  tagged with a heartbeat, unsubscribed and deleted at stop; ``reap_queues`` removes the
  leftovers of an instance that died. When the queue is gone while the consumer runs (an
  emulator restarted empty), the consumer creates and subscribes it again at each poll
  until that works (the topics are back once ``setup_bus`` ran), and goes on consuming;
  ``on_receive_state`` hears each change (``"missing"``, ``"unreachable"``, ``None``:
  receiving again). Broadcast handlers update in-process state: they
  run without the inbox, the transaction and the database check (every instance must
  run them) and must be idempotent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from . import aws, broadcasting, catalogue, context, gate, inbox, metrics, readiness, registry, telemetry
from .dbprobe import DatabaseProbe, first_line
from .envelope import EnvelopeError, Event
from .sqsclient import Acks, ConsumerConfigError, QueueClient, queue_missing, receive_count

log = logging.getLogger("events.consumer")

# SQLSTATEs of a lost race between transactions: retrying the transaction is the cure.
CONFLICT_SQLSTATES = {"40P01": "deadlock", "40001": "serialization failure"}


class Duplicate(Exception):
    trace_as_error = False  # an OpenTelemetry span records a skip, not a failure


class BatchRolledBack(Exception):
    """Leaves a receive's transaction by rollback: a handler's database error broke it."""


class RunAgain(Exception):
    """Leaves a batch's transaction by rollback on purpose: a handler failed, or another
    consumer committed one of the batch's events first; the batch runs again without it."""


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
    rows: list[inbox.Row] = field(default_factory=list)

    @property
    def lock_order(self) -> tuple[str, str, int, str]:
        aggregate = catalogue.EVENT_TYPES[self.event.type].aggregate
        return aggregate, self.event.subject, self.event.sequence, self.event.id

    @property
    def many(self) -> registry.Handler | None:
        """The message's handler when it is its only one and has a set-based form."""
        if len(self.handlers) == 1 and self.handlers[0].many is not None and not self.handlers[0].broadcast:
            return self.handlers[0]
        return None

    @property
    def keys(self) -> list[inbox.Key]:
        return [inbox.key(self.event.id, h.name) for h in self.handlers if not h.broadcast]


@dataclass
class Attempt:
    """One run of a batch's transaction."""

    done: list[Work] = field(default_factory=list)
    failed: list[tuple[Work, Exception]] = field(default_factory=list)
    unstarted: list[Work] = field(default_factory=list)
    committed: bool = False
    again: bool = False  # rolled back on purpose: run again without ``failed``, skipping ``taken``
    taken: set[inbox.Key] = field(default_factory=set)  # committed by another consumer first
    skip: set[inbox.Key] | None = None  # the keys found committed before the handlers ran
    conflict: str | None = None  # what kind of race rolled it back
    db_error: BaseException | None = None  # the database failed: rolled back, keep in hand
    culprit: Work | None = None  # the message whose handler hit the database error
    paused: BaseException | None = None  # the service's gate closed: rolled back, given back
    many_failed: bool = False  # a set-based call raised: run the batch again one at a time


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
        self.sqs = QueueClient(service, self.queue_name, self.stats)
        self.heartbeat = self.sqs.heartbeat
        self.database = DatabaseProbe(service, self.stop)
        # Inline by default (``poll``: everything done when it returns); ``run`` sends
        # them from a thread of their own.
        self.acks = Acks(service, threaded=False)
        self._instance_queue: broadcasting.InstanceQueue | None = None
        self._receive_trouble: str | None = None  # "missing" / "unreachable" while receives fail
        self._database_proven = False  # the last batch committed: its commit proves the database
        # Told each change of _receive_trouble (the live page's badge).
        self.on_receive_state: Callable[[str | None], None] | None = None

    # ----------------------------------------------------------------- setup
    @property
    def queue_url(self) -> str:
        return self.sqs.queue_url

    @property
    def dlq_url(self) -> str:
        return self.sqs.dlq_url

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
        self.sqs.queue_url = self._instance_queue.url

    def close_instance_queue(self) -> None:
        if self._instance_queue is not None:
            self._instance_queue.delete()
            self._instance_queue = None

    def reopen_instance_queue(self) -> bool:
        """Broadcast, the queue gone: create and subscribe it again (same name). False if
        that failed (the topics not back yet); the next poll tries again."""
        if self._instance_queue is not None:
            self._instance_queue.stop.set()  # its heartbeat would tag a queue that is gone
            self._instance_queue = None
        self.sqs.forget_urls()
        try:
            self.open_instance_queue()
        except Exception as exc:
            log.info("consumer %s: cannot create its queue %s again yet (%s)", self.service, self.queue_name, exc)
            return False
        log.warning("consumer %s: queue %s was gone; created and subscribed again", self.service, self.queue_name)
        return True

    def run_startup_hooks(self) -> None:
        for hook in registry.startup_hooks(self.service):
            log.info("consumer %s: running startup hook %s", self.service, hook.__qualname__)
            try:
                hook()
            except Exception as exc:  # e.g. the teams service not up yet: events still flow
                log.error("consumer %s: startup hook %s failed: %s", self.service, hook.__qualname__, exc)

    # ----------------------------------------------------------------- loop
    def run(self, *, drain: bool = False, max_messages: int | None = None) -> Stats:
        """Receive and handle until stopped, the next receive in flight while a batch runs.
        ``drain``: stop at the first empty receive."""
        if self.broadcast and self._instance_queue is None:
            self.open_instance_queue()
        wait = min(self.wait_seconds, 1) if drain else self.wait_seconds
        inline, self.acks = self.acks, Acks(self.service, threaded=True)
        receiver = ThreadPoolExecutor(1, thread_name_prefix="consumer-receive")
        incoming: Future[list[dict[str, Any]]] | None = None
        try:
            while not self.stop.is_set():
                if incoming is None:
                    if not self.ready():
                        continue
                    incoming = receiver.submit(self.receive, wait)
                messages = self._collect(incoming)
                incoming = None
                if messages is None:
                    continue
                if not messages:
                    if drain:
                        break
                    continue
                if self.stop.is_set():  # came in as the stop did: back at once, not counted
                    self.acks.send(partial(self.sqs.release, messages))
                    break
                self.stats.received += len(messages)
                more = max_messages is None or self.stats.received < max_messages
                if more and self._database_proven and not self.stop.is_set():
                    incoming = receiver.submit(self.receive, wait)
                try:
                    self.process(messages)
                except BaseException:
                    self.heartbeat.drop(messages)  # what is still held waits out its visibility
                    raise
                if not more:
                    break
        finally:
            if incoming is not None:
                # The receive in flight ends at the queue whether or not we read it: read
                # it and give back what it took, so nothing waits for a visibility timeout.
                # (While the database is down, as copies: a release would spend a receive.)
                leftover = self._collect(incoming, quiet=True) or []
                if leftover:
                    give_back = self.sqs.release if self._database_proven else self.sqs.hand_back
                    self.acks.send(partial(give_back, leftover))
            receiver.shutdown(wait=True)
            self.acks.flush()
            self.acks = inline
            if self.broadcast:
                self.close_instance_queue()
        return self.stats

    def _collect(self, incoming: Future[list[dict[str, Any]]], *, quiet: bool = False) -> list[dict[str, Any]] | None:
        """The messages of a receive (waiting for it to end); None when it failed."""
        try:
            messages = incoming.result()
        except Exception as exc:  # SQS unreachable or the queue gone: back off and keep going
            if not quiet:
                self._receive_failed(exc)
                self.stop.wait(2)
            return None
        self._receive_recovered()
        return messages

    def ready(self) -> bool:
        """May the consumer receive now? The database answers and the service's gate is
        open (broadcast: always). Blocks until then; False if stopped first."""
        if self.broadcast:
            return True
        ok = self.database.wait_until_up() and self.wait_while_gated()
        self._database_proven = ok
        return ok

    def receive(self, wait_seconds: int) -> list[dict[str, Any]]:
        if self.stop.is_set():
            return []
        return self.sqs.receive(wait_seconds)

    def interrupt(self) -> None:
        """From a signal handler: stop. The receive in flight is not cut short (see the
        module's docstring); the loop releases what it returns."""
        self.stop.set()

    def poll(self, *, wait_seconds: int | None = None) -> int:
        """One receive, once the database answers, handled to the end (no pipelining: the
        deletes are done when it returns). Returns how many messages the receive brought."""
        if not self.ready():
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
            try:
                self.process(messages)
            except BaseException:
                self.heartbeat.drop(messages)
                raise
            self.acks.flush()
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
                return True  # the database probe's business (checked before every receive)
            if state == gate.OPEN:
                if said is not None:
                    log.warning("consumer %s: the service's gate is open again; receiving", self.service)
                return True
            if state != said:
                said = state
                readiness.announce()  # started: what is left is the gate's business
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
        missing = queue_missing(exc)
        if missing:
            self.sqs.forget_urls()
            if self.broadcast:
                self.reopen_instance_queue()
        state = "missing" if missing else "unreachable"
        if state == self._receive_trouble:
            return
        self._receive_trouble = state
        if self.on_receive_state is not None:
            self.on_receive_state(state)
        if missing and self.broadcast:
            log.error("consumer %s: queue %s is gone; creating it again", self.service, self.queue_name)
        elif missing:
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
            if self.on_receive_state is not None:
                self.on_receive_state(None)

    def process(self, messages: list[dict[str, Any]]) -> None:
        """Sort a receive out without the database, then run the handlers of what is left
        in one transaction (or again, after a failure, a conflict or an outage)."""
        batch: list[Work] = []
        acknowledged: list[dict[str, Any]] = []
        for message in messages:
            try:
                event = self.decode(message)
            except EnvelopeError as exc:
                if self.sqs.dead_letter(message, str(exc)):
                    acknowledged.append(message)
                continue
            handlers = registry.handlers(service=self.service, event_type=event.type, broadcast=self.broadcast)
            if not handlers:
                self.stats.ignored += 1
                log.info("consumer %s: no handler for %s %s; acknowledged", self.service, event.type, event.id)
                acknowledged.append(message)
                continue
            batch.append(Work(message, event, handlers))
        if acknowledged:
            self.acks.send(partial(self.sqs.delete, acknowledged))
        # One order for every consumer: handlers that lock their subject's rows take the
        # locks in the same order, which keeps competing batches from deadlocking.
        batch.sort(key=lambda w: w.lock_order)
        self.handle_batch(batch)

    def handle_batch(self, pending: list[Work]) -> None:
        conflicts = 0
        strikes: Counter[str] = Counter()
        held_since = time.monotonic()
        skip: set[inbox.Key] | None = None  # looked up in the first attempt's transaction
        one_by_one = False  # after a set-based call raised
        while pending:
            if self.stop.is_set():
                self.release([w.message for w in pending])
                return
            attempt = self.transact(pending, skip, one_by_one=one_by_one)
            if attempt.skip is not None:
                skip = attempt.skip
            one_by_one = one_by_one or attempt.many_failed
            if attempt.paused is not None:
                log.warning("consumer %s: %s; %d message(s) given back", self.service, attempt.paused, len(pending))
                self.release([w.message for w in pending])
                self._database_proven = False
                return
            self.fail(attempt.failed)  # handler failures are final, whatever became of the batch
            if attempt.committed:
                self._database_proven = True
                self.record(attempt.done)
                done = [w.message for w in attempt.done]
                if done:
                    self.acks.send(partial(self.sqs.delete, done))
                if attempt.unstarted:
                    self.release([w.message for w in attempt.unstarted])
                return
            failed = {id(w) for w, _ in attempt.failed}
            pending = [w for w in pending if id(w) not in failed]
            if attempt.again:
                skip = (skip or set()) | attempt.taken
                continue
            self._database_proven = False
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
        source, data valid for its version's schema and upcast to the current version's
        shape (``catalogue.accept``). No database, no network."""
        event = Event.from_body(message.get("Body", ""))
        self.check_source(event)
        data, problem = catalogue.accept(event.type, event.dataversion, event.data)
        if problem or data is None:
            raise EnvelopeError(problem or f"{event.type}: no data")
        return event if data is event.data else dataclasses.replace(event, data=data)

    def transact(
        self, pending: Sequence[Work], skip: set[inbox.Key] | None = None, *, one_by_one: bool = False
    ) -> Attempt:
        """Run the handlers of ``pending`` in one transaction, no savepoint, and write their
        inbox rows in one statement at its end. Makes no network call: what to delete,
        release or back off is decided after it ends. ``skip``: inbox keys known to be
        committed (None: look the batch's keys up first). Runs of messages with one
        set-based handler go to it in one call, unless ``one_by_one``."""
        if self.broadcast:
            return self._run_broadcast(pending)
        attempt = Attempt()
        try:
            with transaction.atomic():
                # Held until the batch commits: a pause waits for it (events/gate.py).
                gate.check_writable(self.service)
                inbox.lock(k for w in pending for k in w.keys)
                if skip is None:
                    skip = attempt.skip = inbox.committed(k for w in pending for k in w.keys)
                for run in self.runs(pending, one_by_one=one_by_one):
                    if self.stop.is_set():
                        attempt.unstarted.extend(run)
                        continue
                    if len(run) > 1:
                        try:
                            self.handle_many(run, skip)
                        except (OperationalError, InterfaceError):
                            attempt.many_failed = True
                            raise
                        except Exception as exc:
                            attempt.many_failed = True
                            log.warning(
                                "consumer %s: the set-based handler failed on a run of %d %s (%s); "
                                "running the batch again one message at a time",
                                self.service,
                                len(run),
                                run[0].event.type,
                                exc,
                            )
                            raise RunAgain() from exc
                        attempt.done.extend(run)
                        continue
                    work = run[0]
                    try:
                        self.handle(work, skip)
                    except (OperationalError, InterfaceError):
                        attempt.culprit = work
                        raise
                    except Exception as exc:
                        attempt.failed.append((work, exc))
                        log.error(
                            "consumer %s: handler failed on %s %s (message %s, receive %s): %s",
                            self.service,
                            work.event.type,
                            work.event.id,
                            work.message.get("MessageId"),
                            receive_count(work.message),
                            exc,
                            exc_info=exc,
                        )
                        raise RunAgain() from exc
                    attempt.done.append(work)
                # A connection lost inside a handler's own savepoint leaves the batch marked
                # for rollback, and leaving the block would then roll back *silently*:
                # the messages handled before it must not be deleted.
                if connection.needs_rollback:
                    raise BatchRolledBack()
                rows = [row for w in attempt.done for row in w.rows]
                attempt.taken = {row.key for row in rows} - inbox.record(rows, service=self.service)
                if attempt.taken:
                    log.info(
                        "consumer %s: %d event(s) of the batch were committed by another consumer meanwhile; "
                        "running the batch again without them",
                        self.service,
                        len(attempt.taken),
                    )
                    raise RunAgain()
        except RunAgain:
            attempt.again = True
            return attempt
        except gate.ServicePaused as exc:
            attempt.paused = exc
            return attempt
        except (DatabaseError, BatchRolledBack) as exc:
            attempt.conflict = conflict_kind(exc)
            attempt.db_error = None if attempt.conflict else exc
            return attempt
        attempt.committed = True
        return attempt

    @staticmethod
    def runs(pending: Sequence[Work], *, one_by_one: bool = False) -> list[list[Work]]:
        """``pending`` in order, cut into runs: consecutive messages whose only handler is the
        same set-based one form a run; every other message is a run of its own."""
        runs: list[list[Work]] = []
        for work in pending:
            many = None if one_by_one else work.many
            if many is not None and runs and runs[-1][0].many is many and not one_by_one:
                runs[-1].append(work)
            else:
                runs.append([work])
        return runs

    def handle_many(self, run: Sequence[Work], skip: set[inbox.Key]) -> None:
        """Run the set-based form of the one handler of ``run`` (inside the batch's
        transaction) on the messages it has not handled yet; each keeps its inbox row."""
        h = run[0].many
        assert h is not None and h.many is not None
        fresh: list[Work] = []
        for work in run:
            work.handled, work.duplicates, work.rows = [], [], []
            if inbox.key(work.event.id, h.name) in skip:
                work.duplicates.append(h.name)
            else:
                fresh.append(work)
        if not fresh:
            return
        with contextlib.ExitStack() as spans:
            for work in fresh:
                spans.enter_context(telemetry.handling(self.service, h.name, work.event))
            started = timezone.now()
            h.many([w.event for w in fresh])
            finished = timezone.now()
        for work in fresh:
            work.handled.append(h.name)
            work.rows.append(inbox.Row(work.event, h.name, work.message, started, finished))
            log.info("consumer %s: %s handled %s %s", self.service, h.name, work.event.type, work.event.id)

    def _run_broadcast(self, pending: Sequence[Work]) -> Attempt:
        """Broadcast handlers: in-process state, no transaction to roll back; a failure
        leaves its message for redelivery and the others go on."""
        attempt = Attempt()
        for work in pending:
            if self.stop.is_set():
                attempt.unstarted.append(work)
                continue
            try:
                self.handle(work, set())
            except Exception as exc:
                attempt.failed.append((work, exc))
                log.error("consumer %s: broadcast handler failed on %s: %s", self.service, work.event.id, exc)
                continue
            attempt.done.append(work)
        attempt.committed = True
        return attempt

    def handle(self, work: Work, skip: set[inbox.Key]) -> None:
        """Run every handler of one message (inside the batch's transaction)."""
        work.handled, work.duplicates, work.rows = [], [], []
        for h in work.handlers:
            try:
                row = self.run_handler(h, work.event, work.message, skip)
                work.handled.append(h.name)
                if row is not None:
                    work.rows.append(row)
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
            seconds = visibility_backoff(receive_count(work.message))
            self.acks.send(partial(self.sqs.change_visibility, work.message, seconds))

    def check_source(self, event: Event) -> None:
        try:
            et = catalogue.get(event.type)
        except catalogue.UnknownEventType:
            raise EnvelopeError(f"unknown event type {event.type!r}") from None
        expected = f"{settings.BUS_SOURCE_PREFIX}/{et.source}"
        if event.source != expected:
            raise EnvelopeError(f"source {event.source!r} is not this bus's {expected!r} for {event.type}")

    def run_handler(
        self,
        h: registry.Handler,
        event: Event,
        message: dict[str, Any] | None = None,
        skip: set[inbox.Key] | frozenset[inbox.Key] = frozenset(),
    ) -> inbox.Row | None:
        """Run one handler; its inbox row (None for a broadcast handler) goes in with the
        batch's statement. Raises ``Duplicate`` for a key known to be committed."""
        with (
            context.bound(correlation=event.correlationid, causation=event.id),
            telemetry.handling(self.service, h.name, event),
        ):
            if h.broadcast:
                h.func(event)
                log.info("consumer %s: %s handled %s %s (broadcast)", self.service, h.name, event.type, event.id)
                return None
            if inbox.key(event.id, h.name) in skip:
                raise Duplicate()
            started = timezone.now()
            h.func(event)
            row = inbox.Row(event, h.name, message or {}, started, timezone.now())
            log.info("consumer %s: %s handled %s %s", self.service, h.name, event.type, event.id)
        return row

    # ----------------------------------------------------------------- SQS calls
    # After a transaction ends, through ``acks`` (in order, in the pipelined loop from a
    # thread of their own).
    def release(self, messages: Iterable[dict[str, Any]]) -> None:
        """Give unstarted messages back at once (visibility 0) instead of after the timeout."""
        messages = list(messages)
        if messages:
            self.acks.send(partial(self.sqs.release, messages))

    def hand_back(self, messages: Iterable[dict[str, Any]]) -> None:
        messages = list(messages)
        if messages:
            self.acks.send(partial(self.sqs.hand_back, messages))


__all__ = ["Consumer", "ConsumerConfigError", "Stats", "visibility_backoff"]
