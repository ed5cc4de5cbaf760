"""Copying one service's data from the monolith's database to its own, and proving the copy.

What is the service's data (``owned``):

- every table of its Django app (models and their many-to-many tables);
- its part of the bus's tables: the outbox rows of the aggregates it owns (the catalogue's
  ``source``), the inbox rows of its handlers, and the sequence counters of its aggregates,
  so that its next event continues each subject's sequence and a redelivered event is still
  recognised as handled;
- the accounts that call it: users, their role memberships (by group name) and direct
  permissions (by app label and codename), and API tokens, so that a client's token keeps
  working through the front door (admin sessions are signed cookies: the same ids and
  password hashes keep an admin login valid on the moved service).

Guarantees:

- One consistent snapshot: everything is read in one transaction of the source (REPEATABLE
  READ on PostgreSQL; SQLite's read transaction is a snapshot), and written in one
  transaction of the target, which first removes any rows of the service it holds (a rerun
  after a crash starts clean).
- Nothing is changed on the way: ``auto_now`` fields keep their values, primary keys are
  kept (and the target's id sequences moved past them), so every reference stays valid.
  Into a database other services write too (the way back), the bus's rows take new ids
  from its sequences instead, and those sequences are left where its writers took them.
- Verified: per table, the row count and a SHA-256 of every row's values (normalised, so
  SQLite and PostgreSQL agree) are computed on the source snapshot and read back from the
  committed target; any difference is an error naming the table.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management.color import no_style
from django.db import connections, models, transaction
from django.db.models import Q

from events import catalogue
from events.models import InboxMessage, OutboxMessage, OutboxState, SubjectSequence

BATCH = 1000

# Names the parts of a copy to the caller's clock (``split_service`` prints each inside the
# pause): ``phase("copy the rows")`` wraps that part.
PhaseTimer = Callable[[str], AbstractContextManager[Any]]
COPY_PHASES = ("remove the target's rows", "copy the rows", "reset the id sequences", "verify the copy")


def no_phase(name: str) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()


class CopyError(RuntimeError):
    pass


@dataclass
class Part:
    """One table's share of the service: which model, which rows."""

    label: str
    model: type[models.Model]
    where: Q | None = None  # None: every row
    # A table other services share (the bus's): rows copied into a database that other
    # services also write (the way back into the monolith) get new ids there, and are
    # identified by this natural key instead. Nothing refers to these ids.
    natural: tuple[str, ...] = ()

    def rows(self, using: str, *, renumbered: bool = False) -> models.QuerySet:
        qs = self.model._base_manager.using(using).order_by(*(self.natural if renumbered else ("pk",)))
        return qs.filter(self.where) if self.where is not None else qs

    def renumbered(self, shared_target: bool) -> bool:
        return shared_target and bool(self.natural)


@dataclass
class TableReport:
    label: str
    rows: int
    checksum: str


def aggregates_of(service: str) -> list[str]:
    return sorted({et.aggregate for et in catalogue.EVENT_TYPES.values() if et.source == service and not et.retired})


def _aggregate_rows(field: str, service: str) -> Q:
    q = Q(pk__in=[])
    for aggregate in aggregates_of(service):
        q |= Q(**{f"{field}__startswith": f"{aggregate}:"})
    return q


def owned(service: str, *, accounts: bool = True, history: bool = True) -> list[Part]:
    """The parts of ``service``'s data, in an order that keeps foreign keys satisfiable.
    ``accounts=False`` (the way back into the monolith): the monolith keeps its own.
    ``history=False``: without the outbox rows already published (``copy_history`` brings
    them later, outside the pause: nothing needs them to publish or handle an event)."""
    app = apps.get_app_config(service)
    parts = [Part(f"{service}.{m._meta.model_name}", m) for m in app.get_models(include_auto_created=True)]
    user = get_user_model()
    from rest_framework.authtoken.models import Token

    parts += [
        Part(
            "events.outboxmessage",
            OutboxMessage,
            _aggregate_rows("aggregate_key", service) & (Q() if history else ~Q(state=OutboxState.PUBLISHED)),
            ("event_id",),
        ),
        Part(
            "events.inboxmessage",
            InboxMessage,
            Q(service=service) | (Q(service="") & Q(handler__startswith=f"{service}.")),
            ("event_id", "handler"),
        ),
        Part("events.subjectsequence", SubjectSequence, _aggregate_rows("key", service)),
    ]
    if accounts:
        parts += [Part("auth.user", user), Part("authtoken.token", Token)]
    return parts


# ----------------------------------------------------------------------- checksums
def _norm(field: models.Field, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        places = getattr(field, "decimal_places", None)
        return format(value.quantize(decimal.Decimal(1).scaleb(-places)) if places is not None else value, "f")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    if isinstance(field, models.JSONField):
        return json.dumps(value, sort_keys=True)
    return value


def row_values(obj: models.Model, *, without_pk: bool = False) -> list[Any]:
    return [_norm(f, getattr(obj, f.attname)) for f in obj._meta.concrete_fields if not (without_pk and f.primary_key)]


def checksum(objs: Iterable[models.Model], *, without_pk: bool = False) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    for obj in objs:
        digest.update(json.dumps(row_values(obj, without_pk=without_pk), default=str).encode())
        digest.update(b"\n")
        count += 1
    return count, digest.hexdigest()


# --------------------------------------------------------------------------- copying
@contextlib.contextmanager
def snapshot(using: str) -> Iterator[None]:
    """A read transaction that sees one moment of ``using`` throughout."""
    with transaction.atomic(using=using):
        if connections[using].vendor == "postgresql":
            with connections[using].cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


@contextlib.contextmanager
def _keep_timestamps(model: type[models.Model]) -> Iterator[None]:
    """``bulk_create`` would stamp ``auto_now``/``auto_now_add`` fields with the copy's time."""
    changed = [
        f for f in model._meta.concrete_fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
    ]
    saved = [(f, getattr(f, "auto_now", False), getattr(f, "auto_now_add", False)) for f in changed]
    for f in changed:
        f.auto_now = f.auto_now_add = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for f, now, now_add in saved:
            f.auto_now, f.auto_now_add = now, now_add  # type: ignore[attr-defined]


def _memberships(source: str, target: str) -> tuple[list[Any], list[Any], list[str]]:
    """User-group and user-permission rows for the target, mapped by natural key (group
    name; app label + codename): the two databases number groups and permissions apart."""
    user = get_user_model()
    from django.contrib.auth.models import Group, Permission

    groups = dict(Group.objects.using(target).values_list("name", "pk"))
    perms = {
        (app, code): pk
        for app, code, pk in Permission.objects.using(target).values_list("content_type__app_label", "codename", "pk")
    }
    skipped: list[str] = []
    ug_model = user.groups.through
    up_model = user.user_permissions.through
    ug, up = [], []
    for user_id, name in ug_model.objects.using(source).values_list("user_id", "group__name"):
        if name in groups:
            ug.append(ug_model(user_id=user_id, group_id=groups[name]))
        else:
            skipped.append(f"role {name!r} of user {user_id}")
    for user_id, app, code in up_model.objects.using(source).values_list(
        "user_id", "permission__content_type__app_label", "permission__codename"
    ):
        if (app, code) in perms:
            up.append(up_model(user_id=user_id, permission_id=perms[(app, code)]))
        else:
            skipped.append(f"permission {app}.{code} of user {user_id}")
    return ug, up, skipped


def copy(
    service: str,
    *,
    source: str,
    target: str,
    shared_target: bool = False,
    history: bool = True,
    progress: Callable[[int], None] = lambda n: None,
    phase: PhaseTimer = no_phase,
) -> list[TableReport]:
    """Copy ``service``'s data from ``source`` to ``target`` and verify it. Returns one
    report per table (rows, checksum); raises ``CopyError`` when the target differs.
    ``phase`` times its parts (``COPY_PHASES``, the same both ways).

    ``shared_target``: the target is a database other services write too (the monolith, on
    the way back): its accounts are left as they are, and the bus's rows get new ids there."""
    accounts = not shared_target
    parts = owned(service, accounts=accounts, history=history)
    expected: list[TableReport] = []
    user = get_user_model()
    with snapshot(source), transaction.atomic(using=target):
        with phase(COPY_PHASES[0]):
            # A rerun starts clean; memberships first (they point at users).
            if accounts:
                user.groups.through.objects.using(target).all().delete()
                user.user_permissions.through.objects.using(target).all().delete()
            for part in reversed(parts):
                part.rows(target)._raw_delete(target)  # no cascade collection: the rows go as they are
        with phase(COPY_PHASES[1]):
            for part in parts:
                expected.append(
                    _copy_part(part, source, target, renumber=part.renumbered(shared_target), progress=progress)
                )
            if accounts:
                ug, up, _skipped = _memberships(source, target)
                user.groups.through.objects.using(target).bulk_create(ug)
                user.user_permissions.through.objects.using(target).bulk_create(up)
                progress(len(ug) + len(up))
                expected.append(TableReport("auth.user_groups", len(ug), ""))
        with phase(COPY_PHASES[2]):
            # Rows that kept their ids move the target's sequences past them. Renumbered rows
            # (the bus's, in a target other services write) took theirs from the sequences:
            # setting those to the largest committed id would hand out ids that the other
            # services' writers under way already hold.
            _reset_sequences(target, [p.model for p in parts if not p.renumbered(shared_target)])
    with phase(COPY_PHASES[3]):
        verify(parts, expected, target, shared_target=shared_target)
    return expected


def _copy_part(part: Part, source: str, target: str, *, renumber: bool, progress: Callable[[int], None]) -> TableReport:
    objs: list[models.Model] = []
    digest = hashlib.sha256()
    count = 0
    with _keep_timestamps(part.model):
        for obj in part.rows(source, renumbered=renumber).iterator(chunk_size=BATCH):
            digest.update(json.dumps(row_values(obj, without_pk=renumber), default=str).encode() + b"\n")
            count += 1
            if renumber:
                obj.pk = None
            objs.append(obj)
            if len(objs) >= BATCH:
                part.model._base_manager.using(target).bulk_create(objs)
                progress(len(objs))
                objs = []
        if objs:
            part.model._base_manager.using(target).bulk_create(objs)
            progress(len(objs))
    return TableReport(part.label, count, digest.hexdigest())


def _reset_sequences(using: str, model_list: list[type[models.Model]]) -> None:
    conn = connections[using]
    statements = conn.ops.sequence_reset_sql(no_style(), model_list)
    if statements:
        with conn.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)


def verify(parts: list[Part], expected: list[TableReport], using: str, *, shared_target: bool = False) -> None:
    by_label = {r.label: r for r in expected}
    problems = []
    with snapshot(using):
        for part in parts:
            renumber = part.renumbered(shared_target)
            count, digest = checksum(
                part.rows(using, renumbered=renumber).iterator(chunk_size=BATCH), without_pk=renumber
            )
            want = by_label[part.label]
            if (count, digest) != (want.rows, want.checksum):
                problems.append(
                    f"{part.label}: {count} rows (checksum {digest[:12]}) in the new database, "
                    f"{want.rows} rows (checksum {want.checksum[:12]}) in the monolith"
                )
    if problems:
        raise CopyError("the copy differs from the monolith: " + "; ".join(problems))


def counts(service: str, using: str, *, accounts: bool = True, history: bool = True) -> list[tuple[str, int]]:
    return [(p.label, p.rows(using).count()) for p in owned(service, accounts=accounts, history=history)]


def history_rows(service: str, using: str) -> models.QuerySet:
    q = _aggregate_rows("aggregate_key", service) & Q(state=OutboxState.PUBLISHED)
    return OutboxMessage.objects.using(using).filter(q).order_by("event_id")


def copy_history(
    service: str, *, source: str, target: str, progress: Callable[[int], None] = lambda n: None
) -> TableReport:
    """Copy ``service``'s published outbox rows (its history, for ``replay_events`` and the
    admin) into ``target``, which the moved service already writes: rows get new ids there,
    rows already there (a rerun) are skipped; verified by count and checksum over the
    copied event ids."""
    digest = hashlib.sha256()
    ids: list[Any] = []
    with snapshot(source):
        batch: list[OutboxMessage] = []

        def flush() -> None:
            present = set(
                OutboxMessage.objects.using(target)
                .filter(event_id__in=[o.event_id for o in batch])
                .values_list("event_id", flat=True)
            )
            new = [o for o in batch if o.event_id not in present]
            for o in new:
                o.pk = None
            with _keep_timestamps(OutboxMessage):
                OutboxMessage.objects.using(target).bulk_create(new)
            progress(len(batch))
            batch.clear()

        for obj in history_rows(service, source).iterator(chunk_size=BATCH):
            digest.update(json.dumps(row_values(obj, without_pk=True), default=str).encode() + b"\n")
            ids.append(obj.event_id)
            batch.append(obj)
            if len(batch) >= BATCH:
                flush()
        if batch:
            flush()
    check = hashlib.sha256()
    count = 0
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        for obj in OutboxMessage.objects.using(target).filter(event_id__in=chunk).order_by("event_id"):
            check.update(json.dumps(row_values(obj, without_pk=True), default=str).encode() + b"\n")
            count += 1
    if (count, check.hexdigest()) != (len(ids), digest.hexdigest()):
        raise CopyError(
            f"events.outboxmessage (history): {count} rows in the new database, {len(ids)} in the monolith, "
            "or their checksums differ"
        )
    return TableReport("events.outboxmessage (history)", len(ids), digest.hexdigest())
