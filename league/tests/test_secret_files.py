"""Secrets from files: every variable the settings read can come from a file named by
``<NAME>_FILE`` (a swarm or Kubernetes secret under /run/secrets), so a secret never has to
be in a process's environment (docs/DEPLOY.md, "Swarm")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from django.conf import settings

SHOW = (
    "import json; from django.conf import settings; "
    "print(json.dumps({'key': settings.SECRET_KEY, 'token': settings.TEAMS_SERVICE_TOKEN, "
    "'db': settings.DATABASES['default']['NAME'], 'debug': settings.DEBUG}))"
)


def settings_of_a_process(env: dict[str, str]) -> dict:
    """What a ``manage.py`` process outside the test suite reads, with ``env`` on top of a
    clean environment (none of the variables under test inherited)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SHOW],
        cwd=settings.BASE_DIR,
        env={**keep, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_secret_comes_from_the_file_its_FILE_variable_names(tmp_path):
    (tmp_path / "secret_key").write_text("k" * 60 + "\n")
    (tmp_path / "database_url").write_text(f"sqlite:///{tmp_path / 'from-file.sqlite3'}")
    (tmp_path / "token").write_text("t" * 40)
    seen = settings_of_a_process(
        {
            "DEBUG": "false",
            "ALLOWED_HOSTS": "localhost",
            "DATA_DIR": str(tmp_path / "data"),
            "SECRET_KEY_FILE": str(tmp_path / "secret_key"),
            "DATABASE_URL_FILE": str(tmp_path / "database_url"),
            "TEAMS_SERVICE_TOKEN_FILE": str(tmp_path / "token"),
        }
    )
    # The file's content, its final newline dropped (what `echo x > file` or a secret tool writes).
    assert seen["key"] == "k" * 60
    assert seen["token"] == "t" * 40
    assert seen["db"] == str(tmp_path / "from-file.sqlite3")
    assert seen["debug"] is False


def test_without_a_FILE_variable_the_environment_is_read_as_before(tmp_path):
    seen = settings_of_a_process(
        {"DEBUG": "false", "ALLOWED_HOSTS": "localhost", "DATA_DIR": str(tmp_path), "SECRET_KEY": "e" * 60}
    )
    assert seen["key"] == "e" * 60 and seen["token"] == ""
