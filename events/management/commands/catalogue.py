"""``manage.py catalogue``: the event types and their versions, as a table; with
``--check-compatible REF``, exit 1 when today's catalogue would break a producer or consumer
running the catalogue of git ``REF`` (events/compatibility.py says what breaks);
``--check-history`` checks against every committed version of the catalogue (CI)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from events import catalogue, compatibility, tables


class Command(BaseCommand):
    help = "List the event types and their versions; --check-compatible REF fails on a breaking change since REF."

    def add_arguments(self, parser):
        parser.add_argument(
            "--check-compatible",
            metavar="REF",
            action="append",
            default=[],
            help="a git ref (commit, tag, branch) whose catalogue must keep working; may be given more than once",
        )
        parser.add_argument(
            "--check-history", action="store_true", help="check against every commit that changed events/catalogue.py"
        )

    def handle(self, *args, check_compatible: list[str], check_history: bool, **options):
        today = compatibility.describe(catalogue.EVENT_TYPES)
        if check_history:
            check_compatible = [*check_compatible, *compatibility.history(root=Path(settings.BASE_DIR))]
            if not check_compatible:
                raise CommandError("no commit of events/catalogue.py found: run inside a git clone with its history.")
        if not check_compatible:
            rows = [
                (name, d["source"], d["aggregate"], ", ".join(map(str, d["versions"])), "retired" if d["retired"] else "")
                for name, d in sorted(today.items())
            ]
            self.stdout.write(tables.render(["type", "source", "aggregate", "versions", ""], rows))
            return
        problems = []
        for ref in check_compatible:
            try:
                before = compatibility.load(ref, root=Path(settings.BASE_DIR))
            except ValueError as exc:
                raise CommandError(f"{exc}. Give a commit, tag or branch that exists in this clone.") from None
            problems += [f"since {ref}: {p}" for p in compatibility.breaking_changes(before, today)]
        if problems:
            raise CommandError(
                "the event catalogue breaks a running producer or consumer:\n  "
                + "\n  ".join(problems)
                + "\nAdd a version (with an upcaster) instead; see docs/EVENTS.md."
            )
        self.stdout.write(f"compatible with {len(check_compatible)} catalogue(s) ({', '.join(r[:12] for r in check_compatible)}): {len(today)} types")
