"""Before/after of the relay's two database-side changes, in one run: relay throughput
with NullPublisher on Postgres with (a) Django's bulk_update to mark rows published and
synchronous commits (the code before), (b) the single UPDATE, synchronous commits, (c)
the single UPDATE and relaxed commits (the code now). Rounds interleaved, best of each.

    .venv/bin/python bench/ab_relay.py [--rows 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        common.configure()
        from bench.relay_bench import OUTBOX, back_to_pending, bulk_pending
        from events import relay
        from events.models import OutboxMessage

        real_mark, real_relaxed = relay._mark_published, relay._relaxed_commit

        def old_mark(rows, now, token):
            for row in rows:
                row.state, row.published_at, row.claimed_until = "published", now, None
            OutboxMessage.objects.bulk_update(rows, ["state", "published_at", "sns_message_id", "claimed_until"])
            return {row.pk for row in rows}

        variants = {
            "before (bulk_update, sync commit)": (old_mark, lambda: None),
            "single UPDATE, sync commit": (real_mark, lambda: None),
            "now (single UPDATE, relaxed commit)": (real_mark, real_relaxed),
        }
        common.truncate(OUTBOX)
        bulk_pending(args.rows)
        common.vacuum(OUTBOX)
        rates: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for name, (mark, relaxed) in variants.items():
                relay._mark_published, relay._relaxed_commit = mark, relaxed
                with common.Timer() as t:
                    assert relay.relay(relay.NullPublisher()).published == args.rows
                rates[name].append(args.rows / t.seconds)
                back_to_pending()
        relay._mark_published, relay._relaxed_commit = real_mark, real_relaxed
        for name, r in rates.items():
            print(f"{name:40} best {max(r):8,.0f} events/s  rounds {[round(x) for x in r]}")
    finally:
        common.teardown()


if __name__ == "__main__":
    main()
