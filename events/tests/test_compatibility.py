"""Versions of an event's data, and the check that refuses a catalogue change that would break
a running producer or consumer."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from django.core.management import CommandError, call_command

from events import catalogue, compatibility


@pytest.fixture
def versioned(monkeypatch):
    """``probe.happened`` in three versions: v1 {id}, v2 adds a required ``label`` (its
    upcaster fills it from the id), v3 adds an optional ``note``."""
    v1 = {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
    v2 = {"type": "object", "properties": {**v1["properties"], "label": {"type": "string"}}, "required": ["id", "label"]}
    v3 = {"type": "object", "properties": {**v2["properties"], "note": {"type": "string"}}, "required": ["id", "label"]}
    et = catalogue.EventType(
        "probe.happened",
        source="probe",
        aggregate="probe",
        schema=v3,
        version=3,
        older=(
            catalogue.OlderVersion(1, v1, lambda d: {**d, "label": f"#{d['id']}"}),
            catalogue.OlderVersion(2, v2, lambda d: {**d, "note": ""}),
        ),
    )
    monkeypatch.setitem(catalogue.EVENT_TYPES, et.name, et)
    catalogue._validator.cache_clear()
    yield et
    catalogue._validator.cache_clear()


def test_an_old_version_is_checked_against_its_own_schema_and_upcast_to_the_current_shape(versioned):
    assert catalogue.accept("probe.happened", "1", {"id": 7}) == ({"id": 7, "label": "#7", "note": ""}, None)
    assert catalogue.accept("probe.happened", 2, {"id": 7, "label": "x"}) == ({"id": 7, "label": "x", "note": ""}, None)
    data, problem = catalogue.accept("probe.happened", "2", {"id": 7})
    assert data is None and "v2 data at (root): 'label' is a required property" in problem


def test_a_newer_version_is_read_as_the_newest_known_one(versioned):
    data, problem = catalogue.accept("probe.happened", "4", {"id": 7, "label": "x", "note": "", "colour": "red"})
    assert problem is None and data["label"] == "x"


@pytest.mark.parametrize("dataversion", ["0", "-1", "two", "", None])
def test_a_dataversion_that_is_no_version_is_refused(versioned, dataversion):
    data, problem = catalogue.accept("probe.happened", dataversion, {"id": 7})
    assert data is None and "is not a version" in problem


def test_todays_catalogue_is_compatible_with_every_committed_one(capsys):
    call_command("catalogue", "--check-history")
    assert "compatible with" in capsys.readouterr().out


def _breaking(edit) -> list[str]:
    before = compatibility.describe(catalogue.EVENT_TYPES)
    after = copy.deepcopy(before)
    edit(after)
    return compatibility.breaking_changes(before, after)


def test_each_breaking_change_is_named():
    def removed_field(d):
        del d["team.renamed"]["versions"][1]["properties"]["old_name"]

    def retyped(d):
        d["team.created"]["versions"][1]["properties"]["id"]["type"] = "string"

    def newly_required(d):
        d["team.created"]["versions"][1]["required"].append("players")

    def removed_type(d):
        del d["team.deleted"]

    def reused(d):
        d["player.added"]["source"] = "transfers"

    def new_version_drops_a_field(d):
        v1 = d["team.renamed"]["versions"][1]
        v2 = copy.deepcopy(v1)
        del v2["properties"]["old_name"]
        d["team.renamed"]["versions"][2] = v2
        d["team.renamed"]["version"] = 2

    assert _breaking(removed_field) == ["team.renamed v1: old_name: removed"]
    assert _breaking(retyped) == ["team.created v1: id: type changed from {'type': 'integer'} to {'type': 'string'}"]
    assert _breaking(newly_required) == [
        "team.created v1: data: now requires players (producers of this version do not send it)"
    ]
    assert _breaking(removed_type) == ["team.deleted: removed (retire it: retired=True keeps the type string from being reused)"]
    assert _breaking(reused) == ["player.added: source changed from 'teams' to 'transfers' (a type is never reused)"]
    assert _breaking(new_version_drops_a_field) == [
        "team.renamed v2: old_name: removed since v1 (an older consumer reads v2 as v1)"
    ]


def test_additive_changes_are_compatible():
    def additive(d):
        d["team.renamed"]["versions"][1]["properties"]["short_name"] = {"type": "string"}
        v2 = copy.deepcopy(d["team.renamed"]["versions"][1])
        v2["required"] = [*v2["required"], "short_name"]
        d["team.renamed"]["versions"][2] = v2
        d["team.renamed"]["version"] = 2
        d["brand.new"] = {"source": "teams", "aggregate": "team", "retired": False, "version": 1, "versions": {1: {}}}

    assert _breaking(additive) == []


def test_the_command_fails_on_a_deliberately_breaking_change(monkeypatch):
    renamed = catalogue.EVENT_TYPES["team.renamed"]
    schema = copy.deepcopy(renamed.schema)
    del schema["properties"]["old_name"]
    monkeypatch.setitem(catalogue.EVENT_TYPES, "team.renamed", dataclasses.replace(renamed, schema=schema))
    with pytest.raises(CommandError, match=r"since HEAD: team.renamed v1: old_name: removed"):
        call_command("catalogue", "--check-compatible", "HEAD")


def test_an_unknown_ref_is_a_clear_error():
    with pytest.raises(CommandError, match="git cannot show events/catalogue.py at 'no-such-ref'"):
        call_command("catalogue", "--check-compatible", "no-such-ref")


def test_the_asyncapi_document_lists_every_version(versioned):
    from events import asyncapi

    doc = asyncapi.build()
    assert set(doc["channels"]["probe.happened"]["messages"]) == {"probe.happened.v1", "probe.happened.v2", "probe.happened"}
    versions = {
        key: message["payload"]["allOf"][1]["properties"]["dataversion"]["const"]
        for key, message in doc["components"]["messages"].items()
        if key.startswith("probe.happened")
    }
    assert versions == {"probe.happened.v1": "1", "probe.happened.v2": "2", "probe.happened": "3"}
    assert doc["components"]["schemas"]["probe.happened.v1.data"]["required"] == ["id"]
