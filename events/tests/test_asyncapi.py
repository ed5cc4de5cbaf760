"""The AsyncAPI document: generated from the catalogue and the registry, and the
committed docs/asyncapi.yaml is the current one."""

from __future__ import annotations

import io

import jsonschema
import pytest
import yaml
from django.conf import settings
from django.core.management import call_command

from events import asyncapi, catalogue, registry


@pytest.fixture
def default_bus_names(settings):
    """The committed file describes the default deployment, whatever this shell sets."""
    settings.BUS_PREFIX = "leaguemanager"
    settings.BUS_FIFO = False
    settings.AWS_REGION = "eu-west-1"


def resolve(doc: dict, ref: str) -> object:
    assert ref.startswith("#/"), ref
    node: object = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]  # type: ignore[index]
    return node


def refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_the_committed_document_is_current(default_bus_names):
    out = io.StringIO()
    call_command("asyncapi", "--check", stdout=out)  # SystemExit(1) when stale
    assert "is current" in out.getvalue()


def test_check_fails_on_a_stale_file(default_bus_names, tmp_path):
    stale = tmp_path / "asyncapi.yaml"
    stale.write_text("asyncapi: 3.0.0\n")
    with pytest.raises(SystemExit) as exc:
        call_command("asyncapi", "--check", "--output", str(stale), stderr=io.StringIO())
    assert exc.value.code == 1
    call_command("asyncapi", "--output", str(stale), stdout=io.StringIO())
    call_command("asyncapi", "--check", "--output", str(stale), stdout=io.StringIO())


def test_document_covers_every_type_and_handler(default_bus_names):
    doc = yaml.safe_load(asyncapi.render())
    assert doc["asyncapi"] == "3.0.0"
    live = [name for name, et in catalogue.EVENT_TYPES.items() if not et.retired]
    assert list(doc["channels"]) == live
    assert doc["channels"]["team.created"]["address"] == "leaguemanager-team-created"
    for name in live:
        et = catalogue.EVENT_TYPES[name]
        send = doc["operations"][f"{et.source}.send.{name}"]
        assert send["action"] == "send" and resolve(doc, send["channel"]["$ref"]) is doc["channels"][name]
        assert doc["components"]["schemas"][f"{name}.data"] == et.schema
    for h in registry.handlers():
        if h.service in settings.SERVICES:
            op = doc["operations"][f"{h.service}.receive.{h.event_type}"]
            assert op["action"] == "receive"
            assert op["bindings"]["sqs"]["queues"][0]["name"] == f"leaguemanager-{h.service}"
    receivers = {k.split(".receive.")[0] for k in doc["operations"] if ".receive." in k}
    assert {"teams", "transfers", "fixtures"} <= receivers


def test_every_reference_resolves_and_every_schema_is_valid(default_bus_names):
    doc = yaml.safe_load(asyncapi.render())
    for ref in refs(doc):
        resolve(doc, ref)
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_a_published_envelope_matches_its_message_payload(default_bus_names, db):
    """What the publisher writes is what the document promises."""
    from django.db import transaction

    import events

    doc = yaml.safe_load(asyncapi.render())
    with transaction.atomic():
        row = events.publish("team.created", subject=7, data={"id": 7, "name": "Ajax", "players": [], "short_name": "TM"})
    payload = doc["components"]["messages"]["team.created"]["payload"]
    # References point at the document root: validate with the components alongside.
    schema = {**payload, "components": doc["components"]}
    jsonschema.validate(row.envelope, schema)
    wrong = {**row.envelope, "type": "team.renamed"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, schema)


def test_a_v1_team_created_envelope_matches_the_v1_message_and_not_v2(default_bus_names):
    """Both versions are documented: an envelope an old producer wrote (dataversion 1, no
    short name) is a team.created.v1 message; without a short name it is no v2 message."""
    doc = yaml.safe_load(asyncapi.render())
    v1 = {
        "specversion": "1.0",
        "id": "7c1c0b9e-0a55-4f7e-9d55-1f8f0d3b2a11",
        "source": "/league/teams",
        "type": "team.created",
        "time": "2026-07-01T12:00:00Z",
        "subject": "7",
        "datacontenttype": "application/json",
        "dataversion": "1",
        "sequence": 1,
        "data": {"id": 7, "name": "Ajax", "players": []},
    }
    messages = doc["components"]["messages"]
    assert {"team.created.v1", "team.created", "team.renamed.v1", "team.renamed"} <= set(messages)

    def schema(key):
        return {**messages[key]["payload"], "components": doc["components"]}

    jsonschema.validate(v1, schema("team.created.v1"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(v1, schema("team.created"))
    jsonschema.validate({**v1, "dataversion": "2", "data": {**v1["data"], "short_name": "AJA"}}, schema("team.created"))
