"""Celery entry point: beat deletes expired idempotency keys hourly (league/celery.py)."""

from celery import shared_task

from .middleware import purge


@shared_task(name="idempotency.purge_keys", ignore_result=True)
def purge_keys() -> int:
    return purge()
