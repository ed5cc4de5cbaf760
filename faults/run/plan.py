"""The sizes of the scenarios: the full run (CI's crash-suite step) or ``--quick`` (pytest)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Plan:
    """Sizes of the scenarios: the full run (CI's crash-suite step) or --quick (pytest)."""

    baseline: int = 200
    relay_events: int = 1200
    relay_kills: int = 10
    consumer_events: int = 400
    consumer_kills: int = 4
    outage_seconds: float = 30
    outage_events: int = 150
    db_events: int = 300
    db_cuts: int = 3
    two_relays_events: int = 400
    poison_events: int = 100
    db_outage_seconds: float = 180
    db_outage_events: int = 200
    hot_events: int = 600
    hot_teams: int = 6
    hot_consumers: int = 4
    stall_events: int = 300
    runstack_events: int = 100
    consumer_stops: int = 20
    split_points: tuple[str, ...] = ("migrated", "started", "paused", "draining", "copying", "switching", "switched")
    drain_timeout: float = 240

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            baseline=40,
            relay_events=150,
            relay_kills=2,
            consumer_events=80,
            consumer_kills=1,
            outage_seconds=5,
            outage_events=20,
            db_events=60,
            db_cuts=1,
            two_relays_events=80,
            poison_events=20,
            db_outage_seconds=20,
            db_outage_events=40,
            hot_events=120,
            stall_events=100,
            runstack_events=30,
            consumer_stops=4,
            split_points=("copying", "switching"),  # one rollback, one rerun: the full run has every step
            drain_timeout=240,
        )
