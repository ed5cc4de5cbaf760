"""Celery entry points of the transfers service. ``transfers.expire_transfers`` is the
saga's clock: Celery beat runs it every few seconds (league/celery.py). No retry policy:
the next beat runs it again."""

import logging

from celery import shared_task

from events import gate

from . import services

log = logging.getLogger(__name__)


@shared_task(name="transfers.expire_transfers", ignore_result=True)
def expire_transfers() -> int:
    try:
        result = services.transfers_expire()
    except gate.ServicePaused as exc:  # being moved (split_service): its new home's clock takes over
        log.info("expire_transfers: %s", exc)
        return 0
    return len(result.expired) + len(result.asked_again)
