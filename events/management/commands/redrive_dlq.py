from django.core.management.base import BaseCommand, CommandError

from events import aws, operations, topology
from events.tables import Progress


class Command(BaseCommand):
    help = "Move a service's dead-letter messages back to its queue (after a fix)."

    def add_arguments(self, parser):
        parser.add_argument("--service", required=True)
        parser.add_argument("--limit", type=int, default=None, help="Move at most this many.")

    def handle(self, *args, service: str, limit: int | None, **options):
        if service not in topology.consuming_services():
            raise CommandError(f"Unknown service {service!r}; one of {', '.join(topology.consuming_services())}.")
        progress = Progress(f"redriving {aws.queue_name(service, dlq=True)}", limit)
        try:
            moved = operations.redrive_dlq(service, limit=limit, on_moved=progress.advance)
        except aws.QueueMissing as exc:
            raise CommandError(str(exc)) from None
        finally:
            progress.close()
        self.stdout.write(f"{moved} message(s) moved back to {aws.queue_name(service)}.")
