"""The crash-injection suite: ``python -m faults.run [--quick] [--keep-logs]``.

Starts the whole stack as real processes (a fresh Postgres database, ``moto_server``,
gunicorn, ``relay_outbox``, one ``consume`` per service plus the probe service), writes
through the REST API with a token, injects one kind of fault per scenario, waits until
the bus has drained, and checks that every event was handled by every subscribed handler
exactly once (faults/checks.py). Prints a table; exits 1 if any event was lost or
applied twice, a replica disagrees, something is stuck, or a DLQ misses what it must hold.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from .stack import BASE_DIR, CONSUMED, Stack, postgres_available


@dataclass
class Plan:
    """Sizes of the scenarios: the full run (CI's crash-suite step) or --quick (pytest)."""

    baseline: int = 200
    relay_events: int = 1200
    relay_kills: int = 10
    consumer_events: int = 400
    consumer_kills: int = 4
    outage_seconds: float = 30
    outage_events: int = 150
    db_events: int = 300
    db_cuts: int = 3
    two_relays_events: int = 400
    poison_events: int = 100
    db_outage_seconds: float = 180
    db_outage_events: int = 200
    hot_events: int = 600
    hot_teams: int = 6
    hot_consumers: int = 4
    stall_events: int = 300
    runstack_events: int = 100
    consumer_stops: int = 20
    split_points: tuple[str, ...] = ("migrated", "started", "paused", "draining", "copying", "switching", "switched")
    drain_timeout: float = 240

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            baseline=40,
            relay_events=150,
            relay_kills=2,
            consumer_events=80,
            consumer_kills=1,
            outage_seconds=5,
            outage_events=20,
            db_events=60,
            db_cuts=1,
            two_relays_events=80,
            poison_events=20,
            db_outage_seconds=20,
            db_outage_events=40,
            hot_events=120,
            stall_events=100,
            runstack_events=30,
            consumer_stops=4,
            split_points=("copying", "switching"),  # one rollback, one rerun: the full run has every step
            drain_timeout=240,
        )


@dataclass
class Row:
    scenario: str
    events: int = 0
    faults: str = ""
    lost: int = 0
    twice: int = 0
    redelivered: int = 0
    dlq: int = 0
    stuck: int = 0
    drain: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.twice and not self.problems


# ---------------------------------------------------------------------------------- writes
class Writer:
    """Random team/squad changes through the REST API; the outbox is the record of what
    was written (an API call cut by a fault may or may not have committed)."""

    POSITIONS = ("GK", "DEF", "MID", "ST")

    def __init__(self, stack: Stack, token: str, seed: int) -> None:
        self.base = f"{stack.web_url}/api"
        self.http = stack.api(token)
        self.rng = random.Random(seed)
        self.teams: dict[int, dict[int, str]] = {}  # team id -> {player id: name}
        self.n = 0
        self.api_errors = 0

    def _call(self, method: str, path: str, **kw) -> requests.Response | None:
        try:
            r = self.http.request(method, f"{self.base}{path}", timeout=30, **kw)
        except requests.RequestException:
            self.api_errors += 1
            return None
        if r.status_code >= 500:
            self.api_errors += 1
            return None
        return r

    def _name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}-{self.rng.randrange(10**6)}"

    def create_team(self, name: str | None = None, players: int = 0) -> int | None:
        squad = [{"name": self._name("P"), "position": self.rng.choice(self.POSITIONS)} for _ in range(players)]
        r = self._call("POST", "/teams/", json={"name": name or self._name("Team "), "players": squad})
        if r is None or r.status_code != 201:
            return None
        body = r.json()
        self.teams[body["id"]] = {p["id"]: p["name"] for p in body["players"]}
        return body["id"]

    def step(self) -> bool:
        """One change; True if the API accepted it (one event)."""
        roll = self.rng.random()
        if len(self.teams) < 8 or roll < 0.25:
            return self.create_team(players=self.rng.randrange(3)) is not None
        tid = self.rng.choice(list(self.teams))
        squad = self.teams[tid]
        if roll < 0.55 and len(squad) < 20:
            r = self._call(
                "POST",
                f"/teams/{tid}/players/",
                json={"name": self._name("P"), "position": self.rng.choice(self.POSITIONS)},
            )
            if r is not None and r.status_code == 201:
                squad[r.json()["id"]] = r.json()["name"]
                return True
        elif roll < 0.75:
            r = self._call("PATCH", f"/teams/{tid}/", json={"name": self._name("Team ")})
            return r is not None and r.status_code == 200
        elif roll < 0.92 and squad:
            pid = self.rng.choice(list(squad))
            r = self._call("DELETE", f"/teams/{tid}/players/{pid}/")
            if r is not None and r.status_code in (204, 404):
                squad.pop(pid)
                return r.status_code == 204
        elif roll >= 0.92:
            r = self._call("DELETE", f"/teams/{tid}/")
            if r is not None and r.status_code in (204, 404):
                self.teams.pop(tid)
                return r.status_code == 204
        return False

    def write(self, events: int, *, on_progress: Callable[[int], None] | None = None, pace: float = 0) -> None:
        done = 0
        while done < events:
            if self.step():
                done += 1
                if on_progress:
                    on_progress(done)
            if pace:
                time.sleep(pace)


# ---------------------------------------------------------------------------------- suite
class Suite:
    def __init__(self, stack: Stack, plan: Plan, token: str, seed: int) -> None:
        self.stack = stack
        self.plan = plan
        self.writer = Writer(stack, token, seed)
        self.rows: list[Row] = []
        self.tag = uuid.uuid4().hex[:8]
        self.after_drain: list[Callable[[], None]] = []  # a scenario's clean-up, run once drained

    # -------------------------------------------------------------- measurements
    @staticmethod
    def last_outbox_id() -> int:
        from events.models import OutboxMessage

        return OutboxMessage.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def counters(self) -> dict[str, float]:
        """Sums across every process of the run (prometheus multiprocess files survive kill -9)."""
        from prometheus_client import CollectorRegistry, multiprocess

        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg, path=str(self.stack.prom_dir))
        sums: dict[str, float] = {}
        for metric in reg.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    sums[sample.name] = sums.get(sample.name, 0) + sample.value
        return sums

    def counter(self, name: str, **labels: str) -> float:
        """One counter summed across processes, only its samples with these labels."""
        from prometheus_client import CollectorRegistry, multiprocess

        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg, path=str(self.stack.prom_dir))
        return sum(
            sample.value
            for metric in reg.collect()
            for sample in metric.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    @staticmethod
    def dead_letters() -> int:
        """Messages in every DLQ (visible or not)."""
        from events import aws

        total = 0
        for service in CONSUMED:
            attrs = aws.queue_attributes(
                aws.queue_url(aws.queue_name(service, dlq=True)),
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            )
            total += sum(int(v) for v in attrs.values())
        return total

    @staticmethod
    def unpublished() -> int:
        from events.models import OutboxMessage, OutboxState

        return OutboxMessage.objects.exclude(state=OutboxState.PUBLISHED).count()

    def wait_published(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.unpublished() and time.monotonic() < deadline:
            time.sleep(0.2)

    def leased(self) -> int:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM events_outboxmessage WHERE state = 'pending' AND claimed_until > now()"
            )
            return cursor.fetchone()[0]

    def handled_by(self, service: str) -> int:
        from events.models import InboxMessage

        return InboxMessage.objects.filter(handler__startswith=f"{service}:").count()

    def wait_drained(self, lo: int, started: float, *, extra: Callable[[], list[str]] | None = None):
        from . import checks

        deadline = time.monotonic() + self.plan.drain_timeout
        while True:
            crashed = self.stack.check_alive()
            if crashed:
                raise RuntimeError(f"processes exited on their own: {crashed}")
            verdict = checks.exactly_once(lo, self.last_outbox_id())
            problems: list[str] = []
            if verdict.lost == 0 and verdict.stuck == 0:
                problems = checks.replicas_match() + (extra() if extra else [])
                if not problems:
                    return verdict, time.monotonic() - started, []
            if time.monotonic() > deadline:
                problems += checks.explain(lo, self.last_outbox_id(), problems)
            if time.monotonic() > deadline:  # noqa: SIM102
                extra_problems = [f"not drained after {self.plan.drain_timeout:.0f} s: stuck {verdict.stuck}"]
                return verdict, time.monotonic() - started, extra_problems + problems[:30]
            time.sleep(0.5)

    def scenario(self, name: str, body: Callable[[Row], Callable[[], list[str]] | None]) -> Row:
        row = Row(name)
        print(f"-- {name}", flush=True)
        lo = self.last_outbox_id()
        before = self.counters()
        try:
            extra = body(row)
            started = time.monotonic()
            verdict, row.drain, problems = self.wait_drained(lo, started, extra=extra)
        except Exception as exc:  # a scenario that breaks is a failed scenario, not a crash
            traceback.print_exc()
            from . import checks

            verdict, problems = checks.exactly_once(lo, self.last_outbox_id()), [f"{type(exc).__name__}: {exc}"]
        finally:
            while self.after_drain:
                self.after_drain.pop()()
        after = self.counters()
        row.events = verdict.events
        row.lost = verdict.lost
        row.twice = verdict.twice
        row.stuck = verdict.stuck
        row.problems += problems
        row.redelivered = int(
            after.get("league_events_duplicate_total", 0) - before.get("league_events_duplicate_total", 0)
        )
        self.rows.append(row)
        print(f"   {self.format_row(row)}{'  ' + '; '.join(row.problems) if row.problems else ''}", flush=True)
        return row

    # -------------------------------------------------------------- scenarios
    def baseline(self, row: Row):
        self.writer.write(self.plan.baseline)
        row.faults = "none"

    def relay_kill(self, row: Row):
        """kill -9 of the relay while it holds claimed rows (a batch between claim and mark),
        then a new relay at once: the leased rows come back when their lease runs out."""
        kills, orphaned = self.plan.relay_kills, 0
        marks = {int(self.plan.relay_events * (i + 1) / (kills + 1)) for i in range(kills)}
        killed = 0

        def on_progress(done: int) -> None:
            nonlocal killed, orphaned
            if done not in marks:
                return
            deadline = time.monotonic() + 10
            while self.leased() == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            self.stack.kill9("relay")
            orphaned += self.leased()
            killed += 1
            self.stack.start_relay()

        self.writer.write(self.plan.relay_events, on_progress=on_progress)
        row.faults = f"{killed}x kill -9 relay ({orphaned} rows leased at death)"
        if killed and not orphaned:
            row.problems.append("no kill landed mid-batch (no leased rows at death)")

    def consumer_kill(self, row: Row):
        """kill -9 of a consumer while it is handling messages (its inbox count moving)."""
        services = ["transfers", "fixtures", "faultprobe"]
        kills = self.plan.consumer_kills
        marks = {int(self.plan.consumer_events * (i + 1) / (kills + 1)): services[i % 3] for i in range(kills)}
        mid = 0

        def on_progress(done: int) -> None:
            nonlocal mid
            service = marks.get(done)
            if service is None:
                return
            deadline = time.monotonic() + 10
            before = self.handled_by(service)
            while time.monotonic() < deadline:
                time.sleep(0.02)
                now = self.handled_by(service)
                if now != before:
                    mid += 1
                    break
            self.stack.kill9(f"consume-{service}")
            time.sleep(0.5)
            self.stack.start_consumer(service)

        self.writer.write(self.plan.consumer_events, on_progress=on_progress)
        row.faults = f"{kills}x kill -9 consumer ({mid} while handling)"

    def consumers_stopped(self, row: Row):
        """SIGTERM to a consumer under traffic (the services' consumers in turn, each
        replaced at once), ``consumer_stops`` times. After each stop, once any receive it
        might have left open at the queue has ended (one long poll), its queue must hold
        no message in flight: a stopped consumer gives back what it holds, so no message
        waits for a visibility timeout. Also reported: the longest any event of the run
        waited between its queue and its handler."""
        import threading

        from django.conf import settings
        from django.db import connection

        from events import aws

        done = threading.Event()

        def traffic() -> None:
            while not done.is_set():
                self.writer.step()
                done.wait(0.05)

        services = ["transfers", "fixtures", "faultprobe"]  # the ones the traffic reaches
        lo = self.last_outbox_id()
        writer = threading.Thread(target=traffic, name="traffic", daemon=True)
        writer.start()
        stranded: list[str] = []
        poll = float(self.stack.env["CONSUMER_WAIT_SECONDS"])
        try:
            for i in range(self.plan.consumer_stops):
                service = services[i % len(services)]
                name = f"consume-{service}"
                before = self.handled_by(service)
                deadline = time.monotonic() + 10
                while self.handled_by(service) == before and time.monotonic() < deadline:
                    time.sleep(0.05)  # until it is handling the traffic
                self.stack.stop(name)  # SIGTERM, and wait for the exit
                time.sleep(poll + 0.5)  # a poll left open at the queue would have taken a message by now
                url = aws.queue_url(aws.queue_name(service))
                attrs = aws.queue_attributes(url, "ApproximateNumberOfMessagesNotVisible")
                in_flight = int(attrs["ApproximateNumberOfMessagesNotVisible"])
                if in_flight:
                    stranded.append(f"stop {i + 1} ({service}): {in_flight} in flight with no consumer alive")
                self.stack.start_consumer(service)
                self.stack.wait_ready(name, "consuming ")
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
            f"{self.plan.consumer_stops}x SIGTERM consumer under traffic, none left a message in flight; "
            f"longest wait in a queue {longest:.1f} s (replacements' start-up included; "
            f"visibility timeout {settings.CONSUMER_VISIBILITY_TIMEOUT} s)"
        )
        if stranded:
            row.faults = row.faults.replace("none left a message in flight", f"{len(stranded)} left messages in flight")
        row.problems += stranded

    def moto_outage(self, row: Row):
        """Drain, stop moto_server, write during the outage (the outbox keeps the events and
        the relay backs off), start a fresh moto_server, restore the topology with setup_bus."""
        lo = self.last_outbox_id()
        self.wait_drained(lo, time.monotonic())
        self.stack.stop_moto()
        down = time.monotonic()
        pace = max(self.plan.outage_seconds / max(self.plan.outage_events, 1) - 0.05, 0)
        self.writer.write(self.plan.outage_events, pace=pace)
        remaining = self.plan.outage_seconds - (time.monotonic() - down)
        if remaining > 0:
            time.sleep(remaining)
        outage = time.monotonic() - down
        # A restarted moto_server is empty. While setup_bus recreates it, a topic can exist
        # before its subscriptions do, and SNS drops what is published to a topic without
        # subscribers: pause the relays (SIGSTOP) for the restore. Real SNS/SQS is durable;
        # only the emulator loses its state.
        self.stack.pause_relays()
        try:
            self.stack.start_moto()
            self.stack.manage("setup_bus")
        finally:
            self.stack.resume_relays()
        row.faults = f"moto_server down {outage:.0f} s, restarted empty + setup_bus"

    def db_cut(self, row: Row):
        """pg_terminate_backend on every connection of the run's database but ours."""
        from django.db import connection

        cuts = self.plan.db_cuts
        marks = {int(self.plan.db_events * (i + 1) / (cuts + 1)) for i in range(cuts)}
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

        self.writer.write(self.plan.db_events, on_progress=on_progress)
        row.faults = f"{cuts}x pg_terminate_backend ({cut} connections cut)"
        row.problems += [] if cut else ["no connection was cut"]

    def two_relays(self, row: Row):
        self.stack.start_relay("relay-2")
        self.writer.write(self.plan.two_relays_events)
        row.faults = "two relays at once"

    def poison(self, row: Row):
        """A poison subject (the probe's handler raises for it) and undecodable or foreign
        messages sent straight to every queue: all of them must end in the DLQs."""
        import json

        from events import aws

        from . import checks
        from .probe import POISON_PREFIX

        poison_id = self.writer.create_team(name=f"{POISON_PREFIX} {self.tag}")
        self.writer.write(self.plan.poison_events)
        garbage = [
            f"not json {self.tag}",
            json.dumps({"garbage": self.tag}),
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": str(uuid.uuid4()),
                    "source": "/somebody-else",
                    "type": "team.created",
                    "time": "2026-01-01T00:00:00Z",
                    "subject": "1",
                    "datacontenttype": "application/json",
                    "data": {"id": 1, "name": self.tag, "players": []},
                    "dataversion": "1",
                    "sequence": 1,
                    "tag": self.tag,
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
                tagged = [b for b in found[s] if self.tag in b]
                if len(tagged) < len(garbage):
                    problems.append(f"{s} DLQ holds {len(tagged)} of {len(garbage)} garbage messages")
            missing = poison_events - checks.event_ids(found["faultprobe"])
            if missing:
                problems.append(f"faultprobe DLQ misses poison events {sorted(missing)}")
            row.dlq = sum(len(v) for v in found.values())
            return problems

        return in_dlqs

    def saga_deadline(self, row: Row):
        """A dead-lettered ``transfer.requested``: with the teams consumer stopped, the request
        is moved from the teams queue to its DLQ (what SQS redrive does after
        ``maxReceiveCount``). The saga's clock (``expire_transfers``, beat's job) must bring
        the transfer to a visible final state by its deadline (``TRANSFER_TIMEOUT_SECONDS``,
        10 s here) with nobody acting; the request redriven late moves nobody; the player can
        be transferred afterwards."""
        import json

        from django.conf import settings

        from events import aws
        from teams.models import Move, Player
        from transfers.models import PlayerReplica, TeamReplica

        deadline = settings.TRANSFER_TIMEOUT_SECONDS
        base, http = self.writer.base, self.writer.http
        src = self.writer.create_team(players=1)
        dst, other = self.writer.create_team(), self.writer.create_team()
        if src is None or dst is None or other is None:
            raise RuntimeError("could not create the saga's teams")
        player_id = next(iter(self.writer.teams[src]))
        for tid in (src, dst, other):  # the random writer leaves these teams alone
            self.writer.teams.pop(tid)
        if "expire" not in self.stack.procs:
            self.stack.spawn(
                "expire", [sys.executable, str(BASE_DIR / "manage.py"), "expire_transfers", "--interval", "1"]
            )

        def until(what: str, predicate: Callable[[], object], timeout: float) -> float:
            started = time.monotonic()
            while not predicate():
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
                time.sleep(0.2)
            return time.monotonic() - started

        def transfer(to_team: int) -> int:
            r = http.post(
                f"{base}/transfers/",
                json={"player_id": player_id, "from_team_id": src, "to_team_id": to_team, "fee": "1.00"},
                timeout=30,
            )
            if r.status_code != 201:
                raise RuntimeError(f"POST /api/transfers/ answered {r.status_code}: {r.text[:300]}")
            return r.json()["id"]

        def state(transfer_id: int) -> str:
            return http.get(f"{base}/transfers/{transfer_id}/", timeout=30).json()["state"]

        def replicated() -> bool:
            teams = TeamReplica.objects.visible().filter(team_id__in=[src, dst, other]).count()
            player = PlayerReplica.objects.filter(player_id=player_id, team__team_id=src, present=True).exists()
            return teams == 3 and player

        until("the transfers replica to know the teams and the player", replicated, 60)

        # The request is dead-lettered on the teams queue.
        self.stack.stop("consume-teams")
        first = transfer(dst)
        requested_at = time.monotonic()
        sqs = aws.client("sqs")
        queue = aws.queue_url(aws.queue_name("teams"))
        dlq = aws.queue_url(aws.queue_name("teams", dlq=True))
        dead: list[dict] = []

        def dead_letter() -> bool:
            got = sqs.receive_message(
                QueueUrl=queue,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                VisibilityTimeout=30,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            for m in got:
                body = json.loads(m["Body"])
                if body.get("type") == "transfer.requested" and body["data"]["id"] == first:
                    sqs.send_message(
                        QueueUrl=dlq, MessageBody=m["Body"], MessageAttributes=m.get("MessageAttributes", {})
                    )
                    sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
                    dead.append(m)
                else:
                    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
            return bool(dead)

        until("transfer.requested in the teams queue", dead_letter, 60)
        row.dlq = len(dead)
        self.stack.start_consumer("teams")
        self.stack.wait_ready("consume-teams", "consuming ")

        # Nobody acts: the clock asks teams to cancel, teams cancels, the player is free.
        until(f"transfer {first} to be cancelled", lambda: state(first) == "cancelled", deadline + 60)
        settled = time.monotonic() - requested_at
        # The request redriven late: teams' decision stands, nobody moves.
        self.stack.manage("redrive_dlq", "--service", "teams")
        # The player can be transferred afterwards.
        second = transfer(other)
        until(f"transfer {second} to complete", lambda: state(second) == "completed", 60)
        row.faults = (
            f"transfer.requested dead-lettered; cancelled {settled:.1f} s after the request "
            f"(deadline {deadline} s); redriven late: moved nobody; next transfer completed"
        )

        def saga_settled() -> list[str]:
            problems = []
            if state(first) != "cancelled":
                problems.append(f"transfer {first} is {state(first)}, not cancelled")
            move = Move.objects.filter(transfer_id=first).first()
            if move is None or move.outcome != "cancelled":
                problems.append(f"teams' decision for transfer {first} is {move and move.outcome}, not cancelled")
            if Player.objects.filter(pk=player_id).values_list("team_id", flat=True).first() != other:
                problems.append(f"player {player_id} is not in team {other}")
            if settled > deadline + 30:
                problems.append(f"transfer {first} settled {settled:.0f} s after its request (deadline {deadline} s)")
            return problems

        return saga_settled

    def db_outage(self, row: Row):
        """A database outage under traffic: the consumers' queues hold a backlog when
        PostgreSQL stops accepting connections (``ALLOW_CONNECTIONS false``) and terminates
        every open one, mid-batch; writes keep arriving at the API (and fail) until it is
        back. The consumers run with a 5 s visibility timeout and queues that dead-letter
        at the third receive, so any receive the outage spent would show in the DLQs."""
        from django.db import connection

        eager = {"CONSUMER_MAX_RECEIVE_COUNT": "2", "CONSUMER_VISIBILITY_TIMEOUT": "5"}
        self.stack.manage("setup_bus", env=eager)
        # A backlog in every queue: the consumers stopped while the writes are published.
        for service in CONSUMED:
            self.stack.stop(f"consume-{service}")

        def restore() -> None:
            self.stack.manage("setup_bus")
            for service in CONSUMED:
                self.stack.stop(f"consume-{service}")
                self.stack.start_consumer(service)
            for service in CONSUMED:
                self.stack.wait_ready(f"consume-{service}", "consuming ")

        self.after_drain.append(restore)
        dead_before = self.dead_letters()
        self.writer.write(self.plan.db_outage_events)
        self.wait_published()
        before = self.handled_by("faultprobe")
        for service in CONSUMED:
            self.stack.start_consumer(service, **eager)
        for service in CONSUMED:
            self.stack.wait_ready(f"consume-{service}", "consuming ")
        deadline = time.monotonic() + 10
        while self.handled_by("faultprobe") == before and time.monotonic() < deadline:
            time.sleep(0.01)
        cut = self.stack.database_down()
        down = time.monotonic()
        connection.close()
        refused = self.writer.api_errors
        try:
            while time.monotonic() - down < self.plan.db_outage_seconds:
                self.writer.step()  # refused: nothing may be written while the database is away
                time.sleep(0.5)
        finally:
            self.stack.database_up()
        outage = time.monotonic() - down
        row.faults = (
            f"database away {outage:.0f} s mid-batch ({cut} connections cut, "
            f"{self.writer.api_errors - refused} writes refused); visibility 5 s, maxReceiveCount 2"
        )

        def nothing_dead_lettered() -> None:  # counted whether or not the bus drained
            row.dlq = self.dead_letters() - dead_before
            if row.dlq:
                row.problems.append(f"{row.dlq} message(s) dead-lettered during a database outage")

        self.after_drain.append(nothing_dead_lettered)

    def hot_rows(self, row: Row):
        """Competing consumers on hot rows: 4 transfers consumers take a backlog of renames
        of a few teams, each handler locking its team's replica row in a batch's shared
        transaction. A deadlock must be retried in-process, never sent back to SQS (a
        failed handling would show in ``league_events_failed_total``)."""
        extra = [f"consume-transfers-{i}" for i in range(2, self.plan.hot_consumers + 1)]

        def stop_extra() -> None:
            for name in extra:
                self.stack.stop(name)

        self.after_drain.append(stop_extra)
        teams = [t for t in (self.writer.create_team() for _ in range(self.plan.hot_teams)) if t is not None]
        self.wait_published()
        failed = self.counter("league_events_failed_total", service="transfers")
        conflicts = self.counter("league_consumer_conflicts_total", service="transfers")
        # The renames wait in the queue as one backlog; then 4 consumers start on it at once.
        self.stack.stop("consume-transfers")
        renamed = 0
        try:
            for i in range(self.plan.hot_events):
                tid = teams[i % len(teams)]
                r = self.writer._call("PATCH", f"/teams/{tid}/", json={"name": self.writer._name("Hot ")})
                renamed += r is not None and r.status_code == 200
            self.wait_published()
        finally:
            for name in ["consume-transfers", *extra]:
                self.stack.start_consumer("transfers", name=name)

        def no_failed_handling() -> None:  # counted whether or not the bus drained
            failed_now = self.counter("league_events_failed_total", service="transfers") - failed
            retried = self.counter("league_consumer_conflicts_total", service="transfers") - conflicts
            row.faults = (
                f"{len(extra) + 1} transfers consumers, {renamed} renames of {len(teams)} teams as one backlog; "
                f"{retried:.0f} conflicts retried in-process, {failed_now:.0f} failed handlings"
            )
            if failed_now:
                row.problems.append(f"{failed_now:.0f} transfers message(s) failed and went back to SQS")

        self.after_drain.append(no_failed_handling)

    def relay_stall(self, row: Row):
        """One PublishBatch held by a proxy longer than the lease, in front of a second
        relay: its client must give up while the rows are still its own, so that no other
        relay publishes them meanwhile and the late call never reaches SNS; the rows are
        retried (a transient error), never failed, and published once."""
        from events.models import OutboxMessage

        from .proxy import DelayingProxy

        lease = int(self.stack.env["OUTBOX_LEASE_SECONDS"])
        hold = lease + 3
        proxy = DelayingProxy(self.stack.moto_url).start()
        self.stack.start_relay("relay-stalled", AWS_ENDPOINT_URL=proxy.url)
        try:
            proxy.hold_next_publish(hold)
            written = 0
            while written < self.plan.stall_events or (not proxy.held_rows and written < 10 * self.plan.stall_events):
                self.writer.write(10)
                written += 10
            if not proxy.held_rows:
                row.problems.append("the stalled relay made no PublishBatch call to hold")
                return None
            if not proxy.done.wait(hold + 30):
                row.problems.append("the held PublishBatch never ended")
            held = list(
                OutboxMessage.objects.filter(pk__in=proxy.held_rows).values_list("state", "failure", "attempts")
            )
        finally:
            self.stack.stop("relay-stalled")
            proxy.close()
        row.faults = f"1 PublishBatch of {len(proxy.held_rows)} rows held {hold} s (lease {lease} s): {proxy.outcome}"
        if proxy.outcome == "forwarded late":
            row.problems.append(
                "the held PublishBatch reached SNS after its lease ran out: its rows were published twice"
            )
        failed = [h for h in held if h[0] == "failed"]
        if failed:
            row.problems.append(f"{len(failed)} held rows marked failed: {failed[:3]}")
        return None

    def runstack_moto_kill(self, row: Row):
        """`manage.py runstack` (its own moto_server, uvicorn, Celery worker + beat, a
        consumer per service) on the suite's database, the suite's relays and consumers
        paused meanwhile. Drain, kill -9 its moto (it comes back empty), write at once:
        events must flow again within 30 s with nobody acting."""
        import re
        import signal
        import subprocess

        from devtools.netutil import free_port, wait_for_http

        from .stack import BASE_DIR

        lo = self.last_outbox_id()
        self.wait_drained(lo, time.monotonic())
        paused = self.stack.pause(("relay", "consume-"))
        port, moto_port = free_port(span=2), free_port()  # --port and the web behind the front door
        env = {k: v for k, v in self.stack.env.items() if k != "AWS_ENDPOINT_URL"}
        env.update(DATA_DIR=str(self.stack.run_dir / "runstack"), OUTBOX_KICK="true")
        log_path = self.stack.run_dir / "runstack.log"
        log = open(log_path, "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [
                sys.executable,
                str(BASE_DIR / "manage.py"),
                "runstack",
                "--port",
                str(port),
                "--emulator",
                self.stack.emulator,
                "--emulator-port",
                str(moto_port),
                "--workers",
                "1",
            ],
            env=env,
            cwd=BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.stack._started.append(proc)  # stopped by Stack.close() if this scenario breaks
        saved_base = self.writer.base
        try:
            # Up, and each consumer past its startup hooks (the transfers replica's snapshot
            # sync), which print "consuming <queue>" when done.
            deadline = time.monotonic() + 180
            while not (
                "Ctrl-C stops everything" in log_path.read_text()
                and all(f"consuming faults-{s} " in log_path.read_text() for s in CONSUMED)
            ):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"runstack did not come up: {log_path.read_text()[-2000:]}")
                time.sleep(0.5)
            wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
            kind = self.stack.emulator
            moto_pid = int(re.search(rf"started\s+{kind} \(pid (\d+)\)", log_path.read_text()).group(1))
            self.writer.base = f"http://127.0.0.1:{port}/api"
            lo = self.last_outbox_id()
            self.writer.write(self.plan.runstack_events // 2)
            _, _, problems = self.wait_drained(lo, time.monotonic())
            if problems:
                row.problems += [f"before the kill: {p}" for p in problems]
                return None
            os.kill(moto_pid, signal.SIGKILL)
            killed = time.monotonic()
            lo = self.last_outbox_id()
            self.writer.write(self.plan.runstack_events - self.plan.runstack_events // 2)
            verdict, _, problems = self.wait_drained(lo, killed)
            flowed = time.monotonic() - killed
            row.faults = f"kill -9 of runstack's {kind}; events flowed again, all handled {flowed:.1f} s after the kill"
            if problems or verdict.lost:
                row.problems += problems or [f"{verdict.lost} lost"]
            elif flowed > (limit := 30 if kind == "moto" else 120):  # LocalStack alone takes ~30 s to start
                row.problems.append(f"events took {flowed:.1f} s to flow again (limit {limit} s)")
            if "restored  the bus" not in log_path.read_text():
                row.problems.append("runstack did not restore the bus")
        finally:
            self.writer.base = saved_base
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            log.close()
            self.stack.resume(paused)
        return None

    def replica_drift(self, row: Row):
        """An applied event removed from the transfers replica (a player that ``player.added``
        put there, with the team's sequence set back, as if the event had never been handled),
        then Celery beat and a worker started as the transfers service runs them: the
        reconciliation (``transfers.reconcile_teams``, every ``TEAMS_RECONCILE_SECONDS``, 3 s
        here) must find the drift and repair it with nobody running a command."""
        from league.management.commands.service_account import ensure_service_account
        from transfers.models import PlayerReplica, ReplicaRepair, TeamReplica

        period = 3.0
        lo = self.last_outbox_id()
        team_id = self.writer.create_team(players=3)
        if team_id is None:
            raise RuntimeError("could not create the drifting team")
        self.writer.teams.pop(team_id)  # the random writer leaves it alone
        self.writer.write(self.plan.baseline // 4)
        _, _, problems = self.wait_drained(lo, time.monotonic())
        if problems:
            row.problems += [f"before the drift: {p}" for p in problems]
            return None
        # The drift: the last player.added of the team never happened, as far as the replica knows.
        team = TeamReplica.objects.get(team_id=team_id)
        victim = PlayerReplica.objects.filter(team=team, present=True).order_by("-player_id").first()
        victim.delete()
        TeamReplica.objects.filter(pk=team.pk).update(sequence=team.sequence - 1)
        repairs_before = ReplicaRepair.objects.count()
        env = {
            "TEAMS_SERVICE_URL": self.stack.web_url,
            "TEAMS_SERVICE_TOKEN": ensure_service_account("transfers-service").key,
            "TEAMS_RECONCILE_SECONDS": str(period),
            "CELERY_TASK_DEFAULT_QUEUE": f"faults-drift-{self.tag}",
        }
        celery = os.path.join(os.path.dirname(sys.executable), "celery")
        self.stack.spawn(
            "drift-beat",
            [celery, "-A", "league", "worker", "-B", "-P", "solo", "-l", "warning",
             "-s", str(self.stack.run_dir / "drift-beat-schedule")],
            **env,
        )  # fmt: skip
        started = time.monotonic()
        seen: list[float] = []

        self.after_drain.append(lambda: self.stack.stop("drift-beat"))

        def repaired() -> list[str]:
            holds = PlayerReplica.objects.filter(team=team, player_id=victim.player_id, present=True).exists()
            if not holds or ReplicaRepair.objects.count() == repairs_before:
                return [f"the transfers replica of team {team_id} still lacks player {victim.player_id}"]
            if not seen:
                seen.append(time.monotonic() - started)
                row.faults = (
                    f"player {victim.player_id} removed from the transfers replica of team {team_id}; "
                    f"repaired by beat's reconciliation {seen[0]:.1f} s after the worker and beat were spawned "
                    f"(their start included; every {period:g} s)"
                )
            return []

        row.faults = f"player removed from the transfers replica of team {team_id}; not repaired"
        return repaired

    def split_kill(self, row: Row):
        """`manage.py split_service transfers` killed with -9 at each step under traffic
        (faults/split.py), on a runstack of its own; the suite's relays and consumers are
        paused meanwhile. A kill before the switch is rolled back, the one after it is run
        again; the end state must pass devtools/cutover/checks.py."""
        from devtools.cutover.stack import CutoverStack
        from devtools.netutil import free_port

        from . import split

        paused = self.stack.pause(("relay", "consume-"))
        try:
            with CutoverStack(f"{self.stack.db_name}_split", free_port(span=2), free_port()) as live:
                live.start()
                kills = split.run(live, self.plan.split_points)
                row.faults = "kill -9 split_service at " + ", ".join(
                    f"{k.point} [{k.landed}] -> {k.recovered or 'not recovered'}" for k in kills
                )
                for k in kills:
                    row.problems += [f"{k.point}: {p}" for p in k.problems or []]
                if row.problems:
                    row.problems.append(f"runstack errors: {live.errors()}\nrunstack (tail): {live.tail(40)}")
        finally:
            self.stack.resume(paused)
        return None

    # -------------------------------------------------------------- report
    HEADER = (
        f"{'scenario':<16} {'events':>6} {'lost':>5} {'twice':>5} {'redeliv.':>8} "
        f"{'DLQ':>4} {'stuck':>5} {'drain s':>7}  faults injected"
    )

    @staticmethod
    def format_row(r: Row) -> str:
        return (
            f"{r.scenario:<16} {r.events:>6} {r.lost:>5} {r.twice:>5} {r.redelivered:>8} "
            f"{r.dlq:>4} {r.stuck:>5} {r.drain:>7.1f}  {r.faults}"
        )

    def report(self, total: Row, elapsed: float) -> str:
        lines = [self.HEADER, "-" * len(self.HEADER)]
        lines += [self.format_row(r) for r in self.rows]
        lines += ["-" * len(self.HEADER), self.format_row(total)]
        lines.append(
            f"{total.events} events, {self.writer.api_errors} API calls cut by faults, {elapsed:.0f} s in all. "
            "lost/twice: (event, handler) pairs without an inbox row / side effects committed twice; "
            "redeliv.: redelivered or republished events the inbox skipped."
        )
        for r in [*self.rows, total]:
            for p in r.problems:
                lines.append(f"PROBLEM {r.scenario}: {p}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small sizes (the pytest wrapper).")
    parser.add_argument("--keep-logs", action="store_true", help="Keep the run directory (logs) after success.")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--only", action="append", help="Run only scenarios whose name contains this (repeatable).")
    args = parser.parse_args(argv)
    if not postgres_available():
        print("PostgreSQL is not reachable at 127.0.0.1:5432 (user postgres): the crash suite needs it.")
        return 2
    plan = Plan.quick() if args.quick else Plan()
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    run_dir = Path(tempfile.mkdtemp(prefix="faults-"))
    stack = Stack(run_dir)
    stack.prom_dir.mkdir()
    os.environ.update(stack.env)
    ok = False
    started = time.monotonic()
    print(
        f"crash suite ({'quick' if args.quick else 'full'}, seed {seed}): database {stack.db_name}, "
        f"emulator {stack.emulator}, logs {run_dir}"
    )
    try:
        stack.create_database()
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.db import connection
        from rest_framework.authtoken.models import Token

        from .probe import LEDGER_DDL

        stack.manage("migrate", "--noinput")
        with connection.cursor() as cursor:
            cursor.execute(LEDGER_DDL)
        user = get_user_model().objects.create_superuser(username="faults", email="", password=uuid.uuid4().hex)
        token = Token.objects.create(user=user).key
        stack.start_moto()
        stack.manage("setup_bus")
        stack.start_web()
        stack.start_relay()
        for service in CONSUMED:
            stack.start_consumer(service)
        for service in CONSUMED:
            stack.wait_ready(f"consume-{service}", "consuming ")

        suite = Suite(stack, plan, token, seed)
        scenarios = [
            ("baseline", suite.baseline),
            ("relay kill -9", suite.relay_kill),
            ("consumer kill -9", suite.consumer_kill),
            ("consumers stopped under traffic", suite.consumers_stopped),
            ("moto outage", suite.moto_outage),
            ("db cut", suite.db_cut),
            ("two relays", suite.two_relays),
            ("saga deadline", suite.saga_deadline),
            ("db outage", suite.db_outage),
            ("hot rows", suite.hot_rows),
            ("poison+garbage", suite.poison),
            ("relay stalled", suite.relay_stall),
            ("runstack moto -9", suite.runstack_moto_kill),
            ("replica drift", suite.replica_drift),
            ("split kill -9", suite.split_kill),
        ]
        for name, body in scenarios:
            if not args.only or any(o in name for o in args.only):
                suite.scenario(name, body)

        from . import checks

        whole = checks.exactly_once(0, suite.last_outbox_id())
        total = Row(
            "ALL (re-check)",
            events=whole.events,
            lost=whole.lost,
            twice=whole.twice,
            redelivered=sum(r.redelivered for r in suite.rows),
            dlq=sum(r.dlq for r in suite.rows),
            drain=sum(r.drain for r in suite.rows),
            stuck=whole.stuck,
            faults=f"stuck outbox rows: {whole.stuck}",
        )
        total.problems += [f"{whole.stuck} outbox rows stuck"] if whole.stuck else []
        total.problems += checks.replicas_match()[:10]
        print()
        print(suite.report(total, time.monotonic() - started))
        ok = total.ok and all(r.ok for r in suite.rows)
        print("\nRESULT:", "PASS: no event lost, none applied twice" if ok else "FAIL")
        return 0 if ok else 1
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        stack.close()
        if ok and not args.keep_logs:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"logs kept in {run_dir}")


if __name__ == "__main__":
    sys.exit(main())
