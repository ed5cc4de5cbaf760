"""One rule for names: NFC, no control or format characters, something visible; the key
uniqueness compares is case-folded."""

from __future__ import annotations

import unicodedata

import pytest
from django.core.exceptions import ValidationError

from kernel.names import clean_name, name_key

NFC_CAFE = unicodedata.normalize("NFC", "Café")
NFD_CAFE = unicodedata.normalize("NFD", "Café")


def test_nfd_and_nfc_spellings_clean_to_the_same_name():
    assert NFD_CAFE != NFC_CAFE
    assert clean_name(NFD_CAFE) == clean_name(NFC_CAFE) == NFC_CAFE


def test_white_space_is_trimmed_and_collapsed():
    assert clean_name("  Real \u00a0  Madrid ") == "Real Madrid"


@pytest.mark.parametrize(
    "name, kind",
    [
        ("Re\u001b[31mds\u0007", "a control character (U+001B at position 3)"),
        ("Reds\u0007", "a control character (U+0007"),
        ("Re\tds", "a control character (U+0009"),
        ("Re\u200bds", "an invisible formatting character (U+200B"),
        ("\u202eSder", "an invisible formatting character (U+202E"),
        ("Reds\u2028", "a line separator"),
    ],
)
def test_control_and_format_characters_are_refused(name, kind):
    with pytest.raises(ValidationError) as exc:
        clean_name(name, label="Team name")
    assert exc.value.messages[0].startswith(f"Team name contains {kind}")


@pytest.mark.parametrize("name", ["\u200b\u200c\u200d"])
def test_a_name_of_only_format_characters_is_refused(name):
    with pytest.raises(ValidationError):
        clean_name(name)


@pytest.mark.parametrize("name", ["", "   ", "\u3000"])
def test_an_empty_name_is_refused(name):
    with pytest.raises(ValidationError) as exc:
        clean_name(name, label="Season name")
    assert exc.value.messages == ["Season name cannot be empty."]


@pytest.mark.parametrize("name", ["\u3164", "\u2800\u2800", "\u0301"])
def test_a_name_with_nothing_visible_is_refused(name):
    with pytest.raises(ValidationError) as exc:
        clean_name(name)
    assert exc.value.messages == ["Name has no visible characters."]


def test_length_is_counted_after_normalization():
    assert clean_name("e\u0301" * 100) == "é" * 100
    with pytest.raises(ValidationError, match="101 characters"):
        clean_name("x" * 101)


def test_non_text_is_refused():
    with pytest.raises(ValidationError, match="must be text"):
        clean_name(5)


@pytest.mark.parametrize(
    "a, b", [(NFC_CAFE, NFD_CAFE.upper()), ("Straße", "STRASSE"), ("Reds", "REDS"), ("Real  Madrid", "real madrid")]
)
def test_keys_fold_case_and_normalization(a, b):
    assert name_key(a) == name_key(b)


def test_different_names_have_different_keys():
    assert name_key("Reds") != name_key("Blues")
