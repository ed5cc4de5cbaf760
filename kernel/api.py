"""API-wide pieces. The guarantee: every error under ``/api/`` is one RFC 9457 problem
document (``application/problem+json``), in every mode (``DEBUG`` on or off), and no input
gives a 500.

The problem document::

    {"type": "about:blank", "title": "Bad Request", "status": 400,
     "detail": "/players/0/name: Player name cannot be empty.",
     "instance": "/api/teams/", "code": "invalid", "request_id": "...",
     "errors": [{"pointer": "/players/0/name", "detail": "Player name cannot be empty.",
                 "code": "invalid"}]}

``errors`` comes with validation errors only: one entry per message, addressed by a JSON
pointer (RFC 6901) into the request body (``pointer``; ``""`` is the whole body), or by the
name of the query parameter (``parameter``) for a GET.

Statuses of a refused body: 400 when it does not match the schema (a serializer's
message); a rule of a service (a Django ``ValidationError`` it raises) is checked against
the current state, so its refusal is a 409 ``conflict`` when every message has the code
``"conflict"`` (``ValidationError(message, code="conflict")``: a name taken, a full squad,
a transfer in flight, an unknown team, a result already recorded or not yet recorded: the
client can change the state and retry), and a 422 ``unprocessable`` otherwise (a request
that contradicts itself whatever the state). Views raise ``Conflict`` / ``Unprocessable``
for rules of their own. Both carry ``errors`` like a 400.

Who produces it:
- ``exception_handler`` (DRF's ``EXCEPTION_HANDLER``) for every error raised in a DRF view:
  validation, parse errors, 401/403/404/405/406/415/429, a service's Django
  ``ValidationError``, a body too big (413) or with too many fields (400), a 503 raised by
  a view.
- ``league.middleware.ApiMiddleware`` for every other error response under ``/api/``:
  Django's own 404 for an unmatched URL, 400/413 before a view runs, and 500s (with
  ``DEBUG`` on Django would answer its HTML technical pages: never under ``/api/``).
- ``league.middleware.DatabaseOutageMiddleware`` for a database that does not answer:
  503 with ``Retry-After`` (this handler leaves that exception to it).

Also here: the parser that refuses oversized and deeply nested JSON (413/400 instead of a
``RecursionError``), and the paginator whose ``limit``/``offset`` are bounded (400 for
anything that is not a number in range).
"""

from __future__ import annotations

import codecs
import re
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import (
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, parsers, renderers, serializers
from rest_framework.fields import get_error_detail
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.utils import json as drf_json

from events import gate

PROBLEM_CONTENT_TYPE = "application/problem+json"
# JSON bodies nested deeper than this are refused (no request of this API nests past 4).
MAX_JSON_DEPTH = 32


# --------------------------------------------------------------------------------------
# The problem document
# --------------------------------------------------------------------------------------
def status_title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem(
    status: int,
    detail: str,
    *,
    request: HttpRequest | None = None,
    code: str | None = None,
    errors: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "about:blank", "title": status_title(status), "status": status, "detail": detail}
    if request is not None:
        body["instance"] = request.path
        rid = getattr(request, "request_id", None)
        if rid:
            body["request_id"] = rid
    if code:
        body["code"] = code
    if errors is not None:
        body["errors"] = errors
    return body


def problem_response(request: HttpRequest, status: int, detail: str, **kwargs: Any) -> JsonResponse:
    """A problem document as a plain Django response (outside DRF views)."""
    return JsonResponse(
        problem(status, detail, request=request, **kwargs), status=status, content_type=PROBLEM_CONTENT_TYPE
    )


def _escape(token: Any) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def flatten(detail: Any, pointer: str = "") -> list[tuple[str, str, str]]:
    """``(pointer, message, code)`` for every message of a DRF error detail, whatever its
    nesting: ``{"players": [{}, {"name": [...]}]}`` and a ListField's ``{"players": {1:
    {...}}}`` both give ``/players/1/name``; ``non_field_errors`` stays at its parent."""
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            child = pointer if key in ("non_field_errors", "__all__") else f"{pointer}/{_escape(key)}"
            out.extend(flatten(value, child))
        return out
    if isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            return [(pointer, str(item), getattr(item, "code", None) or "invalid") for item in detail]
        out = []
        for index, item in enumerate(detail):
            if isinstance(item, str):
                out.append((pointer, str(item), getattr(item, "code", None) or "invalid"))
            else:
                out.extend(flatten(item, f"{pointer}/{index}"))
        return out
    return [(pointer, str(detail), getattr(detail, "code", None) or "invalid")]


def validation_errors(detail: Any, *, in_query: bool) -> list[dict[str, str]]:
    errors = []
    for pointer, message, code in flatten(detail):
        if in_query and pointer:
            # A GET's fields are query parameters: name them as such.
            errors.append({"parameter": pointer.lstrip("/").split("/")[0], "detail": message, "code": code})
        else:
            errors.append({"pointer": pointer, "detail": message, "code": code})
    return errors


def problem_summary(errors: list[dict[str, str]]) -> str:
    parts = []
    for error in errors[:5]:
        where = error.get("parameter") or error.get("pointer")
        parts.append(f"{where}: {error['detail']}" if where else error["detail"])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


# --------------------------------------------------------------------------------------
# DRF: the exception handler and the renderer of problems
# --------------------------------------------------------------------------------------
class ProblemJSONRenderer(renderers.JSONRenderer):
    media_type = PROBLEM_CONTENT_TYPE


class RequestTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "request_too_large"


class WritesPaused(exceptions.APIException):
    """A write of a service whose gate is closed (``events/gate.py``): 503 with Retry-After."""

    status_code = 503
    default_code = "service_paused"

    def __init__(self, exc: gate.ServicePaused) -> None:
        super().__init__(str(exc), code="service_moved" if exc.state == gate.MOVED else "service_paused")
        self.wait = exc.retry_after  # DRF's handler turns ``wait`` into Retry-After


CONFLICT = "conflict"


class Conflict(exceptions.ValidationError):
    """Well formed, but the current state forbids it: 409 with field messages."""

    status_code = 409
    default_code = CONFLICT


class Unprocessable(exceptions.ValidationError):
    """Well formed, but it contradicts itself whatever the state: 422 with field messages."""

    status_code = 422
    default_code = "unprocessable"


def _refused_by_a_rule(exc: DjangoValidationError) -> exceptions.ValidationError:
    detail = get_error_detail(exc)  # keeps each message's code
    if not isinstance(detail, dict):
        detail = {"non_field_errors": detail}
    codes = {code for _, _, code in flatten(detail)}
    return Conflict(detail) if codes == {CONFLICT} else Unprocessable(detail)


def _django_to_drf(exc: Exception) -> Exception:
    if isinstance(exc, gate.ServicePaused):
        return WritesPaused(exc)
    if isinstance(exc, Http404):
        return exceptions.NotFound(*exc.args)
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied(*exc.args)
    if isinstance(exc, DjangoValidationError):
        # Raised by a service (its rules, ``full_clean``): messages by field.
        return _refused_by_a_rule(exc)
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLarge(
            f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes. Send a smaller one."
        )
    if isinstance(exc, TooManyFieldsSent):
        return exceptions.ParseError(
            f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields.", code="too_many_fields"
        )
    if isinstance(exc, TooManyFilesSent):
        return exceptions.ParseError("The request has too many files.", code="too_many_files")
    if isinstance(exc, SuspiciousOperation):
        return exceptions.ParseError("The request could not be read.")
    return exc


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler (which maps Http404 and PermissionDenied too), with Django's
    exceptions mapped first, and every answer reshaped into a problem document.
    ``None`` (an unexpected exception) lets Django log it and answer 500, which
    ``ApiMiddleware`` turns into a problem."""
    # Imported here: rest_framework.views reads DEFAULT_PARSER_CLASSES, which names this module.
    from rest_framework.views import exception_handler as drf_exception_handler

    exc = _django_to_drf(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    request = context.get("request")
    django_request = getattr(request, "_request", request)
    status = response.status_code
    detail = getattr(exc, "detail", response.data)
    if isinstance(exc, exceptions.ValidationError) or isinstance(detail, (dict, list)):
        in_query = request is not None and request.method in ("GET", "HEAD")
        errors = validation_errors(detail, in_query=in_query)
        code = exc.default_code if isinstance(exc, (Conflict, Unprocessable)) else "invalid"
        body = problem(status, problem_summary(errors), request=django_request, code=code, errors=errors)
    else:
        body = problem(status, str(detail), request=django_request, code=getattr(detail, "code", None))
    response.data = body
    if request is not None:
        # Whatever the client asked for (even the browsable API's HTML), an error is a problem.
        request.accepted_renderer = ProblemJSONRenderer()
        request.accepted_media_type = PROBLEM_CONTENT_TYPE
    return response


def object_or_404(queryset: Any, label: str, pk: Any) -> Any:
    """The row ``pk`` of ``queryset`` (a model or a queryset), or a 404 in the one wording
    of every view of the API: "Season 9 does not exist."."""
    row = getattr(queryset, "_default_manager", queryset).filter(pk=pk).first()
    if row is None:
        raise Http404(f"{label} {pk} does not exist.")
    return row


# --------------------------------------------------------------------------------------
# Parsing: bounded JSON
# --------------------------------------------------------------------------------------
def json_depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, bounded: at most ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes (413) and
    ``MAX_JSON_DEPTH`` levels of nesting (400), never a ``RecursionError``."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        parser_context = parser_context or {}
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if limit is not None and len(raw) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes. Send a smaller one.")
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.decode(raw, encoding)
            parse_constant = drf_json.strict_constant if self.strict else None
            data = drf_json.loads(text, parse_constant=parse_constant)
        except RecursionError:
            raise exceptions.ParseError(
                f"JSON parse error - the body is nested too deeply (at most {MAX_JSON_DEPTH} levels)."
            ) from None
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        if json_depth_exceeds(data, MAX_JSON_DEPTH):
            raise exceptions.ParseError(
                f"JSON parse error - the body is nested too deeply (at most {MAX_JSON_DEPTH} levels)."
            )
        return data


# --------------------------------------------------------------------------------------
# Pagination: bounded limit and offset
# --------------------------------------------------------------------------------------
MAX_LIMIT = 1000
MAX_OFFSET = 2**31 - 1
_DIGITS = re.compile(r"^[0-9]{1,19}$")  # the bounds are checked on the number


def bounded_int(request: Any, name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = int(raw) if _DIGITS.match(raw) else None
    if value is None or not minimum <= value <= maximum:
        raise exceptions.ValidationError({name: [f"Must be a whole number from {minimum} to {maximum}."]})
    return value


class Pagination(LimitOffsetPagination):
    """Limit/offset pages with ``limit`` in 1..MAX_LIMIT and ``offset`` in 0..MAX_OFFSET;
    anything else (``limit=abc``, ``limit=9223372036854775808``) is a 400."""

    max_limit = MAX_LIMIT

    def get_limit(self, request: Any) -> int:
        return bounded_int(
            request, self.limit_query_param, default=self.default_limit or 50, minimum=1, maximum=MAX_LIMIT
        )

    def get_offset(self, request: Any) -> int:
        return bounded_int(request, self.offset_query_param, default=0, minimum=0, maximum=MAX_OFFSET)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return pagination_parameters()


def pagination_parameters() -> list[dict[str, Any]]:
    """The two query parameters as OpenAPI parameter objects."""
    return [
        {
            "name": "limit",
            "required": False,
            "in": "query",
            "description": f"Number of results to return per page (1 to {MAX_LIMIT}, default {settings.REST_FRAMEWORK['PAGE_SIZE']}).",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        },
        {
            "name": "offset",
            "required": False,
            "in": "query",
            "description": "The initial index from which to return the results.",
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
        },
    ]


# --------------------------------------------------------------------------------------
# Fields
# --------------------------------------------------------------------------------------
class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans (DRF's turns ``0`` into ``"0"``), so
    that a body the schema calls invalid is refused."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
