"""Which of this service's permissions each role holds (see kernel/roles.py).

Changing this needs a migration that calls ``kernel.roles.grant`` again."""

from kernel.roles import LEAGUE_STAFF, READ_ONLY, SERVICE_ACCOUNTS, TRANSFER_DESK

_VIEW = ["view_team", "view_player"]

ROLES = {
    LEAGUE_STAFF: [f"{action}_{model}" for model in ("team", "player") for action in ("add", "change", "delete", "view")],
    TRANSFER_DESK: _VIEW,
    READ_ONLY: _VIEW,
    SERVICE_ACCOUNTS: [*_VIEW, "export_team"],
}
