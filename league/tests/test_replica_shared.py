"""One shape for a replicated team (kernel/replica.py): both consuming services keep their
team replica on the shared abstract model and apply team.* events with the shared rules,
so the same events, in any order, leave both replicas in the same state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from itertools import permutations

import pytest

from events.envelope import Event
from fixtures import handlers as fixtures_handlers
from fixtures.models import TeamReplica as FixturesTeam
from kernel.replica import ReplicatedTeam
from transfers import handlers as transfers_handlers
from transfers.models import TeamReplica as TransfersTeam

pytestmark = pytest.mark.django_db

WHEN = datetime(2026, 8, 1, 12, 0, tzinfo=UTC)


def event(type_: str, sequence: int, name: str) -> Event:
    data = {"id": 7, "name": name}
    if type_ == "team.created":
        data["players"] = []
    if type_ == "team.renamed":
        data["old_name"] = "?"
    if type_ in ("team.created", "team.renamed"):  # v2, as the consumer hands it over
        data["short_name"] = name[:3].upper()
    return Event(
        id=str(uuid.uuid4()), type=type_, source="/league/teams", subject="7", time=WHEN, sequence=sequence, data=data
    )


HANDLERS = {
    "fixtures": {
        "team.created": fixtures_handlers.on_team_created,
        "team.renamed": fixtures_handlers.on_team_renamed,
        "team.deleted": fixtures_handlers.on_team_deleted,
    },
    "transfers": {
        "team.created": transfers_handlers.on_team_created,
        "team.renamed": transfers_handlers.on_team_renamed,
        "team.deleted": transfers_handlers.on_team_deleted,
    },
}
MODELS = {"fixtures": FixturesTeam, "transfers": TransfersTeam}


def test_both_replicas_are_the_shared_replicated_team():
    for model in MODELS.values():
        assert issubclass(model, ReplicatedTeam)
        fields = {f.name for f in model._meta.get_fields()}
        assert {"team_id", "name", "sequence", "name_sequence", "deleted_at", "updated_at"} <= fields


@pytest.mark.parametrize("service", sorted(MODELS))
def test_every_order_of_team_events_converges_the_same_in_both_services(service):
    stream = [
        event("team.created", 1, "Rovers"),
        event("team.renamed", 2, "United"),
        event("team.renamed", 3, "City"),
        event("team.deleted", 4, "City"),
    ]
    for order in permutations(stream):
        MODELS[service].objects.all().delete()
        for e in order:
            HANDLERS[service][e.type](e)
        row = MODELS[service].objects.get(team_id=7)
        assert (row.name, row.sequence, row.deleted, row.deleted_at) == ("City", 4, True, WHEN), (service, order)


@pytest.mark.parametrize("service", sorted(MODELS))
def test_a_redelivered_older_rename_changes_nothing(service):
    for e in (event("team.created", 1, "Rovers"), event("team.renamed", 3, "City"), event("team.renamed", 2, "United")):
        HANDLERS[service][e.type](e)
    row = MODELS[service].objects.get(team_id=7)
    assert (row.name, row.name_sequence, row.sequence, row.deleted) == ("City", 3, 3, False)
