"""The admin saves and deletes through the services, so it records events too."""

from __future__ import annotations

import pytest

from events.models import OutboxMessage
from teams.factories import PlayerFactory
from teams.models import Player, Team

pytestmark = pytest.mark.django_db


def inline_data(*, squad: list[Player] = (), new: list[tuple[str, str]] = (), delete: list[Player] = ()) -> dict:
    data = {
        "players-TOTAL_FORMS": len(squad),
        "players-INITIAL_FORMS": len(squad),
        "players-2-TOTAL_FORMS": 3,
        "players-2-INITIAL_FORMS": 0,
    }
    for i, player in enumerate(squad):
        data[f"players-{i}-id"] = player.id
        if player in delete:
            data[f"players-{i}-DELETE"] = "on"
    for i, (name, position) in enumerate(new):
        data[f"players-2-{i}-name"] = name
        data[f"players-2-{i}-position"] = position
    return data


def test_add_team_with_players(admin_client):
    response = admin_client.post(
        "/admin/teams/team/add/", {"name": "Ellesmere", **inline_data(new=[("Ann", "GK"), ("Bo", "ST")])}
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    team = Team.objects.get()
    assert list(team.players.values_list("name", flat=True)) == ["Ann", "Bo"]
    assert list(OutboxMessage.objects.order_by("id").values_list("type", flat=True)) == [
        "team.created",
        "player.added",
        "player.added",
    ]


def test_rename_and_remove_a_player(admin_client):
    ann = PlayerFactory(name="Ann", team__name="Holloway")
    team = ann.team

    response = admin_client.post(
        f"/admin/teams/team/{team.id}/change/", {"name": "Holloway Town", **inline_data(squad=[ann], delete=[ann])}
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    team.refresh_from_db()
    assert team.name == "Holloway Town"
    assert not team.players.exists()
    assert list(OutboxMessage.objects.order_by("id").values_list("type", flat=True)) == [
        "team.renamed",
        "player.removed",
    ]


def test_the_admin_sets_and_changes_the_short_name(admin_client):
    response = admin_client.post("/admin/teams/team/add/", {"name": "Reds", "short_name": "lfc", **inline_data()})
    assert response.status_code == 302, response.content.decode()[:2000]
    team = Team.objects.get()
    assert team.short_name == "LFC"

    response = admin_client.post(
        f"/admin/teams/team/{team.id}/change/", {"name": "Reds", "short_name": "RDS", **inline_data()}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Team.objects.get().short_name == "RDS"
    renamed = OutboxMessage.objects.filter(type="team.renamed").get()
    assert renamed.envelope["data"] == {"id": team.id, "name": "Reds", "old_name": "Reds", "short_name": "RDS"}
    assert "RDS" in admin_client.get("/admin/teams/team/").content.decode()


def test_a_bad_short_name_is_a_form_error(admin_client):
    response = admin_client.post("/admin/teams/team/add/", {"name": "Reds", "short_name": "R-D", **inline_data()})

    assert response.status_code == 200
    assert "Short name may hold letters and digits only" in response.content.decode()
    assert not Team.objects.exists()


def test_duplicate_team_name_is_a_form_error(admin_client):
    PlayerFactory(team__name="Holloway")

    response = admin_client.post("/admin/teams/team/add/", {"name": "HOLLOWAY", **inline_data()})

    assert response.status_code == 200
    assert "A team named HOLLOWAY already exists." in response.content.decode()
    assert not OutboxMessage.objects.exists()


def test_delete_team(admin_client):
    team = PlayerFactory().team

    response = admin_client.post(f"/admin/teams/team/{team.id}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Team.objects.exists()
    assert OutboxMessage.objects.get().type == "team.deleted"


def test_changelists_render(admin_client):
    PlayerFactory()

    assert admin_client.get("/admin/teams/team/?q=Player").status_code == 200
    assert admin_client.get("/admin/teams/player/").status_code == 200


def test_each_squad_row_shows_the_player_once(admin_client):
    """Name and position in their columns, without Django's row label repeating them."""
    ann = PlayerFactory(name="Ann Smith", position="GK", team__name="Holloway")
    html = admin_client.get(f"/admin/teams/team/{ann.team_id}/change/").content.decode()
    row = html.split('id="players-0"')[1].split("</tr>")[0]
    assert row.count("Ann Smith") == 1 and "Ann Smith (GK)" not in row


@pytest.mark.parametrize(
    ("first", "second"),
    [("Straße", "STRASSE"), ("Jos\u00e9", "Jose\u0301"), ("Ann  Lee", " ann lee")],
    ids=["case-folded", "precomposed-and-decomposed", "white-space"],
)
def test_two_new_players_whose_names_collide_after_normalisation_are_a_form_error(admin_client, first, second):
    """The admin compares names by the key the API and the database compare
    (kernel.names.name_key): a form error, nothing written, never a 500."""
    admin_client.raise_request_exception = False

    response = admin_client.post(
        "/admin/teams/team/add/", {"name": "Ellesmere", **inline_data(new=[(first, "GK"), (second, "ST")])}
    )

    assert response.status_code == 200, response.content.decode()[:2000]
    assert "Two new players have the same name." in response.content.decode()
    assert not Team.objects.exists() and not OutboxMessage.objects.exists()


def test_a_new_player_whose_name_collides_with_the_squad_is_a_form_error(admin_client):
    ann = PlayerFactory(name="Straße", team__name="Holloway")
    team = ann.team
    admin_client.raise_request_exception = False

    response = admin_client.post(
        f"/admin/teams/team/{team.id}/change/", {"name": "Holloway", **inline_data(squad=[ann], new=[("STRASSE", "ST")])}
    )

    assert response.status_code == 200, response.content.decode()[:2000]
    assert "Team Holloway already has a player named STRASSE." in response.content.decode()
    assert list(team.players.values_list("name", flat=True)) == ["Straße"]
    assert not OutboxMessage.objects.exists()
