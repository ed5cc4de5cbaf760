"""The schema check on the hot path (``catalogue.data_error``): a compiled validator says
yes fast, and jsonschema, the reference, says why not. The compiled form must never accept
what jsonschema refuses (an event that breaks its schema would reach the outbox), and
``data_error``'s verdict must be jsonschema's, for every type and version, on data built
from the catalogue's examples with fields dropped, replaced and added, and on any JSON."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import catalogue

TYPES = sorted(
    (name, version) for name, et in catalogue.EVENT_TYPES.items() if not et.retired for version in et.schemas
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["", " ", "2026-02-30", "0000-01-01", "2026-12-07", "2026-12-07T10:00:00Z", "not-a-date", "0", "1.0"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def reference_error(event_type: str, version: int, data: Any) -> bool:
    et = catalogue.EVENT_TYPES[event_type]
    schema = et.schemas[version]
    cls = jsonschema.validators.validator_for(schema)
    return next(cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(data), None) is not None


def examples(event_type: str) -> list[dict[str, Any]]:
    et = catalogue.EVENT_TYPES[event_type]
    return [dict(e) for e in et.examples] + ([SEASON] if event_type == "season.scheduled" else []) or [{}]


@st.composite
def near_examples(draw: st.DrawFn) -> tuple[str, int, Any]:
    event_type, version = draw(st.sampled_from(TYPES))
    data: Any = dict(draw(st.sampled_from(examples(event_type))))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "replace", "add", "whole"]))
        if action == "drop" and data:
            data.pop(draw(st.sampled_from(sorted(data))))
        elif action == "replace" and data:
            data[draw(st.sampled_from(sorted(data)))] = draw(json_values)
        elif action == "add":
            data[draw(st.text(max_size=8))] = draw(json_values)
        elif action == "whole":
            data = draw(json_values)
        if not isinstance(data, dict):
            break
    return event_type, version, data


@settings(max_examples=600, deadline=None)
@given(near_examples())
def test_the_verdict_is_jsonschemas_on_data_near_the_examples(case):
    event_type, version, data = case
    assert (catalogue.data_error(event_type, data, version) is not None) == reference_error(event_type, version, data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TYPES), json_values)
def test_the_verdict_is_jsonschemas_on_any_json(type_and_version, data):
    event_type, version = type_and_version
    assert (catalogue.data_error(event_type, data, version) is not None) == reference_error(event_type, version, data)


@pytest.mark.parametrize("event_type", sorted(n for n, et in catalogue.EVENT_TYPES.items() if et.examples))
def test_the_examples_pass_the_compiled_check_without_falling_back(event_type, monkeypatch):
    """The quick yes is taken: a valid event never reaches jsonschema's slower walk."""
    et = catalogue.EVENT_TYPES[event_type]

    def walked(*args, **kwargs):
        raise AssertionError("jsonschema walked a valid event")

    monkeypatch.setattr(catalogue, "_explain", walked)
    for example in et.examples:
        assert catalogue.data_error(event_type, example, et.version) is None


SEASON = {"id": 1, "name": "2026/27", "starts_on": "2026-08-01", "team_ids": [1, 2], "matchdays": 2, "fixtures": 2}


@pytest.mark.parametrize("not_a_date", ["2026-02-30", "0000-01-01", "2026-12-07\n"])
def test_a_date_that_does_not_exist_is_refused_as_jsonschema_refuses_it(not_a_date):
    """Formats are jsonschema's own checkers in the compiled form too (fastjsonschema's own
    date check passes the year 0)."""
    assert catalogue.data_error("season.scheduled", SEASON) is None
    bad = {**SEASON, "starts_on": not_a_date}
    assert reference_error("season.scheduled", 1, bad)
    assert catalogue.data_error("season.scheduled", bad) is not None
