"""``manage.py seed_demo``: demo teams through the services, idempotent."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from events.models import OutboxMessage
from teams.factories import TeamFactory
from teams.models import Player, Team

pytestmark = pytest.mark.django_db


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def test_seed_demo_creates_teams_with_full_squads_and_events():
    output = seed("--teams", "4", "--squad", "18")

    assert Team.objects.count() == 4
    assert all(t.players.count() == 18 for t in Team.objects.all())
    squad = Team.objects.first().players
    assert {p: squad.filter(position=p).count() for p in ["GK", "DEF", "MID", "ST"]} == {
        "GK": 2,
        "DEF": 6,
        "MID": 6,
        "ST": 4,
    }
    # One team.created per team, carrying its squad.
    rows = OutboxMessage.objects.all()
    assert [r.type for r in rows] == ["team.created"] * 4
    assert all(len(r.envelope["data"]["players"]) == 18 for r in rows)
    assert output.splitlines()[0].split() == ["Team", "Players", "Status"]
    assert "4 created, 0 skipped or failed." in output


def test_seed_demo_is_idempotent():
    seed("--teams", "3", "--squad", "11")
    TeamFactory(name="extra fc")

    output = seed("--teams", "5", "--squad", "11")

    assert Team.objects.count() == 6
    assert Player.objects.count() == 5 * 11
    assert output.count("skipped (exists)") == 3
    assert "2 created, 3 skipped or failed." in output


def test_seed_demo_skips_names_ignoring_case():
    TeamFactory(name="ASHFORD ROVERS")

    output = seed("--teams", "1")

    assert Team.objects.count() == 1
    assert "skipped (exists)" in output


def test_seed_demo_names_are_distinct():
    seed("--teams", "40", "--squad", "0")

    assert Team.objects.values("name").distinct().count() == 40


def test_seed_demo_refuses_a_squad_over_the_limit(settings):
    settings.SQUAD_LIMIT = 10

    with pytest.raises(CommandError, match="squad limit"):
        seed("--squad", "11")
