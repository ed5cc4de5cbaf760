from django.conf import settings
from django.core.management.base import BaseCommand

from events import broadcasting


class Command(BaseCommand):
    help = "Remove broadcast instance queues (and subscriptions) left by consumers that died."

    def add_arguments(self, parser):
        parser.add_argument(
            "--max-age",
            type=int,
            default=None,
            help="Seconds since an instance's last heartbeat before it counts as dead (default BROADCAST_REAP_AFTER_SECONDS).",
        )

    def handle(self, *args, max_age: int | None, **options):
        removed = broadcasting.reap(
            max_age_seconds=settings.BROADCAST_REAP_AFTER_SECONDS if max_age is None else max_age
        )
        for line in removed:
            self.stdout.write(f"removed  {line}")
        self.stdout.write(f"{len(removed)} leftover(s) removed.")
