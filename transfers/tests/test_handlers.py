"""The replica's handlers: events applied in order, stale and duplicate events ignored,
and the saga's replies (player.transferred, move.refused / move.cancelled / move.confirmed)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from events.models import OutboxMessage
from events.registry import handlers
from transfers.factories import PlayerReplicaFactory, TeamReplicaFactory, TransferFactory
from transfers.models import PlayerReplica, TeamReplica, TransferState

from .conftest import make_event

pytestmark = pytest.mark.django_db


def handle(event) -> None:
    """Run this service's handlers for the event, as the consumer would."""
    found = handlers(service="transfers", event_type=event.type)
    assert found, f"no transfers handler for {event.type}"
    for h in found:
        h.func(event)


def squad(team_id: int) -> dict[int, str]:
    return dict(PlayerReplica.objects.filter(team__team_id=team_id, present=True).values_list("player_id", "name"))


def test_subscriptions():
    from events.registry import startup_hooks, subscriptions

    assert subscriptions("transfers") == [
        "move.cancelled",
        "move.confirmed",
        "move.refused",
        "player.added",
        "player.removed",
        "player.transferred",
        "team.created",
        "team.deleted",
        "team.renamed",
    ]
    assert [h.__name__ for h in startup_hooks("transfers")] == ["sync_teams_if_stale"]


def test_team_created_with_players():
    players = [{"id": 11, "name": "Ann", "position": "GK"}, {"id": 12, "name": "Bob", "position": "ST"}]
    handle(make_event("team.created", {"id": 1, "name": "Reds", "players": players}, sequence=1))
    team = TeamReplica.objects.get(team_id=1)
    assert (team.name, team.sequence, team.deleted) == ("Reds", 1, False)
    assert squad(1) == {11: "Ann", 12: "Bob"}
    assert PlayerReplica.objects.get(player_id=11).position == "GK"


def test_team_created_writes_its_squad_in_one_statement_whatever_its_size():
    """The replica's squad goes in with one upsert, not a SELECT and an INSERT per player."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def statements(team_id: int, size: int) -> int:
        players = [{"id": team_id * 100 + i, "name": f"P{i}", "position": "MID"} for i in range(size)]
        with CaptureQueriesContext(connection) as ctx:
            handle(make_event("team.created", {"id": team_id, "name": f"T{team_id}", "players": players}, sequence=1))
        assert len(squad(team_id)) == size
        return len(ctx.captured_queries)

    assert statements(1, 1) == statements(2, 25)


def test_team_created_late_does_not_revive_a_newer_membership():
    """The squad's upsert keeps the newer fact per player, as one-by-one did."""
    handle(make_event("player.added", {"id": 11, "team_id": 1, "name": "Ann", "position": "GK"}, sequence=2, subject=1))
    handle(make_event("player.removed", {"id": 11, "team_id": 1, "name": "Ann"}, sequence=3, subject=1))
    players = [{"id": 11, "name": "Ann", "position": "GK"}, {"id": 12, "name": "Bob", "position": "ST"}]
    handle(make_event("team.created", {"id": 1, "name": "Reds", "players": players}, sequence=1))
    assert squad(1) == {12: "Bob"}
    assert PlayerReplica.objects.get(player_id=11).sequence == 3


def test_renamed_player_added_removed_deleted():
    handle(make_event("team.created", {"id": 1, "name": "Reds"}, sequence=1))
    handle(make_event("player.added", {"id": 11, "team_id": 1, "name": "Ann", "position": "GK"}, sequence=2, subject=1))
    handle(make_event("team.renamed", {"id": 1, "name": "Scarlets", "old_name": "Reds"}, sequence=3))
    assert TeamReplica.objects.get(team_id=1).name == "Scarlets"
    assert squad(1) == {11: "Ann"}
    handle(make_event("player.removed", {"id": 11, "team_id": 1, "name": "Ann"}, sequence=4, subject=1))
    assert squad(1) == {}
    handle(make_event("team.deleted", {"id": 1, "name": "Scarlets"}, sequence=5))
    assert not TeamReplica.objects.visible().exists()
    assert TeamReplica.objects.get(team_id=1).sequence == 5


def test_stale_and_duplicate_events_are_ignored():
    """An event whose sequence is not newer than what the element holds changes nothing."""
    handle(make_event("team.created", {"id": 1, "name": "Reds"}, sequence=1))
    handle(make_event("team.renamed", {"id": 1, "name": "Blues", "old_name": "Reds"}, sequence=3))
    handle(make_event("team.renamed", {"id": 1, "name": "Greens", "old_name": "Reds"}, sequence=2))  # stale
    handle(make_event("team.renamed", {"id": 1, "name": "Blues", "old_name": "Reds"}, sequence=3))  # duplicate
    team = TeamReplica.objects.get(team_id=1)
    assert (team.name, team.sequence) == ("Blues", 3)

    handle(make_event("player.removed", {"id": 11, "team_id": 1, "name": "Ann"}, sequence=5, subject=1))
    # The older "added" arrives late: the tombstone keeps it out.
    handle(make_event("player.added", {"id": 11, "team_id": 1, "name": "Ann", "position": "GK"}, sequence=4, subject=1))
    assert squad(1) == {}
    # Events about a deleted team (arriving late) are ignored.
    handle(make_event("team.deleted", {"id": 1, "name": "Blues"}, sequence=7))
    handle(make_event("team.renamed", {"id": 1, "name": "Zombies", "old_name": "Blues"}, sequence=6))
    handle(make_event("player.added", {"id": 12, "team_id": 1, "name": "Bob", "position": "ST"}, sequence=6, subject=1))
    team.refresh_from_db()
    assert (team.name, team.deleted, team.sequence) == ("Blues", True, 7)
    assert squad(1) == {}


def test_out_of_order_events_of_one_team_all_apply():
    """A gap is not staleness: player.added #2 arriving after team.renamed #3 still counts."""
    handle(make_event("team.created", {"id": 1, "name": "Reds"}, sequence=1))
    handle(make_event("team.renamed", {"id": 1, "name": "Blues", "old_name": "Reds"}, sequence=3))
    handle(make_event("player.added", {"id": 11, "team_id": 1, "name": "Ann", "position": "GK"}, sequence=2, subject=1))
    assert squad(1) == {11: "Ann"}
    assert TeamReplica.objects.get(team_id=1).sequence == 3


def test_player_event_before_team_created_makes_a_hidden_stub():
    handle(make_event("player.added", {"id": 11, "team_id": 1, "name": "Ann", "position": "GK"}, sequence=2, subject=1))
    assert not TeamReplica.objects.visible().exists()
    handle(make_event("team.created", {"id": 1, "name": "Reds", "players": []}, sequence=1))
    team = TeamReplica.objects.visible().get(team_id=1)
    assert (team.name, team.sequence) == ("Reds", 2)
    assert squad(1) == {11: "Ann"}


def transferred(transfer_id, *, player=11, from_team=1, to_team=2, from_seq=5, to_seq=3):
    return make_event(
        "player.transferred",
        {
            "id": player,
            "name": "Ann",
            "position": "GK",
            "from_team_id": from_team,
            "to_team_id": to_team,
            "transfer_id": transfer_id,
            "from_team_sequence": from_seq,
            "to_team_sequence": to_seq,
        },
        sequence=1,
        subject=player,
    )


def test_player_transferred_moves_the_player_and_completes_the_transfer():
    reds = TeamReplicaFactory(team_id=1, name="Reds", sequence=4)
    TeamReplicaFactory(team_id=2, name="Blues", sequence=2)
    PlayerReplicaFactory(team=reds, player_id=11, name="Ann", position="GK")
    transfer = TransferFactory(player_id=11, from_team_id=1, to_team_id=2, fee=Decimal("1500000.00"))

    handle(transferred(transfer.pk))

    assert squad(1) == {} and squad(2) == {11: "Ann"}
    assert TeamReplica.objects.get(team_id=1).sequence == 5
    assert TeamReplica.objects.get(team_id=2).sequence == 3
    transfer.refresh_from_db()
    assert transfer.state == TransferState.COMPLETED and transfer.completed_at is not None
    completed = OutboxMessage.objects.get(type="transfer.completed")
    assert completed.subject == str(transfer.pk)
    assert completed.envelope["data"] == {
        "id": transfer.pk,
        "player_id": 11,
        "from_team_id": 1,
        "to_team_id": 2,
        "fee": "1500000.00",
    }

    # Redelivered (a new event id, so the inbox does not catch it): nothing more happens.
    completed_at = transfer.completed_at
    handle(transferred(transfer.pk))
    transfer.refresh_from_db()
    assert transfer.completed_at == completed_at
    assert OutboxMessage.objects.filter(type="transfer.completed").count() == 1


def test_player_transferred_with_stale_team_sequences_leaves_the_replica():
    """The replica already holds newer facts for both teams (e.g. from a snapshot)."""
    reds = TeamReplicaFactory(team_id=1, name="Reds", sequence=9)
    blues = TeamReplicaFactory(team_id=2, name="Blues", sequence=9)
    PlayerReplicaFactory(team=reds, player_id=11, name="Ann", sequence=9)  # moved back since
    PlayerReplicaFactory(team=blues, player_id=11, name="Ann", present=False, sequence=9)
    transfer = TransferFactory(player_id=11, from_team_id=1, to_team_id=2)
    handle(transferred(transfer.pk))
    assert squad(1) == {11: "Ann"} and squad(2) == {}
    transfer.refresh_from_db()
    assert transfer.state == TransferState.COMPLETED


def test_transfer_rejected_records_the_reason_once():
    transfer = TransferFactory()
    event = make_event(
        "move.refused",
        {"transfer_id": transfer.pk, "player_id": transfer.player_id, "reason": "Squad full"},
        sequence=1,
        subject=transfer.pk,
    )
    handle(event)
    transfer.refresh_from_db()
    assert (transfer.state, transfer.reason) == (TransferState.REJECTED, "Squad full")
    handle(make_event("move.refused", {**event.data, "reason": "Other"}, sequence=2, subject=transfer.pk))
    transfer.refresh_from_db()
    assert transfer.reason == "Squad full"


def test_a_finished_transfer_is_left_alone():
    done = TransferFactory(state=TransferState.COMPLETED)
    handle(
        make_event(
            "move.refused",
            {"transfer_id": done.pk, "player_id": done.player_id, "reason": "late"},
            sequence=2,
            subject=1,
        )
    )
    done.refresh_from_db()
    assert done.state == TransferState.COMPLETED and done.reason == ""
    refused = TransferFactory(state=TransferState.REJECTED, reason="no")
    handle(transferred(refused.pk, player=refused.player_id))
    refused.refresh_from_db()
    assert refused.state == TransferState.REJECTED
    assert not OutboxMessage.objects.filter(type="transfer.completed").exists()


def test_events_for_unknown_transfers_are_logged_not_failed(caplog):
    handle(make_event("move.refused", {"transfer_id": 999, "player_id": 1, "reason": "x"}, sequence=1, subject=999))
    handle(transferred(998))
    assert "unknown here" in caplog.text
    assert squad(2) == {11: "Ann"}
