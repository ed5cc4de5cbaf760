"""The stack a run works on, brought up: its own database (migrated, with the probe's
ledger and a superuser whose token the writer uses), the emulator with the bus set up,
the web server, the relay, and one consumer per consumed service, each ready. The
processes themselves are faults/stack.py's."""

from __future__ import annotations

import uuid

from ..stack import CONSUMED, Stack


def boot(stack: Stack) -> str:
    """Start everything on ``stack`` (whose environment this process has taken); the API token."""
    stack.create_database()
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from ..probe import LEDGER_DDL

    stack.manage("migrate", "--noinput")
    with connection.cursor() as cursor:
        cursor.execute(LEDGER_DDL)
    user = get_user_model().objects.create_superuser(username="faults", email="", password=uuid.uuid4().hex)
    token = Token.objects.create(user=user).key
    stack.start_moto()
    stack.manage("setup_bus")
    stack.start_web()
    stack.start_relay()
    for service in CONSUMED:
        stack.start_consumer(service)
    for service in CONSUMED:
        stack.wait_ready(f"consume-{service}", "consuming ")
    return token
