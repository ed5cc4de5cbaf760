"""The WSGI entry point (``gunicorn league.wsgi:application``): Django, with bodies over the
limit refused before it reads them (``league/bodylimit.py``)."""

import os

from django.core.wsgi import get_wsgi_application

from league.bodylimit import WsgiBodyLimit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "league.settings")
application = WsgiBodyLimit(get_wsgi_application())
