"""Write overhead of the outbox on POST /api/teams/, and claim() with a large history."""

from __future__ import annotations

import time

from django.db import connection

from . import common
from .common import Result, Timer, median

OUTBOX = common.OUTBOX


# ----------------------------------------------------------------------------- write overhead
def write_overhead(quick: bool) -> Result:
    """POST /api/teams/ through Django's test client (in process, Postgres, token auth),
    with the outbox vs the same service with ``events.publish`` replaced by a no-op. The
    two sides alternate in blocks; the figure is the ratio of median request times.

    Also timed: on the outbox side the outbox's one statement (``events.publisher``: the
    gate's share lock, the subject's sequence upsert, the row and its indexes), as the
    client sees it; on both sides the commit (the outbox side's writes more WAL). What the
    database adds is the statement plus the difference in commit time; ``floor_ratio`` is
    the ratio the write would have if everything else ``publish`` does (schema check,
    envelope, trace) cost nothing."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client
    from rest_framework.authtoken.models import Token

    import events

    user, _ = get_user_model().objects.get_or_create(
        username="bench-writer", defaults={"is_staff": True, "is_superuser": True}
    )
    token, _ = Token.objects.get_or_create(user=user)
    client = Client(HTTP_AUTHORIZATION=f"Token {token.key}")
    real_publish = events.publish
    blocks, per_block = (6, 50) if quick else (10, 150)
    times: dict[str, list[float]] = {"with": [], "without": []}
    counter = 0

    statement: list[float] = []
    commits: dict[str, list[float]] = {"with": [], "without": []}
    side_now = ["with"]
    real_commit = connection._commit

    def timed_commit() -> None:
        t0 = time.perf_counter()
        try:
            real_commit()
        finally:
            commits[side_now[0]].append(time.perf_counter() - t0)

    def timed(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        if not sql.startswith("WITH g AS ("):
            return execute(sql, params, many, context)
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statement.append(time.perf_counter() - t0)

    def post(n: int, side: str) -> None:
        nonlocal counter
        for _ in range(n):
            counter += 1
            body = {"name": f"Bench {side} {counter}"}
            t0 = time.perf_counter()
            r = client.post("/api/teams/", body, content_type="application/json")
            times[side].append(time.perf_counter() - t0)
            assert r.status_code == 201, (r.status_code, r.content[:300])

    post(30, "with")  # warm-up (imports, validator compile, connection)
    times["with"].clear()
    try:
        with connection.execute_wrapper(timed):
            for b in range(blocks):
                order = ("with", "without") if b % 2 == 0 else ("without", "with")
                for side in order:
                    events.publish = real_publish if side == "with" else (lambda *a, **k: None)
                    side_now[0] = side
                    connection._commit = timed_commit  # type: ignore[method-assign]
                    post(per_block, side)
    finally:
        events.publish = real_publish
        connection._commit = real_commit  # type: ignore[method-assign]
    with_ms, without_ms = median(times["with"]) * 1000, median(times["without"]) * 1000
    ratio = without_ms / with_ms
    statement_ms = median(statement) * 1000 if statement else float("nan")
    commit_ms = {k: median(v) * 1000 if v else float("nan") for k, v in commits.items()}
    database_ms = statement_ms + max(commit_ms["with"] - commit_ms["without"], 0.0)
    floor = without_ms / (without_ms + database_ms)
    return Result(
        "write_overhead",
        "req/s",
        1000 / with_ms,
        1000 / without_ms,
        ratio,
        "ratio >= 0.90",
        ratio >= 0.90,
        f"{blocks * per_block} POSTs per side (team name only, Django test client, Postgres); "
        f"median {with_ms:.2f} ms with outbox vs {without_ms:.2f} ms without; the relay's wake-up included "
        f"(OUTBOX_WAKEUP={settings.OUTBOX_WAKEUP}); of the {with_ms - without_ms:.2f} ms the outbox adds, the database's "
        f"part is {database_ms:.2f} ms (its one statement {statement_ms:.2f} ms, the commit {commit_ms['with']:.2f} vs "
        f"{commit_ms['without']:.2f} ms): with the rest of publish at zero the ratio would be {floor:.2f}",
        {
            "statement_ms_p50": statement_ms,
            "commit_ms_p50": commit_ms,
            "database_ms": database_ms,
            "floor_ratio": floor,
            "with_ms_p50": with_ms,
            "without_ms_p50": without_ms,
            "with_ms_p95": common.pct(times["with"], 95) * 1000,
            "without_ms_p95": common.pct(times["without"], 95) * 1000,
        },
    )


# ----------------------------------------------------------------------------- due query
def _claim_times(reps: int, batch: int) -> list[float]:
    from events import relay

    out = []
    for _ in range(reps):
        with Timer() as t:
            rows = relay.claim(batch)
        assert len(rows) == batch, len(rows)
        out.append(t.seconds)
        with connection.cursor() as c:  # release the lease (not timed)
            c.execute(f"UPDATE {OUTBOX} SET claimed_until=NULL WHERE state='pending'")
    return out


def _pending(n: int, start: int) -> None:
    with connection.cursor() as c:
        c.execute(
            f"""
            INSERT INTO {OUTBOX} (event_id, type, subject, aggregate_key, sequence, envelope, state,
                                  created_at, sns_message_id, attempts, last_error,
                                  correlation_id, causation_id, request, failure)
            SELECT gen_random_uuid(), 'team.created', g::text, 'team:' || g, 1,
                   jsonb_build_object('id', gen_random_uuid(), 'type', 'team.created', 'subject', g::text,
                                      'data', jsonb_build_object('id', g, 'name', 'Team ' || g)),
                   'pending', now(), '', 0, '', '', '', '', ''
            FROM generate_series(%s, %s) AS g
            """,
            [start, start + n - 1],
        )


def due_query_scale(quick: bool) -> Result:
    from django.conf import settings

    history = 200_000 if quick else 10_000_000
    batch = settings.OUTBOX_BATCH_SIZE
    reps = 30 if quick else 100
    common.truncate(OUTBOX)
    _pending(batch * 2, 1)
    common.vacuum(OUTBOX)
    _claim_times(5, batch)  # warm-up
    empty = _claim_times(reps, batch)
    common.truncate(OUTBOX)
    # The history in one INSERT ... SELECT generate_series: ascending event ids and a small
    # constant envelope (the claim reads neither of a published row), ~3 min for 10 M rows
    # where random UUIDs and full envelopes took 15 min on the same machine.
    with Timer() as fill:
        with connection.cursor() as c:
            c.execute(
                f"""
                INSERT INTO {OUTBOX} (event_id, type, subject, aggregate_key, sequence, envelope, state,
                                      created_at, published_at, sns_message_id, attempts, last_error,
                                  correlation_id, causation_id, request, failure)
                SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'team.created',
                       (g %% 50000)::text, 'team:' || (g %% 50000), g / 50000 + 1,
                       '{{"type": "team.created", "data": {{}}}}'::jsonb,
                       'published', now(), now(), 'msg-' || g, 1, '', '', '', '', ''
                FROM generate_series(1, %s) AS g
                """,
                [history],
            )
    # Pending rows on the same subjects as the history (the NOT EXISTS check must look).
    _pending(batch * 2, 1)
    common.vacuum(OUTBOX)
    _claim_times(5, batch)
    full = _claim_times(reps, batch)
    common.truncate(OUTBOX)
    e_ms, f_ms = median(empty) * 1000, median(full) * 1000
    return Result(
        "due_query_scale",
        "ms per claim",
        f_ms,
        e_ms,
        e_ms / f_ms,
        "ratio >= 0.83",
        e_ms / f_ms >= 0.83,
        f"claim({batch}) median of {reps}: {history:,} published rows vs none (history inserted in {fill.seconds:.1f} s)",
        {
            "empty_p95_ms": common.pct(empty, 95) * 1000,
            "history_p95_ms": common.pct(full, 95) * 1000,
            "history": history,
        },
    )
