from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from events import aws, catalogue, operations, registry, topology
from events.tables import Progress


def _when(value: str | None, flag: str) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"{flag} {value!r} is not an ISO date or date-time (e.g. 2026-11-27T10:00:00Z).") from None
    return dt if dt.tzinfo else timezone.make_aware(dt, UTC)


class Command(BaseCommand):
    help = (
        "Re-deliver stored, published outbox events to one service's queue (not through SNS); consumers "
        "deduplicate. Pending and failed rows are never replayed: the relay publishes them in subject order."
    )

    def add_arguments(self, parser):
        parser.add_argument("--service", required=True)
        parser.add_argument("--type", dest="event_type")
        parser.add_argument("--subject")
        parser.add_argument("--since", help="ISO date-time, inclusive")
        parser.add_argument("--until", help="ISO date-time, exclusive")
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be sent.")

    def handle(self, *args, service, event_type, subject, since, until, dry_run, **options):
        if service not in topology.consuming_services():
            raise CommandError(f"Unknown service {service!r}; one of {', '.join(topology.consuming_services())}.")
        if event_type:
            try:
                catalogue.get(event_type)
            except catalogue.UnknownEventType as exc:
                raise CommandError(str(exc)) from None
            if event_type not in registry.subscriptions(service):
                raise CommandError(
                    f"{service} does not handle {event_type}; it handles {', '.join(registry.subscriptions(service))}."
                )
        qs = operations.replay_queryset(
            service,
            event_type=event_type,
            subject=subject,
            since=_when(since, "--since"),
            until=_when(until, "--until"),
        )
        total = qs.count()
        if dry_run:
            self.stdout.write(f"{total} event(s) would be replayed to {aws.queue_name(service)}.")
            return
        progress = Progress(f"replaying to {aws.queue_name(service)}", total)
        try:
            sent = operations.replay(service, qs, on_sent=progress.advance)
        except aws.QueueMissing as exc:
            raise CommandError(str(exc)) from None
        finally:
            progress.close()
        self.stdout.write(f"{sent} event(s) replayed to {aws.queue_name(service)}.")
