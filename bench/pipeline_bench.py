"""The whole pipeline under load, as processes: commit -> relay -> SNS -> SQS -> consumer.

- ``e2e_throughput``: an open-loop writer commits ``team.created`` events at rising offered
  rates; 2 ``relay_outbox`` and 4 ``consume --service transfers`` processes move them.
  Measured per step: handled events/s and p99 commit -> handled. The baseline is a bare boto3
  pipeline of the same shape on the same emulator (2 publisher threads doing PublishBatch to
  the same topic, 4 receive -> delete threads on a queue subscribed to it, timestamps in the
  bodies). Ratio: the highest rate each sustains (>= 90 % of offered, p99 under 1 s), each
  rate offered three times and judged by the median run.
- ``consumer_scaling``: 1, 2 and 4 consumer processes draining the same pre-filled queue; the
  same with 1 and 2 bare receive -> delete processes, which is as fast as the emulator lets
  that many readers drain one queue.
- ``soak``: a steady rate for a long time; RSS of every process sampled each second, the
  backlog and the per-minute p99 logged. Also the peak RSS (VmHWM) of web, relay, consumer
  and emulator that every full run reports.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import uuid
from pathlib import Path

from django.db import connection, transaction

from . import common
from .common import BIN, ROOT, Result

SERVICE = "transfers"
HANDLER = "transfers:transfers.handlers.on_team_created"


# ---------------------------------------------------------------------------- processes
def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """Resident set (or its peak, ``VmHWM``) of ``pid`` and its descendants, in KiB."""
    total = 0
    for p in [pid, *common_descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def common_descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Pipeline:
    """``relays`` relay processes and ``consumers`` consumers of the transfers queue, plus a
    drainer for the other services' queues (which also receive team.created)."""

    def __init__(self, *, relays: int = 2, consumers: int = 4, web: bool = False) -> None:
        self.n_relays, self.n_consumers, self.web = relays, consumers, web
        self.procs: dict[str, object] = {}

    def __enter__(self) -> Pipeline:
        from devtools.netutil import free_port, wait_for_http
        from events import topology

        e = common.env()
        env = e.child_env(OUTBOX_KICK="false", CONSUMER_WAIT_SECONDS="1")
        manage = [sys.executable, str(ROOT / "manage.py")]
        others = [s for s in topology.consuming_services() if s != SERVICE]
        if others:
            self.procs["drainer"] = common.start_drainer(*others)
        for i in range(self.n_relays):
            self.procs[f"relay-{i}"] = common.spawn(
                [*manage, "relay_outbox", "--interval", "0.5"], env=env, log=e.data_dir / f"relay-{i}.log"
            )
        self.ready_files = []
        for i in range(self.n_consumers):
            ready = e.data_dir / f"ready-consumer-{i}-{uuid.uuid4().hex[:6]}"
            self.ready_files.append(ready)
            self.procs[f"consumer-{i}"] = common.spawn(
                [*manage, "consume", "--service", SERVICE, "--no-startup"],
                env={**env, "READY_FILE": str(ready)},
                log=e.data_dir / f"consumer-{i}.log",
            )
        if self.web:
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            self.procs["web"] = common.spawn(
                [str(BIN / "gunicorn"), "league.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2"],
                env={**env, "TEAMS_SERVICE_URL": self.url},
                log=e.data_dir / "web.log",
            )
            wait_for_http(f"{self.url}/healthz", timeout=60)
        time.sleep(3)  # consumers subscribed and polling
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Until every consumer has said its start-up is over (``events/readiness.py``): it
        receives, or waits behind its service's closed gate."""
        deadline = time.monotonic() + timeout
        while not all(f.exists() for f in self.ready_files):
            if time.monotonic() > deadline:
                missing = [f.name for f in self.ready_files if not f.exists()]
                raise common.BenchSetupError(f"consumers not ready after {timeout:.0f} s: {missing}; see their logs")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(list(self.procs.values())):
            common.stop(proc)  # type: ignore[arg-type]
        self.procs.clear()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by the consumers (all of them), the relays, the drainer,
        the emulator and PostgreSQL's processes."""
        parts: dict[str, float] = {}
        for name, proc in self.procs.items():
            key = name.split("-")[0] + "s" if "-" in name else name
            parts[key] = parts.get(key, 0.0) + common.group_cpu_seconds(proc.pid)  # type: ignore[attr-defined]
        parts["emulator"] = common.emulator_cpu_seconds()
        parts["postgres"] = common.command_cpu_seconds("postgres")
        return parts

    def peak_rss_mb(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, proc in self.procs.items():
            kind = name.split("-")[0]
            out[kind] = max(out.get(kind, 0.0), rss_kb(proc.pid, "VmHWM") / 1024)  # type: ignore[attr-defined]
        emulator = common.env().emulator_proc
        if emulator is not None:
            out["emulator"] = rss_kb(emulator.pid, "VmHWM") / 1024
        return out


# ------------------------------------------------------------------------------ writing
def commit_events(rate: float, seconds: float, *, start: int) -> tuple[int, float]:
    """Open loop: one transaction with one ``team.created`` outbox row every 1/rate s,
    whatever the pipeline does. Returns (events written, wall seconds)."""
    import events

    total = int(rate * seconds)
    t0 = time.monotonic()
    for i in range(total):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with transaction.atomic():
            n = start + i
            events.publish(
                "team.created", subject=n, data={"id": n, "name": f"T{n}", "players": [], "short_name": "TM"}
            )
    return total, time.monotonic() - t0


def handled_since(first_subject: int, last_subject: int) -> list[tuple[float, float]]:
    """(commit epoch s, handled epoch s) for the transfers handler's team.created in range."""
    sql = """
        SELECT EXTRACT(EPOCH FROM o.created_at), EXTRACT(EPOCH FROM i.handled_at)
        FROM events_outboxmessage o JOIN events_inboxmessage i
          ON i.event_id = o.event_id AND i.handler = %s
        WHERE o.type = 'team.created' AND o.subject::bigint BETWEEN %s AND %s
    """
    with connection.cursor() as c:
        c.execute(sql, [HANDLER, first_subject, last_subject])
        return [(float(a), float(b)) for a, b in c.fetchall()]


def inbox_times(first_subject: int, last_subject: int) -> list[float]:
    """Handled epoch s of the transfers handler's inbox rows for subjects in range (for
    messages put on the queue directly, with no outbox row)."""
    sql = """
        SELECT EXTRACT(EPOCH FROM handled_at) FROM events_inboxmessage
        WHERE handler = %s AND subject::bigint BETWEEN %s AND %s
    """
    with connection.cursor() as c:
        c.execute(sql, [HANDLER, first_subject, last_subject])
        return [float(a) for (a,) in c.fetchall()]


def measure_step(rate: float, seconds: float, start: int, settle: float = 10.0) -> dict[str, float]:
    written, wall = commit_events(rate, seconds, start=start)
    deadline = time.monotonic() + settle
    rows = handled_since(start, start + written - 1)
    while len(rows) < written and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = handled_since(start, start + written - 1)
    lat = [(h - c) * 1000 for c, h in rows]
    if rows:
        span = max(h for _, h in rows) - min(c for c, _ in rows)
        achieved = len(rows) / max(span, wall)
    else:
        achieved = 0.0
    return {
        "offered": rate,
        "achieved": achieved,
        "handled": len(rows),
        "written": written,
        "p50_ms": common.pct(lat, 50),
        "p99_ms": common.pct(lat, 99),
    }


# ----------------------------------------------------------------------- the bare pipeline
def bare_step(rate: float, seconds: float, *, topic_arn: str, queue_url: str) -> dict[str, float]:
    """2 publisher threads (PublishBatch, 10 a call when 10 are due) and 4 receive -> delete
    threads; latency from the timestamp in the body to the delete."""
    from events import aws

    total = int(rate * seconds)
    due: list[int] = list(range(total))
    lock = threading.Lock()
    lat: list[float] = []
    done = threading.Event()
    t0 = time.monotonic() + 0.1

    def publisher() -> None:
        sns = aws.client("sns")  # boto3 clients are thread-safe
        while True:
            with lock:
                batch = []
                while due and t0 + due[0] / rate <= time.monotonic() and len(batch) < 10:
                    batch.append(due.pop(0))
                empty = not due
            if batch:
                now = time.time()
                sns.publish_batch(
                    TopicArn=topic_arn,
                    PublishBatchRequestEntries=[
                        {"Id": str(j), "Message": json.dumps({"t": now, "n": n, "pad": "x" * 200})}
                        for j, n in enumerate(batch)
                    ],
                )
            elif empty:
                return
            else:
                time.sleep(0.001)

    def receiver() -> None:
        sqs = aws.client("sqs")
        while not done.is_set():
            msgs = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            )
            if not msgs:
                continue
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
            )
            now = time.time()
            with lock:
                lat.extend((now - json.loads(m["Body"])["t"]) * 1000 for m in msgs)

    pubs = [threading.Thread(target=publisher) for _ in range(2)]
    recs = [threading.Thread(target=receiver) for _ in range(4)]
    started = time.time()
    for t in pubs + recs:
        t.start()
    for t in pubs:
        t.join()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with lock:
            if len(lat) >= total:
                break
        time.sleep(0.1)
    done.set()
    for t in recs:
        t.join()
    wall = time.time() - started
    return {
        "offered": rate,
        "achieved": min(len(lat), total) / max(wall - 0.1, seconds),
        "handled": len(lat),
        "written": total,
        "p50_ms": common.pct(lat, 50),
        "p99_ms": common.pct(lat, 99),
    }


def fanout() -> int:
    """How many queues the bus delivers a ``team.created`` to: the transfers queue and every
    other subscriber's (fixtures'), each a delivery the emulator makes."""
    from events import topology

    return sum("team.created" in spec.event_types for spec in topology.queue_specs())


def _bare_topology(queues: int = 1) -> tuple[str, str, list[str]]:
    """A topic with ``queues`` raw-delivery queues of the bench's own, shaped like the
    bus's: (topic ARN, the measured queue's URL, the other queues' URLs)."""
    from events import aws

    sns, sqs = aws.client("sns"), aws.client("sqs")
    name = f"bench-bare-{uuid.uuid4().hex[:6]}"
    topic = sns.create_topic(Name=name)["TopicArn"]
    urls = []
    for i in range(queues):
        url = sqs.create_queue(QueueName=f"{name}-{i}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
        urls.append(url)
    return topic, urls[0], urls[1:]


class drained:
    """While the block runs, a thread per queue in ``urls`` receives and deletes (what the
    bus's other subscribers, or the bench's drainer, do with their copies)."""

    def __init__(self, urls: list[str]) -> None:
        self.urls, self.stop, self.threads = urls, threading.Event(), []

    def _drain(self, url: str) -> None:
        from events import aws

        sqs = aws.client("sqs")
        while not self.stop.is_set():
            msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            if msgs:
                sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
                )

    def __enter__(self) -> drained:
        self.threads = [threading.Thread(target=self._drain, args=(u,), daemon=True) for u in self.urls]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)


def median_step(runs: list[dict]) -> dict:
    """One rate's runs as one step: the median of each figure, the runs kept under ``runs``.
    A run that handled nothing in its wait has no latency: it counts as infinitely slow."""

    def figure(run: dict, key: str) -> float:
        value = float(run[key])
        return float("inf") if math.isnan(value) else value

    out = {k: common.median([figure(r, k) for r in runs]) for k in ("achieved", "p50_ms", "p99_ms")}
    return {"offered": runs[0]["offered"], **out, "runs": runs} if len(runs) > 1 else {**runs[0]}


def sustained(steps: list[dict[str, float]]) -> float:
    """The highest achieved rate among steps that kept up (>= 90 % of offered, p99 < 1 s)."""
    ok = [s["achieved"] for s in steps if s["achieved"] >= 0.9 * s["offered"] and s["p99_ms"] < 1000]
    return max(ok) if ok else max((s["achieved"] for s in steps), default=0.0)


def plot_throughput(ours: list[dict], bare: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for steps, label in ((ours, "League Manager (2 relays, 4 consumers)"), (bare, "bare boto3 pipeline")):
        x = [s["offered"] for s in steps]
        ax1.plot(x, [s["achieved"] for s in steps], marker="o", label=label)
        ax2.plot(x, [s["p99_ms"] for s in steps], marker="o", label=label)
    ax1.plot([0, max(s["offered"] for s in ours)], [0, max(s["offered"] for s in ours)], ":", color="grey")
    ax1.set_xlabel("offered events/s")
    ax1.set_ylabel("handled events/s")
    ax2.set_xlabel("offered events/s")
    ax2.set_ylabel("p99 commit -> handled (ms)")
    ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"end-to-end throughput on {common.env().emulator}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- benchmarks
def e2e_throughput(quick: bool) -> list[Result]:
    rates = [25, 50, 100] if quick else [50, 100, 150, 200, 300, 400, 600, 800]
    # Each rate is offered ``repeats`` times and judged by the median run: one burst's p99
    # crossing 1 s must not decide the row.
    seconds, repeats = (5.0, 1) if quick else (10.0, 3)
    start = 10_000_000
    ours: list[dict] = []
    with Pipeline(relays=2, consumers=4) as pipe:
        commit_events(10, 1, start=start - 100)  # warm-up
        time.sleep(3)
        for rate in rates:
            runs = []
            for _ in range(repeats):
                runs.append(measure_step(rate, seconds, start))
                start += int(rate * seconds) + 1
            step = median_step(runs)
            ours.append(step)
            p99s = ", ".join(f"{r['p99_ms']:.0f}" for r in runs)
            print(
                f"   offered {rate}/s: handled {step['achieved']:.0f}/s, p99 {step['p99_ms']:.0f} ms"
                + (f" (median of {repeats} runs; their p99s {p99s} ms)" if repeats > 1 else ""),
                flush=True,
            )
            if step["achieved"] < 0.7 * rate:
                break  # saturated
        peaks = pipe.peak_rss_mb()
    topic, url, others = _bare_topology(fanout())
    bare: list[dict] = []
    with drained(others):
        for rate in rates:
            step = median_step([bare_step(rate, seconds, topic_arn=topic, queue_url=url) for _ in range(repeats)])
            bare.append(step)
            if step["achieved"] < 0.7 * rate:
                break
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    plot_throughput(ours, bare, common.RESULTS / f"e2e_throughput-{common.env().emulator}.png")
    v, b = sustained(ours), sustained(bare)
    cores = os.cpu_count() or 1
    return [
        Result(
            "e2e_throughput",
            "events/s",
            v,
            b,
            v / b if b else float("nan"),
            "ratio >= 0.5",
            (v / b >= 0.5) if b else None,
            f"highest offered rate kept up with (>= 90 % handled, p99 < 1 s; median of {repeats} runs of {seconds:.0f} s "
            "at each rate); 2 relays + 4 consumers vs "
            f"2 PublishBatch + 4 receive/delete threads; {v / cores:.0f} vs {b / cores:.0f} events/s per core ({cores} cores)",
            {"ours": ours, "bare": bare, "peak_rss_mb": peaks, "cores": cores, "per_core": v / cores},
        )
    ]


def consumer_scaling(quick: bool) -> list[Result]:
    from events import aws, gate

    from .consumer_bench import envelopes, fill

    # moto's ReceiveMessage walks the whole queue, so a deep queue slows it down far more than
    # the consumers: 3,000 messages drained at 10/s there (1,500 at 26/s).
    n = 600 if quick or common.env().emulator == "moto" else 3000
    url = aws.queue_url(aws.queue_name(SERVICE))
    common.wait_empty(SERVICE)
    rates: dict[int, float] = {}
    busy: dict[int, dict[str, float]] = {}
    subject = 20_000_000
    for consumers in (1, 2, 4):
        # The consumers start behind the service's closed gate and are all ready before it
        # opens: none drains the queue while another is still starting.
        gate.pause(SERVICE, note="bench: consumer_scaling")
        fill(url, envelopes(n, subject))
        first, subject = subject, subject + n
        try:
            with Pipeline(relays=0, consumers=consumers) as pipe:
                pipe.wait_ready()
                cpu0, wall0 = pipe.cpu_seconds(), time.monotonic()
                gate.open_(SERVICE)
                deadline = time.monotonic() + 300
                times = inbox_times(first, subject - 1)
                while len(times) < n and time.monotonic() < deadline:
                    time.sleep(0.2)
                    times = inbox_times(first, subject - 1)
                wall = time.monotonic() - wall0
                busy[consumers] = {k: (v - cpu0.get(k, 0.0)) / wall for k, v in pipe.cpu_seconds().items()}
        finally:
            gate.open_(SERVICE)
        rates[consumers] = steady_rate(times)
        print(
            f"   {consumers} consumer(s): {rates[consumers]:.0f} events/s; cores busy: "
            + ", ".join(f"{k} {v:.2f}" for k, v in busy[consumers].items()),
            flush=True,
        )
    bare: dict[int, float] = {}
    for loops in (1, 2):
        fill(url, envelopes(n, subject))
        subject += n
        bare[loops] = bare_drain(url, loops)
        print(f"   {loops} bare receive/delete process(es): {bare[loops]:.0f} messages/s", flush=True)
    result = scaling_result(rates, n, cores=os.cpu_count() or 1, bare=bare)
    result.extra["cores_busy"] = busy
    one = busy[1]
    result.note += (
        f"; with 1 consumer the machine's cores were {sum(one.values()):.2f} busy "
        f"(consumers {one.get('consumers', 0):.2f}, emulator {one.get('emulator', 0):.2f}, postgres {one.get('postgres', 0):.2f})"
    )
    return [result]


def steady_rate(times: list[float]) -> float:
    """Events/s between the 10th and the 90th percentile of handled times: each consumer
    sees the gate open within its one-second poll, and the last messages trail; the middle
    80 % is when all of them drain together."""
    ordered = sorted(times)
    if len(ordered) < 10:
        return len(ordered) / max(ordered[-1] - ordered[0], 1e-3) if len(ordered) > 1 else 0.0
    lo, hi = len(ordered) // 10, len(ordered) * 9 // 10
    return (hi - lo) / max(ordered[hi] - ordered[lo], 1e-3)


def bare_drain(url: str, loops: int) -> float:
    """Messages/s that ``loops`` processes, each running the bare receive + delete loop, take
    off the queue at ``url`` together: from the moment all of them are ready (boto3 client
    made) to the moment the last one finds the queue empty."""
    import multiprocessing

    from events import aws

    from .consumer_bench import bare_loop

    ctx = multiprocessing.get_context("fork")
    ready, counts = ctx.Barrier(loops + 1), ctx.Queue()

    def work() -> None:
        aws.client("sqs")  # made before the clock starts, as a consumer's is
        ready.wait()
        counts.put(bare_loop(url))

    procs = [ctx.Process(target=work, daemon=True) for _ in range(loops)]
    for proc in procs:
        proc.start()
    ready.wait(60)
    t0 = time.monotonic()
    total = sum(counts.get(timeout=300) for _ in procs)
    wall = time.monotonic() - t0
    for proc in procs:
        proc.join(10)
    return total / max(wall, 1e-3)


def scaling_result(rates: dict[int, float], n: int, *, cores: int, bare: dict[int, float] | None = None) -> Result:
    """2 consumers vs 1: on this 2-core machine two processes are as many as it has cores to
    give (4 only share them); each rate is also stated per core the consumers could use.
    ``bare`` is what 1 and 2 bare receive + delete processes drained on the same queue: when
    two of them are no faster than one, that ceiling is the emulator's, and the note says
    how close two consumers came to it."""
    ratio = rates[2] / rates[1]
    per_core = {k: v / min(k, cores) for k, v in rates.items()}
    ceiling = ""
    if bare:
        ceiling = (
            f"; bare receive + delete processes on the same queue: 1 -> {bare[1]:.0f}, 2 -> {bare[2]:.0f} messages/s "
            f"(2 vs 1: {bare[2] / bare[1]:.2f}); 2 consumers reach {rates[2] / bare[2]:.2f} of 2 bare loops"
        )
    return Result(
        "consumer_scaling",
        "events/s",
        rates[2],
        rates[1],
        ratio,
        "ratio >= 1.6",
        ratio >= 1.6,
        f"{n} team.created pre-filled on the transfers queue, real handler, 2 processes vs 1 on {cores} cores "
        f"(all started behind the closed gate, then it opens; the middle 80 % of handled times); per core: 1 -> {per_core[1]:.0f}, 2 -> {per_core[2]:.0f} events/s"
        + (f", 4 -> {rates[4]:.0f} events/s in all" if 4 in rates else "")
        + ceiling,
        {"rates": rates, "cores": cores, "per_core": per_core, "bare": bare or {}},
    )


def soak(quick: bool) -> list[Result]:
    from .e2e_bench import e2e_rate

    rate = e2e_rate(common.env().emulator)  # what the emulator sustains here
    minutes = 1.0 if quick else 10.0
    start = 30_000_000
    samples: dict[str, list[int]] = {}
    minute_p99: list[float] = []
    minute_stalls: list[list[int]] = []
    minute_clear_p99: list[float] = []
    backlog: list[int] = []
    with Pipeline(relays=2, consumers=4) as pipe:
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                for name, proc in pipe.procs.items():
                    samples.setdefault(name, []).append(rss_kb(proc.pid))  # type: ignore[attr-defined]

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            for _ in range(int(minutes)) or [0]:
                with common.EmulatorProbe() as probe:
                    step = measure_step(rate, 60.0 if not quick else 30.0, start, settle=5.0)
                rows = handled_since(start, start + int(step["written"]) - 1)
                stalls = probe.stalls()
                clear = common.clear_of(rows, [(a, b) for a, b, _, _ in stalls])
                kept = [(h - c) * 1000 for (c, h), ok in zip(rows, clear, strict=True) if ok]
                start += int(step["written"]) + 1
                minute_p99.append(step["p99_ms"])
                minute_stalls.append([round((b - a) * 1000) for a, b, _, _ in stalls])
                minute_clear_p99.append(common.pct(kept, 99) if kept else float("nan"))
                backlog.append(int(step["written"] - step["handled"]))
                print(
                    f"   minute {len(minute_p99)}: p99 {step['p99_ms']:.0f} ms, backlog {backlog[-1]}; "
                    f"emulator stalls {common.describe_stalls(stalls)}, p99 clear of them {minute_clear_p99[-1]:.0f} ms",
                    flush=True,
                )
        finally:
            stop.set()
            sampler.join()
        peaks = pipe.peak_rss_mb()
    # Each process's size at the end of the first minute (a third of a quick run) is the
    # reference; growth = the largest size seen after it, relative to it.
    growth = {}
    for name, series in samples.items():
        ref = min(60, len(series) // 3)
        if len(series) > 2 and series[ref]:
            growth[name] = (max(series[ref:]) / series[ref] - 1) * 100
    worst = max(growth.values(), default=0.0)
    p99_ratio = minute_p99[-1] / minute_p99[0] if minute_p99 and minute_p99[0] else float("nan")
    ok = worst <= 10 and p99_ratio <= 1.25 and max(backlog, default=0) <= backlog[0] + rate
    return [
        Result(
            "soak",
            "% RSS growth",
            worst,
            10.0,
            10.0 / worst if worst > 0 else float("inf"),
            "RSS <= +10 % after minute 1; backlog flat; last p99 <= 1.25 x first",
            ok,
            f"{minutes:g} min at {rate:g} writes/s, 2 relays + 4 consumers; last/first minute p99 {p99_ratio:.2f}; "
            f"last minute p99 {minute_p99[-1]:.0f} ms, {minute_clear_p99[-1]:.0f} ms for the events clear of the "
            f"emulator's stalls (stalls over {len(minute_stalls[-1])} > 250 ms that minute, "
            f"{sum(len(m) for m in minute_stalls)} in all)",
            {
                "growth_pct": growth,
                "minute_p99_ms": minute_p99,
                "minute_clear_p99_ms": minute_clear_p99,
                "minute_stalls_ms": minute_stalls,
                "backlog": backlog,
                "peak_rss_mb": peaks,
            },
        )
    ]
