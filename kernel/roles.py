"""The roles of a league office as Django groups with model permissions.

Roles (group names):

- **League staff**: teams and players, seasons and results (add, change, delete, view);
- **Transfer desk**: transfers (request, change, view), and reading teams and replicas;
- **Read-only**: view permissions only (anonymous users read the API anyway; this role is
  for people who should see the admin without changing anything);
- **Service accounts**: machine users; holds ``teams.export_team``, the permission the
  transfers service's token needs for ``GET /api/teams/export/``.

Each service declares, in its own ``roles.py``, which of its permissions each role gets
(``ROLES = {group name: [codename, ...]}``), so a permission is granted where its model
lives: in the microservices deployment each service's database holds its own models'
permissions only. A data migration of each app calls ``grant`` to create the groups (if
missing) and add that app's permissions; a later change of an app's ``ROLES`` ships with
a migration that calls ``grant`` again (it only adds, so it is safe to run twice).

``register`` (from each app's ``AppConfig.ready``) lets ``ensure_roles`` recreate every
installed app's grants (tests whose database was flushed) and ``roles_granting`` name the
roles that hold a permission (the API's 403 message). This module lives in ``events``
only because it is the one package every service may import; it knows nothing of the bus.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kernel import frozen

LEAGUE_STAFF = "League staff"
TRANSFER_DESK = "Transfer desk"
READ_ONLY = "Read-only"
SERVICE_ACCOUNTS = "Service accounts"
ROLE_NAMES = (LEAGUE_STAFF, TRANSFER_DESK, READ_ONLY, SERVICE_ACCOUNTS)

_registry: dict[str, Mapping[str, Iterable[str]]] = {}


def register(app_label: str, roles: Mapping[str, Iterable[str]]) -> None:
    """Declare ``app_label``'s grants (called from its ``AppConfig.ready``)."""
    unknown = set(roles) - set(ROLE_NAMES)
    if unknown:
        raise ValueError(f"{app_label}: unknown roles {sorted(unknown)}; use {', '.join(ROLE_NAMES)}.")
    _registry[app_label] = roles


# Granting is the same for a migration's historical registry and the live one; the frozen
# functions serve both while that holds.
grant = frozen.grant_roles
revoke = frozen.revoke_roles


def ensure_roles() -> None:
    """Grant every registered app's roles with the live models (idempotent)."""
    from django.apps import apps

    for app_label, roles in _registry.items():
        if apps.is_installed(app_label):
            grant(apps, app_label, roles)


def roles_granting(permission: str) -> list[str]:
    """The roles that hold ``permission`` ("app_label.codename"), by the declarations."""
    app_label, _, codename = permission.partition(".")
    roles = _registry.get(app_label, {})
    return [name for name in ROLE_NAMES if codename in roles.get(name, ())]


def describe(user: Any) -> str:
    """What a user may do, in words: for ``runstack``'s banner and the admin."""
    if user.is_superuser:
        return "superuser: every permission"
    groups = sorted(user.groups.values_list("name", flat=True))
    if groups:
        return "roles: " + ", ".join(groups)
    return "no role: reads only, like an anonymous user"
