"""What the teams service answers to the project's pages (``events.queries``): plain
data built from its selectors, never model instances."""

from __future__ import annotations

from typing import Any

from events.queries import query

from . import selectors


@query("teams.squads", service="teams")
def squads() -> list[dict[str, Any]]:
    """Every team by name, with its squad (goalkeepers first, then by name)."""
    order = {"GK": 0, "DEF": 1, "MID": 2, "ST": 3}
    teams = sorted(selectors.team_list(), key=lambda t: (t.name.casefold(), t.pk))
    return [
        {
            "id": team.pk,
            "name": team.name,
            "players": [
                {"id": p.pk, "name": p.name, "position": p.position}
                for p in sorted(team.players.all(), key=lambda p: (order.get(p.position, 9), p.name.casefold()))
            ],
        }
        for team in teams
    ]
