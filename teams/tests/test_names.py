"""Team and player names are normalized (NFC), refuse control and format
characters and invisible names, and are unique on the normalized, case-folded form, in
the services, the API and the database."""

from __future__ import annotations

import unicodedata

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from teams import services
from teams.models import Player, Team

pytestmark = pytest.mark.django_db

NFC_CAFE = unicodedata.normalize("NFC", "Café")
NFD_CAFE = unicodedata.normalize("NFD", "Café")


def test_nfd_cafe_is_stored_as_nfc(outbox):
    team = services.team_create(name=NFD_CAFE)
    assert Team.objects.get(pk=team.pk).name == NFC_CAFE
    assert outbox()[0][3]["name"] == NFC_CAFE


def test_nfc_and_nfd_cafe_are_the_same_team(outbox):
    services.team_create(name=NFC_CAFE)
    with pytest.raises(ValidationError) as exc:
        services.team_create(name=NFD_CAFE)
    assert exc.value.message_dict == {"name": [f"A team named {NFC_CAFE} already exists."]}
    assert Team.objects.count() == 1


def test_case_folding_beyond_lower_case(outbox):
    services.team_create(name="Straße FC")
    with pytest.raises(ValidationError):
        services.team_create(name="STRASSE fc")


def test_rename_to_an_nfd_spelling_of_another_team_is_refused(outbox):
    services.team_create(name=NFC_CAFE)
    other = services.team_create(name="Reds")
    with pytest.raises(ValidationError):
        services.team_rename(team=other, name=NFD_CAFE)


def test_the_database_refuses_two_spellings_of_one_name():
    """The constraint holds without the service's check (a racing writer, a raw save)."""
    Team.objects.create(name=NFC_CAFE)
    with pytest.raises(IntegrityError), transaction.atomic():
        Team.objects.create(name=NFD_CAFE.upper())


def test_players_within_a_team_are_unique_on_the_folded_name(outbox):
    team = services.team_create(name="Reds", players=[{"name": "José", "position": "GK"}])
    with pytest.raises(ValidationError) as exc:
        services.player_add(team=team, name=unicodedata.normalize("NFD", "JOSÉ"), position="ST")
    assert exc.value.message_dict == {"name": ["Team Reds already has a player named JOSÉ."]}
    with pytest.raises(IntegrityError), transaction.atomic():
        Player.objects.create(team=team, name=unicodedata.normalize("NFD", "josé"), position="MID")
    # Another team may have a player of that name.
    other = services.team_create(name="Blues")
    assert services.player_add(team=other, name="josé", position="MID").name == "josé"


@pytest.mark.parametrize(
    "name, message",
    [
        ("Re\u001b[31mds\u0007", "Team name contains a control character (U+001B at position 3)"),
        ("\u200b\u200c\u200d", "Team name contains an invisible formatting character (U+200B at position 1)"),
        ("\u3164", "Team name has no visible characters."),
    ],
)
def test_api_refuses_control_format_and_invisible_team_names(auth_client, name, message):
    response = auth_client.post("/api/teams/", {"name": name}, format="json")
    assert response.status_code == 400, response.content
    assert message in str(response.json())
    assert Team.objects.count() == 0


def test_api_refuses_a_control_character_in_a_player_name(auth_client):
    response = auth_client.post(
        "/api/teams/", {"name": "Reds", "players": [{"name": "Bo\u0007b", "position": "GK"}]}, format="json"
    )
    assert response.status_code == 400
    assert "Player name contains a control character (U+0007" in str(response.json())
    assert Team.objects.count() == 0


def test_api_answers_nfd_cafe_as_a_duplicate(auth_client):
    assert auth_client.post("/api/teams/", {"name": NFC_CAFE}, format="json").status_code == 201
    response = auth_client.post("/api/teams/", {"name": NFD_CAFE}, format="json")
    assert response.status_code == 409
    assert f"A team named {NFC_CAFE} already exists." in str(response.json())
