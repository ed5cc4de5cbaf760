"""Celery entry points of the transfers service. ``transfers.expire_transfers`` is the
saga's clock: Celery beat runs it every few seconds (league/celery.py).
``transfers.heal_replica`` (every ``TEAMS_HEAL_INTERVAL_SECONDS``) fetches the teams the
replica marked, ``transfers.reconcile_teams`` (every ``TEAMS_RECONCILE_SECONDS``) compares
the replica with the teams service's digest (transfers/replica.py, "Healing"). No retry
policy: the next beat runs each again."""

import logging

from celery import shared_task

from events import gate

from . import services
from .teams_client import TeamsServiceError

log = logging.getLogger(__name__)


@shared_task(name="transfers.expire_transfers", ignore_result=True)
def expire_transfers() -> int:
    try:
        result = services.transfers_expire()
    except gate.ServicePaused as exc:  # being moved (split_service): its new home's clock takes over
        log.info("expire_transfers: %s", exc)
        return 0
    return len(result.expired) + len(result.asked_again)


@shared_task(name="transfers.heal_replica", ignore_result=True)
def heal_replica() -> int:
    try:
        return len(services.teams_heal())
    except (gate.ServicePaused, TeamsServiceError) as exc:  # the marks stay for the next run
        log.info("heal_replica: %s", exc)
        return 0


@shared_task(name="transfers.reconcile_teams", ignore_result=True)
def reconcile_teams() -> int:
    try:
        return len(services.teams_reconcile().repairs)
    except (gate.ServicePaused, TeamsServiceError) as exc:
        log.warning("reconcile_teams: %s", exc)
        return 0
