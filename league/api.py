"""API-wide pieces: the exception handler that keeps every error JSON and never a 500
for bad input."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus Django's ``ValidationError`` (raised by ``full_clean`` in a
    service) turned into a 400 with field messages."""
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            detail: Any = {field: [str(m) for m in msgs] for field, msgs in exc.message_dict.items()}
            if "__all__" in detail:
                detail["non_field_errors"] = detail.pop("__all__")
        else:
            detail = {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    response = drf_exception_handler(exc, context)
    if response is not None and response.status_code == status.HTTP_503_SERVICE_UNAVAILABLE:
        response.data = {"detail": str(response.data.get("detail", "Service unavailable."))}
    return response


# Errors raised before a DRF view runs (no URL matched, e.g. /api/teams/-1/ where the path
# wants a positive int; a request Django refuses, e.g. too many form fields) are answered
# by Django's handlers, in HTML. Under /api/ they are JSON like every other API error.
def not_found(request: Any, exception: Exception | None = None) -> Any:
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def bad_request(request: Any, exception: Exception | None = None) -> Any:
    if request.path.startswith("/api/"):
        # The documented 400 shape: messages by field, the whole request's under non_field_errors.
        return JsonResponse({"non_field_errors": ["The request could not be read."]}, status=400)
    return defaults.bad_request(request, exception)


def server_error(request: Any) -> Any:
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Server error."}, status=500)
    return defaults.server_error(request)
