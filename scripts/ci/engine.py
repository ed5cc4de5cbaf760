"""A Docker engine for CI, started and stopped by the script that needs it (compose and swarm
steps alike), and the small tools every step uses: timed steps, bounded waits, commands that
fail loudly, a build streamed line by line, and the end of a run (what failed, the table of
steps, the exit code)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
STARTED = time.monotonic()


class Failed(Exception):
    """A check did not hold; the message says which and what was seen."""


def say(line: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f} s] {line}", flush=True)


TIMINGS: list[tuple[str, float, str]] = []


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    say(f"{name} ...")
    started = time.monotonic()
    outcome = "FAILED"
    try:
        yield
        outcome = "ok"
    finally:
        took = time.monotonic() - started
        TIMINGS.append((name, took, outcome))
        say(f"{name}: {outcome} ({took:.1f} s)")


def skipped(name: str, why: str) -> None:
    """A step left out on purpose: said, and in the table of steps as such."""
    TIMINGS.append((name, 0.0, "skipped"))
    say(f"{name}: skipped ({why})")


def run(
    argv: list[str], *, timeout: float = 120, check: bool = True, env: dict[str, str] | None = None, quiet: bool = False
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check and done.returncode != 0:
        raise Failed(
            f"{' '.join(argv[:6])} ... exited {done.returncode}: {(done.stderr or done.stdout).strip()[-1500:]}"
        )
    if not quiet and done.returncode != 0:
        say(f"  ({' '.join(argv[:4])} exited {done.returncode})")
    return done


def wait_until(what: str, probe: Callable[[], Any], *, timeout: float, interval: float = 1.0) -> Any:
    """Call ``probe`` until it returns something truthy; raise Failed after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
            if last:
                return last
        except (requests.RequestException, subprocess.TimeoutExpired, ValueError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise Failed(f"{what}: not within {timeout:.0f} s (last: {str(last)[:300]})")
        time.sleep(interval)


def stream(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 1800) -> None:
    """Run ``argv`` (an image build), saying each line of its output as it comes; killed
    after ``timeout`` like every other wait. Raises Failed unless it exits 0."""
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            say(f"  {line.rstrip()}")
    finally:
        timer.cancel()
    if proc.wait() != 0:
        raise Failed(f"{' '.join(argv)} exited {proc.returncode}")


def conclude(
    name: str,
    body: Callable[[], None],
    cleanup: Callable[[], None],
    *,
    width: int = 65,
    report: Callable[[], None] | None = None,
) -> int:
    """A CI script's run: ``body``, then ``cleanup`` whatever happened (also on SIGTERM or
    Ctrl-C, which interrupt ``body``); then ``report`` (tables of the script's own), the
    table of steps (names ``width`` wide) and "<name> passed|FAILED in N s". Returns the
    exit code: 0 when ``body`` went through, 1 otherwise."""
    ok = False
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        body()
        ok = True
    except Failed as exc:
        print(f"\n{name} FAILED: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"\n{name} interrupted", file=sys.stderr)
    except Exception:  # a bug here or an answer nobody expected: said, then cleaned up
        traceback.print_exc()
        print(f"\n{name} FAILED with an unexpected error", file=sys.stderr)
    finally:
        try:
            cleanup()
        finally:
            signal.signal(signal.SIGTERM, previous)
    if report is not None:
        report()
    total = time.monotonic() - STARTED
    print(f"\n{'step':<{width}} seconds  result")
    for step_name, took, outcome in TIMINGS:
        print(f"{step_name:<{width}} {took:7.1f}  {outcome}")
    print(f"\n{name} {'passed' if ok else 'FAILED'} in {total:.0f} s ({total / 60:.1f} min)")
    return 0 if ok else 1


def every_page(base: str, path: str, *, headers: dict[str, str], pages: int = 200) -> list[dict[str, Any]]:
    """Every item of a paginated list of the API at ``base`` (follows ``next``, ``pages`` at
    most); a list that is not paginated is returned as it is."""
    out: list[dict[str, Any]] = []
    url: str | None = base + path
    for _ in range(pages):
        if not url:
            break
        response = requests.get(url, headers=headers, timeout=10)
        response.raise_for_status()
        body = response.json()
        if not isinstance(body, dict):
            return out + body
        out += body.get("results", [])
        nxt = body.get("next")
        url = (base + nxt[nxt.index("/api/") :]) if nxt else None
    return out


# ----------------------------------------------------------------------------- the engine


class Engine:
    """dockerd started (and stopped) by this script, and the host state it changes."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="league-dockerd.", suffix=".log")[1])
        self.iptables_before = ""
        self.forward_policy = "ACCEPT"

    @staticmethod
    def answers() -> bool:
        try:
            return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    @staticmethod
    def install() -> None:
        wanted = {
            "dockerd": "docker.io",
            "debootstrap": "debootstrap",
            "docker-compose": "docker-compose",
            "iptables": "iptables",
        }
        missing = sorted({pkg for binary, pkg in wanted.items() if not shutil.which(binary)})
        if not missing:
            say("  docker.io, debootstrap, docker-compose: installed")
            return
        say(f"  apt-get install {' '.join(missing)}")
        run(["apt-get", "update", "-q"], timeout=300)
        run(["apt-get", "install", "-y", "-q", *missing], timeout=600, env={"DEBIAN_FRONTEND": "noninteractive"})

    def start(self) -> None:
        if self.answers():
            say("  a Docker engine already answers: using it, and leaving it running")
            return
        self.iptables_before = run(["iptables-save"]).stdout
        policy = re.search(r"^:FORWARD (\w+)", self.iptables_before, flags=re.M)
        self.forward_policy = policy.group(1) if policy else "ACCEPT"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--host", "unix:///var/run/docker.sock"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until("dockerd answers", lambda: self.proc.poll() is None and self.answers() or self._died(), timeout=60)
        # The engine sets FORWARD to DROP; other bridges on this host must keep working.
        run(["iptables", "-P", "FORWARD", "ACCEPT"])
        version = run(["docker", "version", "-f", "{{.Server.Version}}"]).stdout.strip()
        say(f"  dockerd {version} (pid {self.proc.pid}, log {self.log})")

    def _died(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise Failed(f"dockerd exited {self.proc.returncode}: {self.log.read_text()[-1500:]}")
        return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # containerd, started by dockerd in its session, goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.restore_network()
        say(f"  dockerd stopped; log kept at {self.log}")

    def restore_network(self) -> None:
        """Delete what the engine added (its chains, the rules pointing at them or at its
        bridges, the docker0 bridge) and put back the FORWARD policy."""
        for table in ("nat", "filter"):
            rules = run(["iptables", "-t", table, "-S"], check=False).stdout.splitlines()
            for rule in rules:
                if rule.startswith("-A ") and re.search(r"DOCKER|docker0|docker_gwbridge|br-[0-9a-f]{12}", rule):
                    run(["iptables", "-t", table, "-D", *rule[3:].split()], check=False, quiet=True)
            for rule in rules:
                chain = re.match(r"-N (DOCKER\S*)", rule)
                if chain:
                    run(["iptables", "-t", table, "-F", chain.group(1)], check=False, quiet=True)
                    run(["iptables", "-t", table, "-X", chain.group(1)], check=False, quiet=True)
        run(["iptables", "-P", "FORWARD", self.forward_policy], check=False)
        for link in re.findall(
            r"^\d+: (docker0|docker_gwbridge|br-[0-9a-f]{12})[@:]",
            run(["ip", "-o", "link"], check=False).stdout,
            flags=re.M,
        ):
            run(["ip", "link", "delete", link], check=False, quiet=True)
        after = run(["iptables-save"], check=False).stdout
        same = _rules(after) == _rules(self.iptables_before)
        say(
            f"  iptables: engine's rules removed, FORWARD {self.forward_policy}; "
            f"{'identical to before' if same else 'DIFFERS from before (see iptables-save)'}"
        )


def _rules(dump: str) -> list[str]:
    """What iptables-save says that matters: rules, custom chains, and built-in chains
    whose policy is not ACCEPT (an empty table with ACCEPT policies changes nothing)."""
    builtin = re.compile(r"^:(INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ACCEPT ")
    return [
        re.sub(r"\[\d+:\d+\]", "", line)
        for line in dump.splitlines()
        if line.startswith("-A ") or (line.startswith(":") and not builtin.match(line))
    ]
