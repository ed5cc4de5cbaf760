"""Celery entry points of the bus. Each takes no arguments, calls the relay or a purge,
and owns its retry policy (none: beat runs the relay again within a second, the purges
within the hour)."""

from celery import shared_task

from . import relay, retention


@shared_task(name="events.relay_outbox", ignore_result=True)
def relay_outbox() -> int:
    return relay.relay(max_seconds=30).published


@shared_task(name="events.purge_outbox", ignore_result=True)
def purge_outbox() -> int:
    return relay.purge()


@shared_task(name="events.purge_inbox", ignore_result=True)
def purge_inbox() -> int:
    return retention.purge_inbox()


@shared_task(name="events.purge_retained", ignore_result=True)
def purge_retained() -> int:
    return sum(retention.purge_registered().values())
