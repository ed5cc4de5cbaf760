"""Snapshot and events arrive in any order and converge (DESIGN: "The transfers cache").

A small history of the teams service is written out by hand: each step is the event the
teams service published and, after it, the export it would answer. The replica is fed the
events and one export in many orders (snapshot first, last, in between; events reversed,
shuffled, duplicated) and must end in the teams service's final state every time.
"""

from __future__ import annotations

import copy
import random
from datetime import timedelta

import pytest
from django.utils import timezone

from transfers import replica
from transfers.models import PlayerReplica, TeamReplica

from .conftest import make_event
from .test_handlers import handle

pytestmark = pytest.mark.django_db

ANN = {"id": 11, "name": "Ann", "position": "GK"}
BOB = {"id": 12, "name": "Bob", "position": "DEF"}
CAT = {"id": 13, "name": "Cat", "position": "MID"}
DAN = {"id": 21, "name": "Dan", "position": "ST"}
EVE = {"id": 31, "name": "Eve", "position": "ST"}


def _history() -> tuple[list, list[list[dict]]]:
    """(events, exports): exports[i] is the export after events[:i]."""
    teams: dict[int, dict] = {}
    events, exports = [], []

    def snap():
        exports.append(copy.deepcopy([teams[k] for k in sorted(teams)]))

    def emit(type_, data, *, team_id=None, seq=None, subject=None):
        if team_id is not None:
            teams[team_id]["sequence"] += 1
            seq = teams[team_id]["sequence"]
        events.append(make_event(type_, data, sequence=seq, subject=subject))
        snap()

    snap()
    teams[1] = {"id": 1, "name": "Reds", "sequence": 0, "players": [ANN, BOB]}
    emit("team.created", {"id": 1, "name": "Reds", "players": [ANN, BOB]}, team_id=1)
    teams[2] = {"id": 2, "name": "Blues", "sequence": 0, "players": [DAN]}
    emit("team.created", {"id": 2, "name": "Blues", "players": [DAN]}, team_id=2)
    teams[1]["players"].append(CAT)
    emit("player.added", {"team_id": 1, **CAT}, team_id=1, subject=1)
    teams[1]["name"] = "Scarlets"
    emit("team.renamed", {"id": 1, "name": "Scarlets", "old_name": "Reds"}, team_id=1)
    teams[3] = {"id": 3, "name": "Greens", "sequence": 0, "players": [EVE]}
    emit("team.created", {"id": 3, "name": "Greens", "players": [EVE]}, team_id=3)
    teams[1]["players"].remove(BOB)
    emit("player.removed", {"id": 12, "team_id": 1, "name": "Bob"}, team_id=1, subject=1)
    # Transfer of Ann, Scarlets -> Blues: both teams' sequences move.
    teams[1]["players"].remove(ANN)
    teams[2]["players"].append(ANN)
    teams[1]["sequence"] += 1
    teams[2]["sequence"] += 1
    data = {
        **ANN,
        "from_team_id": 1,
        "to_team_id": 2,
        "transfer_id": 77,
        "from_team_sequence": teams[1]["sequence"],
        "to_team_sequence": teams[2]["sequence"],
    }
    emit("player.transferred", data, seq=1, subject=11)
    deleted = teams.pop(3)
    emit("team.deleted", {"id": 3, "name": "Greens"}, seq=deleted["sequence"] + 1)
    return events, exports


EVENTS, EXPORTS = _history()
FINAL = {
    1: ("Scarlets", {13: "Cat"}),
    2: ("Blues", {21: "Dan", 11: "Ann"}),
}


def state() -> dict[int, tuple[str, dict[int, str]]]:
    """The visible replica: team id -> (name, {player id: name})."""
    out = {}
    for team in TeamReplica.objects.visible():
        players = PlayerReplica.objects.filter(team=team, present=True).values_list("player_id", "name")
        out[team.team_id] = (team.name, dict(players))
    return out


def reset() -> None:
    PlayerReplica.objects.all().delete()
    TeamReplica.objects.all().delete()


def feed(order: list) -> None:
    for item in order:
        if isinstance(item, list):
            replica.apply_export(teams=copy.deepcopy(item), requested_at=timezone.now())
        else:
            handle(item)


def test_the_history_ends_where_the_teams_service_does():
    assert {t["id"]: (t["name"], {p["id"]: p["name"] for p in t["players"]}) for t in EXPORTS[-1]} == FINAL


@pytest.mark.parametrize("cut", range(len(EXPORTS)))
def test_snapshot_then_events(cut):
    """The consumer's start: the snapshot first, then every queued event (including those
    the snapshot already holds)."""
    feed([EXPORTS[cut], *EVENTS])
    assert state() == FINAL


@pytest.mark.parametrize("cut", range(len(EXPORTS)))
def test_events_then_snapshot(cut):
    """Events handled while the snapshot was in flight, then the (older) snapshot."""
    feed([*EVENTS, EXPORTS[cut]])
    assert state() == FINAL


@pytest.mark.parametrize("cut", range(len(EXPORTS)))
def test_snapshot_between_events_in_both_orders(cut):
    """Events up to the snapshot's moment, snapshot, the rest; and the later events first."""
    feed([*EVENTS[:cut], EXPORTS[cut], *EVENTS[cut:]])
    first = state()
    reset()
    feed([*EVENTS[cut:], EXPORTS[cut], *EVENTS[:cut]])
    assert first == state() == FINAL


def test_any_order_with_duplicates_converges():
    """Shuffled, redelivered events and a snapshot from any moment: the same replica."""
    rng = random.Random(20260701)
    for _ in range(40):
        reset()
        items = [*EVENTS, *rng.sample(EVENTS, 3), rng.choice(EXPORTS)]
        rng.shuffle(items)
        feed(items)
        assert state() == FINAL, items


def test_a_snapshot_whose_data_is_newer_than_its_sequence():
    """The export reads ``sequence`` no later than the data: data may already include the
    next change, whose event then arrives too; either order gives the same replica."""
    newer = copy.deepcopy(EXPORTS[3])  # after "player.added Cat" (team 1 at #2) ...
    newer[0]["name"] = "Scarlets"  # ... but the rename (#3) is already in the data
    feed([newer, *EVENTS])
    first = state()
    reset()
    feed([*EVENTS, newer])
    assert first == state() == FINAL


def test_a_team_deleted_at_the_teams_service_disappears_on_sync():
    """Absent from the export and known before it was requested: deleted. Absent but
    heard of after the request (created after the export was read): kept."""
    feed(EVENTS[:5])  # teams 1, 2, 3 known
    TeamReplica.objects.update(created_at=timezone.now() - timedelta(hours=1))
    handle(make_event("team.created", {"id": 4, "name": "Golds", "players": []}, sequence=1))
    export = [t for t in EXPORTS[5] if t["id"] != 3]  # team 3 deleted, event lost
    outcomes = replica.apply_export(teams=export, requested_at=timezone.now() - timedelta(seconds=1))
    assert {o.team_id: o.action for o in outcomes}[3] == "deleted"
    assert {o.team_id: o.action for o in outcomes}[4] == "kept"
    assert set(state()) == {1, 2, 4}
    # A late, older event about the deleted team does not revive it.
    handle(make_event("player.added", {"id": 32, "team_id": 3, "name": "Fay", "position": "GK"}, sequence=9, subject=3))
    assert set(state()) == {1, 2, 4}
