"""Celery entry points of the transfers service. ``transfers.expire_transfers`` is the
saga's clock: Celery beat runs it every few seconds (league/celery.py). No retry policy:
the next beat runs it again."""

from celery import shared_task

from . import services


@shared_task(name="transfers.expire_transfers", ignore_result=True)
def expire_transfers() -> int:
    result = services.transfers_expire()
    return len(result.expired) + len(result.asked_again)
