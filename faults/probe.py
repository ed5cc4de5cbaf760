"""A throwaway service "faultprobe", loaded into every process of the crash suite with
``EVENTS_HANDLER_MODULES=faults.probe`` (production handlers stay free of test branches).

Each handler writes one row to the ``faults_ledger`` table inside the consumer's
transaction, next to its inbox row. The ledger has no unique constraint, so it counts how
often a handler's side effects *committed*: two rows for one event means applied twice,
which the inbox must make impossible. The handler raises for the team whose name starts
with ``POISON`` (the poison subject): its events must end in the DLQ.
"""

from __future__ import annotations

from django.db import connection

from events.registry import handler

SERVICE = "faultprobe"
POISON_PREFIX = "POISON"

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS faults_ledger (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL,
    type text NOT NULL,
    subject text NOT NULL,
    sequence bigint
)
"""


class PoisonError(RuntimeError):
    pass


def _apply(event) -> None:
    name = str(event.data.get("name", "")) if event.type.startswith("team.") else ""
    if name.startswith(POISON_PREFIX):
        raise PoisonError(f"poison subject {event.subject}: {event.type} refused on purpose")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO faults_ledger (event_id, type, subject, sequence) VALUES (%s, %s, %s, %s)",
            [str(event.id), event.type, str(event.subject), event.sequence],
        )


@handler("team.created", service=SERVICE)
def on_team_created(event) -> None:
    _apply(event)


@handler("team.renamed", service=SERVICE)
def on_team_renamed(event) -> None:
    _apply(event)


@handler("team.deleted", service=SERVICE)
def on_team_deleted(event) -> None:
    _apply(event)


@handler("player.added", service=SERVICE)
def on_player_added(event) -> None:
    _apply(event)


@handler("player.removed", service=SERVICE)
def on_player_removed(event) -> None:
    _apply(event)
