"""Event handlers of the teams service (registered in ``TeamsConfig.ready``).

Each runs inside ``transaction.atomic()`` with its inbox row, so it only parses the event
and calls a service: at-least-once delivery, effectively-once handling.
"""

from __future__ import annotations

import events
from events.envelope import Event

from . import services

SERVICE = "teams"


@events.handler("transfer.requested", service=SERVICE)
def on_transfer_requested(event: Event) -> None:
    """Move the player (``player.transferred``) or refuse (``move.refused``); a transfer
    already decided (e.g. cancelled first) is only answered again."""
    data = event.data
    services.move_apply(
        transfer_id=data["id"],
        player_id=data["player_id"],
        from_team_id=data["from_team_id"],
        to_team_id=data["to_team_id"],
    )


@events.handler("transfer.cancellation_requested", service=SERVICE)
def on_transfer_cancellation_requested(event: Event) -> None:
    """Cancel unless the player already moved (``move.cancelled`` / ``move.confirmed``)."""
    data = event.data
    services.move_cancel(
        transfer_id=data["id"],
        player_id=data["player_id"],
        from_team_id=data["from_team_id"],
        to_team_id=data["to_team_id"],
        reason=data["reason"],
    )
