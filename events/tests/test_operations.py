import json
import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError, transaction

import events
from events import aws, broadcasting, operations, registry, topology
from events.consumer import Consumer, ConsumerConfigError
from events.models import InboxMessage, OutboxMessage, OutboxState


def _create(team_id, name=None):
    with transaction.atomic():
        return events.publish("team.created", subject=team_id, data={"id": team_id, "name": name or f"Team {team_id}", "short_name": "TM"})


def _depth(name):
    attrs = aws.queue_attributes(aws.queue_url(name), "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_setup_bus_is_idempotent_and_check_reports_drift(aws_mock, db, capsys):
    call_command("setup_bus")
    call_command("setup_bus")  # again: nothing breaks, nothing doubles
    call_command("setup_bus", "--check")
    assert "matches" in capsys.readouterr().out
    sqs, sns = aws.client("sqs"), aws.client("sns")
    # Drift: wrong policy on one queue, a missing subscription, a missing queue.
    url = aws.queue_url(aws.queue_name("fixtures"))
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps({"Version": "2012-10-17", "Statement": []})})
    t_arn = aws.topic_arn("team.renamed")
    q_arn = topology.queue_arn(aws.queue_url(aws.queue_name("transfers")))
    for sub in topology.subscriptions_of(t_arn):
        if sub["Endpoint"] == q_arn:
            sns.unsubscribe(SubscriptionArn=sub["SubscriptionArn"])
    sqs.delete_queue(QueueUrl=aws.queue_url(aws.queue_name("teams")))
    with pytest.raises(CommandError, match="3 difference"):
        call_command("setup_bus", "--check")
    out = capsys.readouterr().out
    assert "queue leaguemanager-teams is missing" in out
    assert "leaguemanager-fixtures policy does not admit" in out
    assert "leaguemanager-transfers is not subscribed to leaguemanager-team-renamed" in out
    call_command("setup_bus")
    call_command("setup_bus", "--check")


def test_queue_policy_admits_only_this_bus_topics(aws_mock, db):
    topology.ensure()
    url = aws.queue_url(aws.queue_name("transfers"))
    policy = json.loads(aws.queue_attributes(url, "Policy")["Policy"])
    [statement] = policy["Statement"]
    assert statement["Action"] == "sqs:SendMessage"
    allowed = statement["Condition"]["ArnEquals"]["aws:SourceArn"]
    assert allowed == sorted(aws.topic_arn(t) for t in registry.subscriptions("transfers"))


def test_consumer_refuses_to_start_on_a_broken_topology(aws_mock, db):
    with pytest.raises(ConsumerConfigError, match="does not exist. Run `manage.py setup_bus`"):
        Consumer("transfers").verify()
    topology.ensure()
    url = aws.queue_url(aws.queue_name("transfers"))
    aws.client("sqs").set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": ""})
    with pytest.raises(ConsumerConfigError, match="has no redrive policy"):
        Consumer("transfers").verify()


def test_long_handler_keeps_its_message_invisible(probe_bus, recorder, settings):
    settings.CONSUMER_VISIBILITY_TIMEOUT = 1
    topology.ensure(["probe"])  # queue visibility 1 s

    def slow(event):
        time.sleep(2.5)
        recorder.seen.append(event)

    [h] = [h for h in registry.handlers(service="probe", event_type="team.created")]
    registry._handlers[registry._handlers.index(h)] = registry.Handler("probe", "team.created", slow)
    _create(1)
    probe_bus.relay()
    url = aws.queue_url(aws.queue_name("probe"))
    other: list = []

    def another_consumer():
        time.sleep(1.8)  # past the 1 s visibility timeout: without the heartbeat it would be visible again
        other.extend(aws.client("sqs").receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []))

    spy = threading.Thread(target=another_consumer)
    spy.start()
    Consumer("probe", wait_seconds=0, check_topology=False).poll(wait_seconds=1)
    spy.join()
    assert other == []
    assert len(recorder.seen) == 1
    assert _depth(aws.queue_name("probe")) == (0, 0)


def test_poison_message_goes_to_the_dlq_after_max_receives_and_redrive_brings_it_back(probe_bus, recorder, settings):
    settings.CONSUMER_MAX_RECEIVE_COUNT = 2
    settings.CONSUMER_BACKOFF_BASE_SECONDS = 0
    topology.ensure(["probe"])
    recorder.fail_subjects.add("1")
    _create(1)
    _create(2)
    probe_bus.relay()
    for _ in range(4):
        Consumer("probe", wait_seconds=0, check_topology=False).poll(wait_seconds=0)
    assert [e.subject for e in recorder.seen] == ["2"]
    assert _depth(aws.queue_name("probe", dlq=True))[0] == 1
    # Fixed; the operator moves it back.
    recorder.fail_subjects.clear()
    moved = operations.redrive_dlq("probe")
    assert moved == 1
    Consumer("probe", wait_seconds=0, check_topology=False).run(drain=True)
    assert sorted(e.subject for e in recorder.seen) == ["1", "2"]


def test_database_errors_keep_the_message(probe_bus, recorder):
    def db_down(event):
        raise OperationalError("server closed the connection unexpectedly")

    [h] = [h for h in registry.handlers(service="probe", event_type="team.created")]
    registry._handlers[registry._handlers.index(h)] = registry.Handler("probe", "team.created", db_down)
    _create(1)
    probe_bus.relay()
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)
    consumer.stop.wait = lambda timeout=None: False  # no real back-off sleep in the test
    consumer.poll(wait_seconds=0)
    assert consumer.stats.failed == 1
    assert _depth(aws.queue_name("probe")) == (0, 1)  # kept, invisible for the back-off


def test_stop_releases_unstarted_messages_at_once(probe_bus, recorder):
    for i in range(1, 6):
        _create(i)
    probe_bus.relay()
    consumer = Consumer("probe", wait_seconds=0, check_topology=False)

    def stop_after_first(event):
        recorder.seen.append(event)
        consumer.stop.set()

    [h] = [h for h in registry.handlers(service="probe", event_type="team.created")]
    registry._handlers[registry._handlers.index(h)] = registry.Handler("probe", "team.created", stop_after_first)
    consumer.poll(wait_seconds=1)
    assert len(recorder.seen) == 1
    visible, in_flight = _depth(aws.queue_name("probe"))
    assert (visible, in_flight) == (4, 0)  # released at once, not left invisible for 30 s


def test_replay_sends_stored_events_to_one_queue_and_the_inbox_dedupes(bus, capsys):
    _create(1, "Ajax")
    bus.drain()
    inbox_before = InboxMessage.objects.count()
    call_command("replay_events", "--service", "transfers", "--type", "team.created")
    assert "1 event(s) replayed to leaguemanager-transfers" in capsys.readouterr().out
    assert _depth(aws.queue_name("fixtures")) == (0, 0)  # nobody else got it
    bus.drain()
    assert InboxMessage.objects.count() == inbox_before
    assert bus.consumed["transfers"].duplicates == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["--service", "nobody"], "Unknown service 'nobody'"),
        (["--service", "transfers", "--type", "team.exploded"], "not in events/catalogue.py"),
        (["--service", "transfers", "--since", "yesterday"], "--since 'yesterday' is not an ISO date"),
        (["--service", "fixtures", "--type", "player.added"], "fixtures does not handle player.added"),
    ],
)
def test_replay_bad_input_is_a_clear_error(bus, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("replay_events", *args)


def test_bus_status_prints_tables(bus, capsys):
    _create(1)
    _create(2)
    bus.relay()
    OutboxMessage.objects.filter(subject="2").update(state=OutboxState.FAILED)
    call_command("bus_status")
    out = capsys.readouterr().out
    assert "type" in out and "pending" in out and "oldest pending (s)" in out
    line = next(line for line in out.splitlines() if line.startswith("team.created"))
    assert line.split()[1:4] == ["0", "1", "1"]
    q = next(line for line in out.splitlines() if line.startswith("leaguemanager-transfers "))
    assert q.split()[1:] == ["2", "0", "0", "ok"]


def test_requeue_outbox_command(bus, capsys):
    row = _create(1)
    OutboxMessage.objects.filter(pk=row.pk).update(state=OutboxState.FAILED, attempts=10)
    call_command("requeue_outbox", "--type", "team.created")
    assert "1 failed row(s) requeued" in capsys.readouterr().out
    row.refresh_from_db()
    assert row.state == OutboxState.PENDING and row.attempts == 0


def test_fifo_mode_publishes_and_consumes_through_fifo_topics_and_queues(aws_mock, db, settings, recorder):
    settings.BUS_FIFO = True
    topology.ensure(["probe"])
    assert aws.topic_name("team.created").endswith(".fifo")
    attrs = aws.queue_attributes(aws.queue_url(aws.queue_name("probe")), "FifoQueue")
    assert attrs["FifoQueue"] == "true"
    _create(1)
    with transaction.atomic():
        events.publish("team.renamed", subject=1, data={"id": 1, "name": "B", "old_name": "Team 1", "short_name": "TM"})
    from events import relay

    assert relay.relay().published == 2
    Consumer("probe", wait_seconds=0, check_topology=False).run(drain=True)
    assert [(e.type, e.sequence) for e in recorder.seen] == [("team.created", 1), ("team.renamed", 2)]


@pytest.fixture
def broadcast_probe(recorder):
    handlers = [registry.Handler("probe", "team.created", recorder, broadcast=True)]
    registry._handlers.extend(handlers)
    yield recorder


def test_broadcast_instances_each_get_every_event_and_clean_up(probe_bus, broadcast_probe):
    consumers = [Consumer("probe", wait_seconds=0, broadcast=True) for _ in range(3)]
    for c in consumers:
        c.open_instance_queue()
    names = {c.queue_name for c in consumers}
    assert len(names) == 3
    _create(1)
    _create(2)
    probe_bus.relay()
    for c in consumers:
        c.run(drain=True)
    assert sorted(e.subject for e in broadcast_probe.seen) == ["1", "1", "1", "2", "2", "2"]
    # The instance queues are gone, and so are their subscriptions.
    urls = aws.client("sqs").list_queues(QueueNamePrefix="leaguemanager-probe-").get("QueueUrls", [])
    assert [u for u in urls if not u.endswith("-dlq")] == []
    endpoints = {s["Endpoint"].rsplit(":", 1)[-1] for s in topology.subscriptions_of(aws.topic_arn("team.created"))}
    assert not endpoints & names


def test_reap_removes_what_a_dead_instance_left(probe_bus, broadcast_probe, capsys):
    dead = broadcasting.InstanceQueue.create("probe", "deadhost-1-abc")
    dead.stop.set()  # the process died: no more heartbeats, nothing cleaned up
    alive = broadcasting.InstanceQueue.create("probe", "livehost-2-def")
    call_command("reap_queues", "--max-age", "3600")
    assert "0 leftover(s)" in capsys.readouterr().out
    aws.client("sqs").tag_queue(QueueUrl=dead.url, Tags={broadcasting.TAG_HEARTBEAT: "0"})
    call_command("reap_queues", "--max-age", "3600")
    out = capsys.readouterr().out
    assert "queue leaguemanager-probe-deadhost-1-abc" in out
    assert "subscription leaguemanager-team-created -> leaguemanager-probe-deadhost-1-abc" in out
    # Publishing still works (moto would fail publishes to a topic subscribed to a deleted queue).
    _create(1)
    assert probe_bus.relay() == 1
    alive.delete()


def test_a_broadcast_instance_subscribes_again_where_its_subscription_vanished(probe_bus, broadcast_probe):
    """A topic deleted and created again (or a subscription removed) leaves the queue in
    place but deaf to that topic: the heartbeat's check subscribes it again."""
    queue = broadcasting.InstanceQueue.create("probe", "livehost-3-ghi")
    try:
        [topic] = queue.topic_arns
        aws.client("sns").unsubscribe(SubscriptionArn=queue.subscription_arns[0])
        assert queue.resubscribe_missing() == [topic]
        assert queue.resubscribe_missing() == []
        consumer = Consumer("probe", wait_seconds=0, broadcast=True)
        consumer._instance_queue, consumer.sqs.queue_url = queue, queue.url
        _create(1)
        probe_bus.relay()
        consumer.poll(wait_seconds=1)
        assert [e.subject for e in broadcast_probe.seen] == ["1"]
    finally:
        queue.delete()


def test_a_broadcast_consumer_creates_its_vanished_queue_again_and_reports_its_state(probe_bus, broadcast_probe):
    states: list[str | None] = []
    consumer = Consumer("probe", wait_seconds=0, broadcast=True)
    consumer.on_receive_state = states.append
    consumer.open_instance_queue()
    try:
        aws.client("sqs").delete_queue(QueueUrl=consumer.queue_url)  # an emulator restarted empty
        assert consumer.poll(wait_seconds=0) == 0  # the receive fails; the queue is made again
        assert states == ["missing"]
        _create(1)
        probe_bus.relay()
        consumer.poll(wait_seconds=1)
        assert [e.subject for e in broadcast_probe.seen] == ["1"] and states == ["missing", None]
    finally:
        consumer.close_instance_queue()
