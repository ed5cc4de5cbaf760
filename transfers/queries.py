"""What the transfers service answers to the project's pages (``events.queries``): plain
data built from its selectors, never model instances; team names come from its replica of
the teams service."""

from __future__ import annotations

from typing import Any

from events.queries import query

from . import selectors


@query("transfers.recent", service="transfers")
def recent(*, limit: int = 10) -> list[dict[str, Any]]:
    """The newest ``limit`` transfers, in any state, newest first."""
    rows = selectors.transfers_recent(limit=limit)
    names = selectors.team_names({t.from_team_id for t in rows} | {t.to_team_id for t in rows})
    return [
        {
            "id": t.pk,
            "player_id": t.player_id,
            "player_name": t.player_name,
            "from_team_id": t.from_team_id,
            "from_team": names.get(t.from_team_id) or f"team {t.from_team_id}",
            "to_team_id": t.to_team_id,
            "to_team": names.get(t.to_team_id) or f"team {t.to_team_id}",
            "fee": str(t.fee),
            "state": t.state,
            "reason": t.reason,
            "created_at": t.created_at.isoformat(),
            "completed_at": t.completed_at.isoformat() if t.completed_at else None,
        }
        for t in rows
    ]
