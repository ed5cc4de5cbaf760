"""Names people give things (teams, players, seasons): one rule for every service.

Guarantee: ``clean_name`` returns the form a name is stored in, or raises Django's
``ValidationError`` with a message that says what is wrong:

- the text is normalized to Unicode NFC, so "Café" typed as ``e`` + combining accent (NFD)
  and as the single character ``é`` (NFC) are the same name;
- leading and trailing white space is removed and inner runs of white space become one
  space ("Real \\u00a0 Madrid" is "Real Madrid");
- control characters (Unicode category Cc: escape, bell, tab, newline ...), format
  characters (Cf: zero-width spaces and joiners, bidi overrides ...), surrogates (Cs)
  and line/paragraph separators (Zl, Zp) are refused, never silently removed: a name
  that hides characters is not what its author sees;
- a name with nothing visible left (only spaces, or fillers such as U+3164) is refused.

``name_key`` is what uniqueness compares: the cleaned name, case-folded (``"Straße"`` and
``"STRASSE"`` collide) and normalized again. Models store it in a ``name_key`` column
with a unique constraint, so the database holds the rule even against a racing writer.

This module lives in ``events`` only because it is the one package every service may
import; it knows nothing of the bus.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from django.core.exceptions import ValidationError
from rest_framework import serializers

MAX_NAME_LENGTH = 100

# Categories refused anywhere in a name.
REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character",
    "Cs": "a lone surrogate",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
# Characters of a visible category that nonetheless draw nothing.
BLANK_LOOKING = {"\u115f", "\u1160", "\u2800", "\u3164", "\uffa0"}


def clean_name(value: object, *, label: str = "Name", max_length: int = MAX_NAME_LENGTH) -> str:
    """The stored form of ``value`` (see the module docstring); ``ValidationError`` with
    a message starting with ``label`` otherwise."""
    if not isinstance(value, str):
        raise ValidationError(f"{label} must be text.")
    text = unicodedata.normalize("NFC", value)
    for position, char in enumerate(text, start=1):
        kind = REFUSED_CATEGORIES.get(unicodedata.category(char))
        if kind:
            raise ValidationError(
                f"{label} contains {kind} (U+{ord(char):04X} at position {position}); "
                "use letters, digits, spaces and punctuation only."
            )
    text = " ".join(text.split())
    if not text:
        raise ValidationError(f"{label} cannot be empty.")
    if not any(_visible(char) for char in text):
        raise ValidationError(f"{label} has no visible characters.")
    if len(text) > max_length:
        raise ValidationError(f"{label} has {len(text)} characters; at most {max_length} are allowed.")
    return text


def name_key(value: str) -> str:
    """The form two names are compared in: NFC, case-folded, NFC again (folding can
    decompose), with white space collapsed as ``clean_name`` does."""
    text = " ".join(unicodedata.normalize("NFC", value).split())
    return unicodedata.normalize("NFC", text.casefold())


def _visible(char: str) -> bool:
    return unicodedata.category(char)[0] in "LNPS" and char not in BLANK_LOOKING


class NameField(serializers.CharField):
    """A DRF field for a name: text only (no numbers or booleans turned into text),
    cleaned by ``clean_name`` with the same messages as the services, so a serializer and
    a service can never disagree on what a valid name is."""

    def __init__(self, *, label: str = "Name", **kwargs: Any) -> None:
        self.name_label = label
        kwargs.setdefault("max_length", MAX_NAME_LENGTH)
        super().__init__(allow_blank=True, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            return clean_name(data, label=self.name_label, max_length=self.max_length or MAX_NAME_LENGTH)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
