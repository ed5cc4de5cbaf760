"""The cutover bench reads split_service's step timings from its output."""

from __future__ import annotations

from bench import cutover_bench

OUTPUT = """Moving transfers to postgres://postgres@127.0.0.1:5432/x
  step 1/7: create and migrate the new database
step 1/7: create and migrate the new database ...
step 1/7: create and migrate the new database: done in 2.31 s
step 2/7: start transfers on the new database ...
step 2/7: start transfers on the new database: done in 10.00 s
step 3/7: pause the writes of transfers in the monolith ...

  The writes of transfers were paused for 1.84 s (steps 3 to 6).
"""


def test_step_timings_and_the_pause_split_service_measured():
    assert cutover_bench.step_timings(OUTPUT) == [
        ("1/7 create and migrate the new database", 2.31),
        ("2/7 start transfers on the new database", 10.0),
        ("3/7 pause the writes of transfers in the monolith", None),
    ]
    assert cutover_bench.paused_by_split(OUTPUT) == 1.84
    assert cutover_bench.paused_by_split("") is None


PHASES_OUT = """step 3/7: pause the writes of transfers in the monolith ...
    phase: wait for the writes under way: 0.012 s
step 3/7: pause the writes of transfers in the monolith: done in 0.02 s
    phase: publish the last outbox rows: 0.410 s
    transfers.transfer            270 rows  c9db7a2565a1b7e0
    phase: route the front door: 0.600 s
"""
PHASES_BACK = """    phase: wait for the writes under way: 0.020 s
    phase: publish the last outbox rows: 0.300 s
    phase: route the front door: 12.900 s
    phase: check a request through the front door: 0.050 s
"""


def test_the_pause_phases_each_way_side_by_side():
    out, back = cutover_bench.pause_phases(PHASES_OUT), cutover_bench.pause_phases(PHASES_BACK)
    assert out == [
        ("wait for the writes under way", 0.012),
        ("publish the last outbox rows", 0.41),
        ("route the front door", 0.6),
    ]
    assert cutover_bench.side_by_side(out, back) == [
        ("wait for the writes under way", 0.012, 0.02),
        ("publish the last outbox rows", 0.41, 0.3),
        ("route the front door", 0.6, 12.9),
        ("check a request through the front door", None, 0.05),
    ]
