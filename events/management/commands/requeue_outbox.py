from django.core.management.base import BaseCommand

from events import relay
from events.models import OutboxMessage


class Command(BaseCommand):
    help = "Put failed outbox rows back to pending so the relay publishes them again."

    def add_arguments(self, parser):
        parser.add_argument("--type", help="Only rows of this event type.")
        parser.add_argument("--id", type=int, action="append", help="Only these row ids (repeatable).")

    def handle(self, *args, type: str | None, id: list[int] | None, **options):
        qs = OutboxMessage.objects.all()
        if type:
            qs = qs.filter(type=type)
        if id:
            qs = qs.filter(pk__in=id)
        count = relay.requeue(qs)
        self.stdout.write(f"{count} failed row(s) requeued.")
