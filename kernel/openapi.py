"""OpenAPI pieces shared by the services' views: the error responses every API gives
with examples, for ``extend_schema``, and the schema's postprocessing hook.

    @extend_schema(responses={201: TeamSerializer, **errors(400, 401)})

Errors are documented once: ``postprocess`` adds the ``Problem`` component (RFC 9457, the
format ``kernel.api`` produces for every error) and makes every error response of every
operation an ``application/problem+json`` ``Problem``, examples included (a view's
``e400={"fee": [...]}`` becomes the problem document the API would answer), plus a
``default`` response for the errors any operation can meet (404 for an unknown URL, 405,
406, 413, 415, 500) and a ``429`` with ``Retry-After`` on every operation. It also adds the OpenAPI links between operations (create ->
read, update, delete), which clients and the stateful fuzzer follow, and documents request
bodies as JSON only.
"""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework.permissions import SAFE_METHODS

# A placeholder: ``postprocess`` puts the Problem component on every error response.
DETAIL_SCHEMA: dict[str, Any] = {"type": "object"}
VALIDATION_SCHEMA = DETAIL_SCHEMA

_ERRORS: dict[int, tuple[str, dict[str, Any], dict[str, Any]]] = {
    400: (
        "The input does not match the schema: each message in `errors`, addressed by a JSON pointer into the body (or a query parameter).",
        VALIDATION_SCHEMA,
        {"name": ["Team name cannot be empty."]},
    ),
    401: (
        "A write without credentials: send `Authorization: Token <key>` or log in.",
        DETAIL_SCHEMA,
        {"detail": "Authentication credentials were not provided."},
    ),
    403: (
        "Authenticated, but not allowed to do this.",
        DETAIL_SCHEMA,
        {"detail": "You do not have permission to perform this action."},
    ),
    404: ("No such object.", DETAIL_SCHEMA, {"detail": "Not found."}),
    409: (
        "Well formed, but the current state refuses it (code `conflict`): change the state and retry. "
        "Each message in `errors`, addressed by a JSON pointer into the body.",
        VALIDATION_SCHEMA,
        {"name": ["A team named Ajax already exists."]},
    ),
    422: (
        "Well formed, but it contradicts itself whatever the state (code `unprocessable`): "
        "each message in `errors`, addressed by a JSON pointer into the body.",
        VALIDATION_SCHEMA,
        {"players": ["A squad has at most 25 players; got 26."]},
    ),
    503: (
        "A service this one depends on is unavailable; try again later.",
        DETAIL_SCHEMA,
        {"detail": "The teams service is unavailable. Try again later."},
    ),
}


def error(status: int, *, description: str | None = None, example: dict[str, Any] | None = None) -> OpenApiResponse:
    text, schema, default_example = _ERRORS[status]
    return OpenApiResponse(
        response=schema,
        description=description or text,
        examples=[
            OpenApiExample(
                f"{status} error", value=example or default_example, response_only=True, status_codes=[str(status)]
            )
        ],
    )


def errors(*statuses: int, **overrides: dict[str, Any]) -> dict[int, OpenApiResponse]:
    """``{status: OpenApiResponse}`` for the given statuses; ``e400={"fee": [...]}`` sets an
    example (``e<status>=...``)."""
    return {s: error(s, example=overrides.get(f"e{s}")) for s in statuses}


def _pagination_parameters() -> list[OpenApiParameter]:
    from kernel.api import pagination_parameters

    return [OpenApiParameter(p["name"], p["schema"], description=p["description"]) for p in pagination_parameters()]


PAGINATION_PARAMETERS = _pagination_parameters()


def paginated(name: str, item: Any) -> Any:
    """The limit/offset page of ``item`` (a serializer class), for views that paginate by
    hand (``APIView`` rather than ``GenericAPIView``)."""
    from rest_framework import serializers

    return inline_serializer(
        name=name,
        fields={
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": item(many=True),
        },
    )


def page_example(name: str, item: dict[str, Any], **kwargs: Any) -> OpenApiExample:
    return OpenApiExample(name, value={"count": 1, "next": None, "previous": None, "results": [item]}, **kwargs)


# --------------------------------------------------------------------------------------
# The postprocessing hook: one error format, links between operations
# --------------------------------------------------------------------------------------
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_COMPONENTS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": (
            "Every error of this API: an RFC 9457 problem document, served as "
            "`application/problem+json`. `detail` says what is wrong and what to do; a "
            "validation error lists each message in `errors`."
        ),
        "properties": {
            "type": {"type": "string", "description": "`about:blank`: the meaning is the HTTP status."},
            "title": {"type": "string", "description": "The HTTP status phrase."},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string", "description": "What went wrong, for a person to read."},
            "instance": {"type": "string", "description": "The path of the request."},
            "code": {"type": "string", "description": "A machine-readable code (`invalid`, `not_found`, ...)."},
            "request_id": {"type": "string", "description": "The request's X-Request-ID, as in the logs."},
            "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ProblemFieldError"}},
        },
        "required": ["type", "title", "status", "detail"],
    },
    "ProblemFieldError": {
        "type": "object",
        "description": (
            "One validation message. `pointer` is a JSON pointer (RFC 6901) into the request "
            'body (`/players/0/name`; `""` for the body as a whole); `parameter` names a '
            "query parameter instead."
        ),
        "properties": {
            "pointer": {"type": "string"},
            "parameter": {"type": "string"},
            "detail": {"type": "string"},
            "code": {"type": "string"},
        },
        "required": ["detail"],
    },
}
DEFAULT_ERROR_DESCRIPTION = (
    "Any other error, as a problem document: 404 for an unknown URL, 405, 406, 413 (body too large), 415, 500."
)

TOO_MANY_REQUESTS = {
    "description": (
        "Too many requests from this address (anonymous) or this user; `Retry-After` says how many "
        "seconds to wait. Rates: `API_THROTTLE_ANON`, `API_THROTTLE_USER`, `API_THROTTLE_SERVICE`."
    ),
    "headers": {
        "Retry-After": {
            "description": "Seconds until the next request is allowed.",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
    "content": {"application/problem+json": {"schema": PROBLEM_REF}},
}

# (operation, status) -> {link name: (target operation, {parameter: runtime expression})}
LINKS: dict[tuple[str, str], dict[str, tuple[str, dict[str, str]]]] = {
    ("teams_create", "201"): {
        "GetTeam": ("teams_retrieve", {"team_id": "$response.body#/id"}),
        "RenameTeam": ("teams_rename", {"team_id": "$response.body#/id"}),
        "DeleteTeam": ("teams_delete", {"team_id": "$response.body#/id"}),
        "ListPlayers": ("teams_players_list", {"team_id": "$response.body#/id"}),
        "AddPlayer": ("teams_players_add", {"team_id": "$response.body#/id"}),
    },
    ("teams_players_add", "201"): {
        "GetPlayer": (
            "teams_players_retrieve",
            {"team_id": "$request.path.team_id", "player_id": "$response.body#/id"},
        ),
        "RemovePlayer": (
            "teams_players_remove",
            {"team_id": "$request.path.team_id", "player_id": "$response.body#/id"},
        ),
    },
    ("transfers_request", "201"): {
        "GetTransfer": ("transfers_retrieve", {"id": "$response.body#/id"}),
        "CancelTransfer": ("transfers_cancel", {"id": "$response.body#/id"}),
    },
    ("seasons_fixtures_list", "200"): {
        "GetFixture": ("fixtures_retrieve", {"fixture_id": "$response.body#/results/0/id"}),
        "RecordResult": ("fixtures_record_result", {"fixture_id": "$response.body#/results/0/id"}),
    },
    ("seasons_schedule", "201"): {
        "GetSeason": ("seasons_retrieve", {"season_id": "$response.body#/id"}),
        "ListFixtures": ("seasons_fixtures_list", {"season_id": "$response.body#/id"}),
        "GetStandings": ("seasons_standings", {"season_id": "$response.body#/id"}),
    },
}


def _example_problem(value: Any, *, status: int, method: str, path: str) -> Any:
    from kernel.api import problem_summary, status_title, validation_errors

    if not isinstance(value, dict) or {"status", "title"} <= set(value):
        return value
    body: dict[str, Any] = {"type": "about:blank", "title": status_title(status), "status": status}
    instance = re.sub(r"\{[^}]+\}", "1", path)
    if set(value) == {"detail"}:
        return {**body, "detail": value["detail"], "instance": instance}
    code = {409: "conflict", 422: "unprocessable"}.get(status, "invalid")
    errors = [{**e, "code": code} for e in validation_errors(value, in_query=method == "get")]
    return {**body, "detail": problem_summary(errors), "instance": instance, "code": code, "errors": errors}


def postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(PROBLEM_COMPONENTS)
    operation_ids = {
        op.get("operationId")
        for item in result.get("paths", {}).values()
        for op in item.values()
        if isinstance(op, dict)
    }
    for path, item in result.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            # The API is JSON: the form encodings DRF also parses (for the browsable API)
            # cannot carry nulls, lists of objects or types, so they are not documented.
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                op["requestBody"]["content"] = {"application/json": content["application/json"]}
            for code, response in op["responses"].items():
                if code != "default" and int(code) < 400:
                    continue
                examples = {}
                for content in response.get("content", {}).values():
                    for name, example in content.get("examples", {}).items():
                        examples[name] = {
                            **example,
                            "value": _example_problem(example.get("value"), status=int(code), method=method, path=path),
                        }
                media: dict[str, Any] = {"schema": PROBLEM_REF}
                if examples:
                    media["examples"] = examples
                response["content"] = {"application/problem+json": media}
            # Every operation is rate-limited (league/throttling.py).
            op["responses"].setdefault("429", TOO_MANY_REQUESTS)
            op["responses"].setdefault(
                "default",
                {
                    "description": DEFAULT_ERROR_DESCRIPTION,
                    "content": {"application/problem+json": {"schema": PROBLEM_REF}},
                },
            )
            if method == "post":
                _idempotency_key(op)
            for (operation_id, code), links in LINKS.items():
                if op.get("operationId") != operation_id or code not in op["responses"]:
                    continue
                op["responses"][code]["links"] = {
                    name: {"operationId": target, "parameters": parameters}
                    for name, (target, parameters) in links.items()
                    if target in operation_ids
                }
    return result


IDEMPOTENCY_KEY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe (idempotency/middleware.py): the same key with the same request "
        "within 24 h gets the first response again (header `Idempotent-Replayed: true`) "
        "and nothing is done twice; the same key with another request is a 422; while the "
        "first is still running, a 409. Keys are per user; a UUID is usual."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}
_IDEMPOTENCY_ERRORS = {
    "409": "or a request with the same `Idempotency-Key` is still in progress (code `idempotency_key_in_progress`, `Retry-After`)",
    "422": "or the `Idempotency-Key` was used for another request (code `idempotency_key_reused`)",
}


def _idempotency_key(op: dict[str, Any]) -> None:
    """The ``Idempotency-Key`` header of a POST, and the 409/422 it can answer."""
    op.setdefault("parameters", []).append(IDEMPOTENCY_KEY_PARAMETER)
    for code, text in _IDEMPOTENCY_ERRORS.items():
        if code in op["responses"]:
            op["responses"][code]["description"] += f" {text[0].upper()}{text[1:]}."
        else:
            op["responses"][code] = {
                "description": f"{text[3].upper()}{text[4:]}.",
                "content": {"application/problem+json": {"schema": PROBLEM_REF}},
            }


NAME_FORMAT = "league-name"


class NameFieldExtension(OpenApiSerializerFieldExtension):
    """A name (``kernel.names.NameField``): the format ``league-name``, whose rule the
    description gives (``kernel.names.clean_name``; as a regular expression it would be too
    large for a fuzzer to draw from: league/tests/schemathesis_hooks.py draws such names)."""

    target_class = "kernel.names.NameField"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        return {
            "type": "string",
            "format": NAME_FORMAT,
            "minLength": 1,
            "maxLength": self.target.max_length,
            "description": (
                "A name: stored in Unicode NFC with white space collapsed; at least one visible "
                "character (a letter, digit, punctuation or symbol); no control or invisible "
                "formatting characters, surrogates or line/paragraph separators."
            ),
        }


TEXT_FORMAT = "league-text"


class TextFieldExtension(OpenApiSerializerFieldExtension):
    """Short free text (``kernel.names.TextField``, a cancel reason): the format
    ``league-text``, whose rule the description gives (``kernel.names.clean_text``)."""

    target_class = "kernel.names.TextField"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "string",
            "format": TEXT_FORMAT,
            "description": (
                "Text on one line: no control characters (tabs and newlines included), no bidi "
                "formatting, private-use, unassigned or noncharacter code points."
            ),
        }
        if self.target.max_length:
            schema["maxLength"] = self.target.max_length
        return schema


SHORT_NAME_FORMAT = "league-short-name"


class ShortNameFieldExtension(OpenApiSerializerFieldExtension):
    """A team's short name (``kernel.names.ShortNameField``): the format ``league-short-name``,
    whose rule the description gives (``kernel.names.clean_short_name``)."""

    target_class = "kernel.names.ShortNameField"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        return {
            "type": "string",
            "format": SHORT_NAME_FORMAT,
            "minLength": self.target.min_length,
            "maxLength": self.target.max_length,
            "description": self.target.help_text or "2 to 5 letters or digits (any script), stored upper-cased.",
        }


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's schema, with the truth about authentication (kernel/permissions.py):
    a public read has no ``security`` (no lock in Swagger UI); a write, and a read with
    ``read_permissions`` (the export), requires a token or a session."""

    def get_auth(self) -> list[dict[str, Any]]:
        auths = super().get_auth()  # also registers the security schemes
        if self.method in SAFE_METHODS and not getattr(self.view, "read_permissions", None):
            return []
        return [a for a in auths if a]
