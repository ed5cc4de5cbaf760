"""schemathesis hooks of league/tests/test_fuzz.py (``SCHEMATHESIS_HOOKS``).

A client sends a new ``Idempotency-Key`` with each new request: the schema cannot say that a
key is unique per request, so a fuzzer drawing keys from it sends one key with many bodies,
which the API rightly refuses (422). Each schema-valid request gets a fresh key here; invalid
keys (negative cases) are sent as drawn, and must be refused (400).
"""

from __future__ import annotations

import uuid

import schemathesis

HEADER = "Idempotency-Key"


@schemathesis.hook
def before_call(context, case, kwargs):
    meta = case.meta
    if case.headers and HEADER in case.headers and (meta is None or meta.generation.mode.is_positive):
        case.headers[HEADER] = str(uuid.uuid4())
