"""transfer_request: every rule, and what it records."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from events.models import OutboxMessage
from transfers import services
from transfers.factories import PlayerReplicaFactory, TeamReplicaFactory, TransferFactory
from transfers.models import Transfer, TransferState

pytestmark = pytest.mark.django_db


@pytest.fixture
def teams():
    reds = TeamReplicaFactory(team_id=1, name="Reds")
    blues = TeamReplicaFactory(team_id=2, name="Blues")
    PlayerReplicaFactory(team=reds, player_id=11, name="Ann", position="GK")
    return reds, blues


def request(**kwargs) -> Transfer:
    args = {"player_id": 11, "from_team_id": 1, "to_team_id": 2, "fee": Decimal("1500000")}
    return services.transfer_request(**{**args, **kwargs})


def errors(**kwargs) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as exc:
        request(**kwargs)
    assert not Transfer.objects.exists()
    return exc.value.message_dict


def test_request_records_the_transfer_and_its_event(teams):
    transfer = request()
    assert transfer.state == TransferState.REQUESTED
    assert (transfer.player_name, transfer.fee) == ("Ann", Decimal("1500000.00"))
    row = OutboxMessage.objects.get()
    assert (row.type, row.subject) == ("transfer.requested", str(transfer.pk))
    assert row.envelope["data"] == {
        "id": transfer.pk,
        "player_id": 11,
        "from_team_id": 1,
        "to_team_id": 2,
        "fee": "1500000.00",
    }


def test_free_transfer(teams):
    assert request(fee="0").fee == Decimal("0.00")


@pytest.mark.parametrize(
    ("fee", "message"),
    [
        (Decimal("-1"), "The fee cannot be negative."),
        ("1.005", "The fee has at most 2 decimal places."),
        ("lots", "The fee must be a decimal amount such as 1500000.00."),
        ("NaN", "The fee must be a decimal amount such as 1500000.00."),
    ],
)
def test_bad_fee(teams, fee, message):
    assert errors(fee=fee) == {"fee": [message]}


def test_same_team(teams):
    assert errors(to_team_id=1) == {"to_team_id": ["The destination team must differ from the current team."]}


def test_player_not_in_team(teams):
    assert errors(player_id=99) == {"player_id": ["Player 99 is not in Reds (team 1)."]}


def test_player_who_left_the_team(teams):
    PlayerReplicaFactory(team=teams[0], player_id=12, present=False)
    assert "player_id" in errors(player_id=12)


def test_deleted_team_is_unknown_without_asking_the_teams_service(teams, settings):
    settings.TEAMS_SERVICE_URL = "http://teams.invalid"  # would fail if called
    TeamReplicaFactory(team_id=3, name="Gone", deleted=True)
    assert errors(to_team_id=3) == {"to_team_id": ["Team 3 does not exist."]}


def test_duplicate_in_flight(teams):
    first = request()
    with pytest.raises(ValidationError) as exc:
        request(fee="10")
    assert exc.value.message_dict == {"player_id": [f"Player 11 already has a transfer in progress (#{first.pk})."]}
    assert Transfer.objects.count() == 1


def test_a_finished_transfer_does_not_block_a_new_one(teams):
    TransferFactory(player_id=11, state=TransferState.REJECTED)
    TransferFactory(player_id=11, state=TransferState.COMPLETED)
    assert request().state == TransferState.REQUESTED


def test_squad_limit(teams, settings):
    settings.SQUAD_LIMIT = 1
    PlayerReplicaFactory(team=teams[1])
    assert errors() == {"to_team_id": ["Blues (team 2) already has 1 players, the squad limit."]}


@pytest.mark.parametrize(
    ("opens", "closes", "ok"),
    [
        (-1, 1, True),
        (0, 0, True),
        (1, 5, False),
        (-5, -1, False),
        (None, -1, False),
        (-1, None, True),
    ],
)
def test_transfer_window(teams, settings, opens, closes, ok):
    today = timezone.localdate()
    settings.TRANSFER_WINDOW_OPENS = today + timedelta(days=opens) if opens is not None else None
    settings.TRANSFER_WINDOW_CLOSES = today + timedelta(days=closes) if closes is not None else None
    if ok:
        assert request().pk
    else:
        assert list(errors()) == ["__all__"]


def test_window_message(teams, settings):
    settings.TRANSFER_WINDOW_OPENS = date(2999, 7, 1)
    assert errors() == {"__all__": ["The transfer window is closed: it opens on 2999-07-01."]}


def test_sync_needed(settings):
    assert services.teams_sync_needed()  # empty replica
    TeamReplicaFactory()
    assert services.teams_sync_needed()  # never synced
    from transfers.models import TeamsSync

    TeamsSync.objects.create(started_at=timezone.now())
    assert not services.teams_sync_needed()
    settings.TEAMS_CACHE_MAX_AGE = timedelta(seconds=0)
    assert services.teams_sync_needed()
