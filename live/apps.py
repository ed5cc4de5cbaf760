from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

from django.apps import AppConfig


class LiveConfig(AppConfig):
    name = "live"
    verbose_name = "League page"

    def ready(self) -> None:
        from . import feed  # noqa: F401  (registers the broadcast handler of the service "live")

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """For the life of an ASGI server process (``league/asgi.py``): this process's own
        broadcast queue, subscribed at start and torn down at shutdown; and at SIGTERM or
        SIGINT every open stream ends at once (the server waits for open responses before
        it shuts down, and a browser never ends a stream on its own)."""
        import asyncio

        from django.conf import settings

        from .feed import Feed, hub

        restore = _end_streams_on_exit_signals(hub.close_all)
        feed = Feed() if settings.LIVE_FEED else None
        if feed is not None:
            feed.start()
        try:
            yield
        finally:
            restore()
            if feed is not None:
                await asyncio.to_thread(feed.close)


def _end_streams_on_exit_signals(end_streams: Callable[[], None]) -> Callable[[], None]:
    """Run ``end_streams`` before the server's own SIGTERM/SIGINT handler; returns the undo."""
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        end_streams()
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (e.g. a test's server): leave signals alone
            pass

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
