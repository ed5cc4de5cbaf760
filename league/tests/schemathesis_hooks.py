"""schemathesis hooks of league/tests/test_fuzz.py (``SCHEMATHESIS_HOOKS``).

Names: the schema gives them the format ``league-name`` (a regular expression of the rule
is too large for a fuzzer to draw from); the strategy below draws names the rule accepts.

A client sends a new ``Idempotency-Key`` with each new request: the schema cannot say that a
key is unique per request, so a fuzzer drawing keys from it sends one key with many bodies,
which the API rightly refuses (422). Each schema-valid request gets a fresh key here; invalid
keys (negative cases) are sent as drawn, and must be refused (400).
"""

from __future__ import annotations

import unicodedata
import uuid

import schemathesis
from hypothesis import strategies as st

HEADER = "Idempotency-Key"
REFUSED = ("Cc", "Cf", "Cs", "Zl", "Zp")  # kernel.names.REFUSED_CATEGORIES


def _visible(char: str) -> bool:
    return unicodedata.category(char)[0] in "LNPS" and char not in "\u115f\u1160\u2800\u3164\uffa0"


# The format the schema gives a name (kernel/openapi.py): what kernel.names.clean_name accepts.
schemathesis.openapi.format(
    "league-name",
    st.text(st.characters(exclude_categories=REFUSED), min_size=1, max_size=100).filter(
        lambda text: any(_visible(c) for c in text) and len(" ".join(unicodedata.normalize("NFC", text).split())) <= 100
    ),
)


@schemathesis.hook
def before_call(context, case, kwargs):
    meta = case.meta
    if case.headers and HEADER in case.headers and (meta is None or meta.generation.mode.is_positive):
        case.headers[HEADER] = str(uuid.uuid4())
