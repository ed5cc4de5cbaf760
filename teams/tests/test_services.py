"""Each service writes its rows and exactly one outbox row (or none when nothing changed),
in one transaction."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

import events
from events.models import OutboxMessage
from teams import services
from teams.factories import PlayerFactory, TeamFactory
from teams.models import Player, Team

pytestmark = pytest.mark.django_db


def test_team_create_writes_team_and_one_event(outbox):
    team = services.team_create(name="  Ashford Rovers ")

    assert Team.objects.get().name == "Ashford Rovers"
    assert outbox() == [("team.created", str(team.id), 1, {"id": team.id, "name": "Ashford Rovers", "players": []})]


def test_team_create_with_players_is_one_event_carrying_the_squad(outbox):
    team = services.team_create(
        name="Carrow City", players=[{"name": "Ann", "position": "GK"}, {"name": "Bo", "position": "ST"}]
    )

    players = list(team.players.values_list("id", "name", "position"))
    assert [p[1:] for p in players] == [("Ann", "GK"), ("Bo", "ST")]
    [(type_, _, _, data)] = outbox()
    assert type_ == "team.created"
    assert data["players"] == [{"id": i, "name": n, "position": p} for i, n, p in players]


@pytest.mark.parametrize("name", ["", "   ", None])
def test_team_create_refuses_an_empty_name(name, outbox):
    with pytest.raises(ValidationError) as exc:
        services.team_create(name=name)

    assert exc.value.message_dict == {"name": ["Team name cannot be empty."]}
    assert outbox() == []


def test_team_create_refuses_a_duplicate_name_ignoring_case(outbox):
    TeamFactory(name="Ashford Rovers")

    with pytest.raises(ValidationError) as exc:
        services.team_create(name="ASHFORD rovers")

    assert exc.value.message_dict == {"name": ["A team named ASHFORD rovers already exists."]}
    assert Team.objects.count() == 1
    assert outbox() == []


def test_team_create_with_a_bad_player_writes_nothing(outbox):
    """A failing service rolls back its rows and its outbox row together."""
    with pytest.raises(ValidationError) as exc:
        services.team_create(
            name="Dunmore Town", players=[{"name": "Ann", "position": "GK"}, {"name": "Bo", "position": "XX"}]
        )

    assert exc.value.message_dict == {"players": ["Position must be one of GK, DEF, MID, ST."]}
    assert Team.objects.count() == 0
    assert Player.objects.count() == 0
    assert outbox() == []


def test_team_create_refuses_duplicate_players(outbox):
    with pytest.raises(ValidationError) as exc:
        services.team_create(
            name="Dunmore Town", players=[{"name": "Ann", "position": "GK"}, {"name": "ann", "position": "ST"}]
        )

    assert exc.value.message_dict == {"players": ["Team Dunmore Town already has a player named ann."]}
    assert outbox() == []


def test_team_create_refuses_more_players_than_the_squad_limit(settings, outbox):
    settings.SQUAD_LIMIT = 2

    with pytest.raises(ValidationError) as exc:
        services.team_create(name="Big", players=[{"name": f"P{i}", "position": "MID"} for i in range(3)])

    assert exc.value.message_dict == {"players": ["A squad has at most 2 players; got 3."]}
    assert outbox() == []


def test_an_error_after_publish_rolls_back_the_outbox_row():
    """The outbox row commits or rolls back with the change around it."""
    with pytest.raises(RuntimeError), transaction.atomic():
        services.team_create(name="Ghost")
        assert OutboxMessage.objects.count() == 1
        raise RuntimeError("boom")

    assert Team.objects.count() == 0
    assert OutboxMessage.objects.count() == 0


def test_team_rename_publishes_old_and_new_name(outbox):
    team = services.team_create(name="Eastleigh")

    services.team_rename(team=team, name=" Eastleigh Athletic ")

    team.refresh_from_db()
    assert team.name == "Eastleigh Athletic"
    assert outbox()[1] == (
        "team.renamed",
        str(team.id),
        2,
        {"id": team.id, "name": "Eastleigh Athletic", "old_name": "Eastleigh"},
    )


def test_team_rename_to_the_same_name_writes_no_event(outbox):
    team = services.team_create(name="Eastleigh")

    services.team_rename(team=team, name="Eastleigh ")

    assert [r[0] for r in outbox()] == ["team.created"]


def test_team_rename_may_change_only_the_case(outbox):
    team = services.team_create(name="eastleigh")

    services.team_rename(team=team, name="Eastleigh")

    assert outbox()[-1][3] == {"id": team.id, "name": "Eastleigh", "old_name": "eastleigh"}


def test_team_rename_refuses_a_taken_name(outbox):
    TeamFactory(name="Fenwick")
    team = TeamFactory(name="Glenridge")

    with pytest.raises(ValidationError) as exc:
        services.team_rename(team=team, name="fenwick")

    assert exc.value.message_dict == {"name": ["A team named fenwick already exists."]}
    assert outbox() == []


def test_team_delete_deletes_the_squad_and_publishes(outbox):
    team = PlayerFactory().team
    team_id = team.id

    services.team_delete(team=team)

    assert not Team.objects.exists() and not Player.objects.exists()
    assert outbox() == [("team.deleted", str(team_id), 1, {"id": team_id, "name": team.name})]


def test_player_add_publishes_on_the_team_subject(outbox):
    team = services.team_create(name="Harwood")

    player = services.player_add(team=team, name=" Ann Lee ", position="DEF")

    assert player.name == "Ann Lee" and player.team == team
    assert outbox()[1] == (
        "player.added",
        str(team.id),
        2,
        {"id": player.id, "team_id": team.id, "name": "Ann Lee", "position": "DEF"},
    )


@pytest.mark.parametrize(
    ("name", "position", "errors"),
    [
        ("Ann", "GOALIE", {"position": ["Position must be one of GK, DEF, MID, ST."]}),
        (" ", "GK", {"name": ["Player name cannot be empty."]}),
        ("ANN", "GK", {"name": ["Team Harwood already has a player named ANN."]}),
    ],
)
def test_player_add_refuses_bad_input(name, position, errors, outbox):
    team = TeamFactory(name="Harwood")
    PlayerFactory(team=team, name="Ann")

    with pytest.raises(ValidationError) as exc:
        services.player_add(team=team, name=name, position=position)

    assert exc.value.message_dict == errors
    assert team.players.count() == 1
    assert outbox() == []


def test_player_add_refuses_a_full_squad(settings, outbox):
    settings.SQUAD_LIMIT = 1
    team = PlayerFactory(team__name="Harwood").team

    with pytest.raises(ValidationError) as exc:
        services.player_add(team=team, name="Late", position="ST")

    assert exc.value.messages == ["Team Harwood has a full squad (1 players)."]
    assert outbox() == []


def test_player_remove_publishes(outbox):
    player = PlayerFactory()
    player_id, team_id = player.id, player.team_id

    services.player_remove(team_id=player.team_id, player_id=player.id)

    assert not Player.objects.exists()
    assert outbox() == [("player.removed", str(team_id), 1, {"id": player_id, "team_id": team_id, "name": player.name})]


def test_sequences_count_per_team(outbox):
    a = services.team_create(name="A")
    b = services.team_create(name="B")
    services.player_add(team=a, name="X", position="GK")

    assert [(r[1], r[2]) for r in outbox()] == [(str(a.id), 1), (str(b.id), 1), (str(a.id), 2)]
    assert events.current_sequence(f"team:{a.id}") == 2
