"""Tests that need a system program skip where it is missing, naming the Debian package to
install. A fresh machine runs the rest; CI installs every package and turns any skip into a
failure (conftest.py), so nothing is skipped there."""

from __future__ import annotations

import pytest


def program(missing: bool, what: str, package: str) -> None:
    """Skip the calling test when ``missing``: ``what`` is the program, ``package`` the apt
    package(s) that bring it."""
    if missing:
        pytest.skip(f"{what} is not installed: apt-get install -y {package} (.ci/run installs it)")
