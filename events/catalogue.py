"""The catalogue of event types: the contract between services.

Every event type that crosses the bus is declared here with the service that publishes
it, the aggregate its ``subject`` names (the per-subject ``sequence`` counts per
aggregate), a data version and a JSON Schema for ``data``. ``events.publish`` checks the
payload against the schema inside the writer's transaction, so a bad payload is the
writer's error, not a consumer's surprise.

Type strings are never reused for a different meaning: a retired type stays here with
``retired=True`` (Sentry keeps retired outbox categories as ``UNUSED_*`` for the same
reason).

Versions. A type's ``data`` has versions (the envelope's ``dataversion``): ``schema`` is the
current one, ``older`` keeps each earlier version's schema with its upcaster, the one
function that turns that version's data into the next version's shape. ``accept`` is what a
consumer calls. Guarantees (docs/EVENTS.md: how to add a version, the order of a rolling
upgrade, the team short name as the worked example):

- a producer publishes the current version only; every version ever published stays in
  ``older`` for good, so an event written before an upgrade (in an outbox, a queue, a
  dead-letter queue, a replay) is still read after it: checked against its own version's
  schema and upcast to the current shape;
- an upcaster is a pure function of the old version's data (no database, no network), so a
  consumer, a replay and a redrive read an old event the same way;
- a consumer meeting a newer version than it knows (a producer upgraded first) reads it as
  the newest version it knows, whose fields every later version keeps with their types
  (tolerant reader: fields it does not know are ignored), so producers and consumers may be
  upgraded in either order;
- ``manage.py catalogue --check-compatible REF`` refuses a change that would break a running
  producer or consumer (events/compatibility.py lists what breaks).

``team.created`` and ``team.renamed`` v2 carry the team's ``short_name``; their v1 upcasters
give the short name ``derive_short_name`` makes of the name, the rule the teams service
applies when a team is created without one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
import jsonschema


@dataclass(frozen=True)
class OlderVersion:
    """An earlier version of a type's data: its schema, and ``upcast``, which turns data of
    this version into the shape of the next one."""

    version: int
    schema: dict[str, Any]
    upcast: Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class EventType:
    name: str
    source: str  # the publishing service
    aggregate: str  # what the subject identifies; sequence counts per (aggregate, subject)
    schema: dict[str, Any]  # of the current version
    version: int = 1
    description: str = ""
    retired: bool = False
    examples: list[dict[str, Any]] = field(default_factory=list)
    older: tuple[OlderVersion, ...] = ()

    @property
    def schemas(self) -> dict[int, dict[str, Any]]:
        """Every version's schema, oldest first."""
        return {**{o.version: o.schema for o in sorted(self.older, key=lambda o: o.version)}, self.version: self.schema}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required if required is not None else list(properties),
        "additionalProperties": True,
    }


_ID = {"type": "integer", "minimum": 1}
_NAME = {"type": "string", "minLength": 1, "maxLength": 100}
_POSITION = {"type": "string", "enum": ["GK", "DEF", "MID", "ST"]}
_PLAYER = _obj({"id": _ID, "name": _NAME, "position": _POSITION})
_MONEY = {"type": "string", "pattern": r"^\d+(\.\d{1,2})?$"}
# 2 to 5 letters or digits, upper-cased ("RED", "QPR", "AZ2"): kernel.names.clean_short_name
# holds the characters; the schema the length, which every JSON Schema dialect reads alike.
SHORT_NAME_MIN, SHORT_NAME_MAX = 2, 5
_SHORT_NAME = {"type": "string", "minLength": SHORT_NAME_MIN, "maxLength": SHORT_NAME_MAX}


def derive_short_name(name: str) -> str:
    """The short name of a team called ``name``, when nobody chose one.

    The name's words are its runs of letters and digits (any script; punctuation and spaces
    split words), upper-cased. One word gives its first three characters ("Reds" -> "RED",
    "Straße" -> "STR"); more give the initials of the first three words ("Queens Park
    Rangers" -> "QPR"), filled up to three characters from the rest of the last of those
    words ("Real Madrid" -> "RMA", "AZ 67" -> "A67"). Shorter than two characters, it is
    padded with "X" ("A" -> "AX"; a name without a letter or digit -> "XX"). Never longer
    than five. Short names are labels, not keys: two teams may derive the same one."""
    words: list[str] = []
    current = ""
    for char in name.upper():
        if char.isalpha() or char.isdecimal():
            current += char
        elif current:
            words.append(current)
            current = ""
    if current:
        words.append(current)
    if len(words) <= 1:
        short = "".join(words)[:3]
    else:
        firsts = words[:3]
        short = "".join(w[0] for w in firsts)
        short += firsts[-1][1 : 1 + 3 - len(short)]
    return short[:SHORT_NAME_MAX].ljust(SHORT_NAME_MIN, "X")


def _with_derived_short_name(data: dict[str, Any]) -> dict[str, Any]:
    """The v1 -> v2 upcaster of ``team.created`` and ``team.renamed``: v1 had no short name."""
    return {**data, "short_name": derive_short_name(data["name"])}


EVENT_TYPES: dict[str, EventType] = {
    e.name: e
    for e in [
        EventType(
            "team.created",
            source="teams",
            aggregate="team",
            description="A team was created (with its players, if any). v2 adds its short name.",
            schema=_obj(
                {"id": _ID, "name": _NAME, "short_name": _SHORT_NAME, "players": {"type": "array", "items": _PLAYER}},
                ["id", "name", "short_name"],
            ),
            version=2,
            examples=[{"id": 1, "name": "Reds", "short_name": "RED", "players": []}],
            older=(
                OlderVersion(
                    1,
                    _obj({"id": _ID, "name": _NAME, "players": {"type": "array", "items": _PLAYER}}, ["id", "name"]),
                    _with_derived_short_name,
                ),
            ),
        ),
        EventType(
            "team.renamed",
            source="teams",
            aggregate="team",
            description=(
                "A team changed its name or its short name. v2 adds the short name (a change of the "
                "short name alone has name == old_name)."
            ),
            schema=_obj({"id": _ID, "name": _NAME, "old_name": _NAME, "short_name": _SHORT_NAME}),
            version=2,
            examples=[{"id": 1, "name": "Blues", "old_name": "Reds", "short_name": "BLU"}],
            older=(OlderVersion(1, _obj({"id": _ID, "name": _NAME, "old_name": _NAME}), _with_derived_short_name),),
        ),
        EventType(
            "team.deleted",
            source="teams",
            aggregate="team",
            description="A team and its players were deleted.",
            schema=_obj({"id": _ID, "name": _NAME}),
        ),
        EventType(
            "player.added",
            source="teams",
            aggregate="team",
            description="A player joined a team's squad. Subject: the team.",
            schema=_obj({"id": _ID, "team_id": _ID, "name": _NAME, "position": _POSITION}),
        ),
        EventType(
            "player.removed",
            source="teams",
            aggregate="team",
            description="A player left a team's squad. Subject: the team.",
            schema=_obj({"id": _ID, "team_id": _ID, "name": _NAME}),
        ),
        EventType(
            "player.transferred",
            source="teams",
            aggregate="player",
            description=(
                "A player moved from one team to another as the result of a transfer. "
                "Subject: the player. Carries both teams' sequence numbers after the move."
            ),
            schema=_obj(
                {
                    "id": _ID,
                    "name": _NAME,
                    "position": _POSITION,
                    "from_team_id": _ID,
                    "to_team_id": _ID,
                    "transfer_id": _ID,
                    "from_team_sequence": {"type": "integer", "minimum": 1},
                    "to_team_sequence": {"type": "integer", "minimum": 1},
                }
            ),
        ),
        EventType(
            "move.refused",
            source="teams",
            aggregate="move",
            description=(
                "The teams service refused to move the player for a transfer, with a reason "
                "(subject: the transfer id; aggregate move, teams' decision about that transfer)."
            ),
            schema=_obj({"transfer_id": _ID, "player_id": _ID, "reason": {"type": "string", "minLength": 1}}),
        ),
        EventType(
            "move.cancelled",
            source="teams",
            aggregate="move",
            description=(
                "The teams service cancelled a transfer before moving the player: he stays, and a "
                "later transfer.requested for it moves nobody (subject: the transfer id)."
            ),
            schema=_obj({"transfer_id": _ID, "player_id": _ID, "reason": {"type": "string", "minLength": 1}}),
        ),
        EventType(
            "move.confirmed",
            source="teams",
            aggregate="move",
            description=(
                "The player had already moved for this transfer: the answer to a cancellation or a "
                "repeated request that came after the move (subject: the transfer id)."
            ),
            schema=_obj({"transfer_id": _ID, "player_id": _ID, "from_team_id": _ID, "to_team_id": _ID}),
        ),
        EventType(
            "transfer.requested",
            source="transfers",
            aggregate="transfer",
            description="A transfer of a player between two teams was requested.",
            schema=_obj({"id": _ID, "player_id": _ID, "from_team_id": _ID, "to_team_id": _ID, "fee": _MONEY}),
        ),
        EventType(
            "transfer.cancellation_requested",
            source="transfers",
            aggregate="transfer",
            description=(
                "The transfers service asks the teams service to cancel a transfer (its deadline "
                "passed, or a person cancelled it). Teams answers from its decision: move.cancelled "
                "if the player has not moved, move.confirmed if he has."
            ),
            schema=_obj(
                {
                    "id": _ID,
                    "player_id": _ID,
                    "from_team_id": _ID,
                    "to_team_id": _ID,
                    "reason": {"type": "string", "minLength": 1},
                }
            ),
        ),
        EventType(
            "transfer.completed",
            source="transfers",
            aggregate="transfer",
            description="A transfer finished: the player now plays for the new team.",
            schema=_obj({"id": _ID, "player_id": _ID, "from_team_id": _ID, "to_team_id": _ID, "fee": _MONEY}),
        ),
        EventType(
            "season.scheduled",
            source="fixtures",
            aggregate="season",
            description="A season was scheduled as a double round-robin.",
            schema=_obj(
                {
                    "id": _ID,
                    "name": _NAME,
                    "starts_on": {"type": "string", "format": "date"},
                    "team_ids": {"type": "array", "items": _ID, "minItems": 2},
                    "matchdays": {"type": "integer", "minimum": 1},
                    "fixtures": {"type": "integer", "minimum": 1},
                }
            ),
        ),
        EventType(
            "fixture.completed",
            source="fixtures",
            aggregate="season",
            description="A fixture's result was recorded (or corrected). Subject: the season.",
            schema=_obj(
                {
                    "id": _ID,
                    "season_id": _ID,
                    "matchday": {"type": "integer", "minimum": 1},
                    "home_team_id": _ID,
                    "away_team_id": _ID,
                    "home_goals": {"type": "integer", "minimum": 0},
                    "away_goals": {"type": "integer", "minimum": 0},
                    "correction": {"type": "boolean"},
                }
            ),
        ),
        EventType(
            "transfer.rejected",
            source="teams",
            aggregate="transfer",
            retired=True,
            description=(
                "Retired: teams published it on the transfers service's aggregate, so with a database "
                "per service one subject got two sequence counters. Replaced by move.refused."
            ),
            schema=_obj({"id": _ID, "player_id": _ID, "reason": {"type": "string", "minLength": 1}}),
        ),
    ]
}


def get(event_type: str) -> EventType:
    """The declared type, or a clear error naming the known ones."""
    try:
        et = EVENT_TYPES[event_type]
    except KeyError:
        raise UnknownEventType(
            f"Event type {event_type!r} is not in events/catalogue.py. Known: {', '.join(sorted(EVENT_TYPES))}."
        ) from None
    if et.retired:
        raise UnknownEventType(f"Event type {event_type!r} is retired and may not be published.")
    return et


class UnknownEventType(LookupError):
    pass


def data_error(event_type: str, data: Any, version: int | None = None) -> str | None:
    """What is wrong with ``data`` for ``event_type``'s JSON Schema (of ``version``, the
    current one by default), or None when it is valid. The writer checks before the outbox
    row exists; the consumer checks again on receive (``accept``), since anyone who can send
    to a queue can send anything."""
    try:
        _compiled(event_type, version)(data)
        return None
    except fastjsonschema.JsonSchemaException:
        return _explain(event_type, data, version)


def _explain(event_type: str, data: Any, version: int | None) -> str | None:
    """jsonschema's verdict and its best-matching error: the reference, and the message."""
    error = jsonschema.exceptions.best_match(_validator(event_type, version).iter_errors(data))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    named = event_type if version in (None, get(event_type).version) else f"{event_type} v{version}"
    return f"{named} data at {where}: {error.message}"


def accept(event_type: str, dataversion: Any, data: Any) -> tuple[dict[str, Any] | None, str | None]:
    """A received event's data in the current shape, or the reason it cannot be read.

    A version this code knows is checked against that version's schema and upcast, one
    version at a time, to the current one. A newer version than it knows is checked against
    the current schema and read as it (the compatibility rules keep every field of a version
    in the versions after it). A version that is not a whole number of at least 1 is refused."""
    et = get(event_type)
    try:
        version = int(str(dataversion))
    except ValueError:
        version = 0
    if version < 1:
        return None, f"{event_type}: dataversion {dataversion!r} is not a version (1, 2, ...)"
    known = et.schemas
    if version not in known and version < et.version:
        return None, f"{event_type}: dataversion {version} is unknown (known: {', '.join(map(str, known))})"
    read_as = min(version, et.version)
    problem = data_error(event_type, data, read_as)
    if problem is not None:
        return None, problem
    return upcast(event_type, read_as, data), None


def upcast(event_type: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` of ``version`` turned into the current version's shape: each older
    version's upcaster in turn. The one place where a type's old shapes are understood."""
    et = get(event_type)
    steps = {o.version: o.upcast for o in et.older}
    while version < et.version:
        data = steps[version](data)
        version += 1
    return data


@functools.cache
def _compiled(event_type: str, version: int | None = None) -> Callable[[Any], Any]:
    """The same schema compiled to Python by fastjsonschema: the quick yes of ``data_error``
    (a valid event costs one call, not a walk of jsonschema's validators). Its formats are
    jsonschema's own checkers, so it accepts nothing that jsonschema refuses; where it says
    no, jsonschema decides and says why (events/tests/test_schema_check.py holds the two to
    one verdict)."""
    validator = _validator(event_type, version)
    checker = validator.format_checker or type(validator).FORMAT_CHECKER
    formats = {name: functools.partial(_conforms, checker, name) for name in checker.checkers}
    return fastjsonschema.compile(dict(validator.schema), formats=formats)  # type: ignore[arg-type]


def _conforms(checker: jsonschema.FormatChecker, name: str, value: Any) -> bool:
    return checker.conforms(value, name)


@functools.cache
def _validator(event_type: str, version: int | None = None) -> jsonschema.protocols.Validator:
    """One compiled validator per type and version (``jsonschema.validate`` re-checks the
    schema itself on every call, which costs more than the check)."""
    et = get(event_type)
    schema = et.schemas[version or et.version]
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)
