"""LEAGUE_SERVICE splits the monolith: each service boots alone on its own database with
only its own app (tables, URLs, admin, consumers, commands), and no model or migration of
one service points at another's."""

from __future__ import annotations

import concurrent.futures
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.apps import apps
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db.migrations.loader import MigrationLoader

from devtools.netutil import free_port, wait_for_http

ROOT = Path(settings.BASE_DIR)
SERVICES = settings.SERVICES
CONTRIB_PREFIXES = ("auth_", "authtoken_", "django_")

# What each service serves, and what belongs to the others (404 there).
OWN_URLS = {
    "teams": ["/api/teams/", "/api/teams/export/"],
    "transfers": ["/api/transfers/", "/api/transfers/teams/"],
    "fixtures": ["/api/seasons/", "/api/fixtures/teams/"],
}

# One Django start per service (they are the slow part): migrate, set up the bus, drain
# the queue with `consume` (no --service: it must read LEAGUE_SERVICE's queue), then say
# what this process installs, registers, consumes and schedules.
BOOT = """
import io, json
from django.apps import apps
from django.contrib import admin
from django.core.management import call_command, get_commands
from events import topology
from league.celery import app
call_command("migrate", interactive=False, verbosity=0)
call_command("setup_bus", verbosity=0, stdout=io.StringIO())
consumed = io.StringIO()
call_command("consume", drain=True, wait=0, no_startup=True, stdout=consumed)
app.loader.import_default_modules()
app.finalize(auto=True)
print(json.dumps({
    "apps": sorted(c.label for c in apps.get_app_configs()),
    "admin": sorted({m._meta.app_label for m in admin.site._registry}),
    "consuming": topology.consuming_services(),
    "commands": sorted(get_commands()),
    "beat": sorted(e["task"] for e in app.conf.beat_schedule.values()),
    "tasks": sorted(t for t in app.tasks if not t.startswith("celery.")),
    "consumed": consumed.getvalue(),
}))
"""


# ----------------------------------------------------------------------------- in process


def test_no_foreign_key_crosses_a_service():
    for service in SERVICES:
        others = set(SERVICES) - {service}
        for model in apps.get_app_config(service).get_models():
            for field in model._meta.get_fields():
                if field.is_relation and field.related_model is not None:
                    target = field.related_model._meta.app_label
                    assert target not in others, f"{model.__name__}.{field.name} points at {target}"


def test_no_migration_depends_on_another_service():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    for (app_label, name), migration in loader.disk_migrations.items():
        if app_label not in SERVICES:
            continue
        for dep_app, _ in migration.dependencies:
            assert dep_app not in set(SERVICES) - {app_label}, f"{app_label}.{name} depends on {dep_app}"


def test_consume_needs_a_service_in_the_monolith(settings):
    settings.LEAGUE_SERVICE = "all"
    with pytest.raises(CommandError, match="--service"):
        call_command("consume", "--drain")


# ----------------------------------------------------------------------------- each service alone


@dataclass
class Booted:
    service: str
    env: dict[str, str]
    database: Path
    port: int
    web: subprocess.Popen
    facts: dict
    consumed: str


def run(argv: list[str], env: dict[str, str], timeout: float = 90) -> str:
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv[1:])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def boot(service: str, tmp_path: Path, moto_url: str) -> Booted:
    data = tmp_path / service
    database = data / "db.sqlite3"
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        LEAGUE_SERVICE=service,
        DATABASE_URL=f"sqlite:///{database}",
        DATA_DIR=str(data),
        AWS_ENDPOINT_URL=moto_url,
        # Own topics and queues on the shared moto: the three setups never meet.
        BUS_PREFIX=f"split-{service}",
        PYTHONUNBUFFERED="1",
    )
    if service == "transfers":  # alone here: no teams service runs (a web needs the setting to start)
        env["TEAMS_SERVICE_URL"] = "http://teams.invalid"
    port = free_port()
    bin_dir = Path(sys.executable).parent
    # gunicorn touches no database until a request comes, so it starts meanwhile.
    web = subprocess.Popen(
        [
            str(bin_dir / "gunicorn"),
            "league.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--graceful-timeout",
            "2",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        facts = json.loads(run([sys.executable, "manage.py", "shell", "-c", BOOT], env).strip().splitlines()[-1])
    except BaseException:
        web.kill()
        web.wait()
        raise
    return Booted(service, env, database, port, web, facts, facts["consumed"])


@pytest.fixture(scope="module")
def booted(tmp_path_factory, moto_server_url):
    tmp_path = tmp_path_factory.mktemp("split")
    with concurrent.futures.ThreadPoolExecutor(len(SERVICES)) as pool:
        futures = {s: pool.submit(boot, s, tmp_path, moto_server_url) for s in SERVICES}
        concurrent.futures.wait(futures.values())
    result = {s: f.result() for s, f in futures.items() if f.exception() is None}
    try:
        for f in futures.values():
            if f.exception() is not None:
                raise f.exception()
        for b in result.values():
            wait_for_http(f"http://127.0.0.1:{b.port}/healthz", timeout=30)
        yield result
    finally:
        for b in result.values():
            b.web.terminate()
        for b in result.values():
            try:
                b.web.wait(10)
            except subprocess.TimeoutExpired:
                b.web.kill()


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_create_only_its_own_tables(booted, service):
    with sqlite3.connect(booted[service].database) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    own = (*CONTRIB_PREFIXES, "events_", "idempotency_", f"{service}_", "sqlite_")
    foreign = {t for t in tables if not t.startswith(own)}
    assert not foreign, f"{service} created {sorted(foreign)}"
    assert any(t.startswith(f"{service}_") for t in tables)
    assert any(t.startswith("events_") for t in tables)
    # Each service keeps the Idempotency-Keys of its own POSTs in its own database.
    assert "idempotency_idempotencykey" in tables


@pytest.mark.parametrize("service", SERVICES)
def test_serves_its_own_api_and_404_for_the_others(booted, service):
    base = f"http://127.0.0.1:{booted[service].port}"
    for path in ["/healthz", "/admin/login/", *OWN_URLS[service]]:
        served = 401 if path == "/api/teams/export/" else 200  # the export needs a service token
        assert requests.get(base + path, timeout=10).status_code == served, path
    for other in set(SERVICES) - {service}:
        for path in OWN_URLS[other]:
            assert requests.get(base + path, timeout=10).status_code == 404, f"{service} serves {path}"


@pytest.mark.parametrize("service", SERVICES)
def test_installs_registers_and_consumes_only_its_own_app(booted, service):
    facts = booted[service].facts
    others = set(SERVICES) - {service}
    assert service in facts["apps"] and "events" in facts["apps"]
    assert not others & set(facts["apps"])
    assert not others & set(facts["admin"]), "admin shows another service's models"
    assert service in facts["admin"]
    assert facts["consuming"] == [service]
    assert ("seed_demo" in facts["commands"]) == (service == "teams")


@pytest.mark.parametrize("service", SERVICES)
def test_beat_relays_the_services_own_outbox(booted, service):
    """The schedule runs the relay and the purges of whichever outbox, inbox and idempotency keys the
    process's DATABASE_URL holds (plus the transfer saga's clock and the replicas' healing
    where transfers or fixtures is installed), and every task exists in that service's worker."""
    facts = booted[service].facts
    clock = {
        "transfers": ["transfers.expire_transfers", "transfers.heal_replica", "transfers.reconcile_teams"],
        "fixtures": ["fixtures.reconcile_teams"],
    }.get(service, [])
    assert facts["beat"] == sorted(
        [
            "events.purge_inbox",
            "events.purge_outbox",
            "events.purge_retained",
            "events.relay_outbox",
            "idempotency.purge_keys",
            *clock,
        ]
    )
    assert set(facts["beat"]) <= set(facts["tasks"])


@pytest.mark.parametrize("service", SERVICES)
def test_consume_without_service_reads_league_service(booted, service):
    assert f"consuming split-{service}-{service} " in booted[service].consumed
