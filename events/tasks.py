"""Celery entry points of the bus. Each takes no arguments, calls the relay, and owns its
retry policy (none: beat runs the relay again within a second)."""

from celery import shared_task

from . import relay


@shared_task(name="events.relay_outbox", ignore_result=True)
def relay_outbox() -> int:
    return relay.relay(max_seconds=30).published


@shared_task(name="events.purge_outbox", ignore_result=True)
def purge_outbox() -> int:
    return relay.purge()
