"""LEAGUE_SERVICE takes a list: a monolith that one service has left keeps serving the
others ("teams,fixtures"), with exactly those apps, URLs and consumers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings

PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.urls import Resolver404, resolve
from events import topology
def mounted(path):
    try:
        resolve(path)
        return True
    except Resolver404:
        return False
print(json.dumps({
    "league_service": settings.LEAGUE_SERVICE,
    "active": list(settings.ACTIVE_SERVICES),
    "apps": [a for a in settings.INSTALLED_APPS if a in settings.SERVICES],
    "consuming": sorted(topology.consuming_services()),
    "urls": {p: mounted(p) for p in ("/api/teams/", "/api/transfers/", "/api/seasons/")},
}))
"""


pytestmark = pytest.mark.slow  # each test starts manage.py in a subprocess


def boot(league_service: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(LEAGUE_SERVICE=league_service, DJANGO_SETTINGS_MODULE="league.settings")
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_list_installs_mounts_and_consumes_exactly_those_services():
    done = boot(" fixtures , teams,teams")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["league_service"] == "teams,fixtures"  # canonical: the services' order, each once
    assert got["active"] == got["apps"] == ["teams", "fixtures"]
    assert got["consuming"] == ["fixtures", "teams"]
    assert got["urls"] == {"/api/teams/": True, "/api/transfers/": False, "/api/seasons/": True}


def test_all_three_listed_is_the_monolith():
    got = json.loads(boot("transfers,fixtures,teams").stdout.splitlines()[-1])
    assert got["league_service"] == "all"
    assert got["active"] == ["teams", "transfers", "fixtures"]


def test_an_unknown_name_in_the_list_is_refused_with_the_choices():
    done = boot("teams,ligue")
    assert done.returncode != 0
    assert "LEAGUE_SERVICE='teams,ligue' is not known" in done.stderr
    assert "teams,fixtures" in done.stderr
    done = boot(",")
    assert done.returncode != 0 and "is not known" in done.stderr


def test_consume_with_several_services_asks_which(settings):
    import pytest
    from django.core.management import CommandError, call_command

    settings.LEAGUE_SERVICE, settings.ACTIVE_SERVICES = "teams,fixtures", ("teams", "fixtures")
    with pytest.raises(CommandError, match="--service"):
        call_command("consume", "--drain")
