"""schemathesis hooks of league/tests/test_fuzz.py (``SCHEMATHESIS_HOOKS``).

Names, short names and short free text: the schema gives them the formats ``league-name``,
``league-short-name`` and ``league-text`` (a regular expression of the rule is too large for a fuzzer to draw from);
the strategies below draw what the rules accept.

A client sends a new ``Idempotency-Key`` with each new request: the schema cannot say that a
key is unique per request, so a fuzzer drawing keys from it sends one key with many bodies,
which the API rightly refuses (422). Each schema-valid request gets a fresh key here; invalid
keys (negative cases) are sent as drawn, and must be refused (400).
"""

from __future__ import annotations

import uuid

import schemathesis
from hypothesis import strategies as st

HEADER = "Idempotency-Key"
# Categories kernel.names refuses (its exceptions for ZWJ/ZWNJ and emoji tags aside).
REFUSED = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def _accepted(text: str) -> bool:
    from django.core.exceptions import ValidationError

    from kernel.names import clean_name

    try:
        clean_name(text)
    except ValidationError:
        return False
    return True


# The format the schema gives a name (kernel/openapi.py): what kernel.names.clean_name accepts.
schemathesis.openapi.format(
    "league-name",
    st.text(st.characters(exclude_categories=REFUSED), min_size=1, max_size=100).filter(_accepted),
)


def _accepted_text(text: str) -> bool:
    from django.core.exceptions import ValidationError

    from kernel.names import clean_text

    try:
        clean_text(text, label="Text", max_length=500)
    except ValidationError:
        return False
    return True


# The format of short free text (a cancel reason, kernel.names.TextField): what clean_text accepts.
schemathesis.openapi.format(
    "league-text",
    st.text(st.characters(exclude_categories=REFUSED), max_size=200).filter(_accepted_text),
)


def _accepted_short_name(text: str) -> bool:
    from django.core.exceptions import ValidationError

    from kernel.names import clean_short_name

    try:
        clean_short_name(text)
    except ValidationError:
        return False
    return True


# The format of a team's short name (kernel.names.ShortNameField): letters and digits that
# clean_short_name accepts (upper-casing may lengthen one: "ß" is "SS").
schemathesis.openapi.format(
    "league-short-name",
    st.text(st.characters(categories=("Lu", "Ll", "Lt", "Lm", "Lo", "Nd")), min_size=2, max_size=5).filter(
        _accepted_short_name
    ),
)


@schemathesis.hook
def before_call(context, case, kwargs):
    meta = case.meta
    if case.headers and HEADER in case.headers and (meta is None or meta.generation.mode.is_positive):
        case.headers[HEADER] = str(uuid.uuid4())
