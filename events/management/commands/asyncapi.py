"""``manage.py asyncapi``: write the AsyncAPI document of the bus (docs/asyncapi.yaml)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from events import asyncapi


class Command(BaseCommand):
    help = "Write the AsyncAPI 3.0 document of the event bus; --check exits 1 if the file is stale."

    def add_arguments(self, parser):
        parser.add_argument(
            "--output", default=str(settings.BASE_DIR / asyncapi.DEFAULT_PATH), help="Where (default: %(default)s)."
        )
        parser.add_argument("--check", action="store_true", help="Write nothing; exit 1 if the file differs.")
        parser.add_argument(
            "--print", action="store_true", dest="print_only", help="Print the document instead of writing it."
        )

    def handle(self, *args, output: str, check: bool, print_only: bool, **options):
        if settings.LEAGUE_SERVICE != "all":
            raise CommandError(
                "Generate the AsyncAPI document in the monolith (LEAGUE_SERVICE=all): it needs every "
                "service's handlers."
            )
        text = asyncapi.render()
        if print_only:
            self.stdout.write(text, ending="")
            return
        path = Path(output)
        if check:
            current = path.read_text() if path.exists() else None
            if current != text:
                self.stderr.write(f"{path} is stale. Run `manage.py asyncapi` and commit it.")
                raise SystemExit(1)
            self.stdout.write(self.style.SUCCESS(f"{path} is current."))
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.stdout.write(self.style.SUCCESS(f"Wrote {path}."))
