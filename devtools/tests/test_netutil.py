"""``free_port``: the ports runstack, the emulators and the process tests listen on are chosen
outside the kernel's ephemeral range, where a parallel test's client socket could be given
the port between the choice and the bind (CI lost a runstack web server that way)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devtools import netutil
from devtools.netutil import bindable, free_port


def ephemeral() -> range:
    low, high = (int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


def test_free_port_is_outside_the_ephemeral_range_and_free():
    for _ in range(50):
        port = free_port()
        assert port not in ephemeral()
        assert bindable(port)


def test_a_span_of_ports_is_free_together():
    port = free_port(span=3)
    held = []
    try:
        for p in range(port, port + 3):
            s = socket.socket()
            s.bind(("127.0.0.1", p))  # raises if any of the three was taken
            held.append(s)
    finally:
        for s in held:
            s.close()


def test_a_taken_port_is_never_chosen(monkeypatch):
    """With the range narrowed to two ports and one of them held, the other is chosen. The
    pair comes from the quiet range (two free ports side by side): a port the kernel handed
    out for ``bind(0)`` sits in the ephemeral range, where a parallel test's connection took
    its neighbour in CI."""
    with socket.socket() as holder:
        taken = free_port(span=2)
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        monkeypatch.setattr(netutil, "_quiet_range", lambda: range(taken, taken + 2))
        if not bindable(taken + 1):
            pytest.fail(f"port {taken + 1} is busy on this machine; the test needs it free")
        assert {free_port() for _ in range(20)} == {taken + 1}


def test_no_free_port_is_an_error_that_says_where_it_looked(monkeypatch):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        taken = holder.getsockname()[1]
        monkeypatch.setattr(netutil, "_quiet_range", lambda: range(taken, taken + 1))
        with pytest.raises(RuntimeError, match=f"between {taken} and {taken}"):
            free_port()
