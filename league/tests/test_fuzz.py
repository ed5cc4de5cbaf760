"""API fuzzing with schemathesis 4 against the live app.

The app runs as a real HTTP server (pytest-django's ``live_server``, the whole monolith,
``DEBUG`` on as ``runstack`` has it) with a few teams, a season and a transfer in it, and
``st run`` fuzzes the schema the app serves (/api/schema/), once with a staff token and
once anonymously:

- every phase: the schema's examples, coverage (boundary values of every documented
  constraint), fuzzing (random valid and invalid requests) and stateful (sequences that
  follow the schema's OpenAPI links: create a team, then read, rename, delete it ...);
- every check (``--checks all``): no 5xx, status codes, content types and bodies as
  documented, invalid data rejected, valid data accepted, headers, Allow on 405, use after
  delete, auth not ignored ... and ``--max-response-time 10`` (a bound a loaded CI machine
  keeps; a request that takes longer is stuck, not slow), each with schemathesis'
  default expectations (no configuration: a schema-valid request the state refuses is a
  409, never a 400 or 422, kernel/api.py).

Any failure fails the test, with schemathesis' report (and a curl line per failure) as the
message. Bounded (``MAX_EXAMPLES`` per operation, a fixed seed) to keep CI time reasonable;
slow (minutes), so marked ``slow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 5
ST = Path(sys.executable).with_name("st")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def league(transactional_db, settings, live_server):
    """What a newcomer's league has: teams in every service's view, a season with its
    fixtures, a transfer; the transfers replica asks this same server on a miss."""
    from fixtures import services as fixtures_services
    from fixtures.factories import TeamReplicaFactory as FixturesTeam
    from teams import services as teams_services
    from teams.models import Player
    from transfers.factories import PlayerReplicaFactory, TeamReplicaFactory, TransferFactory

    settings.OUTBOX_KICK = False
    settings.DEBUG = True
    settings.TEAMS_SERVICE_URL = live_server.url
    team_ids = []
    for n, name in enumerate(["Ajax", "PSV", "Feyenoord", "AZ"], start=1):
        team = teams_services.team_create(name=name, players=[{"name": f"Player {n}", "position": "ST"}])
        replica = TeamReplicaFactory(team_id=team.id, name=name)
        player = Player.objects.get(team=team)
        PlayerReplicaFactory(team=replica, player_id=player.id, name=player.name, position="ST")
        FixturesTeam(team_id=team.id, name=name)
        team_ids.append(team.id)
    fixtures_services.season_schedule(name="Eredivisie 2026/27", starts_on=date(2026, 8, 8), team_ids=team_ids)
    TransferFactory()
    user = get_user_model().objects.create_superuser("fuzzer", "fuzzer@example.org", "pw-fuzzer-123")
    return live_server.url, Token.objects.create(user=user).key


@pytest.mark.parametrize("who", ["staff", "anonymous"])
def test_the_api_passes_every_schemathesis_check_in_every_phase(league, tmp_path, who):
    url, token = league
    command = [
        str(ST),
        "run",
        f"{url}/api/schema/",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-response-time",
        "10",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "10",
    ]
    if who == "staff":
        command += ["--header", f"Authorization: Token {token}"]
    # cwd: its cache (.schemathesis/) stays out of the checkout.
    env = {
        **os.environ,
        "NO_COLOR": "1",
        # A fresh Idempotency-Key per schema-valid request, as a client sends (the hooks' docstring).
        "SCHEMATHESIS_HOOKS": "league.tests.schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    report = (done.stdout + done.stderr)[-20000:]
    assert done.returncode == 0, report
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in report, f"phase {phase} did not run and pass:\n{report}"
