"""The engine of a run: one scenario at a time, with what it measures (counters across
processes, the outbox, the inbox, the DLQs), the wait until the bus has drained and every
event was handled once (faults/checks.py), and the report."""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ..stack import CONSUMED, Stack
from .plan import Plan
from .traffic import Writer

#: A scenario: injects its faults while writing, fills in the row's ``faults`` (and
#: ``problems``), and may return a check run once the bus has drained (problems it finds).
Scenario = Callable[["Suite", "Row"], "Callable[[], list[str]] | None"]


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


class Suite:
    """What the scenarios of one run share: the stack, the plan, the writer, the rows."""

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
        from .. import checks

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

    def scenario(self, name: str, body: Scenario) -> Row:
        row = Row(name)
        print(f"-- {name}", flush=True)
        lo = self.last_outbox_id()
        before = self.counters()
        try:
            extra = body(self, row)
            started = time.monotonic()
            verdict, row.drain, problems = self.wait_drained(lo, started, extra=extra)
        except Exception as exc:  # a scenario that breaks is a failed scenario, not a crash
            traceback.print_exc()
            from .. import checks

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
