"""OpenAPI pieces shared by the services' views: the error responses every API gives
(shaped by ``league.api.exception_handler``) with examples, for ``extend_schema``.

    @extend_schema(responses={201: TeamSerializer, **errors(400, 401)})
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, inline_serializer

DETAIL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
VALIDATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Field name (or `non_field_errors`) to its messages.",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}

_ERRORS: dict[int, tuple[str, dict[str, Any], dict[str, Any]]] = {
    400: (
        "The input is not valid: each field with its messages (`non_field_errors` for the whole).",
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
    409: ("The request conflicts with the current state.", DETAIL_SCHEMA, {"detail": "Conflict."}),
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


PAGINATION_PARAMETERS = [
    OpenApiParameter("limit", OpenApiTypes.INT, description="Number of results to return per page."),
    OpenApiParameter("offset", OpenApiTypes.INT, description="The initial index from which to return the results."),
]


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
