"""``manage.py expire_transfers [--once] [--interval S]``: the saga's clock without
Celery (what beat's ``transfers.expire_transfers`` does). Asks the teams service to cancel
every transfer past its deadline, and asks again where no answer came."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand

from transfers import services


class Command(BaseCommand):
    help = (
        "Ask the teams service to cancel transfers past their deadline (TRANSFER_TIMEOUT_SECONDS), "
        "and ask again where no answer came. Loops until SIGTERM/SIGINT unless --once."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="One pass, then exit.")
        parser.add_argument("--interval", type=float, default=5.0, help="Seconds between passes (default 5).")

    def handle(self, *args, once: bool, interval: float, **options) -> None:
        stop = threading.Event()
        if not once:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        while True:
            result = services.transfers_expire()
            if result.expired or result.asked_again or once:
                self.stdout.write(
                    f"expired {len(result.expired)} transfer(s), asked again for {len(result.asked_again)}",
                )
            if once or stop.wait(max(interval, 0.1)):
                return
