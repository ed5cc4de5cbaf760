"""The consumer under faults: database outages, lock conflicts between competing
consumers, long batches, a signal at the wrong moment, messages that break the catalogue.
Each test states the promise of ``events/consumer.py`` it checks."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from django.db import OperationalError, connection, transaction

import events
from devtools.testing import wait_until
from events import aws, metrics, registry, relay, topology
from events.consumer import Consumer
from events.models import InboxMessage


def _create(team_id: int, name: str = "Ajax"):
    with transaction.atomic():
        return events.publish("team.created", subject=team_id, data={"id": team_id, "name": name, "short_name": "TM"})


def _depth(name: str) -> tuple[int, int]:
    attrs = aws.queue_attributes(
        aws.queue_url(name), "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"
    )
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _dead_letters() -> int:
    return sum(_depth(aws.queue_name("probe", dlq=True)))


def _replace_probe_handler(func: Callable) -> None:
    [h] = [h for h in registry.handlers(service="probe", event_type="team.created")]
    registry._handlers[registry._handlers.index(h)] = registry.Handler("probe", "team.created", func)


def _counter(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


# ------------------------------------------------------------------------ database outage
@contextlib.contextmanager
def database_outage() -> Iterator[Callable[[], None]]:
    """A real outage of the test database, as the issue reproduced it: no new connections
    (``ALLOW_CONNECTIONS false``) and every open one terminated. Yields ``end()``; the
    outage ends at the latest when the block is left."""
    import psycopg

    s = connection.settings_dict
    admin = psycopg.connect(
        host=s["HOST"] or "127.0.0.1", port=s["PORT"] or 5432, user=s["USER"], dbname="postgres", autocommit=True
    )
    name = s["NAME"]
    ended = threading.Event()

    def end() -> None:
        if not ended.is_set():
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            ended.set()

    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        [name],
    )
    try:
        yield end
    finally:
        end()
        admin.close()
        connection.close()  # ours was terminated too


def _run_in_thread(consumer: Consumer) -> threading.Thread:
    def run() -> None:
        try:
            consumer.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def eager_dlq(settings):
    """A queue that dead-letters at the third receive, 1 s visibility: what an outage
    would spend quickly if receives during it counted."""
    settings.CONSUMER_MAX_RECEIVE_COUNT = 2
    settings.CONSUMER_VISIBILITY_TIMEOUT = 1
    settings.CONSUMER_BACKOFF_BASE_SECONDS = 1
    settings.CONSUMER_DB_BACKOFF_MAX_SECONDS = 1
    topology.ensure(["probe"])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_database_outage_before_the_receive_dead_letters_nothing(probe_bus, recorder, eager_dlq, caplog):
    """The consumer does not receive while the database does not answer, so an outage of
    any length spends no receive; it says so once when the database goes, once when it
    is back."""
    for i in (1, 2, 3):
        _create(i)
    relay.relay()
    consumer = Consumer("probe", wait_seconds=1, check_topology=False)
    caplog.set_level(logging.INFO, logger="events.consumer")
    with database_outage():
        thread = _run_in_thread(consumer)
        time.sleep(10)  # the old consumer dead-lettered everything within ~9 s here
    try:
        wait_until(lambda: len(recorder.seen) >= 3 or _dead_letters(), timeout=30, what="the events after the outage")
    finally:
        consumer.stop.set()
        thread.join(30)
    assert _dead_letters() == 0
    assert sorted(e.subject for e in recorder.seen) == ["1", "2", "3"]
    assert InboxMessage.objects.count() == 3
    assert consumer.stats.received == 3  # each message received once: the outage spent nothing
    messages = [r.getMessage() for r in caplog.records]
    assert sum("database unreachable" in m for m in messages) == 1, messages
    assert sum("database back after" in m for m in messages) == 1, messages


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_database_dying_mid_batch_keeps_the_batch_in_hand_until_it_is_back(probe_bus, recorder, eager_dlq):
    """When the database fails after the receive, the batch rolls back and its messages
    stay in hand (kept invisible) until it answers: no receive is spent, none is
    dead-lettered, and every event is handled once."""
    for i in (1, 2, 3):
        _create(i)
    relay.relay()
    outage = contextlib.ExitStack()
    started = threading.Event()

    def handler(event):
        if not started.is_set():  # the first message of the batch takes the database down
            started.set()
            end = outage.enter_context(database_outage())
            threading.Timer(8, end).start()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        recorder.seen.append(event)

    _replace_probe_handler(handler)
    consumer = Consumer("probe", wait_seconds=1, check_topology=False)
    thread = _run_in_thread(consumer)
    try:
        wait_until(lambda: len(recorder.seen) >= 3 or _dead_letters(), timeout=40, what="the events after the outage")
        wait_until(lambda: sum(_depth(aws.queue_name("probe"))) == 0, timeout=10, what="the queue to be empty")
    finally:
        consumer.stop.set()
        thread.join(30)
        outage.close()
    assert _dead_letters() == 0
    assert sorted(e.subject for e in recorder.seen) == ["1", "2", "3"]
    assert InboxMessage.objects.count() == 3
    assert consumer.stats.received == 3  # held through the outage, never received again
    assert consumer.stats.failed == 0


def test_the_database_check_gates_the_receive_and_logs_once_per_state_change(probe_bus, recorder, caplog):
    _create(1)
    relay.relay()
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)
    answers = iter([False] * 6 + [True] * 100)
    checks: list[bool] = []

    def answers_now() -> bool:
        checks.append(next(answers))
        return checks[-1]

    consumer.database.answers = answers_now  # type: ignore[method-assign]
    waits: list[float] = []
    consumer.stop.wait = lambda timeout=None: waits.append(timeout) or False  # type: ignore[method-assign]
    received_while_down: list[int] = []
    real_receive = consumer.receive

    def receive(wait_seconds):
        received_while_down.append(checks.count(True))
        return real_receive(wait_seconds)

    consumer.receive = receive  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="events.consumer")
    consumer.poll(wait_seconds=0)
    assert received_while_down == [1]  # the receive came only after the database answered
    assert waits == [0.5, 1, 2, 4, 8, 16]  # capped back-off (cap 30 s by default)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("database unreachable" in m for m in messages) == 1, messages
    assert sum("database back after" in m for m in messages) == 1, messages
    assert len(recorder.seen) == 1


def test_consume_started_during_an_outage_waits_for_the_database(probe_bus, recorder, settings, monkeypatch):
    """A consumer process started while the database is away waits for it (it gave up
    after 60 s and exited 1: the crash suite's db outage killed every restarted consumer)."""
    from django.core.management import call_command

    from events.dbprobe import DatabaseProbe

    settings.CONSUMER_DB_BACKOFF_MAX_SECONDS = 0.01
    _create(1)
    relay.relay()
    answers = iter([False] * 40 + [True] * 1000)  # more checks than the old 30 attempts
    monkeypatch.setattr(DatabaseProbe, "answers", lambda self: next(answers))
    call_command("consume", "--service", "probe", "--drain", "--wait", "0", "--no-startup")
    assert [e.subject for e in recorder.seen] == ["1"]


def test_a_stop_while_the_database_is_down_hands_the_batch_back_without_spending_a_receive(probe_bus, recorder):
    """Stopped while holding messages the database kept it from handling: they go back as
    copies with the original body and attributes (the original deleted), so the receive
    does not count towards maxReceiveCount."""
    row = _create(1)
    relay.relay()
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)

    def connection_lost(event):
        raise OperationalError("server closed the connection unexpectedly")

    _replace_probe_handler(connection_lost)
    down = iter([True] + [False] * 100)  # up for the receive, then gone
    consumer.database.answers = lambda: next(down)  # type: ignore[method-assign]
    consumer.stop.wait = lambda timeout=None: consumer.stop.set() or True  # type: ignore[method-assign]
    consumer.poll(wait_seconds=0)
    url = aws.queue_url(aws.queue_name("probe"))
    got = aws.client("sqs").receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
        MessageAttributeNames=["All"],
    )["Messages"]
    assert len(got) == 1  # visible at once, not after a visibility timeout
    assert got[0]["Attributes"]["ApproximateReceiveCount"] == "1"  # the outage's receive did not count
    assert json.loads(got[0]["Body"])["id"] == str(row.event_id)
    assert got[0]["MessageAttributes"]["type"]["StringValue"] == "team.created"
    assert consumer.stats.failed == 0 and InboxMessage.objects.count() == 0


# ------------------------------------------------------------------------ lock conflicts
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_deadlock_between_consumers_is_retried_in_process_not_redelivered(probe_bus, recorder, caplog):
    """Two consumers whose handlers lock two rows in opposite orders: PostgreSQL kills one
    transaction with a deadlock. That batch runs again in-process; no message goes back
    to SQS, and the log names the deadlock."""
    sqs = aws.client("sqs")
    urls = [sqs.create_queue(QueueName=f"{aws.queue_name('probe')}-{x}")["QueueUrl"] for x in "ab"]
    for url, team_id in zip(urls, (1, 2), strict=True):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(_create(team_id).envelope))
    barrier = threading.Barrier(2, timeout=10)
    first_try: set[str] = set()

    def lock_two_rows(event):
        first, second = (1, 2) if event.subject == "1" else (2, 1)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [first])
            if event.subject not in first_try:
                first_try.add(event.subject)
                barrier.wait()  # both hold their first lock now
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [second])
        recorder.seen.append(event)

    _replace_probe_handler(lock_two_rows)
    conflicts = _counter("league_consumer_conflicts_total", service="probe", kind="deadlock")
    caplog.set_level(logging.INFO, logger="events.consumer")
    consumers = [
        Consumer("probe", wait_seconds=1, check_topology=False, queue_name=url.rsplit("/", 1)[-1]) for url in urls
    ]
    errors: list[BaseException] = []

    def poll(c: Consumer) -> None:
        try:
            c.poll(wait_seconds=1)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=poll, args=(c,)) for c in consumers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(e.subject for e in recorder.seen) == ["1", "2"]
    assert InboxMessage.objects.count() == 2
    assert [c.stats.failed for c in consumers] == [0, 0]
    for url in urls:  # deleted, not left for redelivery
        attrs = aws.queue_attributes(url, "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
        assert attrs == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    assert _counter("league_consumer_conflicts_total", service="probe", kind="deadlock") == conflicts + 1
    assert any("deadlock" in r.getMessage() and "retrying it in-process" in r.getMessage() for r in caplog.records)


def test_a_batch_is_handled_in_one_lock_order_whatever_order_sqs_returns(probe_bus, recorder):
    for i in (3, 1, 2):
        _create(i)
    with transaction.atomic():
        events.publish("team.renamed", subject=1, data={"id": 1, "name": "B", "old_name": "Ajax", "short_name": "TM"})
    relay.relay()
    Consumer("probe", wait_seconds=0, check_topology=False).poll(wait_seconds=1)
    assert [(e.subject, e.sequence) for e in recorder.seen] == [("1", 1), ("1", 2), ("2", 1), ("3", 1)]


# ------------------------------------------------------------------------ heartbeat
def test_the_heartbeat_keeps_every_held_message_of_the_batch_invisible(probe_bus, recorder, settings):
    """Not only the message in hand: the unstarted ones of the batch and the handled ones
    waiting for the commit stay invisible until the batch is done."""
    # A 3 s visibility that the heartbeat renews every second: a heartbeat late by up to 2 s
    # (a loaded machine) still keeps the messages; the batch takes 7.5 s, far past it.
    settings.CONSUMER_VISIBILITY_TIMEOUT = 3
    topology.ensure(["probe"])
    for i in (1, 2, 3):
        _create(i)
    relay.relay()

    def slow(event):
        time.sleep(2.5)
        recorder.seen.append(event)

    _replace_probe_handler(slow)
    url = aws.queue_url(aws.queue_name("probe"))
    stolen: list = []

    def another_consumer() -> None:
        time.sleep(3.5)  # past the first visibility: only the heartbeat keeps them hidden
        for _ in range(8):
            stolen.extend(
                aws.client("sqs")
                .receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
                .get("Messages", [])
            )
            time.sleep(0.3)

    spy = threading.Thread(target=another_consumer)
    spy.start()
    Consumer("probe", wait_seconds=0, check_topology=False).poll(wait_seconds=1)
    spy.join()
    assert stolen == []
    assert len(recorder.seen) == 3
    assert _depth(aws.queue_name("probe")) == (0, 0)


# ------------------------------------------------------------------------ set-based batches
@pytest.mark.django_db(transaction=True)
def test_a_batch_commits_with_one_inbox_statement_and_no_savepoint(probe_bus, recorder):
    """The inbox rows of a batch go in with one statement that carries the trace's times:
    no savepoint per message, no per-message update of ``handled_at``."""
    from django.test.utils import CaptureQueriesContext

    for i in range(1, 6):
        _create(i)
    relay.relay()
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)
    with CaptureQueriesContext(connection) as ctx:
        assert consumer.poll(wait_seconds=1) == 5
    sql = [q["sql"].upper() for q in ctx.captured_queries]
    assert sum("INSERT INTO" in q and "EVENTS_INBOXMESSAGE" in q for q in sql) == 1, sql
    assert not [q for q in sql if "SAVEPOINT" in q], sql
    assert not [q for q in sql if q.startswith("UPDATE") and "EVENTS_INBOXMESSAGE" in q], sql
    rows = list(InboxMessage.objects.all())
    assert len(rows) == 5
    assert all(r.received_at <= r.started_at <= r.handled_at for r in rows)


@pytest.mark.django_db(transaction=True)
def test_a_failing_handler_runs_the_batch_again_without_its_message(probe_bus, recorder):
    """Optimistic batches: when a handler raises, the batch rolls back and runs again
    without that message; the others commit once, the failed one backs off."""
    recorder.fail_subjects.add("3")
    for i in range(1, 6):
        _create(i)
    relay.relay()
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)
    consumer.poll(wait_seconds=1)
    assert sorted(InboxMessage.objects.values_list("subject", flat=True)) == ["1", "2", "4", "5"]
    assert (consumer.stats.handled, consumer.stats.failed) == (4, 1)
    assert _depth(aws.queue_name("probe")) == (0, 1)  # the failed one, invisible for its back-off


def test_run_has_the_next_receive_in_flight_while_a_batch_runs(probe_bus, recorder, settings):
    """Pipelined: the second receive starts while the first batch's handlers run, and the
    consumer never holds more than two receives' worth of messages."""
    for i in range(1, 16):  # a receive of 10, then one of 5
        _create(i)
    relay.relay()
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)
    timeline: list[tuple[str, float]] = []
    held: list[int] = []
    real_receive = consumer.receive

    def receive(wait_seconds):
        timeline.append(("receive", time.monotonic()))
        return real_receive(wait_seconds)

    def slow(event):
        held.append(consumer.heartbeat.held)
        time.sleep(0.05)
        timeline.append(("handled", time.monotonic()))
        recorder.seen.append(event)

    consumer.receive = receive  # type: ignore[method-assign]
    _replace_probe_handler(slow)
    stats = consumer.run(drain=True)
    assert stats.handled == 15
    second_receive = [t for kind, t in timeline if kind == "receive"][1]
    tenth_handled = [t for kind, t in timeline if kind == "handled"][9]
    assert second_receive < tenth_handled, "the next receive waited for the batch"
    assert max(held) <= 20
    assert _depth(aws.queue_name("probe")) == (0, 0)  # every delete flushed before run() returned


# ------------------------------------------------------------------------ no network in a transaction
@pytest.mark.django_db(transaction=True)
def test_no_sqs_call_happens_inside_the_batch_transaction(probe_bus, recorder):
    """Visibility changes, DLQ sends, releases and deletes all happen outside the
    transaction (on SQLite a write lock held through SQS retries blocks every writer)."""
    recorder.fail_subjects.add("2")
    for i in (1, 2, 3):
        _create(i)
    relay.relay()
    url = aws.queue_url(aws.queue_name("probe"))
    aws.client("sqs").send_message(QueueUrl=url, MessageBody="not json {")
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)

    def stop_at_three(event):
        if event.subject == "3":
            consumer.stop.set()  # then subject 3 finishes and nothing else starts
        recorder(event)

    for h in list(registry._handlers):
        if h.service == "probe" and h.event_type == "team.created":
            registry._handlers[registry._handlers.index(h)] = registry.Handler("probe", "team.created", stop_at_three)
    calls: list[tuple[str, bool]] = []
    aws.client("sqs").meta.events.register(
        "before-call.sqs",
        lambda model, **kw: calls.append((model.name, connection.in_atomic_block)),
    )
    consumer.poll(wait_seconds=1)
    inside = [name for name, in_tx in calls if in_tx]
    assert inside == [], f"SQS calls inside the transaction: {inside}"
    assert {"SendMessage", "ChangeMessageVisibility", "DeleteMessageBatch"} <= {name for name, _ in calls}
    assert consumer.stats.dead_lettered == 1 and consumer.stats.failed == 1


# ------------------------------------------------------------------------ schema
def test_a_message_whose_data_breaks_the_schema_is_dead_lettered_at_once_with_the_reason(probe_bus, recorder):
    row = _create(1)
    bad = dict(row.envelope, id="00000000-0000-0000-0000-0000000000bb", data={"id": "one"})
    url = aws.queue_url(aws.queue_name("probe"))
    aws.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps(bad))
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)
    consumer.poll(wait_seconds=1)
    assert recorder.seen == []
    assert consumer.stats.dead_lettered == 1 and consumer.stats.failed == 0
    dlq = aws.queue_url(aws.queue_name("probe", dlq=True))
    [got] = aws.client("sqs").receive_message(QueueUrl=dlq, MessageAttributeNames=["All"])["Messages"]
    reason = got["MessageAttributes"]["reason"]["StringValue"]
    assert reason.startswith("team.created data at "), reason
    assert _depth(aws.queue_name("probe")) == (0, 0)


def test_a_message_whose_dataversion_is_no_version_is_dead_lettered_at_once_with_the_reason(probe_bus, recorder):
    row = _create(1)
    bad = dict(row.envelope, id="00000000-0000-0000-0000-0000000000bc", dataversion="zero")
    aws.client("sqs").send_message(QueueUrl=aws.queue_url(aws.queue_name("probe")), MessageBody=json.dumps(bad))
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)
    consumer.poll(wait_seconds=1)
    assert recorder.seen == [] and consumer.stats.dead_lettered == 1
    dlq = aws.queue_url(aws.queue_name("probe", dlq=True))
    [got] = aws.client("sqs").receive_message(QueueUrl=dlq, MessageAttributeNames=["All"])["Messages"]
    assert "dataversion 'zero' is not a version" in got["MessageAttributes"]["reason"]["StringValue"]


def test_an_event_of_an_older_version_reaches_the_handler_in_the_current_shape(probe_bus, recorder):
    """An event written before an upgrade (team.created v1, still in a queue, an outbox or a
    DLQ) is upcast by its type's upcaster before the handler sees it: v1 had no short name,
    the handler gets the one derived from the name."""
    row = _create(1, "Queens Park Rangers")
    v1 = {**row.envelope, "dataversion": "1"}
    v1["data"] = {k: v for k, v in v1["data"].items() if k != "short_name"}
    aws.client("sqs").send_message(QueueUrl=aws.queue_url(aws.queue_name("probe")), MessageBody=json.dumps(v1))
    Consumer("probe", wait_seconds=0, check_topology=False).poll(wait_seconds=1)
    [event] = recorder.seen
    assert event.dataversion == "1"
    assert (event.data["name"], event.data["short_name"]) == ("Queens Park Rangers", "QPR")


# ------------------------------------------------------------------------ metrics
def test_metric_labels_take_only_catalogue_types():
    """Anyone who can send to a queue chooses the ``type`` attribute and the body: a label
    copied from them would create unlimited series."""
    assert metrics.message_type({"MessageAttributes": {"type": {"StringValue": "spam-7f3a"}}}) == "unknown"
    assert metrics.message_type({"Body": json.dumps({"type": "spam-7f3a"})}) == "unknown"
    assert metrics.message_type({"Body": json.dumps({"type": ["team.created"]})}) == "unknown"
    assert metrics.message_type({"MessageAttributes": {"type": {"StringValue": "team.renamed"}}}) == "team.renamed"


# ------------------------------------------------------------------------ set-based handlers
def _probe_with_many(recorder) -> list[list[str]]:
    """Give the probe's team.created handler a set-based form that records each call's
    subjects and fails on the recorder's poison subjects, as the one-event form does."""
    calls: list[list[str]] = []

    def many(evs):
        calls.append([e.subject for e in evs])
        for e in evs:
            recorder(e)

    [h] = [h for h in registry.handlers(service="probe", event_type="team.created")]
    registry._handlers[registry._handlers.index(h)] = registry.Handler("probe", "team.created", recorder, many=many)
    return calls


@pytest.mark.django_db(transaction=True)
def test_a_run_of_one_set_based_handler_is_handled_in_one_call_with_an_inbox_row_each(probe_bus, recorder):
    calls = _probe_with_many(recorder)
    for i in range(1, 6):
        _create(i)
    relay.relay()
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)
    assert consumer.poll(wait_seconds=1) == 5
    assert calls == [["1", "2", "3", "4", "5"]]  # one call, in the batch's order
    assert sorted(InboxMessage.objects.values_list("subject", flat=True)) == ["1", "2", "3", "4", "5"]
    assert consumer.stats.handled == 5
    assert _depth(aws.queue_name("probe")) == (0, 0)


@pytest.mark.django_db(transaction=True)
def test_the_set_based_call_leaves_out_events_the_inbox_has_and_counts_them_duplicates(probe_bus, recorder):
    calls = _probe_with_many(recorder)
    rows = [_create(i) for i in range(1, 5)]
    relay.relay()
    [h] = registry.handlers(service="probe", event_type="team.created")
    # Subject 2 was handled already (a redelivery after a crash past the commit).
    InboxMessage.objects.create(event_id=rows[1].event_id, handler=h.name, type="team.created", subject="2")
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)
    consumer.poll(wait_seconds=1)
    assert calls == [["1", "3", "4"]]
    assert (consumer.stats.handled, consumer.stats.duplicates) == (3, 1)
    assert _depth(aws.queue_name("probe")) == (0, 0)


@pytest.mark.django_db(transaction=True)
def test_a_failing_set_based_call_runs_the_batch_again_one_message_at_a_time(probe_bus, recorder, caplog):
    """The call that raised is rolled back; one at a time, the failing message is found and
    backs off, and every other message commits once."""
    calls = _probe_with_many(recorder)
    recorder.fail_subjects.add("3")
    for i in range(1, 6):
        _create(i)
    relay.relay()
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)
    with caplog.at_level(logging.WARNING, logger="events.consumer"):
        consumer.poll(wait_seconds=1)
    assert calls == [["1", "2", "3", "4", "5"]]  # tried once set-based, then one by one
    assert sorted(InboxMessage.objects.values_list("subject", flat=True)) == ["1", "2", "4", "5"]
    # Rolled back before 3: the set-based call, then the first one-at-a-time attempt.
    assert sorted(e.subject for e in recorder.seen) == ["1", "1", "1", "2", "2", "2", "4", "5"]
    assert (consumer.stats.handled, consumer.stats.failed) == (4, 1)
    assert _depth(aws.queue_name("probe")) == (0, 1)
    assert "running the batch again one message at a time" in caplog.text


def test_runs_cut_a_batch_where_the_handler_changes():
    from events.consumer import Work
    from events.envelope import Event

    def many(evs):
        pass

    bulk = registry.Handler("probe", "team.created", lambda e: None, many=many)
    single = registry.Handler("probe", "team.renamed", lambda e: None)

    def work(subject: str, h: registry.Handler) -> Work:
        ev = Event.from_body(
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": f"00000000-0000-4000-8000-00000000000{subject}",
                    "source": "/league/teams",
                    "type": h.event_type,
                    "subject": subject,
                    "time": "2026-12-07T00:00:00Z",
                    "datacontenttype": "application/json",
                    "sequence": 1,
                    "dataversion": 1,
                    "data": {},
                }
            )
        )
        return Work({}, ev, [h])

    batch = [work("1", bulk), work("2", bulk), work("3", single), work("4", bulk), work("5", bulk), work("6", bulk)]
    runs = Consumer.runs(batch)
    assert [[w.event.subject for w in r] for r in runs] == [["1", "2"], ["3"], ["4", "5", "6"]]
    assert [len(r) for r in Consumer.runs(batch, one_by_one=True)] == [1] * 6


def test_a_broadcast_handler_has_no_set_based_form():
    with pytest.raises(ValueError, match="broadcast"):
        registry.handler("team.created", service="probe", broadcast=True, many=lambda evs: None)
