"""Which of this service's permissions each role holds (see kernel/roles.py).

Requesting a transfer is ``add_transfer``; cancelling one is ``cancel_transfer``
(``POST /api/transfers/{id}/cancel/`` and the admin action). Changing this needs a migration that calls ``kernel.roles.grant``
again."""

from kernel.roles import LEAGUE_STAFF, READ_ONLY, TRANSFER_DESK

_VIEW = ["view_transfer", "view_teamreplica", "view_playerreplica", "view_teamssync"]

ROLES = {
    LEAGUE_STAFF: _VIEW,
    TRANSFER_DESK: [*_VIEW, "add_transfer", "change_transfer", "cancel_transfer"],
    READ_ONLY: _VIEW,
}
