"""Test helpers for the API's error format (RFC 9457 problem documents, ``kernel.api``)."""

from __future__ import annotations

import json
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem_fields(response: Any) -> dict[str, list[str]]:
    """A problem response's messages by where they point, in the shape tests read best:
    ``{"name": [...], "players/0/name": [...]}``; a message about the whole request under
    ``non_field_errors``; a problem without ``errors`` as ``{"detail": detail}``. Fails
    unless the response is a problem document."""
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE, (response["Content-Type"], response.content[:300])
    body = json.loads(response.content)
    assert body["status"] == response.status_code
    if "errors" not in body:
        return {"detail": body["detail"]}
    fields: dict[str, list[str]] = {}
    for error in body["errors"]:
        where = error.get("parameter") or error.get("pointer", "").lstrip("/") or "non_field_errors"
        fields.setdefault(where, []).append(error["detail"])
    return fields
