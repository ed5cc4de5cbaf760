"""The crash-injection suite, quick version, as part of the test suite: every scenario of
``python -m faults.run`` at small sizes (a fresh Postgres database of its own, whatever
DATABASE_URL the tests use). The full run is CI's crash-suite step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from faults.stack import postgres_available

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.postgres]


def test_quick_crash_suite_loses_nothing_and_applies_nothing_twice():
    if not postgres_available():
        pytest.skip("the crash suite needs PostgreSQL at 127.0.0.1:5432")
    done = subprocess.run(
        [sys.executable, "-m", "faults.run", "--quick"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    print(done.stdout[-6000:])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "RESULT: PASS" in done.stdout
