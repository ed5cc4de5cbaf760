from __future__ import annotations

import pytest

from events.models import OutboxMessage


@pytest.fixture
def outbox():
    """The outbox rows written so far, oldest first, as (type, subject, sequence, data)."""

    def rows() -> list[tuple[str, str, int, dict]]:
        return [(m.type, m.subject, m.sequence, m.envelope["data"]) for m in OutboxMessage.objects.order_by("id")]

    return rows
