"""The Celery app. Beat runs the outbox relay every second as the sweeper for anything
the on-commit kick missed, hourly purges published outbox rows past their retention and
inbox rows past the redelivery horizon (events/retention.py), and (where the transfers
service is installed) runs the transfer saga's clock every 5 seconds."""

import os
from datetime import timedelta

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from . import broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "league.settings")
broker.register()  # filesystem:// with atomic writes (league/broker.py)

app = Celery("league")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(lambda: [a for a in ("events", "transfers") if a in _installed()])


def _installed() -> list[str]:
    from django.conf import settings

    return list(settings.INSTALLED_APPS)


@app.on_after_finalize.connect
def _schedule(sender: Celery, **_: object) -> None:
    from django.conf import settings

    sender.conf.beat_schedule = {
        "relay-outbox": {
            "task": "events.relay_outbox",
            "schedule": timedelta(seconds=settings.CELERY_RELAY_INTERVAL_SECONDS),
            "options": {"expires": 10},
        },
        "purge-outbox": {
            "task": "events.purge_outbox",
            "schedule": timedelta(hours=1),
        },
        "purge-inbox": {
            "task": "events.purge_inbox",
            "schedule": timedelta(hours=1),
        },
    }
    if "transfers" in settings.INSTALLED_APPS:
        sender.conf.beat_schedule["expire-transfers"] = {
            "task": "transfers.expire_transfers",
            "schedule": timedelta(seconds=5),
            "options": {"expires": 30},
        }


@worker_ready.connect
def _listen_for_wakeups(**_: object) -> None:
    """On PostgreSQL (``OUTBOX_WAKEUP=notify``) writers send a NOTIFY, no task: the worker
    runs the LISTENing relay in a thread of its own (events/wakeup.py)."""
    from events import relay

    relay.listen_in_background()


@worker_shutdown.connect
def _stop_listening(**_: object) -> None:
    from events import relay

    relay.stop_background()
