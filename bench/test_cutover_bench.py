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
