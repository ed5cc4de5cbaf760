"""``on_transfer_requested``: the teams step of the transfer saga."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from django.db import transaction

import events
from events.envelope import Event
from teams import services
from teams.factories import PlayerFactory, TeamFactory
from teams.handlers import on_transfer_cancellation_requested, on_transfer_requested
from teams.models import Move, MoveOutcome

pytestmark = pytest.mark.django_db


def cancellation_requested(*, transfer_id=41, player_id, from_team_id, to_team_id, reason="Deadline passed.") -> Event:
    return Event(
        id=str(uuid.uuid4()),
        type="transfer.cancellation_requested",
        source="/league/transfers",
        subject=str(transfer_id),
        time=datetime.now(UTC),
        sequence=2,
        data={
            "id": transfer_id,
            "player_id": player_id,
            "from_team_id": from_team_id,
            "to_team_id": to_team_id,
            "reason": reason,
        },
    )


def transfer_requested(*, transfer_id=41, player_id, from_team_id, to_team_id) -> Event:
    return Event(
        id=str(uuid.uuid4()),
        type="transfer.requested",
        source="/league/transfers",
        subject=str(transfer_id),
        time=datetime.now(UTC),
        sequence=1,
        data={
            "id": transfer_id,
            "player_id": player_id,
            "from_team_id": from_team_id,
            "to_team_id": to_team_id,
            "fee": "1500000.00",
        },
    )


@pytest.fixture
def teams():
    """Two teams created through the services (sequence 1 each), one player in the first."""
    home = services.team_create(name="Ironbridge", players=[{"name": "Sam Reid", "position": "MID"}])
    away = services.team_create(name="Kingsbury")
    return home, away, home.players.get()


def test_handler_is_registered_for_the_teams_service():
    from events.registry import handlers

    assert [h.func for h in handlers(service="teams", event_type="transfer.requested")] == [on_transfer_requested]


def test_transfer_moves_the_player_and_bumps_both_team_sequences(teams, outbox):
    home, away, player = teams

    with transaction.atomic():
        on_transfer_requested(transfer_requested(player_id=player.id, from_team_id=home.id, to_team_id=away.id))

    player.refresh_from_db()
    assert player.team == away
    type_, subject, sequence, data = outbox()[-1]
    assert (type_, subject, sequence) == ("player.transferred", str(player.id), 1)
    assert data == {
        "id": player.id,
        "name": "Sam Reid",
        "position": "MID",
        "from_team_id": home.id,
        "to_team_id": away.id,
        "transfer_id": 41,
        "from_team_sequence": 2,
        "to_team_sequence": 2,
    }
    assert events.current_sequence(f"team:{home.id}") == 2
    assert events.current_sequence(f"team:{away.id}") == 2
    assert len(outbox()) == 3


def rejected_reason(outbox) -> str:
    rows = [r for r in outbox() if r[0] != "team.created"]
    assert len(rows) == 1
    type_, subject, _, data = rows[0]
    assert (type_, subject) == ("move.refused", "41")
    assert set(data) == {"transfer_id", "player_id", "reason"} and data["transfer_id"] == 41
    return data["reason"]


def test_rejects_a_player_no_longer_in_the_team(teams, outbox):
    home, away, player = teams
    other = TeamFactory()

    with transaction.atomic():
        on_transfer_requested(transfer_requested(player_id=player.id, from_team_id=other.id, to_team_id=away.id))

    assert rejected_reason(outbox) == f"Player {player.id} is no longer in team {other.id}."
    player.refresh_from_db()
    assert player.team == home


def test_rejects_an_unknown_player(teams, outbox):
    home, away, _ = teams

    with transaction.atomic():
        on_transfer_requested(transfer_requested(player_id=999999, from_team_id=home.id, to_team_id=away.id))

    assert rejected_reason(outbox) == f"Player 999999 is no longer in team {home.id}."


def test_rejects_a_missing_destination(teams, outbox):
    home, _, player = teams

    with transaction.atomic():
        on_transfer_requested(transfer_requested(player_id=player.id, from_team_id=home.id, to_team_id=999999))

    assert rejected_reason(outbox) == "Team 999999 does not exist."


def test_rejects_a_full_squad(teams, outbox, settings):
    settings.SQUAD_LIMIT = 2
    home, away, player = teams
    PlayerFactory.create_batch(2, team=away)

    with transaction.atomic():
        on_transfer_requested(transfer_requested(player_id=player.id, from_team_id=home.id, to_team_id=away.id))

    assert rejected_reason(outbox) == f"Team {away.id} has a full squad (2 players)."
    assert events.current_sequence(f"team:{away.id}") == 1


def test_rejects_a_name_taken_in_the_destination(teams, outbox):
    home, away, player = teams
    PlayerFactory(team=away, name="SAM REID")

    with transaction.atomic():
        on_transfer_requested(transfer_requested(player_id=player.id, from_team_id=home.id, to_team_id=away.id))

    assert rejected_reason(outbox) == f"Team {away.id} already has a player named Sam Reid."


def test_rejects_a_transfer_to_the_same_team(teams, outbox):
    home, _, player = teams

    with transaction.atomic():
        on_transfer_requested(transfer_requested(player_id=player.id, from_team_id=home.id, to_team_id=home.id))

    assert rejected_reason(outbox) == f"Player {player.id} already plays for team {home.id}."


# --- teams decides once per transfer -----------------------------------------------------


def handle(handler, event: Event) -> None:
    with transaction.atomic():
        handler(event)


def answers(outbox) -> list[tuple[str, str, dict]]:
    return [
        (t, subject, data) for t, subject, _, data in outbox() if t.startswith("move.") or t == "player.transferred"
    ]


def test_a_cancellation_before_the_move_cancels_and_a_late_request_moves_nobody(teams, outbox):
    """The request was lost (dead-lettered); the deadline passed and transfers asked to
    cancel. Then the request is redriven: teams refuses it by the same decision."""
    home, away, player = teams
    ids = {"player_id": player.id, "from_team_id": home.id, "to_team_id": away.id}

    handle(on_transfer_cancellation_requested, cancellation_requested(**ids, reason="No answer within 900 s."))
    handle(on_transfer_requested, transfer_requested(**ids))

    player.refresh_from_db()
    assert player.team == home
    assert Move.objects.get(transfer_id=41).outcome == MoveOutcome.CANCELLED
    assert answers(outbox) == [
        ("move.cancelled", "41", {"transfer_id": 41, "player_id": player.id, "reason": "No answer within 900 s."}),
        ("move.cancelled", "41", {"transfer_id": 41, "player_id": player.id, "reason": "No answer within 900 s."}),
    ]


def test_a_cancellation_after_the_move_is_answered_moved(teams, outbox):
    home, away, player = teams
    ids = {"player_id": player.id, "from_team_id": home.id, "to_team_id": away.id}

    handle(on_transfer_requested, transfer_requested(**ids))
    handle(on_transfer_cancellation_requested, cancellation_requested(**ids))

    player.refresh_from_db()
    assert player.team == away
    assert Move.objects.get(transfer_id=41).outcome == MoveOutcome.MOVED
    assert [(t, s) for t, s, _ in answers(outbox)] == [("player.transferred", str(player.id)), ("move.confirmed", "41")]
    assert answers(outbox)[-1][2] == {"transfer_id": 41, **ids}


def test_a_repeated_request_moves_the_player_once(teams, outbox):
    """A second ``transfer.requested`` for the same transfer (not the same event: the inbox
    would skip that) is answered from the decision, not applied again."""
    home, away, player = teams
    ids = {"player_id": player.id, "from_team_id": home.id, "to_team_id": away.id}

    handle(on_transfer_requested, transfer_requested(**ids))
    handle(on_transfer_requested, transfer_requested(**ids))

    assert [t for t, _, _ in answers(outbox)] == ["player.transferred", "move.confirmed"]
    assert events.current_sequence(f"team:{home.id}") == 2


def test_a_cancellation_after_a_refusal_repeats_the_refusal(teams, outbox):
    home, away, player = teams
    ids = {"player_id": player.id, "from_team_id": away.id, "to_team_id": home.id}  # he is not in away

    handle(on_transfer_requested, transfer_requested(**ids))
    handle(on_transfer_cancellation_requested, cancellation_requested(**ids))

    reasons = [(t, d["reason"]) for t, _, d in answers(outbox)]
    assert reasons == [("move.refused", f"Player {player.id} is no longer in team {away.id}.")] * 2


def test_a_cancellation_of_a_move_made_before_decisions_were_recorded_is_answered_moved(teams, outbox):
    """A transfer in flight across the upgrade that added ``Move``: teams moved the player
    but kept no decision. The cancellation must not contradict the squads."""
    home, away, player = teams
    player.team = away
    player.save()

    handle(
        on_transfer_cancellation_requested,
        cancellation_requested(player_id=player.id, from_team_id=home.id, to_team_id=away.id),
    )

    assert Move.objects.get(transfer_id=41).outcome == MoveOutcome.MOVED
    assert [t for t, _, _ in answers(outbox)] == ["move.confirmed"]
