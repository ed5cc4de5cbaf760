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
    assert outbox() == [
        ("team.created", str(team.id), 1, {"id": team.id, "name": "Ashford Rovers", "short_name": "ARO", "players": []})
    ]


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
        {"id": team.id, "name": "Eastleigh Athletic", "old_name": "Eastleigh", "short_name": "EAT"},
    )


def test_team_rename_to_the_same_name_writes_no_event(outbox):
    team = services.team_create(name="Eastleigh")

    services.team_rename(team=team, name="Eastleigh ")

    assert [r[0] for r in outbox()] == ["team.created"]


def test_team_rename_may_change_only_the_case(outbox):
    team = services.team_create(name="eastleigh")

    services.team_rename(team=team, name="Eastleigh")

    assert outbox()[-1][3] == {"id": team.id, "name": "Eastleigh", "old_name": "eastleigh", "short_name": "EAS"}


def test_a_team_created_without_a_short_name_gets_the_derived_one(outbox):
    team = services.team_create(name="Queens Park Rangers")

    assert Team.objects.get(pk=team.pk).short_name == "QPR"
    assert outbox()[0][3]["short_name"] == "QPR"


def test_a_chosen_short_name_is_upper_cased_and_published(outbox):
    team = services.team_create(name="Reds", short_name="lfc")

    assert Team.objects.get(pk=team.pk).short_name == "LFC"
    assert outbox()[0][3]["short_name"] == "LFC"


@pytest.mark.parametrize(
    "short_name,message",
    [
        ("R", "Short name has 1 characters; it must have 2 to 5 letters or digits."),
        ("REDSXX", "Short name has 6 characters; it must have 2 to 5 letters or digits."),
        ("R-D", "Short name may hold letters and digits only (no spaces or punctuation)."),
        ("R D", "Short name may hold letters and digits only (no spaces or punctuation)."),
    ],
)
def test_a_bad_short_name_is_refused_and_nothing_is_written(short_name, message, outbox):
    with pytest.raises(ValidationError) as exc:
        services.team_create(name="Reds", short_name=short_name)

    assert message in exc.value.message_dict["short_name"]
    assert Team.objects.count() == 0 and outbox() == []


def test_short_names_are_not_unique(outbox):
    a = services.team_create(name="Real Madrid")
    b = services.team_create(name="Real Mallorca")

    assert (a.short_name, b.short_name) == ("RMA", "RMA")


def test_changing_only_the_short_name_publishes_a_rename_with_the_same_name(outbox):
    team = services.team_create(name="Reds")

    services.team_rename(team=team, short_name="lfc")

    assert Team.objects.get(pk=team.pk).short_name == "LFC"
    assert outbox()[-1] == ("team.renamed", str(team.id), 2, {"id": team.id, "name": "Reds", "old_name": "Reds", "short_name": "LFC"})
    services.team_rename(team=team, short_name="LFC")  # no change, no event
    assert len(outbox()) == 2


def test_a_rename_derives_a_derived_short_name_again_and_keeps_a_chosen_one(outbox):
    derived = services.team_create(name="Reds")
    chosen = services.team_create(name="Whites", short_name="LUFC")

    services.team_rename(team=derived, name="Blues")
    services.team_rename(team=chosen, name="Leeds United")

    assert Team.objects.get(pk=derived.pk).short_name == "BLU"
    assert Team.objects.get(pk=chosen.pk).short_name == "LUFC"
    assert [e[3]["short_name"] for e in outbox() if e[0] == "team.renamed"] == ["BLU", "LUFC"]


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
