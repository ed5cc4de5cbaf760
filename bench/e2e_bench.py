"""End-to-end latency through the running stack: POST /api/teams/ to gunicorn at a steady
rate; latency = the transfers handler's inbox row ``handled_at`` minus the envelope
``time`` of the team.created outbox row. With the on-commit kick vs beat alone."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import requests
from django.db import connection

from . import common
from .common import BIN, ROOT, Result

HANDLER = "transfers:transfers.handlers.on_team_created"


class Stack:
    """gunicorn (2 workers), Celery worker (-P solo) and beat, one consumer per service; with
    ``kick``, the worker's relay thread woken by the writers' NOTIFY (``OUTBOX_WAKEUP=notify``,
    the PostgreSQL default); without, beat's sweep every second alone."""

    def __init__(self, *, kick: bool, tag: str) -> None:
        self.kick, self.tag = kick, tag
        self.procs = []

    def __enter__(self) -> Stack:
        from devtools.netutil import free_port, wait_for_http
        from events import topology

        e = common.env()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = e.child_env(OUTBOX_KICK="true" if self.kick else "false", TEAMS_SERVICE_URL=self.url)
        logs = e.data_dir
        manage = [sys.executable, str(ROOT / "manage.py")]
        celery = [str(BIN / "celery"), "-A", "league"]
        try:
            self.procs.append(
                common.spawn(
                    [str(BIN / "gunicorn"), "league.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2"],
                    env=env,
                    log=logs / f"web-{self.tag}.log",
                )
            )
            self.procs.append(
                common.spawn(
                    [
                        *celery,
                        "worker",
                        "-l",
                        "warning",
                        "-P",
                        "solo",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ],
                    env=env,
                    log=logs / f"worker-{self.tag}.log",
                )
            )
            self.procs.append(
                common.spawn(
                    [*celery, "beat", "-l", "warning", "-s", str(logs / f"beat-{self.tag}")],
                    env=env,
                    log=logs / f"beat-{self.tag}.log",
                )
            )
            for service in topology.consuming_services():
                self.procs.append(
                    common.spawn(
                        [*manage, "consume", "--service", service, "--no-startup"],
                        env=env,
                        log=logs / f"consume-{service}-{self.tag}.log",
                    )
                )
            wait_for_http(f"{self.url}/api/", timeout=60)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.procs):
            common.stop(p)
        self.procs.clear()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each part of the stack, the emulator, PostgreSQL's
        processes and this process (the load generator)."""
        parts: dict[str, float] = {}
        for p in self.procs:
            argv = [str(a) for a in p.args]
            name = (
                "web"
                if "gunicorn" in argv[0]
                else argv[argv.index("--service") + 1]
                if "--service" in argv
                else argv[3]
            )
            key = f"consumer {name}" if "--service" in argv else name
            parts[key] = parts.get(key, 0.0) + common.group_cpu_seconds(p.pid)
        parts["emulator"] = common.emulator_cpu_seconds()
        parts["postgres"] = common.command_cpu_seconds("postgres")
        t = os.times()
        parts["load generator"] = t.user + t.system
        return parts

    def check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(
                    f"stack process {p.args[:3]} exited with {p.returncode}; logs in {common.env().data_dir}"
                )


def _token() -> str:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user, _ = get_user_model().objects.get_or_create(
        username="bench-e2e", defaults={"is_staff": True, "is_superuser": True}
    )
    return Token.objects.get_or_create(user=user)[0].key


def load(url: str, token: str, *, rate: float, seconds: float, prefix: str) -> list[int]:
    """Open loop: request i is due at t0 + i/rate, whatever the previous ones do."""
    total = int(rate * seconds)
    ids: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    t0 = time.monotonic() + 0.2
    nxt = iter(range(total))

    def worker() -> None:
        s = requests.Session()
        s.headers["Authorization"] = f"Token {token}"
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            r = s.post(f"{url}/api/teams/", json={"name": f"{prefix} {i}"}, timeout=30)
            with lock:
                if r.status_code == 201:
                    ids.append(r.json()["id"])
                else:
                    errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} POSTs failed, e.g. {errors[0]}")
    return ids


def latencies(team_ids: list[int], *, timeout: float = 60, patience: float = 600) -> tuple[list[dict[str, float]], int]:
    """Per team.created handled: ``total`` ms from the envelope time to the transfers
    handler's inbox row, split at the outbox row's ``published_at`` (set by the relay once
    SNS answered) into ``to_published`` and ``published_to_handler``. Waits ``timeout`` s,
    then on while events keep arriving (an emulator that fell behind, moto at 50 writes/s,
    is still measured, not given up on), ``patience`` s at most. Returns the samples and how
    many events were not handled by then."""
    subjects = [str(i) for i in team_ids]
    sql = """
        SELECT o.envelope->>'time', o.published_at, i.handled_at
        FROM events_outboxmessage o JOIN events_inboxmessage i
          ON i.event_id = o.event_id AND i.handler = %s
        WHERE o.type = 'team.created' AND o.subject = ANY(%s)
    """
    began = time.monotonic()
    progress_at, seen = began, -1
    while True:
        with connection.cursor() as c:
            c.execute(sql, [HANDLER, subjects])
            rows = c.fetchall()
        now = time.monotonic()
        if len(rows) > seen:
            progress_at, seen = now, len(rows)
        if len(rows) == len(subjects) or now - began > patience:
            break
        if now - began > timeout and now - progress_at > 30:
            break  # nothing handled for 30 s: stuck, not slow
        time.sleep(0.5)
    out = []
    for t, published, handled in rows:
        t0 = datetime.fromisoformat(t.replace("Z", "+00:00"))
        out.append(
            {
                "total": (handled - t0).total_seconds() * 1000,
                "to_published": (published - t0).total_seconds() * 1000,
                "published_to_handler": (handled - published).total_seconds() * 1000,
                "at": t0.timestamp(),
                "done": handled.timestamp(),
            }
        )
    return out, len(subjects) - len(rows)


# The emulator's CPU over a measured window: (CPU seconds, wall seconds, events).
CPU_USED: dict[str, tuple[float, float, int]] = {}
# Every part's CPU over a measured window of the stack: cores used and ms per event.
CPU_PARTS: dict[str, dict[str, dict[str, float]]] = {}
# The emulator's stalls (``common.EmulatorProbe``) over a measured window, and the bare hop's
# (sent, received) monotonic times.
STALLS: dict[str, list[tuple[float, float, float, float]]] = {}
BARE_SPANS: list[tuple[float, float]] = []
# The bare hop timed from each publish's actual send (its latencies are from the scheduled time).
BARE_FROM_SEND: list[float] = []


def run_config(*, kick: bool, rate: float, seconds: float, token: str) -> tuple[list[dict[str, float]], int]:
    tag = "kick" if kick else "beat"
    common.clean_slate()  # the other configuration's backlog (other services' queues) goes first
    with Stack(kick=kick, tag=tag) as stack:
        # warm-up until the whole pipeline answers (consumers up, worker and beat running)
        warm = load(stack.url, token, rate=5, seconds=1, prefix=f"warm-{tag}")
        if latencies(warm, timeout=90)[1]:
            raise RuntimeError(f"the {tag} stack did not handle its warm-up events; logs in {common.env().data_dir}")
        time.sleep(1)
        cpu0, wall0 = common.emulator_cpu_seconds(), time.monotonic()
        parts0 = stack.cpu_seconds()
        with common.EmulatorProbe() as probe:
            ids = load(stack.url, token, rate=rate, seconds=seconds, prefix=f"bench-{tag}")
            stack.check_alive()
            measured = latencies(ids)
        STALLS[tag] = probe.stalls()
        CPU_USED[tag] = (common.emulator_cpu_seconds() - cpu0, time.monotonic() - wall0, len(ids))
        wall = time.monotonic() - wall0
        CPU_PARTS[tag] = {
            part: {
                "cores": (used - parts0.get(part, 0.0)) / wall,
                "ms_per_event": (used - parts0.get(part, 0.0)) * 1000 / max(len(ids), 1),
            }
            for part, used in stack.cpu_seconds().items()
        }
        return measured


def breakdown(samples: list[dict[str, float]]) -> dict[str, float]:
    parts = [k for k in samples[0] if k not in ("at", "done")]
    return {f"{k}_p{p}_ms": common.pct([x[k] for x in samples], p) for k in parts for p in (50, 99)}


def plot(kick: list[float], beat: list[float], path: Path, rate: float, seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for data, label, color in ((kick, "on-commit kick + beat 1 s", "tab:blue"), (beat, "beat 1 s alone", "tab:orange")):
        s = sorted(data)
        ax1.plot(s, [(i + 1) / len(s) for i in range(len(s))], label=label, color=color)
        ax2.hist(data, bins=60, alpha=0.6, label=label, color=color)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("commit -> handler (ms, log scale)")
        ax.legend()
        ax.grid(alpha=0.3)
    ax1.set_ylabel("fraction of events")
    ax1.set_title("CDF")
    ax2.set_ylabel("events")
    ax2.set_title("histogram")
    for p, style in ((50, ":"), (99, "--")):
        ax1.axvline(common.pct(kick, p), color="tab:blue", linestyle=style, linewidth=0.8)
    fig.suptitle(f"team.created end-to-end latency, {rate:g} POST/s for {seconds:g} s (p50 dotted, p99 dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# What each emulator sustains here: LocalStack the 50 writes/s; moto (a depth-bound
# SQS, slower per message) falls behind at 50 on 2 cores, so its rows are measured at 20.
RATES = {"localstack": 50.0, "moto": 20.0}


def e2e_rate(emulator: str) -> float:
    return RATES.get(emulator, 20.0)


def bare_latency(rate: float, seconds: float) -> list[float]:
    """The floor the emulator sets: a bare boto3 ``sns.publish`` -> raw delivery ->
    ``receive_message`` loop at ``rate`` for ``seconds`` on a topic and queue of its own (same
    emulator, same run), delivered to as many queues as the bus delivers a ``team.created``
    to (the others drained alongside). Milliseconds from each publish's scheduled time to
    its receipt: a publish held up behind a slow call is charged its wait, as the system is
    charged from its commit, which the emulator cannot hold up (timing from the actual send
    would omit the wait, and a stall would cost the bare hop only the few calls in flight).
    The times from the actual send are kept in ``BARE_FROM_SEND``."""

    from .pipeline_bench import _bare_topology, drained, fanout

    topic, url, others = _bare_topology(fanout())
    with drained(others):
        return _bare_hop(rate, seconds, topic, url)


def _bare_hop(rate: float, seconds: float, topic: str, url: str) -> list[float]:
    from events import aws

    total = int(rate * seconds)
    sent: dict[str, float] = {}
    actual: dict[str, float] = {}
    lat: list[float] = []
    from_send: list[float] = []
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()
    done = threading.Event()
    t0 = time.monotonic() + 0.2
    nxt = iter(range(total))

    def publisher() -> None:
        sns = aws.client("sns")
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            scheduled = t0 + i / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            key = str(i)
            with lock:
                sent[key] = scheduled
                actual[key] = time.monotonic()
            sns.publish(TopicArn=topic, Message=json.dumps({"n": key, "pad": "x" * 300}))

    def receiver() -> None:
        sqs = aws.client("sqs")
        while not done.is_set():
            msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            now = time.monotonic()
            with lock:
                for m in msgs:
                    key = json.loads(m["Body"])["n"]
                    at = sent[key]
                    lat.append((now - at) * 1000)
                    from_send.append((now - actual[key]) * 1000)
                    spans.append((at, now))
            if msgs:
                sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
                )

    pubs = [threading.Thread(target=publisher) for _ in range(4)]
    rec = threading.Thread(target=receiver)
    cpu0, wall0 = common.emulator_cpu_seconds(), time.monotonic()
    with common.EmulatorProbe() as probe:
        rec.start()
        for t in pubs:
            t.start()
        for t in pubs:
            t.join()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with lock:
                if len(lat) >= total:
                    break
            time.sleep(0.05)
        done.set()
        rec.join()
    CPU_USED["bare"] = (common.emulator_cpu_seconds() - cpu0, time.monotonic() - wall0, total)
    STALLS["bare"] = probe.stalls()
    BARE_SPANS[:] = spans
    BARE_FROM_SEND[:] = from_send
    return lat


def stall_figures(kick_s: list[dict[str, float]], bare: list[float]) -> dict[str, dict]:
    """Per window (``kick``: the system, ``bare``: the bare hop): the emulator's stalls, how
    many events were in flight during one, and the p99 of the others. Shown, not judged: the
    rows stay judged on every event."""
    out: dict[str, dict] = {}
    windows = {
        "kick": ([(x["at"], x["done"]) for x in kick_s], [x["total"] for x in kick_s], 0),
        "bare": (list(BARE_SPANS), list(bare) if len(BARE_SPANS) == len(bare) else [], 2),
    }
    for tag, (spans, values, clock) in windows.items():
        stalls = STALLS.get(tag, [])
        clear = common.clear_of(spans, [(s[clock], s[clock + 1]) for s in stalls]) if values else []
        kept = [v for v, ok in zip(values, clear, strict=True) if ok]
        out[tag] = {
            "stalls": common.describe_stalls(stalls),
            "stall_ms": [round((s[1] - s[0]) * 1000) for s in stalls],
            "events_in_a_stall": len(values) - len(kept),
            "clear_p99_ms": common.pct(kept, 99) if kept else float("nan"),
        }
    return out


def judged(kick: list[float], bare: list[float], *, note: str, extra: dict) -> list[Result]:
    """The rows of the end-to-end latency, each judged against the bare hop of the same run:
    ``bare_latency_p50``/``_p99`` (the floor), and ``e2e_latency_p50`` <= 1.5 x bare p50,
    ``e2e_latency_p99`` <= 2 x bare p99 (``e2e_latency_p95`` is shown, not judged)."""
    out = [
        Result(
            f"bare_latency_p{p}",
            "ms",
            common.pct(bare, p),
            float("nan"),
            float("nan"),
            "(the floor)",
            None,
            f"{len(bare)} bare sns.publish -> raw delivery -> receive_message, same rate and emulator",
            {"n": len(bare)},
        )
        for p in (50, 99)
    ]
    for p, factor in ((50, 1.5), (95, None), (99, 2.0)):
        v, b = common.pct(kick, p), common.pct(bare, p)
        out.append(
            Result(
                f"e2e_latency_p{p}",
                "ms",
                v,
                b,
                b / v if v else float("nan"),
                f"value <= {factor:g} x bare p{p}" if factor else "(none)",
                (v <= factor * b and not extra.get("kick_unhandled")) if factor else None,
                note,
                extra,
            )
        )
    return out


def e2e_latency(quick: bool) -> list[Result]:
    emulator = common.env().emulator
    rate, seconds = e2e_rate(emulator), (10.0 if quick else 60.0)
    bare = bare_latency(rate, seconds)
    token = _token()
    kick_s, kick_missing = run_config(kick=True, rate=rate, seconds=seconds, token=token)
    beat_s, beat_missing = run_config(kick=False, rate=rate, seconds=seconds, token=token)
    if not kick_s or not beat_s or not bare:
        raise RuntimeError(
            f"no event handled (kick {len(kick_s)}, beat {len(beat_s)}, bare {len(bare)}); logs in {common.env().data_dir}"
        )
    sent = int(rate * seconds)
    # Events still unhandled when the wait ended are not in the percentiles, which then
    # understate the latency: such a row cannot meet its target, and says how many.
    unhandled = (
        f"; NOT HANDLED within the wait: kick {kick_missing}, beat {beat_missing} of {sent}"
        if kick_missing or beat_missing
        else ""
    )
    kick, beat = [x["total"] for x in kick_s], [x["total"] for x in beat_s]
    split = {"kick": breakdown(kick_s), "beat": breakdown(beat_s)}
    emulator_cpu = {
        tag: {"cpu_ms_per_event": cpu * 1000 / max(n, 1), "cores_used": cpu / max(wall, 1e-9)}
        for tag, (cpu, wall, n) in CPU_USED.items()
    }
    cpu_note = ""
    if "kick" in CPU_PARTS:
        busy = sum(p["cores"] for p in CPU_PARTS["kick"].values())
        cpu_note += f"; the machine's cores busy while measured: {busy:.2f} of {os.cpu_count()}"
    if "bare" in emulator_cpu and "kick" in emulator_cpu:
        b, k = emulator_cpu["bare"], emulator_cpu["kick"]
        cpu_note = (
            f"; {emulator}'s CPU per event: {k['cpu_ms_per_event']:.1f} ms in the system "
            f"({k['cores_used']:.2f} of {os.cpu_count()} cores) vs {b['cpu_ms_per_event']:.1f} ms bare "
            f"({b['cores_used']:.2f} cores)"
        )
    stalls = stall_figures(kick_s, bare)
    cpu_note += (
        f"; the emulator's stalls (a trivial call unanswered for > 250 ms): bare {stalls['bare']['stalls']}, "
        f"system {stalls['kick']['stalls']}; p99 of the events clear of them: {stalls['kick']['clear_p99_ms']:.0f} "
        f"vs {stalls['bare']['clear_p99_ms']:.0f} ms bare"
    )
    if BARE_FROM_SEND:
        cpu_note += (
            f"; the bare hop timed from each publish's actual send instead of its scheduled time: p50 "
            f"{common.pct(BARE_FROM_SEND, 50):.0f} / p99 {common.pct(BARE_FROM_SEND, 99):.0f} ms"
        )
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    plot(kick, beat, common.RESULTS / f"e2e_latency-{emulator}.png", rate, seconds)
    return judged(
        kick,
        bare,
        note=f"{len(kick)} team.created on {emulator}, {rate:g}/s for {seconds:g} s; value: NOTIFY wake-up, "
        f"baseline: the bare hop (beat 1 s alone: p50 {common.pct(beat, 50):.0f} / p99 {common.pct(beat, 99):.0f} ms)"
        + cpu_note
        + unhandled,
        extra={
            "n": len(kick),
            "rate": rate,
            "kick_unhandled": kick_missing,
            "beat_unhandled": beat_missing,
            "kick_max_ms": max(kick),
            "beat_max_ms": max(beat),
            "beat_p50_ms": common.pct(beat, 50),
            "beat_p99_ms": common.pct(beat, 99),
            "split": split,
            "emulator_cpu": emulator_cpu,
            "cpu_parts": CPU_PARTS,
            "emulator_stalls": stalls,
            "bare_from_send_p50_ms": common.pct(BARE_FROM_SEND, 50) if BARE_FROM_SEND else None,
            "bare_from_send_p99_ms": common.pct(BARE_FROM_SEND, 99) if BARE_FROM_SEND else None,
        },
    )
