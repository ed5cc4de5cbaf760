"""Scenarios where a process of the stack dies, stops or stalls: no fault (the baseline),
kill -9 of the relay and of consumers, consumers stopped under traffic, two relays at once,
a relay whose PublishBatch is held past its lease."""

from __future__ import annotations

import time

from ..engine import Row, Suite


def baseline(suite: Suite, row: Row):
    suite.writer.write(suite.plan.baseline)
    row.faults = "none"


def relay_kill(suite: Suite, row: Row):
    """kill -9 of the relay while it holds claimed rows (a batch between claim and mark),
    then a new relay at once: the leased rows come back when their lease runs out."""
    kills, orphaned = suite.plan.relay_kills, 0
    marks = {int(suite.plan.relay_events * (i + 1) / (kills + 1)) for i in range(kills)}
    killed = 0

    def on_progress(done: int) -> None:
        nonlocal killed, orphaned
        if done not in marks:
            return
        deadline = time.monotonic() + 10
        while suite.leased() == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        suite.stack.kill9("relay")
        orphaned += suite.leased()
        killed += 1
        suite.stack.start_relay()

    suite.writer.write(suite.plan.relay_events, on_progress=on_progress)
    row.faults = f"{killed}x kill -9 relay ({orphaned} rows leased at death)"
    if killed and not orphaned:
        row.problems.append("no kill landed mid-batch (no leased rows at death)")


def consumer_kill(suite: Suite, row: Row):
    """kill -9 of a consumer while it is handling messages (its inbox count moving)."""
    services = ["transfers", "fixtures", "faultprobe"]
    kills = suite.plan.consumer_kills
    marks = {int(suite.plan.consumer_events * (i + 1) / (kills + 1)): services[i % 3] for i in range(kills)}
    mid = 0

    def on_progress(done: int) -> None:
        nonlocal mid
        service = marks.get(done)
        if service is None:
            return
        deadline = time.monotonic() + 10
        before = suite.handled_by(service)
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = suite.handled_by(service)
            if now != before:
                mid += 1
                break
        suite.stack.kill9(f"consume-{service}")
        time.sleep(0.5)
        suite.stack.start_consumer(service)

    suite.writer.write(suite.plan.consumer_events, on_progress=on_progress)
    row.faults = f"{kills}x kill -9 consumer ({mid} while handling)"


def consumers_stopped(suite: Suite, row: Row):
    """SIGTERM to a consumer under traffic (the services' consumers in turn, each
    replaced at once), ``consumer_stops`` times. After each stop, once any receive it
    might have left open at the queue has ended (one long poll), its queue must hold
    no message in flight: a stopped consumer gives back what it holds, so no message
    waits for a visibility timeout. Also reported: the longest any event of the run
    waited between its queue and its handler.

    A consumer killed with kill -9 before this scenario (``consumer_kill``) leaves what it
    held in flight for up to one visibility timeout: that is waited out before the first
    stop, so each stop is judged on what the stopped consumer left, not on a dead one's."""
    import threading

    from django.conf import settings
    from django.db import connection

    from ... import queues

    done = threading.Event()

    def traffic() -> None:
        while not done.is_set():
            suite.writer.step()
            done.wait(0.05)

    services = ["transfers", "fixtures", "faultprobe"]  # the ones the traffic reaches
    lo = suite.last_outbox_id()
    poll = float(suite.stack.env["CONSUMER_WAIT_SECONDS"])
    stranded: list[str] = []
    bound = float(suite.stack.env["CONSUMER_VISIBILITY_TIMEOUT"]) + 2 * poll + 5
    held = {s: n for s in services if (n := queues.in_flight(s))}
    waited = time.monotonic()
    earlier = queues.wait_none_in_flight(services, timeout=bound)
    waited = time.monotonic() - waited
    if earlier:
        stranded.append(f"before the first stop, still in flight after {bound:.0f} s: {earlier}")
    writer = threading.Thread(target=traffic, name="traffic", daemon=True)
    writer.start()
    try:
        for i in range(suite.plan.consumer_stops):
            service = services[i % len(services)]
            name = f"consume-{service}"
            before = suite.handled_by(service)
            deadline = time.monotonic() + 10
            while suite.handled_by(service) == before and time.monotonic() < deadline:
                time.sleep(0.05)  # until it is handling the traffic
            suite.stack.stop(name)  # SIGTERM, and wait for the exit
            time.sleep(poll + 0.5)  # a poll left open at the queue would have taken a message by now
            in_flight = queues.in_flight(service)
            if in_flight:
                stranded.append(f"stop {i + 1} ({service}): {in_flight} in flight with no consumer alive")
            suite.stack.start_consumer(service)
            suite.stack.wait_ready(name, "consuming ")
    finally:
        done.set()
        writer.join()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(max(extract(epoch FROM i.received_at - i.queued_at)), 0) FROM events_inboxmessage i "
            "JOIN events_outboxmessage o ON o.event_id = i.event_id WHERE o.id > %s",
            [lo],
        )
        longest = float(cursor.fetchone()[0])
    row.faults = (
        f"{suite.plan.consumer_stops}x SIGTERM consumer under traffic, none left a message in flight; "
        f"longest wait in a queue {longest:.1f} s (replacements' start-up included; "
        f"visibility timeout {settings.CONSUMER_VISIBILITY_TIMEOUT} s)"
    )
    if held:
        row.faults += f"; first waited {waited:.1f} s for {held} held by a consumer killed earlier"
    if stranded:
        row.faults = row.faults.replace("none left a message in flight", f"{len(stranded)} left messages in flight")
    row.problems += stranded


def two_relays(suite: Suite, row: Row):
    suite.stack.start_relay("relay-2")
    suite.writer.write(suite.plan.two_relays_events)
    row.faults = "two relays at once"


def relay_stall(suite: Suite, row: Row):
    """One PublishBatch held by a proxy longer than the lease, in front of a second
    relay: its client must give up while the rows are still its own, so that no other
    relay publishes them meanwhile and the late call never reaches SNS; the rows are
    retried (a transient error), never failed, and published once."""
    from events.models import OutboxMessage

    from ...proxy import DelayingProxy

    lease = int(suite.stack.env["OUTBOX_LEASE_SECONDS"])
    hold = lease + 3
    proxy = DelayingProxy(suite.stack.moto_url).start()
    suite.stack.start_relay("relay-stalled", AWS_ENDPOINT_URL=proxy.url)
    try:
        proxy.hold_next_publish(hold)
        written = 0
        while written < suite.plan.stall_events or (not proxy.held_rows and written < 10 * suite.plan.stall_events):
            suite.writer.write(10)
            written += 10
        if not proxy.held_rows:
            row.problems.append("the stalled relay made no PublishBatch call to hold")
            return None
        if not proxy.done.wait(hold + 30):
            row.problems.append("the held PublishBatch never ended")
        held = list(OutboxMessage.objects.filter(pk__in=proxy.held_rows).values_list("state", "failure", "attempts"))
    finally:
        suite.stack.stop("relay-stalled")
        proxy.close()
    row.faults = f"1 PublishBatch of {len(proxy.held_rows)} rows held {hold} s (lease {lease} s): {proxy.outcome}"
    if proxy.outcome == "forwarded late":
        row.problems.append("the held PublishBatch reached SNS after its lease ran out: its rows were published twice")
    failed = [h for h in held if h[0] == "failed"]
    if failed:
        row.problems.append(f"{len(failed)} held rows marked failed: {failed[:3]}")
    return None
