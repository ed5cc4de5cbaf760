"""Versions of an event's data, and the check that refuses a catalogue change that would break
a running producer or consumer."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
from django.conf import settings
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
        v2 = d["team.renamed"]["versions"][2]
        v3 = copy.deepcopy(v2)
        del v3["properties"]["old_name"]
        d["team.renamed"]["versions"][3] = v3
        d["team.renamed"]["version"] = 3

    assert _breaking(removed_field) == ["team.renamed v1: old_name: removed"]
    assert _breaking(retyped) == ["team.created v1: id: type changed from {'type': 'integer'} to {'type': 'string'}"]
    assert _breaking(newly_required) == [
        "team.created v1: data: now requires players (producers of this version do not send it)"
    ]
    assert _breaking(removed_type) == ["team.deleted: removed (retire it: retired=True keeps the type string from being reused)"]
    assert _breaking(reused) == ["player.added: source changed from 'teams' to 'transfers' (a type is never reused)"]
    assert _breaking(new_version_drops_a_field) == [
        "team.renamed v3: old_name: removed since v2 (an older consumer reads v3 as v2)"
    ]


def test_additive_changes_are_compatible():
    def additive(d):
        d["team.renamed"]["versions"][2]["properties"]["colour"] = {"type": "string"}
        v3 = copy.deepcopy(d["team.renamed"]["versions"][2])
        v3["required"] = [*v3["required"], "colour"]
        d["team.renamed"]["versions"][3] = v3
        d["team.renamed"]["version"] = 3
        d["brand.new"] = {"source": "teams", "aggregate": "team", "retired": False, "version": 1, "versions": {1: {}}}

    assert _breaking(additive) == []


def test_the_command_fails_on_a_deliberately_breaking_change(monkeypatch):
    renamed = catalogue.EVENT_TYPES["team.renamed"]
    schema = copy.deepcopy(renamed.schema)
    del schema["properties"]["old_name"]
    monkeypatch.setitem(catalogue.EVENT_TYPES, "team.renamed", dataclasses.replace(renamed, schema=schema))
    with pytest.raises(CommandError, match=r"since HEAD: team.renamed v2: old_name: removed"):
        call_command("catalogue", "--check-compatible", "HEAD")


# ---- the team short name: team.created and team.renamed v2 ------------------------------


def _last_catalogue_with_team_v1() -> str:
    """The newest committed catalogue whose team.created is at v1: what producers and
    consumers ran before the short name."""
    root = Path(settings.BASE_DIR)
    for ref in compatibility.history(root=root):
        if compatibility.load(ref, root=root)["team.created"]["version"] == 1:
            return ref
    raise AssertionError("no committed catalogue has team.created at v1: is this a clone with its history?")


def test_team_v2_with_v1_kept_is_compatible_with_the_catalogue_before_it(capsys):
    call_command("catalogue", "--check-compatible", _last_catalogue_with_team_v1())
    assert "compatible with 1 catalogue(s)" in capsys.readouterr().out
    for name in ("team.created", "team.renamed"):
        et = catalogue.EVENT_TYPES[name]
        assert et.version == 2 and "short_name" in et.schema["required"]
        assert [o.version for o in et.older] == [1] and "short_name" not in et.schemas[1]["properties"]


def test_a_team_v2_that_drops_the_name_is_refused(monkeypatch):
    created = catalogue.EVENT_TYPES["team.created"]
    schema = copy.deepcopy(created.schema)
    del schema["properties"]["name"]
    schema["required"].remove("name")
    monkeypatch.setitem(catalogue.EVENT_TYPES, "team.created", dataclasses.replace(created, schema=schema))
    ref = _last_catalogue_with_team_v1()
    with pytest.raises(CommandError, match=r"team.created v2: name: removed since v1 \(an older consumer reads v2 as v1\)"):
        call_command("catalogue", "--check-compatible", ref)


def test_team_v2_without_v1_is_refused(monkeypatch):
    renamed = catalogue.EVENT_TYPES["team.renamed"]
    monkeypatch.setitem(catalogue.EVENT_TYPES, "team.renamed", dataclasses.replace(renamed, older=()))
    ref = _last_catalogue_with_team_v1()
    with pytest.raises(CommandError, match=r"team.renamed v1: removed \(events of it may still be in an outbox or a DLQ\)"):
        call_command("catalogue", "--check-compatible", ref)


def test_a_v1_team_event_is_upcast_with_the_derived_short_name():
    assert catalogue.accept("team.created", "1", {"id": 1, "name": "Queens Park Rangers", "players": []}) == (
        {"id": 1, "name": "Queens Park Rangers", "players": [], "short_name": "QPR"},
        None,
    )
    assert catalogue.accept("team.renamed", "1", {"id": 1, "name": "Real Madrid", "old_name": "Reds"}) == (
        {"id": 1, "name": "Real Madrid", "old_name": "Reds", "short_name": "RMA"},
        None,
    )
    v2 = {"id": 1, "name": "Reds", "old_name": "Reds", "short_name": "LFC"}
    assert catalogue.accept("team.renamed", "2", v2) == (v2, None)
    data, problem = catalogue.accept("team.created", "2", {"id": 1, "name": "Reds"})
    assert data is None and "'short_name' is a required property" in problem


def test_an_old_consumer_reads_a_v2_team_event_as_v1():
    """The catalogue of before the short name, as committed (its own ``accept``), reads a
    v2 event as v1: checked against v1's schema, the short name ignored (tolerant reader)."""
    old = compatibility.load_module(_last_catalogue_with_team_v1(), root=Path(settings.BASE_DIR))
    assert old.EVENT_TYPES["team.created"].version == 1
    created = {"id": 1, "name": "Reds", "short_name": "LFC", "players": []}
    data, problem = old.accept("team.created", "2", created)
    assert problem is None and (data["id"], data["name"], data["players"]) == (1, "Reds", [])
    data, problem = old.accept("team.renamed", "2", {"id": 1, "name": "Blues", "old_name": "Reds", "short_name": "BLU"})
    assert problem is None and (data["name"], data["old_name"]) == ("Blues", "Reds")


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
