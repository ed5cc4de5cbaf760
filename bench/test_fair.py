"""A fair bench: a warm-up round before the emulator's first figure, every ``--only`` run,
end-to-end latency judged against the bare hop of the same emulator and run, moto's
end-to-end rows at a rate it sustains, multi-process rows per core."""

from __future__ import annotations

import time

import pytest

from bench import common, e2e_bench, pipeline_bench, run


def test_every_only_runs_after_one_warm_up(monkeypatch):
    """Each ``--only`` counts (they were dropped but the last), and the warm-up comes before
    the first figure. The bench's environment (a database and an emulator of its own) is
    replaced here: the order is what is tested."""
    calls: list[str] = []
    env = common.Env("x", "bench_x", "http://127.0.0.1:1", common.RESULTS, queue="q", emulator="moto")
    monkeypatch.setattr(common, "configure", lambda emulator, db_name=None: env)
    monkeypatch.setattr(common, "teardown", lambda: None)
    monkeypatch.setattr(common, "clean_slate", lambda: "")
    monkeypatch.setattr(run, "warm_up", lambda emulator: calls.append(f"warm-up {emulator}"))

    def bench(name):
        return lambda quick: calls.append(name) or common.Result(name, "x", 1.0, 1.0, 1.0, "-")

    monkeypatch.setattr(run, "benchmarks", lambda: {n: bench(n) for n in run.ORDER})
    code = run.main(
        ["--only", "relay_null_publisher", "--only", "relay_vs_boto3,write_overhead", "--output", "/dev/null"]
    )
    assert code == 0
    assert calls == ["warm-up moto", "relay_null_publisher", "relay_vs_boto3", "write_overhead"]


def test_moto_end_to_end_rows_run_at_a_rate_moto_sustains():
    assert e2e_bench.e2e_rate("moto") == 20
    assert e2e_bench.e2e_rate("localstack") == 50


def test_end_to_end_latency_is_judged_against_the_bare_hop():
    bare = [float(x) for x in range(30, 130)]  # p50 79.5, p99 128
    near = [x * 1.4 for x in bare]
    rows = {r.name: r for r in e2e_bench.judged(near, bare, note="", extra={})}
    assert rows["bare_latency_p50"].value == pytest.approx(79.5)
    assert rows["bare_latency_p99"].value == pytest.approx(common.pct(bare, 99))
    assert rows["e2e_latency_p50"].met and rows["e2e_latency_p99"].met
    assert rows["e2e_latency_p50"].baseline == pytest.approx(79.5)
    slow = [x * 1.6 for x in bare]
    rows = {r.name: r for r in e2e_bench.judged(slow, bare, note="", extra={})}
    assert rows["e2e_latency_p50"].met is False and rows["e2e_latency_p99"].met is True
    rows = {r.name: r for r in e2e_bench.judged(near, bare, note="", extra={"kick_unhandled": 3})}
    assert rows["e2e_latency_p50"].met is False  # events left unhandled cannot meet a target


def test_consumer_scaling_is_two_consumers_against_one_per_core():
    result = pipeline_bench.scaling_result({1: 100.0, 2: 170.0, 4: 180.0}, 300, cores=2)
    assert result.ratio == pytest.approx(1.7) and result.met
    assert result.extra["per_core"] == {1: 100.0, 2: 85.0, 4: 90.0}
    assert "2 cores" in result.note
    assert pipeline_bench.scaling_result({1: 100.0, 2: 150.0}, 300, cores=2).met is False


def test_consumer_scaling_states_the_emulators_ceiling_from_bare_loops():
    result = pipeline_bench.scaling_result({1: 600.0, 2: 800.0}, 300, cores=2, bare={1: 840.0, 2: 850.0})
    assert result.met is False  # the target stays the target
    assert result.extra["bare"] == {1: 840.0, 2: 850.0}
    assert "2 vs 1: 1.01" in result.note and "0.94 of 2 bare loops" in result.note


@pytest.mark.django_db
def test_the_bare_hop_is_measured_publish_to_receive(bus):
    samples = e2e_bench.bare_latency(rate=20, seconds=1)
    assert len(samples) == 20
    assert all(0 < s < 5000 for s in samples)
    spans = e2e_bench.BARE_SPANS
    assert len(spans) == 20 and all(b > a for a, b in spans)
    assert sorted((b - a) * 1000 for a, b in spans) == pytest.approx(sorted(samples))


@pytest.mark.django_db
def test_the_emulator_probe_times_trivial_calls_and_names_the_slow_ones_stalls(bus):
    with common.EmulatorProbe(every=0.02, threshold=10) as probe:
        time.sleep(0.3)
    assert len(probe.calls) >= 3 and probe.stalls() == []
    everything = common.EmulatorProbe(threshold=0)
    everything.calls = list(probe.calls)
    stalls = everything.stalls()
    assert len(stalls) == len(probe.calls)
    assert all(end > start for start, end, _, _ in stalls)


def test_events_in_flight_during_a_stall_are_counted_apart():
    stalls = [(10.0, 10.6, 110.0, 110.6)]
    spans = [(9.0, 9.1), (10.5, 10.7), (9.9, 11.0), (10.7, 10.8)]
    assert common.clear_of(spans, [(10.0, 10.6)]) == [True, False, False, True]
    assert common.describe_stalls(stalls) == "1 (longest 600 ms)"
    assert common.describe_stalls([]) == "none"
    kick = [
        {"total": 100.0, "at": 9.0, "done": 9.1},
        {"total": 700.0, "at": 10.0, "done": 10.7},
        {"total": 120.0, "at": 11.0, "done": 11.12},
    ]
    e2e_bench.STALLS.update(kick=stalls, bare=[])
    e2e_bench.BARE_SPANS[:] = [(100.0, 100.05), (101.0, 101.06)]
    try:
        figures = e2e_bench.stall_figures(kick, [50.0, 60.0])
    finally:
        e2e_bench.STALLS.clear()
        e2e_bench.BARE_SPANS.clear()
    assert figures["kick"]["events_in_a_stall"] == 1 and figures["kick"]["stall_ms"] == [600]
    assert figures["kick"]["clear_p99_ms"] == pytest.approx(common.pct([100.0, 120.0], 99))
    assert figures["bare"]["events_in_a_stall"] == 0 and figures["bare"]["stalls"] == "none"


BURN = """
import subprocess, sys, time
if sys.argv[1:] == ["parent"]:
    subprocess.Popen([sys.executable, __file__])
t = time.process_time()
while time.process_time() - t < 0.4:
    pass
time.sleep(30)
"""


def test_an_emulators_cpu_is_counted_over_its_whole_process_group(tmp_path):
    """The emulator is started in a session of its own and may start processes: the bench
    counts the CPU of all of them (the end-to-end row says how much the emulator used per
    event, in the system and bare)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "burn.py"
    script.write_text(BURN)
    proc = subprocess.Popen([sys.executable, str(script), "parent"], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while common.group_cpu_seconds(proc.pid) < 0.8 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert common.group_cpu_seconds(proc.pid) >= 0.8  # the parent's 0.4 s and its child's
        assert common.group_cpu_seconds(2**22 + 7) == 0.0  # no such group
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def test_scaling_rate_is_the_middle_of_the_drain_not_its_ragged_ends():
    # 100 events: 10 trickle in over 5 s while the second consumer starts, 80 go at 100/s,
    # 10 trail over 5 s.
    times = [i * 0.5 for i in range(10)] + [5 + i * 0.01 for i in range(80)] + [5.8 + i * 0.5 for i in range(10)]
    assert pipeline_bench.steady_rate(times) == pytest.approx(100, rel=0.05)
    assert pipeline_bench.steady_rate([1.0, 2.0]) == pytest.approx(2.0)
    assert pipeline_bench.steady_rate([]) == 0.0


def test_a_throughput_step_is_the_median_of_its_runs():
    runs = [
        {"offered": 200, "achieved": 198.0, "p50_ms": 90.0, "p99_ms": 1374.0},
        {"offered": 200, "achieved": 199.0, "p50_ms": 80.0, "p99_ms": 640.0},
        {"offered": 200, "achieved": 197.0, "p50_ms": 85.0, "p99_ms": 700.0},
    ]
    step = pipeline_bench.median_step(runs)
    assert (step["achieved"], step["p99_ms"], step["offered"]) == (198.0, 700.0, 200)
    assert step["runs"] == runs
    assert pipeline_bench.sustained([step]) == 198.0  # one slow burst does not fail the rate
    assert pipeline_bench.median_step(runs[:1]) == runs[0]
    stuck = [dict(runs[0], p99_ms=19363.0), dict(runs[1], p99_ms=float("nan")), dict(runs[2], p99_ms=float("nan"))]
    assert pipeline_bench.median_step(stuck)["p99_ms"] == float("inf")  # nothing handled: never kept up
    assert pipeline_bench.sustained([pipeline_bench.median_step(stuck)]) == 198.0  # no step kept up: the best median seen


@pytest.mark.django_db
def test_the_bare_hop_charges_a_stall_to_every_publish_it_held_up(bus):
    """No coordinated omission: when the emulator holds every publish for 0.5 s, each
    event scheduled in that time waits for it, and the bare hop counts the wait from the
    scheduled time, as the system's latency counts from the commit."""
    from events import aws

    sns = aws.client("sns")
    window: list[float] = []

    def stall(**kwargs):
        now = time.monotonic()
        if not window:
            window.append(now + 0.5)
        if now < window[0]:
            time.sleep(window[0] - now)

    sns.meta.events.register("before-call.sns.Publish", stall)
    try:
        samples = e2e_bench.bare_latency(rate=20, seconds=1.5)
    finally:
        sns.meta.events.unregister("before-call.sns.Publish", stall)
    assert len(samples) == 30
    held = [s for s in samples if s >= 200]
    assert len(held) >= 6, sorted(samples)  # the 0.5 s at 20/s: about ten scheduled in it
    assert len([s for s in e2e_bench.BARE_FROM_SEND if s >= 200]) < len(held)
