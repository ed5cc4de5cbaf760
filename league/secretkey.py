"""The signing key of a development install. The guarantee: with ``DEBUG`` on and
``SECRET_KEY`` unset, every install signs with a key of its own, never a key known from the
source: the first process on a data directory writes a random key to
``DATA_DIR/secret-key`` (mode 0600, like the admin password), and every process on that data
directory (``runstack`` and each child it starts, ``manage.py`` commands) reads it. Two
processes starting at once agree: the file appears whole or not at all, and the loser reads
the winner's key. The fixed key is for the test suite only; with ``DEBUG`` off ``SECRET_KEY``
must be set (league/settings.py).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

FILE_NAME = "secret-key"
# The test suite's key (league/settings.py uses it only when the tests run).
TEST_KEY = "insecure-test-key-do-not-use-outside-the-test-suite"


def data_dir_key(data_dir: Path) -> str:
    """The key kept in ``data_dir``, made on first use."""
    path = Path(data_dir) / FILE_NAME
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if key:
        return key
    # Written to a private temporary file, then linked into place: a reader never sees a
    # partial key, and of two writers the first link wins.
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(50) + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()
