from django.core.management.base import BaseCommand

from events import operations
from events.tables import render


class Command(BaseCommand):
    help = "Outbox backlog per event type and depth per queue, as tables."

    def handle(self, *args, **options):
        outbox = operations.outbox_status()
        self.stdout.write("Outbox")
        self.stdout.write(
            render(
                ["type", "pending", "failed", "published", "oldest pending (s)"],
                [[r["type"], r["pending"], r["failed"], r["published"], r["oldest_pending_s"]] for r in outbox],
            )
        )
        self.stdout.write("")
        self.stdout.write("Queues")
        try:
            queues = operations.queue_status()
        except Exception as exc:
            self.stderr.write(f"SQS unreachable ({exc}); check AWS_ENDPOINT_URL.")
            return
        self.stdout.write(
            render(
                ["queue", "visible", "in flight", "DLQ", "state"],
                [[q["queue"], q["visible"], q["in_flight"], q["dlq"], q["state"]] for q in queues],
            )
        )
