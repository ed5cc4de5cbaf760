"""``manage.py seed_demo [--teams 20] [--squad 18]``: believable demo teams with full squads.

Every team is created through ``services.team_create`` (one ``team.created`` event each,
carrying the squad). Names are deterministic, so running it again skips the teams that
exist (compared ignoring case) and creates only the missing ones.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from kernel.names import name_key
from teams import services
from teams.models import Position, Team

TOWNS = [
    "Ashford", "Brookfield", "Carrow", "Dunmore", "Eastleigh", "Fenwick", "Glenridge", "Harwood",
    "Ironbridge", "Kingsbury", "Lynwood", "Marston", "Northgate", "Oakham", "Pemberton", "Queensferry",
    "Redhill", "Stanmore", "Thornbury", "Upton", "Westbrook", "Yarwood", "Ellesmere", "Holloway",
]  # fmt: skip
SUFFIXES = ["Rovers", "Athletic", "United", "Town", "City", "Albion", "Wanderers", "Rangers"]
FIRST_NAMES = [
    "Adam", "Ben", "Callum", "Daniel", "Elliot", "Finn", "George", "Harry", "Isaac", "Jack", "Kieran",
    "Liam", "Marcus", "Nathan", "Oscar", "Patrick", "Reece", "Samuel", "Theo", "Tom", "Will", "Yusuf",
    "Ryan", "Owen", "Luca", "Mateo", "Joel", "Kofi", "Rory", "Sean",
]  # fmt: skip
LAST_NAMES = [
    "Walker", "Bennett", "Hughes", "Carter", "Doyle", "Evans", "Fletcher", "Grant", "Hayes", "Irwin",
    "Jenkins", "Kane", "Lawson", "Mason", "Nolan", "O'Brien", "Palmer", "Quinn", "Reid", "Shaw", "Turner",
    "Vaughan", "Ward", "Young", "Mensah", "Okafor", "Silva", "Novak", "Keane", "Byrne",
]  # fmt: skip
# Share of a squad per position, in order: goalkeepers, defenders, midfielders, strikers.
SHAPE = [(Position.GOALKEEPER, 2), (Position.DEFENDER, 6), (Position.MIDFIELDER, 6), (Position.STRIKER, 4)]


def demo_team_names(count: int) -> list[str]:
    """``count`` distinct club names, always the same ones in the same order."""
    names: list[str] = []
    for round_ in range(len(SUFFIXES)):
        for i, town in enumerate(TOWNS):
            names.append(f"{town} {SUFFIXES[(i + round_) % len(SUFFIXES)]}")
            if len(names) == count:
                return names
    raise CommandError(f"seed_demo knows {len(names)} team names; ask for at most that many.")


def demo_squad(team_name: str, size: int) -> list[dict[str, str]]:
    """A believable squad of ``size`` players, the same for the same team name."""
    rng = random.Random(team_name)
    total = sum(n for _, n in SHAPE)
    positions: list[str] = []
    for position, share in SHAPE:
        count = round(size * share / total)
        positions += [position.value] * (max(count, 1) if size >= len(SHAPE) else count)
    cycle = [p.value for p, _ in SHAPE]
    while len(positions) < size:
        positions.append(cycle[len(positions) % len(cycle)])
    positions = positions[:size]
    names: set[str] = set()
    players = []
    for code in positions:
        while True:
            name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            if name not in names:
                break
        names.add(name)
        players.append({"name": name, "position": code})
    return players


class Command(BaseCommand):
    help = "Create believable demo teams with full squads through the services (skips existing names)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--teams", type=int, default=20, help="number of teams (default 20)")
        parser.add_argument("--squad", type=int, default=18, help="players per team (default 18)")

    def handle(self, *args, teams: int, squad: int, **options) -> None:
        limit = settings.SQUAD_LIMIT
        if teams < 0:
            raise CommandError("--teams must be 0 or more.")
        if not 0 <= squad <= limit:
            raise CommandError(f"--squad must be between 0 and the squad limit ({limit}).")
        names = demo_team_names(teams)
        existing = set(Team.objects.values_list("name_key", flat=True))

        rows: list[tuple[str, str, str]] = []
        for name in names:
            if name_key(name) in existing:
                rows.append((name, "-", "skipped (exists)"))
                continue
            try:
                team = services.team_create(name=name, players=demo_squad(name, squad))
            except ValidationError as exc:
                rows.append((name, "-", f"failed: {'; '.join(exc.messages)}"))
                continue
            rows.append((name, str(team.players.count()), "created"))

        self._table(("Team", "Players", "Status"), rows)
        created = sum(1 for r in rows if r[2] == "created")
        self.stdout.write(self.style.SUCCESS(f"{created} created, {len(rows) - created} skipped or failed."))

    def _table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
        for row in [header, tuple("-" * w for w in widths), *rows]:
            self.stdout.write("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
