"""``manage.py sync_teams``: load every team from the teams service into the replica."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from transfers import services, teams_client
from transfers.teams_client import TeamsServiceError


class Command(BaseCommand):
    help = (
        "Load all teams from GET /api/teams/export/ (every page; needs TEAMS_SERVICE_TOKEN) and merge them into the transfers "
        "replica (newest sequence wins; teams deleted at the teams service are removed)."
    )

    def handle(self, *args, **options):
        try:
            self.stdout.write(f"Fetching {teams_client.base_url()}/api/teams/export/ ...")
            result = services.teams_sync()
        except TeamsServiceError as exc:
            raise CommandError(f"sync_teams failed: {exc}") from exc
        rows = [("team", "name", "sequence", "players", "action")]
        rows += [(str(o.team_id), o.name, str(o.sequence), str(o.players), o.action) for o in result.outcomes]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for n, row in enumerate(rows):
            self.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
            if n == 0:
                self.stdout.write("  ".join("-" * w for w in widths))
        s = result.sync
        self.stdout.write(
            self.style.SUCCESS(
                f"Synced {s.teams} teams: {s.created} created, {s.updated} updated, {s.unchanged} unchanged, "
                f"{s.stale} stale, {s.deleted} deleted."
            )
        )
