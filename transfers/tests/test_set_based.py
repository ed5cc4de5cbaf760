"""``replica.teams_created``, the set-based form of the ``team.created`` handler, leaves the
replica exactly as ``team_created`` called on each fact in turn, in a few statements
whatever the number of teams."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from devtools.testing import rolled_back
from events import registry
from transfers import replica
from transfers.models import PlayerReplica, TeamReplica

pytestmark = pytest.mark.django_db


DELETED_AT = timezone.now() - timedelta(days=1)


def _player(i: int) -> dict:
    return {"id": i, "name": f"Player {i}", "position": "MID"}


def _before() -> None:
    """Rows the facts land on: a stub a player event made at sequence 3 (its creation
    missing: a gap), a tombstone, a team whose newer rename came first, a team waiting
    for sequence 1 to fill its gap."""
    replica.player_added(team_id=2, player_id=20, name="Early", position="GK", sequence=3)
    replica.team_created(team_id=3, name="Gone", players=[], sequence=1)
    replica.team_deleted(team_id=3, name="Gone", sequence=2, at=DELETED_AT)
    replica.team_renamed(team_id=4, name="Newer", sequence=5)
    replica.team_renamed(team_id=5, name="Later", sequence=2)


FACTS = [
    replica.Created(1, "Fresh", [_player(10), _player(11)], 1),
    replica.Created(2, "Stubbed", [_player(21)], 1),
    replica.Created(3, "Revived?", [_player(30)], 4),  # newer than the tombstone: ignored all the same
    replica.Created(4, "Older", [_player(40)], 1),
    replica.Created(5, "Filler", [], 1),
    replica.Created(6, "Empty", [], 1),
]


def _state() -> tuple[list, list]:
    teams = list(
        TeamReplica.objects.order_by("team_id").values_list(
            "team_id", "name", "sequence", "name_sequence", "deleted_at", "heal_wanted_at", "heal_cause", "heal_missing"
        )
    )
    # When the mark was set differs by microseconds between the two runs: compare its presence.
    teams = [(*t[:5], t[5] is not None, *t[6:]) for t in teams]
    players = list(
        PlayerReplica.objects.order_by("team__team_id", "player_id").values_list(
            "team__team_id", "player_id", "name", "position", "present", "sequence"
        )
    )
    return teams, players


def _outcome(apply) -> tuple:
    """The state ``apply`` leaves from ``_before``'s rows (rolled back after)."""
    return rolled_back(_before, apply, _state)


def _one_by_one(facts) -> None:
    for f in facts:
        replica.team_created(team_id=f.team_id, name=f.name, players=f.players, sequence=f.sequence)


@pytest.mark.parametrize("seed", range(5))
def test_set_based_leaves_the_replica_as_one_fact_at_a_time_would(seed):
    facts = list(FACTS)
    random.Random(seed).shuffle(facts)
    expected = _outcome(lambda: _one_by_one(facts))
    assert _outcome(lambda: replica.teams_created(facts)) == expected
    teams = {t[0]: t for t in expected[0]}
    assert teams[1][1] == "Fresh" and teams[3][4] is not None  # the tombstone stays one
    assert teams[4][1] == "Newer" and teams[2][1] == "Stubbed"


def test_facts_about_one_team_twice_apply_in_their_order():
    facts = [replica.Created(7, "A", [_player(70)], 1), replica.Created(7, "A", [_player(70)], 1)]
    assert _outcome(lambda: replica.teams_created(facts)) == _outcome(lambda: _one_by_one(facts))


def test_the_number_of_statements_does_not_grow_with_the_teams():
    def statements(first: int, n: int) -> int:
        facts = [
            replica.Created(i, f"Team {i}", [_player(i * 10), _player(i * 10 + 1)], 1) for i in range(first, first + n)
        ]
        with CaptureQueriesContext(connection) as ctx, transaction.atomic():
            replica.teams_created(facts)
        return len([q for q in ctx.captured_queries if not q["sql"].upper().startswith(("SAVEPOINT", "RELEASE"))])

    two, ten = statements(100, 2), statements(200, 10)
    assert two == ten == 2  # all new: the teams, then the squads
    assert statements(205, 10) == 3  # 5 of them known and unchanged: locked too
    assert TeamReplica.objects.filter(team_id__gte=100).count() == 17
    assert PlayerReplica.objects.filter(team__team_id__gte=100).count() == 34


def test_the_consumer_finds_the_set_based_form_of_the_team_created_handler():
    [h] = registry.handlers(service="transfers", event_type="team.created")
    assert h.many is not None
