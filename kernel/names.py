"""Names people give things (teams, players, seasons): one rule for every service; and
the rule for short free text (a transfer's cancel reason).

Guarantee: ``clean_name`` returns the form a name is stored in, or raises Django's
``ValidationError`` with a message that says what is wrong. It follows Unicode's guidance
for identifiers people type (UAX #31, UTS #39), widened for the spaces and punctuation of
real names:

- the text is normalized to Unicode NFC, so "Café" typed as ``e`` + combining accent (NFD)
  and as the single character ``é`` (NFC) are the same name;
- leading and trailing white space is removed and inner runs of white space become one
  space ("Real \\u00a0 Madrid" is "Real Madrid");
- refused, never silently removed (a name that hides characters is not what its author
  sees): control characters (Cc: escape, bell, tab, newline ...), surrogates (Cs),
  private-use characters (Co), unassigned code points and noncharacters (Cn), line and
  paragraph separators (Zl, Zp), and invisible formatting characters (Cf: zero-width
  spaces, bidi overrides ...) except where a script or an emoji needs them: ZWNJ and ZWJ
  in the contexts of RFC 5892's CONTEXTJ rules, which UAX #31 adopts (Persian
  "می‌خواهم", Indic conjuncts after a virama), ZWJ inside an emoji ZWJ sequence
  ("👨‍👩‍👧"), and tag characters in an emoji tag sequence (the flag of England);
- a name with nothing visible left (only spaces, or fillers such as U+3164) is refused.

``name_key`` is what uniqueness and search compare: the cleaned name under UTS #39's
NFKC_Casefold (compatibility-normalized, case-folded, default-ignorable characters
removed): "Straße" and "STRASSE", "Café" in NFC and NFD, fullwidth "ＡＢＣ" and "ABC" all
collide. Models store it in a ``name_key`` column with a unique constraint, so the database
holds the rule even against a racing writer.

A team's **short name** (2 to 5 letters or digits of any script, upper-cased: "RED") is a
label for where space is short, not a key: ``clean_short_name`` checks one a person chose,
``derive_short_name`` (the event catalogue's, so that the upcaster of an event from before
short names existed applies the very same rule) makes one from a name.

``clean_text`` is the rule for free text: NFC, trimmed, and the characters that hide or
reorder what a reader sees refused (controls, newlines included; bidi embeddings,
overrides and isolates; private-use, unassigned, noncharacters, surrogates).

The Unicode properties come from ``unicodedata`` (normalization), the ``regex`` package
(general categories, Extended_Pictographic, Default_Ignorable_Code_Point) and ``idna``
(the CONTEXTJ rules and joining types). This module is part of the shared kernel, which
every service may import; it knows nothing of the bus.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import regex
from django.core.exceptions import ValidationError
from idna.core import valid_contextj
from rest_framework import serializers

from events.catalogue import SHORT_NAME_MAX as SHORT_NAME_MAX
from events.catalogue import SHORT_NAME_MIN as SHORT_NAME_MIN
from events.catalogue import derive_short_name as derive_short_name  # the one rule, for the services
from kernel import frozen

MAX_NAME_LENGTH = 100
# The longest key a name may have (the ``name_key`` columns): compatibility normalization
# can lengthen a name (U+FDFA is 18 letters), so the key is bounded on its own.
MAX_KEY_LENGTH = 300

# Categories refused anywhere in a name or a text.
REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cs": "a lone surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned code point or noncharacter",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
FORMAT = "an invisible formatting character"
BIDI_CONTROL = "a bidirectional formatting character"
# Characters of a visible category that nonetheless draw nothing.
BLANK_LOOKING = {"\u115f", "\u1160", "\u2800", "\u3164", "\uffa0"}

ZWNJ, ZWJ = "\u200c", "\u200d"
CANCEL_TAG = "\U000e007f"
_CATEGORIES = {name: regex.compile(rf"\p{{gc={name}}}") for name in ("Cc", "Cs", "Co", "Cn", "Zl", "Zp", "Cf")}
_PICTOGRAPHIC = regex.compile(r"\p{Extended_Pictographic}")
_EMOJI_MODIFIER = regex.compile(r"\p{Emoji_Modifier}|\ufe0f")
_TAG_SPEC = regex.compile(r"[\U000e0020-\U000e007e]")
_IGNORABLE = regex.compile(r"\p{Default_Ignorable_Code_Point}")
_BIDI_CONTROLS = frozenset({"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"})


def _category(char: str) -> str:
    """The general category if it is one of those checked here, else ``""``. The ``regex``
    package's Unicode data is newer than ``unicodedata``'s: a recent emoji is not taken for
    unassigned."""
    for name, pattern in _CATEGORIES.items():
        if pattern.match(char):
            return name
    return ""


def _refusal(text: str, index: int) -> str | None:
    """What is wrong with the character at ``index`` of ``text`` in a name, or ``None``."""
    char = text[index]
    kind = _category(char)
    if not kind:
        return None
    if kind in REFUSED_CATEGORIES:
        return REFUSED_CATEGORIES[kind]
    if _format_allowed(text, index):
        return None
    return BIDI_CONTROL if unicodedata.bidirectional(char) in _BIDI_CONTROLS else FORMAT


def _format_allowed(text: str, index: int) -> bool:
    """Whether the format character at ``index`` is one a script or an emoji needs there."""
    char = text[index]
    if char in (ZWNJ, ZWJ):
        try:
            if valid_contextj(text, index):
                return True
        except (ValueError, IndexError):
            pass
        return char == ZWJ and _in_emoji_zwj_sequence(text, index)
    if _TAG_SPEC.fullmatch(char) or char == CANCEL_TAG:
        return _in_emoji_tag_sequence(text, index)
    return False


def _in_emoji_zwj_sequence(text: str, index: int) -> bool:
    before = index - 1
    while before >= 0 and _EMOJI_MODIFIER.fullmatch(text[before]):
        before -= 1
    after = index + 1
    return (
        before >= 0
        and after < len(text)
        and _PICTOGRAPHIC.fullmatch(text[before]) is not None
        and _PICTOGRAPHIC.fullmatch(text[after]) is not None
    )


def _in_emoji_tag_sequence(text: str, index: int) -> bool:
    """The tag character at ``index`` is inside ``base tag_spec+ cancel_tag`` (UTS #51),
    the base an emoji."""
    end = index
    while end < len(text) and _TAG_SPEC.fullmatch(text[end]):
        end += 1
    if end == len(text) or text[end] != CANCEL_TAG:
        return False
    start = end - 1
    while start >= 0 and _TAG_SPEC.fullmatch(text[start]):
        start -= 1
    return start < end - 1 and start >= 0 and _PICTOGRAPHIC.fullmatch(text[start]) is not None


def clean_name(value: object, *, label: str = "Name", max_length: int = MAX_NAME_LENGTH) -> str:
    """The stored form of ``value`` (see the module docstring); ``ValidationError`` with
    a message starting with ``label`` otherwise."""
    if not isinstance(value, str):
        raise ValidationError(f"{label} must be text.")
    text = unicodedata.normalize("NFC", value)
    for index, char in enumerate(text):
        kind = _refusal(text, index)
        if kind:
            raise ValidationError(
                f"{label} contains {kind} (U+{ord(char):04X} at position {index + 1}); "
                "use letters, digits, spaces and punctuation only."
            )
    text = " ".join(text.split())
    if not text:
        raise ValidationError(f"{label} cannot be empty.")
    if not any(_visible(char) for char in text):
        raise ValidationError(f"{label} has no visible characters.")
    if len(text) > max_length:
        raise ValidationError(f"{label} has {len(text)} characters; at most {max_length} are allowed.")
    if len(name_key(text)) > MAX_KEY_LENGTH:
        raise ValidationError(f"{label} is too long once normalized; use fewer or plainer characters.")
    return text


def name_key(value: str) -> str:
    """The form two names are compared in: NFKC_Casefold (UTS #39; NFKC, case-folded,
    default-ignorable characters removed, to a fixed point), white space collapsed as
    ``clean_name`` does. The migrations that stored these keys call the same function."""
    return frozen.name_key_nfkc_casefold(value)


def clean_short_name(value: object, *, label: str = "Short name") -> str:
    """The stored form of a short name someone chose: NFC, upper-cased, 2 to 5 letters or
    digits (no space, even around them); ``ValidationError`` naming ``label`` otherwise."""
    if not isinstance(value, str):
        raise ValidationError(f"{label} must be text.")
    text = unicodedata.normalize("NFC", unicodedata.normalize("NFC", value).upper())
    if not all(char.isalpha() or char.isdecimal() for char in text):
        raise ValidationError(f"{label} may hold letters and digits only (no spaces or punctuation).")
    if not SHORT_NAME_MIN <= len(text) <= SHORT_NAME_MAX:
        raise ValidationError(
            f"{label} has {len(text)} characters; it must have {SHORT_NAME_MIN} to {SHORT_NAME_MAX} letters or digits."
        )
    return text


def clean_text(value: object, *, label: str, max_length: int) -> str:
    """Short free text (a reason): see the module docstring."""
    if not isinstance(value, str):
        raise ValidationError(f"{label} must be text.")
    text = unicodedata.normalize("NFC", value).strip()
    for index, char in enumerate(text):
        kind = REFUSED_CATEGORIES.get(_category(char))
        if kind is None and unicodedata.bidirectional(char) in _BIDI_CONTROLS:
            kind = BIDI_CONTROL
        if kind:
            raise ValidationError(
                f"{label} contains {kind} (U+{ord(char):04X} at position {index + 1}); write it on one line, "
                "without control characters."
            )
    if len(text) > max_length:
        raise ValidationError(f"{label} has {len(text)} characters; at most {max_length} are allowed.")
    return text


def _visible(char: str) -> bool:
    return unicodedata.category(char)[0] in "LNPS" and char not in BLANK_LOOKING and not _IGNORABLE.fullmatch(char)


class NameField(serializers.CharField):
    """A DRF field for a name: text only (no numbers or booleans turned into text),
    cleaned by ``clean_name`` with the same messages as the services, so a serializer and
    a service can never disagree on what a valid name is."""

    def __init__(self, *, label: str = "Name", **kwargs: Any) -> None:
        self.name_label = label
        kwargs.setdefault("max_length", MAX_NAME_LENGTH)
        # Not blank, so the schema says so (minLength 1): "" is a 400 the schema foretells.
        messages = {"blank": f"{label} cannot be empty.", **kwargs.pop("error_messages", {})}
        super().__init__(allow_blank=False, trim_whitespace=False, error_messages=messages, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            return clean_name(data, label=self.name_label, max_length=self.max_length or MAX_NAME_LENGTH)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None


class ShortNameField(serializers.CharField):
    """A DRF field for a short name, cleaned by ``clean_short_name`` (the services' messages)."""

    def __init__(self, *, label: str = "Short name", **kwargs: Any) -> None:
        self.name_label = label
        kwargs.setdefault("min_length", SHORT_NAME_MIN)
        kwargs.setdefault("max_length", SHORT_NAME_MAX)
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            return clean_short_name(data, label=self.name_label)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None

    def run_validators(self, value: Any) -> None:
        # clean_short_name checked the length with its own message: none twice.
        return None


class TextField(serializers.CharField):
    """A DRF field for short free text, cleaned by ``clean_text``: text only (no numbers
    or booleans turned into text)."""

    def __init__(self, *, label: str, **kwargs: Any) -> None:
        self.text_label = label
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            return clean_text(data, label=self.text_label, max_length=self.max_length or MAX_NAME_LENGTH)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
