"""Small process and network helpers shared by ``runstack`` and the tests."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

import requests

# Where a listening port is chosen: below the kernel's ephemeral range, so that no client
# socket (a test's request, a driver's connection) is given the port between the choice and
# the listener's bind. The kernel hands out ephemeral ports itself; a port picked by binding
# to 0 comes from that range and loses that race under parallel tests.
QUIET_PORTS_START = 20000
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _quiet_range() -> range:
    """Ports outside the ephemeral range: [20000, its first port), or above its last if
    the range starts too low to leave 2000 ports below."""
    try:
        low, high = (int(part) for part in _EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    if low - QUIET_PORTS_START >= 2000:
        return range(QUIET_PORTS_START, low)
    if 65535 - high >= 2000:
        return range(high + 1, 65536)
    return range(QUIET_PORTS_START, 65536)


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(span: int = 1) -> int:
    """A port where ``span`` consecutive ports are free to listen on (runstack takes the
    next one for its web server behind the front door), chosen at random outside the
    kernel's ephemeral range: parallel test processes rarely pick the same one, and no
    outgoing connection is given it before the caller binds."""
    ports = _quiet_range()
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(ports.start, ports.stop - span + 1)
        if all(bindable(p) for p in range(port, port + span)):
            return port
    raise RuntimeError(f"no {span} free consecutive ports between {ports.start} and {ports.stop - 1}")


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for_http(url: str, *, timeout: float = 20.0) -> None:
    """Return once ``url`` answers at all (any status), or raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")
