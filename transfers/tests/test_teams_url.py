"""Where transfers reads teams is configured, never guessed: without ``TEAMS_SERVICE_URL``
a process that would read teams says so at start, naming the setting, and reaches no
server (a guessed ``http://127.0.0.1:8000`` on a shared host is someone else's)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from devtools.netutil import free_port

from ..teams_client import TeamsServiceNotConfigured, fetch_team


def _environment(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TEAMS_SERVICE_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", DATA_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def test_sync_teams_without_the_url_says_which_setting_and_calls_nobody(tmp_path):
    done = subprocess.run(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), "sync_teams"],
        env=_environment(tmp_path, TEAMS_SERVICE_RETRIES="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "TEAMS_SERVICE_URL is not set" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "127.0.0.1:8000" not in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("server", "league_service"),
    [("gunicorn", "transfers"), ("uvicorn", "all")],
)
def test_a_web_serving_transfers_without_the_url_refuses_to_start_naming_it(tmp_path, server, league_service):
    """The split transfers service behind gunicorn (WSGI), the monolith behind uvicorn
    (ASGI, as compose and runstack serve it): both stop at start with the setting named."""
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), server)
    if server == "gunicorn":
        argv = [exe, "league.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    else:
        argv = [exe, "league.asgi:application", "--host", "127.0.0.1", "--port", str(port), "--lifespan", "on"]
    env = _environment(tmp_path, LEAGUE_SERVICE=league_service, LIVE_FEED="false")
    proc = subprocess.Popen(argv, cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate(timeout=10)
        pytest.fail(f"{server} started without TEAMS_SERVICE_URL:\n{output.decode()[-2000:]}")
    assert proc.returncode != 0
    assert "TEAMS_SERVICE_URL is not set" in output.decode(), output.decode()[-2000:]


def test_a_replica_miss_without_the_url_is_a_clear_error_not_a_request(settings):
    settings.TEAMS_SERVICE_URL = ""
    with pytest.raises(TeamsServiceNotConfigured, match="TEAMS_SERVICE_URL is not set"):
        fetch_team(1)


@pytest.mark.django_db
def test_sync_teams_in_process_names_the_missing_setting(settings):
    settings.TEAMS_SERVICE_URL = ""
    with pytest.raises(CommandError, match="TEAMS_SERVICE_URL is not set"):
        call_command("sync_teams")
