"""The catalogue is the contract between services: it must be one a database per service
can keep."""

from __future__ import annotations

from collections import defaultdict

from events import catalogue


def test_every_aggregate_has_exactly_one_owning_service():
    """A subject's ``sequence`` is counted in the publisher's own database. Two services
    publishing on one aggregate would each count ``transfer:7`` from 1, and consumers that
    drop stale sequences would drop real events."""
    owners: dict[str, set[str]] = defaultdict(set)
    for et in catalogue.EVENT_TYPES.values():
        if not et.retired:
            owners[et.aggregate].add(et.source)

    shared = {aggregate: sorted(sources) for aggregate, sources in owners.items() if len(sources) != 1}
    assert shared == {}, f"aggregates published by more than one service: {shared}"


def test_the_teams_answers_in_the_transfer_saga_are_on_an_aggregate_teams_owns():
    answers = ["player.transferred", "move.refused", "move.cancelled", "move.confirmed"]
    assert {catalogue.get(t).source for t in answers} == {"teams"}
    assert {catalogue.get(t).aggregate for t in answers}.isdisjoint({"transfer"})


def test_a_retired_type_stays_in_the_catalogue_and_cannot_be_published():
    assert catalogue.EVENT_TYPES["transfer.rejected"].retired
    try:
        catalogue.get("transfer.rejected")
    except catalogue.UnknownEventType as exc:
        assert "retired" in str(exc)
    else:
        raise AssertionError("a retired type was accepted")
