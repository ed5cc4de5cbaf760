"""What must hold after a cutover under traffic, read from every database involved.

A ``Placement`` says where each service lives: the monolith's database, and the database of
each service moved out of it (``DATA_DIR/deployment.json``, written by ``split_service``).
The checks read those databases directly (SQL, no ORM: the test process is not configured
for them) and the traffic generator's summary:

- **Exactly once.** Every event published by any database (the union of the outboxes) is
  handled by every non-broadcast handler subscribed to its type (``events.registry``),
  in the inbox of the database where that handler's service lives now: none missing
  (*lost*). A moved service's inbox rows left in the monolith must be the very rows copied
  (same ``handled_at``): a row only in the monolith, or one handled again on the new side,
  is an event applied in two places (*twice*). An event id with two published rows of
  different SNS message ids was published twice.
- **Nothing stuck.** No outbox row pending or failed whose event was not published elsewhere;
  every transfer the traffic requested exists where transfers lives now, and is completed,
  rejected or cancelled (none ``requested``/``cancelling``).
- **Replicas.** The transfers and fixtures replicas equal the teams service's teams (name,
  deleted; and the squads, for transfers).
- **HTTP.** No 5xx but the documented 503 (with ``Retry-After``), none unanswered, no write
  given up; the 503s only on the paths of the service being moved; after the switch, that
  service's paths answered by it (``X-League-Upstream``).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from .traffic import Summary

SERVICES = ("teams", "transfers", "fixtures")
FINAL_TRANSFER_STATES = {"completed", "rejected", "cancelled"}


def psycopg_url(url: str) -> str:
    """psycopg takes ``postgresql://``; the project's DATABASE_URL is often ``postgres://``."""
    return "postgresql://" + url.split("://", 1)[1] if url.startswith("postgres://") else url


@dataclass(frozen=True)
class Placement:
    monolith: str  # DATABASE_URL of the monolith
    moved: dict[str, str] = field(default_factory=dict)  # service -> its own DATABASE_URL

    def home(self, service: str) -> str:
        return self.moved.get(service, self.monolith)

    def databases(self) -> list[str]:
        return list(dict.fromkeys([self.monolith, *self.moved.values()]))

    @classmethod
    def from_data_dir(cls, data_dir: Path | str, monolith: str) -> Placement:
        """The services ``split_service`` moved (``DATA_DIR/deployment.json``, state ``moved``)."""
        path = Path(data_dir) / "deployment.json"
        if not path.exists():
            return cls(monolith)
        services = json.loads(path.read_text()).get("services", {})
        return cls(
            monolith,
            {name: s["database_url"] for name, s in services.items() if s.get("state") == "moved"},
        )


@dataclass
class Verdict:
    events: int = 0
    expected: int = 0  # (event, handler) pairs
    lost: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)  # outbox rows, transfers in flight or missing
    replicas: list[str] = field(default_factory=list)
    http: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [*self.lost, *self.twice, *self.stuck, *self.replicas, *self.http]

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self, limit: int = 15) -> str:
        head = (
            f"{self.events} events, {self.expected} (event, handler) pairs: lost {len(self.lost)}, "
            f"twice {len(self.twice)}, stuck {len(self.stuck)}, replica errors {len(self.replicas)}, "
            f"HTTP problems {len(self.http)}"
        )
        return "\n".join([head, *[f"  {p}" for p in self.problems[:limit]]])


def _subscriptions() -> dict[str, list[tuple[str, str]]]:
    """Event type -> [(handler name, its service)] of every non-broadcast handler of the
    league's services (not of a test's probe service loaded in this process)."""
    from events import registry

    subs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for h in registry.handlers(broadcast=False):
        if h.service in SERVICES:
            subs[h.event_type].append((h.name, h.service))
    return subs


def _rows(url: str, sql: str, params: Iterable = ()) -> list[tuple]:
    with psycopg.connect(psycopg_url(url), connect_timeout=10) as conn:
        return conn.execute(sql, list(params)).fetchall()


def bus(placement: Placement, *, since=None, limit: int = 20) -> Verdict:
    """Exactly once and nothing stuck on the bus, across every database of ``placement``.
    ``since`` (a datetime): only outbox rows created from then on."""
    v = Verdict()
    subs = _subscriptions()
    where, params = ("WHERE created_at >= %s", [since]) if since is not None else ("", [])
    published: dict[str, tuple[str, set[str]]] = {}  # event id -> (type, SNS message ids)
    unpublished: dict[str, str] = {}  # event id -> "state in <db>"
    for url in placement.databases():
        for event_id, type_, state, sns_id in _rows(
            url,
            f"SELECT event_id::text, type, state, sns_message_id FROM events_outboxmessage {where}",
            params,
        ):
            if state == "published":
                published.setdefault(event_id, (type_, set()))[1].add(sns_id)
            else:
                unpublished[event_id] = f"{type_} {event_id} {state} in {_db_name(url)}"
    v.events = len(published)
    for event_id, what in unpublished.items():
        if event_id not in published:
            v.stuck.append(f"outbox row never published: {what}")
    for event_id, (type_, sns_ids) in published.items():
        if len(sns_ids) > 1:
            v.twice.append(f"{type_} {event_id} published {len(sns_ids)} times ({sorted(sns_ids)})")

    inbox: dict[str, dict[tuple[str, str], object]] = {}  # db -> (event id, handler) -> handled_at
    for url in placement.databases():
        inbox[url] = {
            (e, h): at for e, h, at in _rows(url, "SELECT event_id::text, handler, handled_at FROM events_inboxmessage")
        }
    for event_id, (type_, _) in published.items():
        for handler, service in subs.get(type_, []):
            v.expected += 1
            if (event_id, handler) not in inbox[placement.home(service)]:
                v.lost.append(f"LOST {type_} {event_id} -> {handler} (not in {_db_name(placement.home(service))})")
    # A moved service's rows left in the monolith must be exactly the rows copied over.
    for service, url in placement.moved.items():
        if url == placement.monolith:
            continue
        for (event_id, handler), at in inbox[placement.monolith].items():
            if not handler.startswith(f"{service}:"):
                continue
            there = inbox[url].get((event_id, handler))
            if there is None:
                v.twice.append(f"{event_id} -> {handler} handled in the monolith at {at} but not in {_db_name(url)}")
            elif there != at:
                v.twice.append(f"{event_id} -> {handler} handled in the monolith at {at} and again at {there}")
    v.lost, v.twice, v.stuck = v.lost[:limit] + _more(v.lost, limit), v.twice[:limit] + _more(v.twice, limit), v.stuck
    return v


def _more(items: list[str], limit: int) -> list[str]:
    return [f"... and {len(items) - limit} more"] if len(items) > limit else []


def _db_name(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def transfers_final(placement: Placement, transfer_ids: Iterable[int]) -> list[str]:
    """Every transfer requested exists where transfers lives now, in a final state."""
    ids = sorted(set(transfer_ids))
    if not ids:
        return []
    url = placement.home("transfers")
    states = dict(_rows(url, "SELECT id, state FROM transfers_transfer WHERE id = ANY(%s)", [ids]))
    problems = [f"transfer {i} is missing from {_db_name(url)}" for i in ids if i not in states]
    problems += [
        f"transfer {i} is stuck in {state}" for i, state in sorted(states.items()) if state not in FINAL_TRANSFER_STATES
    ]
    return problems


def replicas(placement: Placement) -> list[str]:
    """The transfers and fixtures replicas against the teams service's teams and squads."""
    teams_db = placement.home("teams")
    created = {
        int(s) for (s,) in _rows(teams_db, "SELECT subject FROM events_outboxmessage WHERE type = 'team.created'")
    }
    teams = dict(_rows(teams_db, "SELECT id, name FROM teams_team"))
    squads: dict[int, set] = defaultdict(set)
    for team_id, pid, name, position in _rows(teams_db, "SELECT team_id, id, name, position FROM teams_player"):
        squads[team_id].add((pid, name, position))

    errors: list[str] = []
    tr_db = placement.home("transfers")
    tr = {
        t: (n, d) for t, n, d in _rows(tr_db, "SELECT team_id, name, deleted_at IS NOT NULL FROM transfers_teamreplica")
    }
    tr_squads: dict[int, set] = defaultdict(set)
    for team_id, pid, name, position in _rows(
        tr_db,
        "SELECT t.team_id, p.player_id, p.name, p.position FROM transfers_playerreplica p "
        "JOIN transfers_teamreplica t ON t.id = p.team_id WHERE p.present",
    ):
        tr_squads[team_id].add((pid, name, position))
    fx = {
        t: (n, d)
        for t, n, d in _rows(
            placement.home("fixtures"), "SELECT team_id, name, deleted_at IS NOT NULL FROM fixtures_teamreplica"
        )
    }
    for tid in sorted(created | set(teams)):
        for service, replica in (("transfers", tr), ("fixtures", fx)):
            got = replica.get(tid)
            if got is None:
                errors.append(f"{service}: team {tid} missing from the replica")
            elif tid in teams and (got[0] != teams[tid] or got[1]):
                errors.append(f"{service}: team {tid} is {got[0]!r} deleted={got[1]}, teams has {teams[tid]!r}")
            elif tid not in teams and not got[1]:
                errors.append(f"{service}: team {tid} was deleted in teams, not in the replica")
        if tid in teams and tr_squads[tid] != squads[tid]:
            missing, extra = squads[tid] - tr_squads[tid], tr_squads[tid] - squads[tid]
            errors.append(f"transfers: team {tid} squad differs: missing {sorted(missing)}, extra {sorted(extra)}")
    return errors


def http(summary: Summary, *, moved: Iterable[str] = (), switched_at: float | None = None) -> list[str]:
    """The traffic's answers: no 5xx but the documented 503 of a moved service's writes, no
    request unanswered, no write given up; after ``switched_at`` (time.monotonic()), the
    moved services' paths answered by them."""
    moved = set(moved)
    problems = [f"{c.status} {c.method} {c.path} (upstream {c.upstream or '-'}): {c.error}" for c in summary.other_5xx]
    problems += [f"no answer: {c.method} {c.path}: {c.error}" for c in summary.no_answer]
    if summary.gave_up:
        problems.append(f"{summary.gave_up} writes still refused (503) at the retry deadline")
    for c in summary.calls:
        if c.documented_pause and (c.service not in moved or not c.write):
            problems.append(f"503 on {c.method} {c.path}: only {sorted(moved) or 'no'} service's writes may pause")
    if switched_at is not None:
        for service in moved:
            seen = summary.upstream_after(service, switched_at)
            wrong = {u: n for u, n in seen.items() if u != service}
            if wrong:
                problems.append(f"{service} paths answered by {wrong} after the switch")
    return problems


def settled(
    placement: Placement,
    *,
    transfer_ids: Iterable[int] = (),
    timeout: float = 120,
    since=None,
    interval: float = 1.0,
) -> Verdict:
    """The bus and data checks, again and again until they pass or ``timeout`` runs out
    (events still in flight settle within seconds); the last verdict."""
    deadline = time.monotonic() + timeout
    ids = list(transfer_ids)
    while True:
        v = bus(placement, since=since)
        v.stuck += transfers_final(placement, ids)
        if not v.lost and not v.stuck:
            v.replicas = replicas(placement)
        else:
            v.replicas = ["(not compared: the bus has not settled)"]
        if v.ok or time.monotonic() > deadline:
            return v
        time.sleep(interval)
