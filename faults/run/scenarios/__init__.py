"""The scenarios of the crash suite, by kind, in the order a run takes them. Each is a
``Scenario`` (faults/run/engine.py): it injects its faults while writing, says which in the
row, and may return a check to run once the bus has drained."""

from __future__ import annotations

from ..engine import Scenario
from . import dependencies, flows, processes

SCENARIOS: list[tuple[str, Scenario]] = [
    ("baseline", processes.baseline),
    ("relay kill -9", processes.relay_kill),
    ("consumer kill -9", processes.consumer_kill),
    ("consumers stopped under traffic", processes.consumers_stopped),
    ("moto outage", dependencies.moto_outage),
    ("db cut", dependencies.db_cut),
    ("two relays", processes.two_relays),
    ("saga deadline", flows.saga_deadline),
    ("db outage", dependencies.db_outage),
    ("hot rows", dependencies.hot_rows),
    ("poison+garbage", dependencies.poison),
    ("relay stalled", processes.relay_stall),
    ("runstack moto -9", flows.runstack_moto_kill),
    ("replica drift", flows.replica_drift),
    ("split kill -9", flows.split_kill),
]
