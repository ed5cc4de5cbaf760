"""Races the services must win: unique names and the squad limit under concurrent writers."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connections, transaction

from events.models import OutboxMessage
from teams import services
from teams.factories import PlayerFactory, TeamFactory
from teams.models import Player, Team


@pytest.mark.django_db
def test_a_lost_unique_race_is_a_validation_error(monkeypatch):
    """When a concurrent writer took the name between the check and the insert, the
    database constraint answers and the caller still gets a field message, with its
    transaction usable (the insert ran in a savepoint)."""
    TeamFactory(name="Yarwood")
    # Skip the model's check (Team.clean) as a writer that raced past it would.
    monkeypatch.setattr(Team, "clean", lambda self: None)

    with transaction.atomic():
        with pytest.raises(ValidationError) as exc:
            services.team_create(name="yarwood")
        assert Team.objects.count() == 1  # still usable after the IntegrityError

    assert exc.value.message_dict == {"name": ["A team named yarwood already exists."]}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_transfers_respect_the_squad_limit(settings):
    """Two transfers into a team with one free place: one moves, the other is rejected."""
    settings.SQUAD_LIMIT = 2
    to_team = TeamFactory()
    PlayerFactory(team=to_team)
    movers = [PlayerFactory(), PlayerFactory()]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def transfer(transfer_id: int, player: Player) -> None:
        try:
            barrier.wait()
            with transaction.atomic():
                services.move_apply(
                    transfer_id=transfer_id, player_id=player.id, from_team_id=player.team_id, to_team_id=to_team.id
                )
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=transfer, args=(i + 1, p)) for i, p in enumerate(movers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    assert to_team.players.count() == 2
    assert sorted(OutboxMessage.objects.values_list("type", flat=True)) == ["move.refused", "player.transferred"]
