"""The WSGI entry point (``gunicorn league.wsgi:application``): Django, with bodies over the
limit refused before it reads them (``league/bodylimit.py``). Before it serves, each
installed app that defines ``check_serving()`` on its ``AppConfig`` checks what it needs (a
missing setting stops the process at start with its name, not at the first request); the
project finds them through the app registry, so it imports none of the apps."""

import os

from django.core.wsgi import get_wsgi_application

from league.bodylimit import WsgiBodyLimit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "league.settings")
application = WsgiBodyLimit(get_wsgi_application())


def _check_serving() -> None:
    from django.apps import apps

    for config in apps.get_app_configs():
        check_serving = getattr(config, "check_serving", None)
        if callable(check_serving):
            check_serving()


_check_serving()
