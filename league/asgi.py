"""The ASGI entry point (``uvicorn league.asgi:application``): Django for HTTP, and the
ASGI lifespan for what an installed app runs beside the web server for the life of the
process.

An app that needs that defines ``lifespan()`` on its ``AppConfig``: an async context
manager entered at server start (before the first request) and left at shutdown (after
the last). ``live`` uses it for its broadcast queue. The project finds them through the
app registry, so it imports none of the apps (import-linter keeps ``league`` apart).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from django.core.asgi import get_asgi_application
from django.core.exceptions import ImproperlyConfigured

from league.bodylimit import AsgiBodyLimit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "league.settings")
# No persistent database connections under ASGI (Django's advice): each request's sync code
# runs on a thread of its own, and a connection kept for 60 s would stay with a thread that is
# gone, one per request, until PostgreSQL refuses new clients. Each request opens and closes
# its own (league/tests/test_asgi_connections.py). The WSGI entry point keeps CONN_MAX_AGE.
os.environ["CONN_MAX_AGE"] = "0"
# Bodies over the limit are refused before Django reads them (league/bodylimit.py).
django_application = AsgiBodyLimit(get_asgi_application())

log = logging.getLogger("league.asgi")


async def _lifespan(receive: Any, send: Any) -> None:
    from django.apps import apps

    async with contextlib.AsyncExitStack() as stack:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            for config in apps.get_app_configs():
                check_serving = getattr(config, "check_serving", None)
                if callable(check_serving):
                    check_serving()
            for config in apps.get_app_configs():
                lifespan = getattr(config, "lifespan", None)
                if callable(lifespan):
                    await stack.enter_async_context(lifespan())
        except ImproperlyConfigured as exc:  # a setting missing: its message says which
            log.error("ASGI lifespan startup failed: %s", exc)
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        except Exception as exc:
            log.exception("ASGI lifespan startup failed")
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
    await send({"type": "lifespan.shutdown.complete"})


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    else:
        await django_application(scope, receive, send)
