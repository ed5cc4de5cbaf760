"""``manage.py service_account NAME``: a machine user for one service to call another.

Creates (or finds) the user ``NAME`` with no password (it cannot log in to the admin), in
the role ``Service accounts`` (``teams.export_team``: ``GET /api/teams/export/``), and
prints its API token. ``--token KEY`` sets the token to a key chosen by the deployment, so
the teams service's setup and the transfers service's ``TEAMS_SERVICE_TOKEN`` can be
configured from one secret. Idempotent: run it in every deploy.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token

from kernel import roles

MIN_TOKEN_LENGTH = 32
MAX_TOKEN_LENGTH = 40  # DRF's Token.key column


@transaction.atomic
def ensure_service_account(username: str, *, key: str | None = None) -> Token:
    """The user ``username`` in the ``Service accounts`` role, with a token (``key`` if
    given). Raises ``CommandError`` when the role is missing (migrations not run)."""
    if key is not None and not MIN_TOKEN_LENGTH <= len(key) <= MAX_TOKEN_LENGTH:
        raise CommandError(
            f"--token must have {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters; got {len(key)} "
            '(python -c "import secrets; print(secrets.token_hex(20))").'
        )
    group = Group.objects.filter(name=roles.SERVICE_ACCOUNTS).first()
    if group is None:
        raise CommandError(f"The role {roles.SERVICE_ACCOUNTS!r} does not exist: run `manage.py migrate` first.")
    User = get_user_model()
    user, created = User.objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()
        user.save()
    user.groups.add(group)
    token = Token.objects.filter(user=user).first()
    if key is not None and token is not None and token.key != key:
        token.delete()
        token = None
    if token is None:
        token = Token.objects.create(user=user, key=key) if key else Token.objects.create(user=user)
    return token


class Command(BaseCommand):
    help = "Create or update a service account (role 'Service accounts') and print its API token."

    def add_arguments(self, parser):
        parser.add_argument("username", help="e.g. transfers-service")
        parser.add_argument("--token", help=f"use this key ({MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters)")

    def handle(self, *args, username: str, token: str | None, **options):
        result = ensure_service_account(username, key=token)
        # A key the deployment chose is not echoed into its logs.
        shown = "(the --token given)" if token else result.key
        self.stdout.write(f"{username} ({roles.describe(result.user)}) token: {shown}")
