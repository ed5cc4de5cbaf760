"""The Celery app. Beat runs the outbox relay every second as the sweeper for anything
the on-commit kick missed, hourly purges published outbox rows past their retention and
inbox rows past the redelivery horizon and the services' records kept for as long
(events/retention.py) and idempotency keys past theirs
(idempotency/middleware.py), and (where the transfers
service is installed) runs the transfer saga's clock every 5 seconds and heals the teams
replica: marked teams every ``TEAMS_HEAL_INTERVAL_SECONDS``, a reconciliation with the teams
service every ``TEAMS_RECONCILE_SECONDS`` (transfers/replica.py, "Healing"); where fixtures
is, its replica's reconciliation as often (fixtures/services.py)."""

import os
from datetime import timedelta

from celery import Celery
from celery.signals import beat_init, worker_ready, worker_shutdown

from . import broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "league.settings")
broker.register()  # filesystem:// with atomic writes (league/broker.py)

app = Celery("league")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(lambda: [a for a in ("events", "idempotency", "transfers", "fixtures") if a in _installed()])


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
        "purge-retained": {
            "task": "events.purge_retained",
            "schedule": timedelta(hours=1),
        },
        "purge-idempotency-keys": {
            "task": "idempotency.purge_keys",
            "schedule": timedelta(hours=1),
        },
    }
    if "transfers" in settings.INSTALLED_APPS:
        sender.conf.beat_schedule["expire-transfers"] = {
            "task": "transfers.expire_transfers",
            "schedule": timedelta(seconds=5),
            "options": {"expires": 30},
        }
        sender.conf.beat_schedule["heal-replica"] = {
            "task": "transfers.heal_replica",
            "schedule": timedelta(seconds=settings.TEAMS_HEAL_INTERVAL_SECONDS),
            "options": {"expires": 30},
        }
        sender.conf.beat_schedule["reconcile-teams"] = {
            "task": "transfers.reconcile_teams",
            "schedule": timedelta(seconds=settings.TEAMS_RECONCILE_SECONDS),
            "options": {"expires": settings.TEAMS_RECONCILE_SECONDS},
        }
    if "fixtures" in settings.INSTALLED_APPS:
        sender.conf.beat_schedule["reconcile-fixtures-teams"] = {
            "task": "fixtures.reconcile_teams",
            "schedule": timedelta(seconds=settings.TEAMS_RECONCILE_SECONDS),
            "options": {"expires": settings.TEAMS_RECONCILE_SECONDS},
        }


@worker_ready.connect
def _listen_for_wakeups(**_: object) -> None:
    """On PostgreSQL (``OUTBOX_WAKEUP=notify``) writers send a NOTIFY, no task: the worker
    runs the LISTENing relay in a thread of its own (events/wakeup.py)."""
    from events import readiness, relay

    relay.listen_in_background()
    readiness.announce()


@beat_init.connect
def _beat_is_ready(**_: object) -> None:
    from events import readiness

    readiness.announce()


@worker_shutdown.connect
def _stop_listening(**_: object) -> None:
    from events import relay

    relay.stop_background()
