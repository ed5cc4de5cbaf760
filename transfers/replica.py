"""Applying facts about teams to the replica: events, snapshots and single-team fetches.

Guarantee: the replica converges to the teams service's state whatever the order in which
events, redeliveries and snapshots arrive. Each fact carries the sequence of the team it
is about, and each element keeps the newest fact it has seen:

- the team (name with ``name_sequence``, tombstone, ``sequence``) follows the rules every
  replica shares, applied by kernel/replica.py;
- each (team, player) membership keeps its ``sequence`` and ``present`` flag, so a removal
  is remembered as a tombstone and an older "added" arriving late cannot revive it;
- ``team.deleted`` (or absence from a snapshot, see ``apply_export``) leaves a team
  tombstone: team ids are never reused, so a deleted team ignores every later fact.

Ties: an event at sequence ``s`` describes exactly state ``s``, so an event applies only if
newer than what the element holds (``>``). A snapshot reads its ``sequence`` no later
than its data, so its data is at least as new as ``s`` and it wins ties (``>=``).

Keeping the newest fact per element (rather than one sequence per team) matters when
events of one team arrive out of order (a redelivery after a failure, a standard SQS
queue): with one sequence per team, ``player.added #2`` arriving after
``team.renamed #3`` would be dropped as stale and the player lost.

Healing (anti-entropy). Converging needs every fact to arrive; a fact that never does (an
event dead-lettered, a row lost) would leave the replica wrong until the next full sync. So:

- every team sequence the teams service hands out is an event this replica consumes
  (``team.*``, ``player.*``, and both teams' sequences in ``player.transferred``), so a fact at
  a sequence above the next one (``sequence > team.sequence + 1``) shows a gap, and an event
  about a player the replica does not hold where the event says he was shows state it lacks.
  Either marks the team (``heal_wanted_at``, ``heal_cause``). Events arrive in any order, so a
  gap may be an event still on its way: the mark lists the sequences it waits for
  (``heal_missing``, up to ``MAX_MISSING``) and each that arrives is taken off; the last one
  clears the mark with no fetch. ``services.teams_heal`` (Celery beat, every
  ``TEAMS_HEAL_INTERVAL_SECONDS``) fetches each team still marked after
  ``TEAMS_HEAL_GRACE_SECONDS`` (``GET /api/teams/{id}/``) and applies it as a snapshot, which
  clears the mark once the snapshot is as new as everything the replica has seen;
- ``services.teams_reconcile`` (beat, every ``TEAMS_RECONCILE_SECONDS``) compares the
  replica with the teams service's digest (events/antientropy.py: count, highest sequence
  and hash per bucket of team ids) and reads in full only the buckets that differ, applied
  with ``apply_range`` (the snapshot rules, and the absence rule within the bucket). That
  repairs what no later fact would show (a dropped event on a team that changes no more).

Every team a healing changed is recorded (``ReplicaRepair``, in the admin) and counted
(``league_replica_repairs_total``, events/antientropy.py).

Everything here writes the database only (no network) and must run inside a transaction:
handlers are run by the consumer inside ``transaction.atomic()``; snapshots are applied by
``services.teams_sync``, ``services.teams_heal``, ``services.teams_reconcile`` and
``services.team_get_or_fetch`` after their HTTP call returned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from events import antientropy
from kernel import replica as shared

from .models import PlayerReplica, TeamReplica

log = logging.getLogger("transfers.replica")

# A team the replica knew this long before a snapshot was requested, yet absent from that
# snapshot, was deleted at the teams service. The margin absorbs clock skew between the
# processes that write the replica (consumer, web, sync_teams); a team it spares is
# removed anyway by its team.deleted event, which the subscribed consumer receives.
ABSENCE_GRACE = timedelta(seconds=60)


class Action:
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    STALE = "stale"
    DELETED = "deleted"
    KEPT = "kept"  # absent from the snapshot but learnt of after it was requested


@dataclass
class TeamOutcome:
    team_id: int
    name: str
    sequence: int
    players: int
    action: str


# ---------------------------------------------------------------------------------------
# Elements
# ---------------------------------------------------------------------------------------


def _team_locked(team_id: int) -> tuple[TeamReplica, bool]:
    """The team's row, locked for this transaction; a stub (name unknown) if new."""
    return shared.lock(TeamReplica, team_id)


_bump = shared.bump
_set_name = shared.set_name


def _membership(
    team: TeamReplica,
    *,
    player_id: int,
    sequence: int,
    present: bool,
    name: str = "",
    position: str = "",
    snapshot: bool = False,
) -> bool:
    """Record "player is (not) in team as of sequence"; True if the visible state changed."""
    row = PlayerReplica.objects.filter(team=team, player_id=player_id).first()
    if row is None:
        PlayerReplica.objects.create(
            team=team, player_id=player_id, sequence=sequence, present=present, name=name, position=position
        )
        return present
    newer = sequence >= row.sequence if snapshot else sequence > row.sequence
    if not newer:
        return False
    changed = row.present != present or (
        present and (row.name, row.position) != (name or row.name, position or row.position)
    )
    row.present = present
    row.sequence = sequence
    row.name = name or row.name
    row.position = position or row.position
    row.save()
    return changed


def _squad(team: TeamReplica, players: Iterable[dict[str, Any]], *, sequence: int) -> None:
    """Record "each of ``players`` is in team as of sequence" in one statement."""
    _squads([(team, players, sequence)])


def _squads(squads: Iterable[tuple[TeamReplica, Iterable[dict[str, Any]], int]]) -> None:
    """For each (team, players, sequence): "each of ``players`` is in team as of sequence",
    all in one statement (an upsert that keeps the newer fact per player, as
    ``_membership`` does one by one)."""
    table = connection.ops.quote_name(PlayerReplica._meta.db_table)
    team_column = PlayerReplica._meta.get_field("team").column
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    values: list[Any] = []
    count = 0
    for team, players, sequence in squads:
        for p in players:
            values += [team.pk, p["id"], p["name"], p["position"], True, sequence, now]
            count += 1
    if not count:
        return
    rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * count)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({team_column}, player_id, name, position, present, sequence, updated_at) "
            f"VALUES {rows} ON CONFLICT ({team_column}, player_id) DO UPDATE SET "
            "present = excluded.present, sequence = excluded.sequence, "
            f"name = CASE WHEN excluded.name = '' THEN {table}.name ELSE excluded.name END, "
            f"position = CASE WHEN excluded.position = '' THEN {table}.position ELSE excluded.position END, "
            f"updated_at = excluded.updated_at WHERE excluded.sequence > {table}.sequence",
            values,
        )


MAX_MISSING = 20  # a wider gap is not waited for event by event: only a fetch clears it
UNFILLABLE = 0  # in ``heal_missing``: no event can clear the mark


def _wants_heal(team: TeamReplica, cause: str, missing: range | None = None) -> None:
    """Mark ``team`` for a fetch (the caller saves); ``missing``: the sequences whose
    arrival would make the fetch needless."""
    if team.heal_wanted_at is None:
        team.heal_wanted_at = timezone.now()
    team.heal_cause = cause[:200]
    waiting = set(team.heal_missing or [])
    waiting |= set(missing) if missing is not None and len(missing) <= MAX_MISSING else {UNFILLABLE}
    team.heal_missing = sorted(waiting)
    log.info("team %s: %s; marked for a fetch from the teams service", team.team_id, cause)


def _check_gap(team: TeamReplica, sequence: int, what: str) -> bool:
    """A fact at ``sequence``: anything above the next sequence leaves a gap behind it; one
    the mark waits for fills its place. True if the mark changed."""
    if sequence > team.sequence + 1:
        _wants_heal(
            team, f"{what} at sequence {sequence} after {team.sequence}: a gap", range(team.sequence + 1, sequence)
        )
        return True
    if team.heal_wanted_at is not None and sequence in (team.heal_missing or []):
        team.heal_missing = [s for s in team.heal_missing if s != sequence]
        if not team.heal_missing:
            team.heal_wanted_at, team.heal_cause = None, ""
            log.info("team %s: the events its gap waited for arrived; no fetch", team.team_id)
        return True
    return False


def _check_holds(team: TeamReplica, player_id: int, sequence: int, what: str) -> None:
    """An event newer than the membership held says the player was in ``team``: if the
    replica does not hold him there, it lacks what the event builds on."""
    row = PlayerReplica.objects.filter(team=team, player_id=player_id).first()
    if row is None or (not row.present and row.sequence < sequence):
        _wants_heal(team, f"{what}: player {player_id} is not in this team's replica")


def _save(team: TeamReplica, *, synced: bool = False) -> None:
    if synced:
        team.synced_at = timezone.now()
    team.save()


# ---------------------------------------------------------------------------------------
# Events (one function per event type; called by handlers through services)
# ---------------------------------------------------------------------------------------


def team_created(*, team_id: int, name: str, players: Iterable[dict[str, Any]], sequence: int) -> None:
    """The shared rule for the team (kernel/replica.py), then its squad, each player a
    membership at the event's sequence."""
    team, _ = _team_locked(team_id)
    if not team.deleted and _check_gap(team, sequence, "team.created"):
        _save(team)
    shared.apply_created(TeamReplica, team_id=team_id, name=name, sequence=sequence)
    team = TeamReplica.objects.get(team_id=team_id)  # locked above, in this transaction
    if team.deleted:
        return
    _squad(team, players, sequence=sequence)


@dataclass(frozen=True)
class Created:
    """One ``team.created`` fact."""

    team_id: int
    name: str
    players: list[dict[str, Any]]
    sequence: int


def teams_created(facts: Sequence[Created]) -> None:
    """``team_created`` for each fact in turn, set-based (kernel/replica.py ``apply_many``:
    two statements when every team is new, four at most with the squads, whatever the
    number of teams). Facts about one team more than once: one by one."""
    if len({f.team_id for f in facts}) < len(facts):
        for f in facts:
            team_created(team_id=f.team_id, name=f.name, players=f.players, sequence=f.sequence)
        return
    teams = shared.apply_many(TeamReplica, {f.team_id: f for f in facts}, _created_rules)
    _squads((teams[f.team_id], f.players, f.sequence) for f in facts if not teams[f.team_id].deleted)


def _created_rules(team: TeamReplica, fact: Created) -> bool:
    """``team_created``'s rules on a locked, live row: the gap check, then the shared rule
    for the name and the sequence. True if the row changed."""
    dirty = _check_gap(team, fact.sequence, "team.created")
    dirty = _set_name(team, fact.name, fact.sequence) or dirty
    return _bump(team, fact.sequence) or dirty


def team_renamed(*, team_id: int, name: str, sequence: int) -> None:
    team, _ = _team_locked(team_id)
    if not team.deleted and _check_gap(team, sequence, "team.renamed"):
        _save(team)
    shared.apply_renamed(TeamReplica, team_id=team_id, name=name, sequence=sequence)


def team_deleted(*, team_id: int, name: str, sequence: int, at: datetime | None = None) -> None:
    """The shared tombstone rule, then every player of the team leaves it."""
    team = shared.apply_deleted(TeamReplica, team_id=team_id, name=name, sequence=sequence, at=at)
    if team is not None:
        team.players.filter(present=True).update(present=False, sequence=team.sequence)


def player_added(*, team_id: int, player_id: int, name: str, position: str, sequence: int) -> None:
    team, _ = _team_locked(team_id)
    if team.deleted:
        return
    _check_gap(team, sequence, "player.added")
    _membership(team, player_id=player_id, sequence=sequence, present=True, name=name, position=position)
    _bump(team, sequence)
    _save(team)


def player_removed(*, team_id: int, player_id: int, name: str, sequence: int) -> None:
    team, _ = _team_locked(team_id)
    if team.deleted:
        return
    _check_gap(team, sequence, "player.removed")
    _check_holds(team, player_id, sequence, "player.removed")
    _membership(team, player_id=player_id, sequence=sequence, present=False, name=name)
    _bump(team, sequence)
    _save(team)


def player_transferred(
    *,
    player_id: int,
    name: str,
    position: str,
    from_team_id: int,
    to_team_id: int,
    from_team_sequence: int,
    to_team_sequence: int,
) -> None:
    """The removal from one team and the addition to the other, each ordered by its own
    team's sequence. Rows are locked in team id order so that two concurrent handlers
    (or a handler and a sync) never deadlock."""
    facts = {
        from_team_id: (from_team_sequence, False),
        to_team_id: (to_team_sequence, True),
    }
    for team_id in sorted(facts):
        sequence, present = facts[team_id]
        team, _ = _team_locked(team_id)
        if team.deleted:
            continue
        _check_gap(team, sequence, "player.transferred")
        if not present:
            _check_holds(team, player_id, sequence, "player.transferred")
        _membership(team, player_id=player_id, sequence=sequence, present=present, name=name, position=position)
        _bump(team, sequence)
        _save(team)


# ---------------------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------------------


def apply_team_state(snapshot: dict[str, Any]) -> TeamOutcome:
    """Merge one team's full state (from the export or ``GET /api/teams/{id}/``).

    Every element older than (or as old as) the snapshot takes the snapshot's value;
    players the replica holds at or below the snapshot's sequence but that the snapshot
    does not list have left the team. Elements newer than the snapshot (events that
    arrived first) are kept.
    """
    team_id, sequence = snapshot["id"], snapshot["sequence"]
    team, created = _team_locked(team_id)
    if team.deleted:
        return TeamOutcome(team_id, team.name, team.sequence, 0, Action.STALE)
    was_stub = team.name_sequence == 0
    changed = _set_name(team, snapshot["name"], sequence, snapshot=True)
    listed = set()
    for p in snapshot["players"]:
        listed.add(p["id"])
        changed |= _membership(
            team,
            player_id=p["id"],
            sequence=sequence,
            present=True,
            name=p.get("name", ""),
            position=p.get("position", ""),
            snapshot=True,
        )
    left = team.players.filter(present=True, sequence__lte=sequence).exclude(player_id__in=listed)
    changed |= left.update(present=False, sequence=sequence) > 0
    stale = sequence < team.sequence
    if sequence >= team.sequence:  # as new as every fact seen: nothing is missing any more
        team.heal_wanted_at, team.heal_cause, team.heal_missing = None, "", []
    _bump(team, sequence)
    _save(team, synced=True)
    if created or was_stub:
        action = Action.CREATED
    elif changed:
        action = Action.UPDATED
    elif stale:
        action = Action.STALE
    else:
        action = Action.UNCHANGED
    players = team.players.filter(present=True).count()
    return TeamOutcome(team_id, team.name, team.sequence, players, action)


def apply_export(*, teams: list[dict[str, Any]], requested_at: datetime) -> list[TeamOutcome]:
    """Merge a full export; then decide about teams the export does not list.

    The export is read a page at a time, by team id; a team that existed throughout the
    read is on exactly one page (ids are stable and never reused), so the pages together
    are one export for the rule below.

    The absence rule: the export lists every team that existed when it was read, which was
    after ``requested_at``. A team absent from it was therefore deleted at the teams
    service if it already existed before ``requested_at``, which is true of every team
    this replica had heard of by then (``created_at`` on the replica's clock). Such a team
    becomes a tombstone. A team first heard of after ``requested_at`` (its ``team.created``
    handled while the export was in flight) may have been created after the export was
    read, so it is kept; if it was in fact deleted, its ``team.deleted`` event removes it.
    ``ABSENCE_GRACE`` moves the cut-off earlier to absorb clock skew between processes.
    Sequences cannot decide this: a team's sequence says nothing about the export's moment.
    """
    return _apply_listing(teams, requested_at, TeamReplica.objects.all())


def apply_range(
    *, teams: list[dict[str, Any]], after: int, last: int | None, requested_at: datetime
) -> list[TeamOutcome]:
    """``apply_export`` for one bucket of a digest: the teams with ids in ``(after, last]``
    (``last`` None: open above), read after ``requested_at``. The absence rule holds within
    the range: the bucket's listing is the export of those ids."""
    return _apply_listing(teams, requested_at, _in_range(TeamReplica.objects.all(), after, last))


def _in_range(teams: Any, after: int, last: int | None) -> Any:
    teams = teams.filter(team_id__gt=after)
    return teams if last is None else teams.filter(team_id__lte=last)


def _apply_listing(teams: list[dict[str, Any]], requested_at: datetime, scope: Any) -> list[TeamOutcome]:
    outcomes = [apply_team_state(t) for t in sorted(teams, key=lambda t: t["id"])]
    listed = {t["id"] for t in teams}
    cutoff = requested_at - ABSENCE_GRACE
    absent = scope.select_for_update().live().exclude(team_id__in=listed).order_by("team_id")
    for team in absent:
        if team.created_at < cutoff:
            team.deleted_at = timezone.now()
            team.players.filter(present=True).update(present=False, sequence=team.sequence)
            _save(team, synced=True)
            outcomes.append(TeamOutcome(team.team_id, team.name, team.sequence, 0, Action.DELETED))
        else:
            players = team.players.filter(present=True).count()
            outcomes.append(TeamOutcome(team.team_id, team.name, team.sequence, players, Action.KEPT))
    return outcomes


# ---------------------------------------------------------------------------------------
# Healing: what the replica compares with the teams service's digest
# ---------------------------------------------------------------------------------------


def digest(*, after: int, last: int | None) -> antientropy.Bucket:
    """This replica's figures for the bucket ``(after, last]`` (events/antientropy.py): its
    known, live teams with the players present, as the teams service computes its own."""
    teams = list(_in_range(TeamReplica.objects.visible(), after, last).values_list("pk", "team_id", "sequence", "name"))
    squads: dict[int, list[int]] = {}
    players = PlayerReplica.objects.filter(present=True, team_id__in=[pk for pk, *_ in teams])
    for pk, player_id in players.values_list("team_id", "player_id"):
        squads.setdefault(pk, []).append(player_id)
    facts = [antientropy.TeamFacts(team_id, seq, name, tuple(squads.get(pk, ()))) for pk, team_id, seq, name in teams]
    return antientropy.summarise(facts, after=after, last=last)


def team_gone(team_id: int) -> TeamOutcome:
    """The teams service answered 404 for a team the replica holds: ids are never reused, so
    it was deleted (its ``team.deleted`` did not arrive); it becomes a tombstone."""
    team, _ = _team_locked(team_id)
    if team.deleted:
        return TeamOutcome(team_id, team.name, team.sequence, 0, Action.STALE)
    team.deleted_at = timezone.now()
    team.heal_wanted_at, team.heal_cause, team.heal_missing = None, "", []
    team.players.filter(present=True).update(present=False, sequence=team.sequence)
    _save(team, synced=True)
    return TeamOutcome(team_id, team.name, team.sequence, 0, Action.DELETED)
