import signal
import threading

from django.core.management.base import BaseCommand

from events import relay


class Command(BaseCommand):
    help = (
        "Publish due outbox rows to SNS (the same relay Celery beat runs), without Celery. With "
        "OUTBOX_WAKEUP=notify on PostgreSQL it also LISTENs for the writers' wake-up and sweeps at once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Publish what is due now, then exit.")
        parser.add_argument("--interval", type=float, default=0.5, help="Seconds between sweeps (default 0.5).")
        parser.add_argument("--batch-size", type=int, default=None)

    def handle(self, *args, once: bool, interval: float, batch_size: int | None, **options):
        if once:
            result = relay.relay(batch_size=batch_size)
            self.stdout.write(f"published {result.published}, retrying {result.retried}, failed {result.failed}")
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        relay.run(stop, interval=interval, batch_size=batch_size, report=self.stderr.write)
