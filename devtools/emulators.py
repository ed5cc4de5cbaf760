"""Local AWS for the bus: ``moto_server`` or LocalStack, started, checked and reset the same way.

The bus never knows which emulator it talks to: only ``AWS_ENDPOINT_URL`` differs, as in
production (real AWS). This module is what the project uses to *run* an emulator: `runstack
--emulator`, the tests (``BUS_EMULATOR=moto|localstack``), the crash suite and the benchmarks.

Guarantees:
- Both emulators listen on loopback only (moto ``-H 127.0.0.1``; LocalStack
  ``GATEWAY_LISTEN=127.0.0.1:PORT`` with the hypercorn gateway, since its default gateway
  binds 0.0.0.0 whatever it is told).
- LocalStack lives in a virtual environment of its own (``LOCALSTACK_HOME``, default
  ``.localstack/`` in the checkout): it imports ``moto`` from its ``moto-ext`` fork, which
  clashes with the ``moto`` the project installs. ``install_localstack()`` (or ``python -m
  devtools.emulators install``) builds it from the pinned ``requirements-localstack.txt``;
  nothing downloads when it starts (no DNS server, no certificate download, no telemetry,
  its files under ``LOCALSTACK_HOME``).
- Who starts an emulator gives its clients the emulator's credentials explicitly
  (``client_env``): the bus itself never invents credentials.
- ``reset()`` empties SNS and SQS through the AWS API itself, so it works on either
  emulator (and would on any account): no emulator-specific reset endpoint, no account id
  or URL shape assumed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import requests

from .netutil import free_port

KINDS = ("moto", "localstack")
# The credentials a process talking to an emulator that this project started is given
# explicitly (emulators accept any). Nothing else ever defaults to them: with an endpoint
# set and no emulator of ours, the bus takes whatever boto3's credential chain finds.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def client_env(url: str) -> dict[str, str]:
    """The environment of a process that talks to the emulator at ``url`` started here:
    its endpoint and the emulator's credentials (first in boto3's chain; no session token)."""
    return {"AWS_ENDPOINT_URL": url, **CREDENTIALS, "AWS_SESSION_TOKEN": ""}

BASE_DIR = Path(__file__).resolve().parent.parent
LOCALSTACK_REQUIREMENTS = BASE_DIR / "requirements-localstack.txt"


class EmulatorError(RuntimeError):
    """An emulator could not be installed or started; the message says what to do."""


def selected(default: str = "moto") -> str:
    """The emulator named by ``BUS_EMULATOR`` (tests, crash suite, CI)."""
    kind = os.environ.get("BUS_EMULATOR", "").strip().lower() or default
    if kind not in KINDS:
        raise EmulatorError(f"BUS_EMULATOR={kind!r} is not one of {', '.join(KINDS)}.")
    return kind


# ------------------------------------------------------------------------------ LocalStack
def localstack_home() -> Path:
    return Path(os.environ.get("LOCALSTACK_HOME") or BASE_DIR / ".localstack").resolve()


def _localstack_python() -> Path:
    return localstack_home() / "venv" / "bin" / "python"


def _requirements_digest() -> str:
    return hashlib.sha256(LOCALSTACK_REQUIREMENTS.read_bytes()).hexdigest()


def localstack_installed() -> bool:
    marker = localstack_home() / "venv" / ".installed"
    return _localstack_python().exists() and marker.exists() and marker.read_text() == _requirements_digest()


class Output(Protocol):
    """Where the install reports: a text stream, or a management command's ``stdout``."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


def install_localstack(*, out: Output = sys.stdout) -> Path:
    """Create LocalStack's own virtual environment from the pinned requirements (idempotent)."""
    if localstack_installed():
        return _localstack_python()
    venv = localstack_home() / "venv"
    print(f"installing LocalStack into {venv} (its own environment; once)", file=out, flush=True)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run([*pip, "-r", str(LOCALSTACK_REQUIREMENTS)], capture_output=True, text=True)
    if done.returncode != 0:
        raise EmulatorError(
            f"pip could not install LocalStack from {LOCALSTACK_REQUIREMENTS.name}:\n{done.stderr[-2000:]}"
        )
    (venv / ".installed").write_text(_requirements_digest())
    print(f"LocalStack installed in {time.monotonic() - started:.0f} s", file=out, flush=True)
    return _localstack_python()


# --------------------------------------------------------------------------------- start
def command(
    kind: str, port: int, *, data_dir: Path | None = None, services: tuple[str, ...] = ()
) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment that start ``kind`` on 127.0.0.1:``port`` (LocalStack
    with SNS and SQS, and ``services`` besides, e.g. ``cloudformation``)."""
    if kind == "moto":
        exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
        return [exe, "-H", "127.0.0.1", "-p", str(port)], {}
    if kind == "localstack":
        if not localstack_installed():
            raise EmulatorError("LocalStack is not installed: run `python -m devtools.emulators install` first.")
        root = Path(data_dir or localstack_home() / "state") / f"localstack-{port}"
        root.mkdir(parents=True, exist_ok=True)
        env = {
            "GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "GATEWAY_SERVER": "hypercorn",
            "SERVICES": ",".join(("sns", "sqs", *services)),
            "OVERRIDE_IN_DOCKER": "0",
            "FILESYSTEM_ROOT": str(root),
            "DNS_ADDRESS": "0",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "PERSISTENCE": "0",
            "DISABLE_EVENTS": "1",
            "EAGER_SERVICE_LOADING": "1",
            "LOCALSTACK_TELEMETRY": "0",
            "DISABLE_CORS_CHECKS": "1",
        }
        return [str(_localstack_python()), "-m", "localstack.runtime.main"], env
    raise EmulatorError(f"unknown emulator {kind!r}: choose one of {', '.join(KINDS)}")


def ready(kind: str, url: str) -> bool:
    """True once the emulator answers SNS and SQS."""
    try:
        if kind == "moto":
            return requests.get(f"{url}/moto-api/", timeout=1).status_code < 500
        r = requests.get(f"{url}/_localstack/health", timeout=1)
        services = r.json().get("services", {}) if r.ok else {}
        return all(services.get(s) in ("running", "available") for s in ("sns", "sqs"))
    except (requests.RequestException, ValueError):
        return False


@dataclass
class Emulator:
    kind: str
    port: int
    proc: subprocess.Popen[Any]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, *, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait_ready(kind: str, url: str, *, timeout: float = 60.0, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready(kind, url):
            return
        if proc is not None and proc.poll() is not None:
            raise EmulatorError(f"{kind} exited with code {proc.returncode} before it was ready (see its log)")
        time.sleep(0.2)
    raise EmulatorError(f"{kind} at {url} was not ready within {timeout:.0f} s")


def start(
    kind: str,
    port: int | None = None,
    *,
    log: IO[Any] | int | None = subprocess.DEVNULL,
    data_dir: Path | None = None,
    timeout: float = 90.0,
    services: tuple[str, ...] = (),
) -> Emulator:
    """Start ``kind`` on loopback and return once SNS and SQS answer."""
    port = port or free_port()
    argv, extra = command(kind, port, data_dir=data_dir, services=services)
    proc = subprocess.Popen(argv, env={**os.environ, **extra}, stdout=log, stderr=subprocess.STDOUT)
    emulator = Emulator(kind, port, proc)
    try:
        wait_ready(kind, emulator.url, timeout=timeout, proc=proc)
    except BaseException:
        emulator.stop(kill=True)
        raise
    return emulator


def reset(url: str, *, region: str | None = None) -> None:
    """Delete every SNS subscription and topic and every SQS queue at ``url`` in ``region``
    (the bus's ``AWS_REGION`` unless given: emulators keep each region apart, as AWS does)."""
    import boto3

    kwargs: dict[str, Any] = {
        "endpoint_url": url,
        "region_name": region or os.environ.get("AWS_REGION") or "eu-west-1",
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }
    sns, sqs = boto3.client("sns", **kwargs), boto3.client("sqs", **kwargs)
    for page in sns.get_paginator("list_topics").paginate():
        for topic in page.get("Topics", []):
            sns.delete_topic(TopicArn=topic["TopicArn"])
    for page in sns.get_paginator("list_subscriptions").paginate():
        for sub in page.get("Subscriptions", []):
            if sub["SubscriptionArn"].startswith("arn:"):
                sns.unsubscribe(SubscriptionArn=sub["SubscriptionArn"])
    for page in sqs.get_paginator("list_queues").paginate():
        for queue_url in page.get("QueueUrls", []):
            sqs.delete_queue(QueueUrl=queue_url)


# ----------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.emulators", description="Local AWS emulators for the bus.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="Install LocalStack into its own virtual environment (LOCALSTACK_HOME).")
    run = sub.add_parser("run", help="Run an emulator on loopback until Ctrl-C.")
    run.add_argument("kind", choices=KINDS)
    run.add_argument("--port", type=int, default=4566)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "install":
            install_localstack()
            return 0
        emulator = start(args.kind, args.port, log=None)
    except EmulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.kind} ready at {emulator.url} (Ctrl-C stops it)", flush=True)
    try:
        emulator.proc.wait()
    except KeyboardInterrupt:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
