"""What migrations import, frozen.

A migration runs again on every new database, long after it was written, so it must not
follow today's code. The functions here keep the behaviour they had when the first
migration used them: a change of behaviour is a new function with a new name, and the
migrations written before it keep calling the old one. Live code may call a function here
only while it needs exactly that behaviour (``kernel.roles`` grants with these).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any


def name_key_nfc_casefold(value: str) -> str:
    """A name's key as the first name-key migrations stored it: NFC, white space collapsed,
    case-folded, NFC again."""
    text = " ".join(unicodedata.normalize("NFC", value).split())
    return unicodedata.normalize("NFC", text.casefold())


def name_key_nfkc_casefold(value: str) -> str:
    """A name's key under UTS #39's NFKC_Casefold, as the NFKC name-key migrations stored
    it: NFKC, case-folded, default-ignorable characters removed, repeated to a fixed point,
    white space collapsed."""
    import regex

    ignorable = regex.compile(r"\p{Default_Ignorable_Code_Point}")
    text = unicodedata.normalize("NFC", value)
    for _ in range(4):
        folded = ignorable.sub("", unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold()))
        if folded == text:
            break
        text = folded
    return " ".join(text.split())


def short_name_v1(name: str) -> str:
    """A team's short name derived from its name, as the short-name migrations stored it
    (the rule of events.catalogue.derive_short_name when they were written): the upper-cased
    words (runs of letters and digits); one word gives its first three characters, more the
    initials of the first three, filled up to three from the rest of the last of them; at
    most five characters, padded with "X" to two."""
    words: list[str] = []
    current = ""
    for char in name.upper():
        if char.isalpha() or char.isdecimal():
            current += char
        elif current:
            words.append(current)
            current = ""
    if current:
        words.append(current)
    if len(words) <= 1:
        short = "".join(words)[:3]
    else:
        firsts = words[:3]
        short = "".join(w[0] for w in firsts)
        short += firsts[-1][1 : 1 + 3 - len(short)]
    return short[:5].ljust(2, "X")


def grant_roles(apps: Any, app_label: str, roles: Mapping[str, Iterable[str]]) -> None:
    """Create the groups of ``roles`` if missing and add ``app_label``'s permissions to
    them, with a migration's historical registry ``apps``. The permissions are created
    first: Django otherwise creates them only after the whole ``migrate`` run."""
    from django.contrib.auth.management import create_permissions

    app_config = apps.get_app_config(app_label)
    if getattr(app_config, "models_module", None) is None:
        app_config.models_module = True  # a historical config has none; create_permissions skips those
    create_permissions(app_config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group_name, codenames in roles.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        codenames = list(codenames)
        perms = list(Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames))
        missing = set(codenames) - {p.codename for p in perms}
        if missing:
            raise LookupError(f"{app_label}: no permissions {sorted(missing)} for the role {group_name}.")
        group.permissions.add(*perms)


def revoke_roles(apps: Any, app_label: str, roles: Mapping[str, Iterable[str]]) -> None:
    """Undo ``grant_roles``: take ``app_label``'s permissions away from the groups of ``roles``."""
    Group = apps.get_model("auth", "Group")
    for group in Group.objects.filter(name__in=roles):
        group.permissions.remove(*group.permissions.filter(content_type__app_label=app_label))
