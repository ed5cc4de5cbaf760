"""Scenarios where what the stack depends on fails or misbehaves: the emulator away, the
database's connections cut or the database away, rows every consumer wants at once,
poison and garbage messages."""

from __future__ import annotations

import time
import uuid

from ...stack import CONSUMED
from ..engine import Row, Suite


def moto_outage(suite: Suite, row: Row):
    """Drain, stop moto_server, write during the outage (the outbox keeps the events and
    the relay backs off), start a fresh moto_server, restore the topology with setup_bus."""
    lo = suite.last_outbox_id()
    suite.wait_drained(lo, time.monotonic())
    suite.stack.stop_moto()
    down = time.monotonic()
    pace = max(suite.plan.outage_seconds / max(suite.plan.outage_events, 1) - 0.05, 0)
    suite.writer.write(suite.plan.outage_events, pace=pace)
    remaining = suite.plan.outage_seconds - (time.monotonic() - down)
    if remaining > 0:
        time.sleep(remaining)
    outage = time.monotonic() - down
    # A restarted moto_server is empty. While setup_bus recreates it, a topic can exist
    # before its subscriptions do, and SNS drops what is published to a topic without
    # subscribers: pause the relays (SIGSTOP) for the restore. Real SNS/SQS is durable;
    # only the emulator loses its state.
    suite.stack.pause_relays()
    try:
        suite.stack.start_moto()
        suite.stack.manage("setup_bus")
    finally:
        suite.stack.resume_relays()
    row.faults = f"moto_server down {outage:.0f} s, restarted empty + setup_bus"


def db_cut(suite: Suite, row: Row):
    """pg_terminate_backend on every connection of the run's database but ours."""
    from django.db import connection

    cuts = suite.plan.db_cuts
    marks = {int(suite.plan.db_events * (i + 1) / (cuts + 1)) for i in range(cuts)}
    cut = 0

    def on_progress(done: int) -> None:
        nonlocal cut
        if done not in marks:
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            cut += cursor.fetchone()[0]

    suite.writer.write(suite.plan.db_events, on_progress=on_progress)
    row.faults = f"{cuts}x pg_terminate_backend ({cut} connections cut)"
    row.problems += [] if cut else ["no connection was cut"]


def poison(suite: Suite, row: Row):
    """A poison subject (the probe's handler raises for it) and undecodable or foreign
    messages sent straight to every queue: all of them must end in the DLQs."""
    import json

    from events import aws

    from ... import checks
    from ...probe import POISON_PREFIX

    poison_id = suite.writer.create_team(name=f"{POISON_PREFIX} {suite.tag}")
    suite.writer.write(suite.plan.poison_events)
    garbage = [
        f"not json {suite.tag}",
        json.dumps({"garbage": suite.tag}),
        json.dumps(
            {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": "/somebody-else",
                "type": "team.created",
                "time": "2026-01-01T00:00:00Z",
                "subject": "1",
                "datacontenttype": "application/json",
                "data": {"id": 1, "name": suite.tag, "players": []},
                "dataversion": "1",
                "sequence": 1,
                "tag": suite.tag,
            }
        ),
    ]
    sqs = aws.client("sqs")
    for service in CONSUMED:
        url = aws.queue_url(aws.queue_name(service))
        for body in garbage:
            sqs.send_message(QueueUrl=url, MessageBody=body)
    row.faults = f"1 poison subject (team {poison_id}), {len(garbage)} garbage msgs x {len(CONSUMED)} queues"
    found: dict[str, list[str]] = {s: [] for s in CONSUMED}

    def in_dlqs() -> list[str]:
        from events.models import OutboxMessage

        poison_events = {
            str(e)
            for e in OutboxMessage.objects.filter(
                type__startswith="team.", envelope__data__name__startswith=POISON_PREFIX
            ).values_list("event_id", flat=True)
        }
        for s in CONSUMED:
            found[s] += checks.dlq_bodies(s)
        problems = []
        for s in CONSUMED:
            tagged = [b for b in found[s] if suite.tag in b]
            if len(tagged) < len(garbage):
                problems.append(f"{s} DLQ holds {len(tagged)} of {len(garbage)} garbage messages")
        missing = poison_events - checks.event_ids(found["faultprobe"])
        if missing:
            problems.append(f"faultprobe DLQ misses poison events {sorted(missing)}")
        row.dlq = sum(len(v) for v in found.values())
        return problems

    return in_dlqs


def db_outage(suite: Suite, row: Row):
    """A database outage under traffic: the consumers' queues hold a backlog when
    PostgreSQL stops accepting connections (``ALLOW_CONNECTIONS false``) and terminates
    every open one, mid-batch; writes keep arriving at the API (and fail) until it is
    back. The consumers run with a 5 s visibility timeout and queues that dead-letter
    at the third receive, so any receive the outage spent would show in the DLQs."""
    from django.db import connection

    eager = {"CONSUMER_MAX_RECEIVE_COUNT": "2", "CONSUMER_VISIBILITY_TIMEOUT": "5"}
    suite.stack.manage("setup_bus", env=eager)
    # A backlog in every queue: the consumers stopped while the writes are published.
    for service in CONSUMED:
        suite.stack.stop(f"consume-{service}")

    def restore() -> None:
        suite.stack.manage("setup_bus")
        for service in CONSUMED:
            suite.stack.stop(f"consume-{service}")
            suite.stack.start_consumer(service)
        for service in CONSUMED:
            suite.stack.wait_ready(f"consume-{service}", "consuming ")

    suite.after_drain.append(restore)
    dead_before = suite.dead_letters()
    suite.writer.write(suite.plan.db_outage_events)
    suite.wait_published()
    before = suite.handled_by("faultprobe")
    for service in CONSUMED:
        suite.stack.start_consumer(service, **eager)
    for service in CONSUMED:
        suite.stack.wait_ready(f"consume-{service}", "consuming ")
    deadline = time.monotonic() + 10
    while suite.handled_by("faultprobe") == before and time.monotonic() < deadline:
        time.sleep(0.01)
    cut = suite.stack.database_down()
    down = time.monotonic()
    connection.close()
    refused = suite.writer.api_errors
    try:
        while time.monotonic() - down < suite.plan.db_outage_seconds:
            suite.writer.step()  # refused: nothing may be written while the database is away
            time.sleep(0.5)
    finally:
        suite.stack.database_up()
    outage = time.monotonic() - down
    row.faults = (
        f"database away {outage:.0f} s mid-batch ({cut} connections cut, "
        f"{suite.writer.api_errors - refused} writes refused); visibility 5 s, maxReceiveCount 2"
    )

    def nothing_dead_lettered() -> None:  # counted whether or not the bus drained
        row.dlq = suite.dead_letters() - dead_before
        if row.dlq:
            row.problems.append(f"{row.dlq} message(s) dead-lettered during a database outage")

    suite.after_drain.append(nothing_dead_lettered)


def hot_rows(suite: Suite, row: Row):
    """Competing consumers on hot rows: 4 transfers consumers take a backlog of renames
    of a few teams, each handler locking its team's replica row in a batch's shared
    transaction. A deadlock must be retried in-process, never sent back to SQS (a
    failed handling would show in ``league_events_failed_total``)."""
    extra = [f"consume-transfers-{i}" for i in range(2, suite.plan.hot_consumers + 1)]

    def stop_extra() -> None:
        for name in extra:
            suite.stack.stop(name)

    suite.after_drain.append(stop_extra)
    teams = [t for t in (suite.writer.create_team() for _ in range(suite.plan.hot_teams)) if t is not None]
    suite.wait_published()
    failed = suite.counter("league_events_failed_total", service="transfers")
    conflicts = suite.counter("league_consumer_conflicts_total", service="transfers")
    # The renames wait in the queue as one backlog; then 4 consumers start on it at once.
    suite.stack.stop("consume-transfers")
    renamed = 0
    try:
        for i in range(suite.plan.hot_events):
            tid = teams[i % len(teams)]
            r = suite.writer._call("PATCH", f"/teams/{tid}/", json={"name": suite.writer._name("Hot ")})
            renamed += r is not None and r.status_code == 200
        suite.wait_published()
    finally:
        for name in ["consume-transfers", *extra]:
            suite.stack.start_consumer("transfers", name=name)

    def no_failed_handling() -> None:  # counted whether or not the bus drained
        failed_now = suite.counter("league_events_failed_total", service="transfers") - failed
        retried = suite.counter("league_consumer_conflicts_total", service="transfers") - conflicts
        row.faults = (
            f"{len(extra) + 1} transfers consumers, {renamed} renames of {len(teams)} teams as one backlog; "
            f"{retried:.0f} conflicts retried in-process, {failed_now:.0f} failed handlings"
        )
        if failed_now:
            row.problems.append(f"{failed_now:.0f} transfers message(s) failed and went back to SQS")

    suite.after_drain.append(no_failed_handling)
