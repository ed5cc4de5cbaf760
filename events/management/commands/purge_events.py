from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from events import relay, retention


class Command(BaseCommand):
    help = (
        "Delete published outbox rows past their retention, inbox rows past the redelivery horizon, and the "
        "services' records kept as long (teams' moves, finished subjects' sequences): what Celery beat does hourly."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--outbox-days", type=int, help="Keep published outbox rows this long (default OUTBOX_RETENTION)."
        )
        parser.add_argument(
            "--inbox-days",
            type=int,
            help="Keep inbox rows this long (default: INBOX_RETENTION, never less than the redelivery horizon).",
        )

    def handle(self, *args, outbox_days: int | None, inbox_days: int | None, **options):
        if outbox_days is not None and outbox_days < 0:
            raise CommandError("--outbox-days must be 0 or more.")
        try:
            inbox = retention.purge_inbox(timedelta(days=inbox_days) if inbox_days is not None else None)
        except ValueError as exc:
            raise CommandError(f"{exc}; pass --inbox-days {retention.redelivery_horizon().days} or more.") from None
        outbox = relay.purge(timedelta(days=outbox_days) if outbox_days is not None else None)
        others = retention.purge_registered()
        more = "".join(f", {n} {name}" for name, n in others.items())
        self.stdout.write(f"purged {outbox} outbox row(s) and {inbox} inbox row(s){more}.")
