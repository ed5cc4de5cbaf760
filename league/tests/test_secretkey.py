"""The signing key of a development install (league/secretkey.py): with DEBUG on and no
SECRET_KEY, each data directory has its own random key in a 0600 file, which every process on
it uses; the fixed key is the test suite's only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings

from league import secretkey

OLD_FIXED_KEY = "insecure-development-key-do-not-use-in-production"


def key_of_a_process(data_dir) -> str:
    """SECRET_KEY as a ``manage.py`` process outside the test suite sees it."""
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "TESTING", "DEBUG", "DATABASE_URL")}
    env["DATA_DIR"] = str(data_dir)
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_each_data_directory_signs_with_its_own_private_key(tmp_path):
    first = key_of_a_process(tmp_path / "a")
    assert first not in (OLD_FIXED_KEY, secretkey.TEST_KEY) and len(first) >= 50
    file = tmp_path / "a" / "secret-key"
    assert file.read_text().strip() == first
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    # The next process on the same data directory signs with the same key; another install not.
    assert key_of_a_process(tmp_path / "a") == first
    assert key_of_a_process(tmp_path / "b") not in (first, OLD_FIXED_KEY, secretkey.TEST_KEY)


def test_processes_starting_at_once_agree_on_the_key(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: secretkey.data_dir_key(tmp_path), range(32)))
    assert len(keys) == 1 and keys == {(tmp_path / "secret-key").read_text().strip()}
    assert [p.name for p in tmp_path.iterdir()] == ["secret-key"]


def test_the_fixed_key_is_the_test_suites_only():
    assert settings.SECRET_KEY == secretkey.TEST_KEY
