"""The digest both sides of a team replica compute, so that reconciliation sends hashes, not rows.

Anti-entropy compares an owner's teams with a replica's in buckets of consecutive team ids:
the owner (``GET /api/teams/export/digest/``) cuts its teams, in id order, into buckets of
``size`` teams and states for each its id range, how many teams it holds, their highest
``sequence`` and a hash of their content (id, sequence, name, the ids of their players). A
replica computes the same over its live teams in the same id range; only the buckets whose
figures differ are read in full (``GET /api/teams/export/?id_after=…&id_upto=…``) and repaired.

The ranges tile every id: a bucket covers ``(after, last]`` where ``after`` is the previous
bucket's ``last`` (0 for the first), and the last bucket is open above (``last`` is None), so
that a team the replica holds beyond the owner's highest id (deleted there) is compared too.
An owner without teams answers one open bucket ``(0, ∞)`` holding nothing.

Here only the arithmetic, shared by both sides, and the metrics every healing replica counts
in (``league_replica_repairs_total{service,cause}``: teams found drifted and repaired;
``league_replica_reconciliations_total{service,result}``: ``clean``, ``repaired`` or
``failed``); it imports no service.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import Counter

log = logging.getLogger("events.antientropy")

DEFAULT_BUCKET = 500
# What a digest covers of each team: everything (the transfers replica: sequence, name,
# players), or the names only (the fixtures replica, which keeps names and deletions).
FULL, NAMES = "full", "names"
CONTENTS = (FULL, NAMES)

REPLICA_REPAIRS = Counter(
    "league_replica_repairs_total", "Teams of a replica found drifted and repaired.", ["service", "cause"]
)
REPLICA_RECONCILIATIONS = Counter(
    "league_replica_reconciliations_total", "Reconciliations of a replica with its owner.", ["service", "result"]
)


def repaired(service: str, cause: str) -> None:
    try:
        REPLICA_REPAIRS.labels(service=service, cause=cause).inc()
    except Exception:  # a metric must never fail the healing
        log.exception("metrics: repaired failed")


def reconciled(service: str, result: str) -> None:
    try:
        REPLICA_RECONCILIATIONS.labels(service=service, result=result).inc()
    except Exception:
        log.exception("metrics: reconciled failed")


@dataclass(frozen=True)
class TeamFacts:
    """What the digest covers of one team."""

    id: int
    sequence: int
    name: str
    player_ids: tuple[int, ...]

    def only(self, content: str) -> TeamFacts:
        """What ``content`` covers of this team."""
        return self if content == FULL else TeamFacts(self.id, 0, self.name, ())


@dataclass
class Bucket:
    after: int
    last: int | None  # None: open above
    count: int
    max_sequence: int
    hash: str

    def covers(self, team_id: int) -> bool:
        return team_id > self.after and (self.last is None or team_id <= self.last)

    def as_dict(self) -> dict:
        return {
            "after": self.after,
            "last": self.last,
            "count": self.count,
            "max_sequence": self.max_sequence,
            "hash": self.hash,
        }

    def same(self, other: Bucket) -> bool:
        return (self.count, self.max_sequence, self.hash) == (other.count, other.max_sequence, other.hash)


def summarise(teams: Iterable[TeamFacts], *, after: int, last: int | None) -> Bucket:
    """The bucket ``(after, last]`` of ``teams`` (any order; those outside the range are ignored)."""
    inside = sorted((t for t in teams if t.id > after and (last is None or t.id <= last)), key=lambda t: t.id)
    digest = hashlib.sha256()
    for t in inside:
        players = ",".join(str(p) for p in sorted(t.player_ids))
        digest.update(f"{t.id}:{t.sequence}:{t.name}:{players}\n".encode())
    return Bucket(
        after=after,
        last=last,
        count=len(inside),
        max_sequence=max((t.sequence for t in inside), default=0),
        hash=digest.hexdigest(),
    )


def buckets(teams: Iterable[TeamFacts], *, size: int = DEFAULT_BUCKET) -> list[Bucket]:
    """The owner's side: ``teams`` cut, in id order, into buckets of ``size`` (the last open above)."""
    ordered = sorted(teams, key=lambda t: t.id)
    out: list[Bucket] = []
    after = 0
    for start in range(0, len(ordered), size):
        chunk = ordered[start : start + size]
        last = None if start + size >= len(ordered) else chunk[-1].id
        out.append(summarise(chunk, after=after, last=last))
        after = chunk[-1].id
    return out or [summarise([], after=0, last=None)]


def parse(doc: object) -> list[Bucket]:
    """The owner's answer as buckets; ``ValueError`` for a shape that is not a digest."""
    if not isinstance(doc, dict) or not isinstance(doc.get("buckets"), list):
        raise ValueError("a digest has a list 'buckets'")
    out = []
    for b in doc["buckets"]:
        if not (
            isinstance(b, dict)
            and isinstance(b.get("after"), int)
            and (b.get("last") is None or isinstance(b.get("last"), int))
            and isinstance(b.get("count"), int)
            and isinstance(b.get("max_sequence"), int)
            and isinstance(b.get("hash"), str)
        ):
            raise ValueError(f"a bucket of a digest has after, last, count, max_sequence and hash: {b!r}")
        out.append(Bucket(b["after"], b["last"], b["count"], b["max_sequence"], b["hash"]))
    return out
