"""One rule for names: NFC, no control or format characters (but the joiners a script or an
emoji needs), something visible; the key uniqueness compares is NFKC_Casefold."""

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
        ("\u202eSder", "a bidirectional formatting character (U+202E"),
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


@pytest.mark.parametrize(
    "name",
    [
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian: ZWNJ between joining letters
        "\u0915\u094d\u200d\u0937",  # Devanagari: ZWJ after a virama
        "\u0d28\u0d4d\u200c\u0d28",  # Malayalam: ZWNJ after a virama
        "\U0001f468\u200d\U0001f469\u200d\U0001f467 United",  # an emoji ZWJ sequence
        "\U0001f44d\U0001f3fd\u200d\U0001f525 Club",  # with a skin-tone modifier
        "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f Lions",  # flag of England
        "\u2764\ufe0f Hearts",
    ],
)
def test_joiners_and_tags_a_script_or_an_emoji_needs_are_kept(name):
    assert clean_name(name) == name


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("Re\u200dds", "an invisible formatting character (U+200D at position 3)"),  # ZWJ between Latin letters
        ("Reds\u200c", "an invisible formatting character (U+200C"),
        ("Reds\U000e0067\U000e007f", "an invisible formatting character (U+E0067"),  # tags without an emoji
        ("\U0001f3f4\U000e0067 Lions", "an invisible formatting character (U+E0067"),  # no cancel tag
        ("Reds\ue000", "a private-use character (U+E000 at position 5)"),
        ("Reds\U000ffffd", "a private-use character (U+FFFFD"),
        ("Reds\u0378", "an unassigned code point or noncharacter (U+0378"),
        ("Reds\ufdd0", "an unassigned code point or noncharacter (U+FDD0"),
        ("Reds\uffff", "an unassigned code point or noncharacter (U+FFFF"),
        ("Reds\U0010ffff", "an unassigned code point or noncharacter (U+10FFFF"),
        ("Reds\u2067x\u2069", "a bidirectional formatting character (U+2067"),
    ],
)
def test_what_is_neither_assigned_nor_visible_is_refused(name, kind):
    with pytest.raises(ValidationError) as exc:
        clean_name(name, label="Team name")
    assert exc.value.messages[0].startswith(f"Team name contains {kind}")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("\uff21\uff22\uff23", "ABC"),  # fullwidth
        ("Team \u2460", "TEAM 1"),  # a circled digit
        ("Team\u2161", "TeamII"),  # a Roman numeral
        ("\U0001f44d\ufe0f", "\U0001f44d"),  # emoji presentation selector
        ("\U0001f468\u200d\U0001f469", "\U0001f468\U0001f469"),  # joiners do not tell names apart
    ],
)
def test_keys_are_nfkc_casefold(a, b):
    assert name_key(a) == name_key(b)


def test_a_name_whose_key_outgrows_its_column_is_refused():
    with pytest.raises(ValidationError, match="too long once normalized"):
        clean_name("\ufdfa" * 20)
