"""``manage.py expire_transfers [--once] [--interval S]``: the saga's clock without
Celery (what beat's ``transfers.expire_transfers`` does). Asks the teams service to cancel
every transfer past its deadline, and asks again where no answer came.

The loop outlives a database outage: a pass that cannot reach the database is logged (once
per outage) and tried again at the next interval; the deadline is only late, never lost."""

from __future__ import annotations

import logging
import signal
import threading

from django.core.management.base import BaseCommand
from django.db import DatabaseError, connections

from transfers import services

log = logging.getLogger("transfers.expire")


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
        down = False
        while True:
            try:
                result = services.transfers_expire()
            except DatabaseError as exc:
                if once:
                    raise
                if not down:
                    log.warning("expire_transfers: database unavailable, trying again every %s s: %s", interval, exc)
                down = True
                connections.close_all()  # a fresh connection at the next pass
                if stop.wait(max(interval, 0.1)):
                    return
                continue
            if down:
                log.info("expire_transfers: database back")
                down = False
            if result.expired or result.asked_again or once:
                self.stdout.write(
                    f"expired {len(result.expired)} transfer(s), asked again for {len(result.asked_again)}",
                )
            if once or stop.wait(max(interval, 0.1)):
                return
