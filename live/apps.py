from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from django.apps import AppConfig


class LiveConfig(AppConfig):
    name = "live"
    verbose_name = "League page"

    def ready(self) -> None:
        from . import feed  # noqa: F401  (registers the broadcast handler of the service "live")

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """For the life of an ASGI server process (``league/asgi.py``): this process's own
        broadcast queue, subscribed at start and torn down at shutdown."""
        import asyncio

        from django.conf import settings

        from .feed import Feed

        if not settings.LIVE_FEED:
            yield
            return
        feed = Feed()
        feed.start()
        try:
            yield
        finally:
            await asyncio.to_thread(feed.close)
