"""What must hold after each scenario, read from the database (and the DLQs) of the run.

- Exactly once: for every outbox event, every non-broadcast handler subscribed to its type
  (``events.registry``) has one inbox row ``(event_id, handler)``: none missing (lost).
  The probe service's ledger (``faults/probe.py``) counts committed side effects: more than
  one row for an event is "applied twice".
- Order: each replica equals the teams service's state (names, squads, deletions) and
  holds the last sequence of the team.
- Nothing stuck: no outbox row pending or failed.
- The poison subject's events sit in the probe's DLQ, and garbage sits in each DLQ.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import connection

from events import aws, registry
from events.models import OutboxMessage, OutboxState

from .probe import POISON_PREFIX, SERVICE


@dataclass
class Verdict:
    events: int = 0
    expected: int = 0  # (event, handler) pairs
    lost: int = 0
    twice: int = 0
    stuck: int = 0
    replica_errors: list[str] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        return self.lost == 0 and self.stuck == 0 and not self.replica_errors


def _subscriptions() -> list[tuple[str, str]]:
    return [(h.event_type, h.name) for h in registry.handlers(broadcast=False)]


def _poison_clause(alias: str = "o") -> str:
    return f"({alias}.type LIKE 'team.%%' AND {alias}.envelope -> 'data' ->> 'name' LIKE '{POISON_PREFIX}%%')"


def exactly_once(lo: int, hi: int) -> Verdict:
    """Inbox and ledger against the outbox rows with ``lo < id <= hi``."""
    subs = _subscriptions()
    values = ", ".join(["(%s, %s)"] * len(subs))
    params: list = [x for pair in subs for x in pair]
    probe_prefix = f"{SERVICE}:%%"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH subs(type, handler) AS (VALUES {values}),
            expected AS (
                SELECT o.event_id, s.handler FROM events_outboxmessage o JOIN subs s ON s.type = o.type
                WHERE o.id > %s AND o.id <= %s AND NOT ({_poison_clause()} AND s.handler LIKE '{probe_prefix}')
            )
            SELECT
                (SELECT count(*) FROM expected),
                (SELECT count(*) FROM expected e WHERE NOT EXISTS (
                    SELECT 1 FROM events_inboxmessage i WHERE i.event_id = e.event_id AND i.handler = e.handler)),
                (SELECT count(*) FROM events_outboxmessage o WHERE o.id > %s AND o.id <= %s)
            """,
            [*params, lo, hi, lo, hi],
        )
        expected, lost, events = cursor.fetchone()
        cursor.execute(
            """
            SELECT count(*) FROM (
                SELECT l.event_id FROM faults_ledger l JOIN events_outboxmessage o ON o.event_id = l.event_id
                WHERE o.id > %s AND o.id <= %s GROUP BY l.event_id HAVING count(*) > 1
            ) twice
            """,
            [lo, hi],
        )
        (twice,) = cursor.fetchone()
        # Side effects of the poison subject's events must not exist at all.
        cursor.execute(
            f"""SELECT count(*) FROM faults_ledger l JOIN events_outboxmessage o ON o.event_id = l.event_id
            WHERE o.id > %s AND o.id <= %s AND {_poison_clause()}""",
            [lo, hi],
        )
        (poison_applied,) = cursor.fetchone()
        # The ledger must agree with the probe's inbox rows (one row each).
        cursor.execute(
            f"""SELECT count(*) FROM events_inboxmessage i JOIN events_outboxmessage o ON o.event_id = i.event_id
            WHERE o.id > %s AND o.id <= %s AND i.handler LIKE '{probe_prefix}'
            AND NOT EXISTS (SELECT 1 FROM faults_ledger l WHERE l.event_id = i.event_id)""",
            [lo, hi],
        )
        (inbox_without_effect,) = cursor.fetchone()
    stuck = OutboxMessage.objects.exclude(state=OutboxState.PUBLISHED).count()
    return Verdict(
        events=events,
        expected=expected,
        lost=lost + inbox_without_effect,
        twice=twice + poison_applied,
        stuck=stuck,
    )


def replicas_match() -> list[str]:
    """Differences between the teams service and the transfers and fixtures replicas."""
    from events.models import SubjectSequence
    from fixtures.models import TeamReplica as FixturesTeam
    from teams.models import Team
    from transfers.models import TeamReplica as TransfersTeam

    team_ids = {int(s) for s in OutboxMessage.objects.filter(type="team.created").values_list("subject", flat=True)}
    last = {k: v for k, v in SubjectSequence.objects.filter(key__startswith="team:").values_list("key", "last")}
    last_team_event: dict[int, int] = defaultdict(int)
    for subject, seq in OutboxMessage.objects.filter(type__startswith="team.").values_list("subject", "sequence"):
        last_team_event[int(subject)] = max(last_team_event[int(subject)], seq)
    teams = {t.id: t for t in Team.objects.prefetch_related("players")}
    tr = {t.team_id: t for t in TransfersTeam.objects.prefetch_related("players")}
    fx = {t.team_id: t for t in FixturesTeam.objects.all()}
    errors: list[str] = []
    for tid in sorted(team_ids):
        team = teams.get(tid)
        r = tr.get(tid)
        if r is None:
            errors.append(f"transfers: team {tid} missing")
        else:
            if r.sequence != last.get(f"team:{tid}", 0):
                errors.append(f"transfers: team {tid} sequence {r.sequence} != {last.get(f'team:{tid}')}")
            if team is None and not r.deleted:
                errors.append(f"transfers: team {tid} not deleted")
            if team is not None:
                squad = {(p.id, p.name, p.position) for p in team.players.all()}
                replica = {(p.player_id, p.name, p.position) for p in r.players.all() if p.present}
                if r.name != team.name or r.deleted or squad != replica:
                    errors.append(
                        f"transfers: team {tid} is {r.name!r} {sorted(replica)}, not {team.name!r} {sorted(squad)}"
                    )
        f = fx.get(tid)
        if f is None:
            errors.append(f"fixtures: team {tid} missing")
        else:
            if f.sequence != last_team_event[tid]:
                errors.append(f"fixtures: team {tid} sequence {f.sequence} != {last_team_event[tid]}")
            if (team is None) != f.deleted or (team is not None and f.name != team.name):
                errors.append(f"fixtures: team {tid} is {f.name!r} deleted={f.deleted}, teams has {team}")
    return errors


def dlq_bodies(service: str) -> list[str]:
    """Every message body in ``service``'s DLQ (each received once: a long visibility)."""
    sqs = aws.client("sqs")
    url = aws.queue_url(aws.queue_name(service, dlq=True))
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=600)
        messages = got.get("Messages", [])
        if not messages:
            return bodies
        bodies.extend(m["Body"] for m in messages)


def event_ids(bodies: list[str]) -> set[str]:
    ids = set()
    for body in bodies:
        try:
            ids.add(str(json.loads(body)["id"]))
        except (ValueError, KeyError, TypeError):
            pass
    return ids


def explain(lo: int, hi: int, problems: list[str], limit: int = 5) -> list[str]:
    """Forensics for a failed check: the lost pairs, and the event history of each team a
    replica disagrees about (outbox rows with their transfers/fixtures inbox rows)."""
    import re

    from events.models import InboxMessage

    lines: list[str] = []
    subs = _subscriptions()
    for row in OutboxMessage.objects.filter(id__gt=lo, id__lte=hi).order_by("id"):
        handled = set(InboxMessage.objects.filter(event_id=row.event_id).values_list("handler", flat=True))
        for event_type, name in subs:
            if event_type == row.type and name not in handled and not name.startswith(f"{SERVICE}:"):
                lines.append(
                    f"LOST {row.type} {row.event_id} subject {row.subject} #{row.sequence} -> {name} "
                    f"({row.state}, published {row.published_at}, attempts {row.attempts})"
                )
                if len(lines) >= limit:
                    return lines
    for tid in sorted({int(m) for p in problems for m in re.findall(r"team (\d+)", p)})[:2]:
        for row in OutboxMessage.objects.filter(
            subject=str(tid),
            type__in=["team.created", "team.renamed", "team.deleted", "player.added", "player.removed"],
        ).order_by("id"):
            inbox = list(InboxMessage.objects.filter(event_id=row.event_id).values_list("handler", "handled_at"))
            lines.append(
                f"team {tid}: #{row.sequence} {row.type} {row.envelope.get('data')} {row.state} "
                f"published {row.published_at} inbox {[(h.split(':')[0], str(t)) for h, t in inbox]}"
            )
    return lines
