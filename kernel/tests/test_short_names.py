"""A team's short name: the rule that derives one from a name (the teams service's, the v1
upcaster's and the migrations' alike) and the rule for one a person chooses."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from kernel import frozen
from kernel.names import clean_short_name, derive_short_name

DERIVED = [
    ("Reds", "RED"),
    ("Straße", "STR"),
    ("Queens Park Rangers", "QPR"),
    ("Real Madrid", "RMA"),
    ("Manchester United", "MUN"),
    ("AZ 67", "A67"),
    ("FC Bayern München", "FBM"),
    ("Nott'm Forest", "NMF"),
    ("東京", "東京"),
    ("A", "AX"),
    ("⚽", "XX"),
    ("Ajax", "AJA"),
]


@pytest.mark.parametrize("name,short", DERIVED)
def test_the_derived_short_name(name, short):
    assert derive_short_name(name) == short
    assert 2 <= len(short) <= 5 and clean_short_name(short) == short


@pytest.mark.parametrize("name,short", DERIVED)
def test_the_migrations_frozen_rule_is_todays_rule(name, short):
    assert frozen.short_name_v1(name) == derive_short_name(name)


@pytest.mark.parametrize("value,stored", [("red", "RED"), ("Az2", "AZ2"), ("ßa", "SSA"), ("東京", "東京")])
def test_a_chosen_short_name_is_trimmed_and_upper_cased(value, stored):
    assert clean_short_name(value) == stored


@pytest.mark.parametrize("value", ["R", "", "ABCDEF", "R D", " RED", "R-D", "R_D", "R\u200bD", 12, None])
def test_a_short_name_of_other_characters_or_lengths_is_refused(value):
    with pytest.raises(ValidationError):
        clean_short_name(value)
