import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from events import readiness, registry, topology
from events.consumer import Consumer, ConsumerConfigError

log = logging.getLogger("events.consumer")


class Command(BaseCommand):
    help = "Consume a service's SQS queue and run its event handlers."

    def add_arguments(self, parser):
        parser.add_argument("--service", help="Service whose queue to read (default: LEAGUE_SERVICE when it names one service).")
        parser.add_argument("--drain", action="store_true", help="Process until the queue is empty, then exit 0.")
        parser.add_argument("--wait", type=int, default=None, help="Long-poll seconds (default CONSUMER_WAIT_SECONDS).")
        parser.add_argument("--no-startup", action="store_true", help="Skip startup hooks (e.g. the replica sync).")
        parser.add_argument(
            "--broadcast",
            action="store_true",
            help="Run the service's broadcast handlers on an instance queue of this process's own.",
        )

    def handle(
        self, *args, service: str | None, drain: bool, wait: int | None, no_startup: bool, broadcast: bool, **options
    ):
        # One service here (LEAGUE_SERVICE=teams): its queue. Several: say which.
        service = service or (settings.ACTIVE_SERVICES[0] if len(settings.ACTIVE_SERVICES) == 1 else None)
        consuming = topology.consuming_services()
        if broadcast:
            consuming = sorted({h.service for h in registry.handlers(broadcast=True)})
        if not service:
            raise CommandError(f"Name the service to consume: --service one of {', '.join(consuming)}.")
        if service not in consuming:
            kind = "broadcast handlers" if broadcast else "handlers"
            raise CommandError(
                f"Service {service!r} has no {kind} here (LEAGUE_SERVICE={settings.LEAGUE_SERVICE}). "
                f"Services with {kind}: {', '.join(consuming) or 'none'}."
            )
        stop = threading.Event()
        consumer = Consumer(service, wait_seconds=wait, stop=stop, broadcast=broadcast)

        def on_signal(signum, _frame):
            log.info("consumer %s: signal %s, finishing in-flight messages", service, signum)
            consumer.interrupt()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)

        # A consumer started during a database outage waits for it (one log line when it is
        # away, one when it is back), like a running one: no crash loop, no give-up.
        if not broadcast and not consumer.database.wait_until_up():
            self.stdout.write("stopped before the database answered")
            return
        # A consumer started for a service being moved here (split_service) waits for its
        # gate to open: its startup hooks (the replica sync) write the service's tables.
        if not broadcast and not consumer.wait_while_gated():
            self.stdout.write("stopped while the service's gate was closed")
            return
        try:
            consumer.verify() if not broadcast else None
            if not no_startup and not broadcast:
                consumer.run_startup_hooks()
            if broadcast:
                consumer.open_instance_queue()
        except ConsumerConfigError as exc:
            raise CommandError(str(exc)) from None
        types = registry.subscriptions(service, broadcast=broadcast)
        self.stdout.write(f"consuming {consumer.queue_name} ({', '.join(types)})")
        self.stdout.flush()
        readiness.announce()
        stats = consumer.run(drain=drain)
        self.stdout.write(
            f"stopped: received {stats.received}, handled {stats.handled}, duplicates {stats.duplicates}, "
            f"ignored {stats.ignored}, failed {stats.failed}, dead-lettered {stats.dead_lettered}"
        )
