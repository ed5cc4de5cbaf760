"""Whether a change to the event catalogue keeps running producers and consumers working.

During a rolling upgrade two versions of the code run at once: an old consumer meets events
of the new producer, a new consumer meets events the old producer wrote (and events still in
the outbox or a dead-letter queue). ``breaking_changes(old, new)`` lists what would break one
of them, comparing two catalogues described by ``describe``:

- a type removed, or its publishing service or aggregate changed (a type string is never
  reused; retire it instead);
- a version removed, or the current version lowered;
- in a version that exists in both, a field removed, a field's type or allowed values
  changed, or a field made required (old producers do not send it);
- a new version that drops a field of the version before it or changes its type (an old
  consumer reads a newer version as the newest one it knows).

Adding a type, a version, or an optional field is compatible. ``load`` reads the catalogue
module of another commit (``git show REF:events/catalogue.py``) without importing the rest of
the project, so a catalogue from before versions existed compares too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
import uuid
from pathlib import Path
from typing import Any

CATALOGUE_PATH = "events/catalogue.py"

Description = dict[str, dict[str, Any]]


def describe(event_types: dict[str, Any]) -> Description:
    """{type: {source, aggregate, retired, version, versions: {n: schema}}} of a catalogue's
    ``EVENT_TYPES`` (any version of the module)."""
    out: Description = {}
    for name, et in event_types.items():
        versions = {o.version: o.schema for o in getattr(et, "older", ())}
        versions[et.version] = et.schema
        out[name] = {
            "source": et.source,
            "aggregate": et.aggregate,
            "retired": bool(getattr(et, "retired", False)),
            "version": et.version,
            "versions": {int(v): json.loads(json.dumps(s)) for v, s in sorted(versions.items())},
        }
    return out


def load(ref: str, *, root: Path) -> Description:
    """The catalogue at git ``ref``, described. Raises ``ValueError`` naming the ref when
    git cannot show it."""
    return describe(load_module(ref, root=root).EVENT_TYPES)


def load_module(ref: str, *, root: Path) -> types.ModuleType:
    """The catalogue module as it was at git ``ref``, executed on its own: what a producer or
    consumer running that commit reads events with (its ``accept``, if it had one)."""
    shown = subprocess.run(
        ["git", "show", f"{ref}:{CATALOGUE_PATH}"], cwd=root, capture_output=True, text=True, check=False
    )
    if shown.returncode != 0:
        raise ValueError(f"git cannot show {CATALOGUE_PATH} at {ref!r}: {shown.stderr.strip() or 'no such ref'}")
    name = f"_catalogue_at_{uuid.uuid4().hex}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    try:
        exec(compile(shown.stdout, f"{ref}:{CATALOGUE_PATH}", "exec"), module.__dict__)
        return module
    finally:
        del sys.modules[name]


def history(*, root: Path) -> list[str]:
    """Every commit that changed the catalogue, newest first."""
    log = subprocess.run(
        ["git", "log", "--format=%H", "--", CATALOGUE_PATH], cwd=root, capture_output=True, text=True, check=False
    )
    return log.stdout.split()


def _type_of(schema: dict[str, Any]) -> Any:
    return {key: schema[key] for key in ("type", "enum", "const", "format") if key in schema}


def _fields(path: str, old: dict[str, Any], new: dict[str, Any], *, same_version: bool) -> list[str]:
    """What ``new`` breaks of ``old`` (two JSON Schemas of one field or object)."""
    problems = []
    if _type_of(old) != _type_of(new):
        problems.append(f"{path or 'data'}: type changed from {_type_of(old)} to {_type_of(new)}")
        return problems
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for prop, schema in old_props.items():
        where = f"{path}/{prop}" if path else prop
        if prop not in new_props:
            problems.append(f"{where}: removed")
        else:
            problems += _fields(where, schema, new_props[prop], same_version=same_version)
    if same_version:
        added = sorted(set(new.get("required", [])) - set(old.get("required", [])))
        if added:
            problems.append(f"{path or 'data'}: now requires {', '.join(added)} (producers of this version do not send it)")
    if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
        problems += _fields(f"{path}[]", old["items"], new["items"], same_version=same_version)
    return problems


def breaking_changes(old: Description, new: Description) -> list[str]:
    """Every change from ``old`` to ``new`` that would break a running producer or consumer,
    one line each naming the type, the version and the field."""
    problems = []
    for name, before in sorted(old.items()):
        after = new.get(name)
        if after is None:
            problems.append(f"{name}: removed (retire it: retired=True keeps the type string from being reused)")
            continue
        for key in ("source", "aggregate"):
            if before[key] != after[key]:
                problems.append(f"{name}: {key} changed from {before[key]!r} to {after[key]!r} (a type is never reused)")
        if after["version"] < before["version"]:
            problems.append(f"{name}: current version went back from {before['version']} to {after['version']}")
        for version, schema in before["versions"].items():
            if version not in after["versions"]:
                problems.append(f"{name} v{version}: removed (events of it may still be in an outbox or a DLQ)")
                continue
            problems += [f"{name} v{version}: {p}" for p in _fields("", schema, after["versions"][version], same_version=True)]
    for name, after in sorted(new.items()):
        versions = sorted(after["versions"])
        known_before = set(old.get(name, {}).get("versions", {}))
        for previous, version in zip(versions, versions[1:], strict=False):
            if version in known_before:
                continue
            problems += [
                f"{name} v{version}: {p} since v{previous} (an older consumer reads v{version} as v{previous})"
                for p in _fields("", after["versions"][previous], after["versions"][version], same_version=False)
            ]
    return problems
