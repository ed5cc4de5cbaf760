"""docker-stack.yml without a Docker engine: valid for swarm mode on hosts with no IPVS and no
ingress mesh (dnsrr everywhere, host-mode ports), secrets as swarm secrets, rolling updates
that start the new copy first and roll back, one-shot setups, and the same services as the
microservices profile of docker-compose.yml. scripts/swarm_ci.py deploys it for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from devtools import requires

ROOT = Path(settings.BASE_DIR)
STACK = yaml.safe_load((ROOT / "docker-stack.yml").read_text())
SERVICES = STACK["services"]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
APP = {name: spec for name, spec in SERVICES.items() if "LEAGUE_IMAGE" in spec.get("image", "")}
ONE_SHOTS = {name for name in APP if name.endswith("-setup")}
SIDE_BY_SIDE = {name for name in APP if name.endswith(("-web", "-worker", "-consumer"))}
SECRET_VARIABLES = ("SECRET_KEY", "POSTGRES_PASSWORD", "TEAMS_SERVICE_TOKEN", "DATABASE_URL")


def test_the_services_are_those_of_the_compose_microservices_profile():
    profile = {name for name, spec in COMPOSE.items() if "microservices" in spec.get("profiles", [])}
    assert set(SERVICES) == profile
    assert {f"{s}-{role}" for s in settings.SERVICES for role in ("setup", "web", "worker", "beat", "consumer")} == set(
        APP
    )


def test_every_service_resolves_to_its_tasks_not_a_virtual_ip():
    # No IPVS on the hosts it runs on: a VIP does not answer.
    for name, spec in SERVICES.items():
        assert spec["deploy"]["endpoint_mode"] == "dnsrr", name


def test_the_front_door_is_the_one_published_port_and_in_host_mode():
    published = {name: spec["ports"] for name, spec in SERVICES.items() if spec.get("ports")}
    assert list(published) == ["frontdoor-microservices"]
    (port,) = published["frontdoor-microservices"]
    # The long syntax: the short one means the ingress mesh, which these hosts lack.
    assert port["mode"] == "host" and port["target"] == 8080


def test_secrets_are_swarm_secrets_never_values_in_the_file():
    assert all(spec.get("external") for spec in STACK["secrets"].values())
    for name, spec in SERVICES.items():
        environment = spec.get("environment") or {}
        for variable in SECRET_VARIABLES:
            assert variable not in environment, f"{name} sets {variable} in the file"
        for variable, value in environment.items():
            if variable.endswith("_FILE"):
                secret = value.removeprefix("/run/secrets/")
                assert value.startswith("/run/secrets/") and secret in spec["secrets"], (name, variable)
                assert secret in STACK["secrets"]
    for name, spec in APP.items():
        assert "SECRET_KEY_FILE" in spec["environment"] and "DATABASE_URL_FILE" in spec["environment"], name
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")


def test_updates_start_the_new_copy_first_where_two_can_run_and_roll_back_on_failure():
    for name, spec in SERVICES.items():
        update = spec["deploy"].get("update_config")
        if name in ONE_SHOTS:
            continue
        assert update["failure_action"] == "rollback", name
        assert update["order"] == ("start-first" if name in SIDE_BY_SIDE else "stop-first"), name
    # Data, in-memory queues, a host port, a scheduler: one copy at a time.
    for name in ("postgres", "bus", "redis", "frontdoor-microservices", "teams-beat"):
        assert SERVICES[name]["deploy"]["update_config"]["order"] == "stop-first", name


def test_replicas():
    replicas = {name: spec["deploy"].get("replicas", 1) for name, spec in SERVICES.items()}
    for service in settings.SERVICES:
        assert replicas[f"{service}-web"] == 2
        assert replicas[f"{service}-worker"] == 2  # the relay: SKIP LOCKED claims share the outbox
        assert replicas[f"{service}-beat"] == 1  # a scheduler: two would send each periodic task twice
    assert replicas["transfers-consumer"] == 3


def test_setups_run_once_and_every_other_app_process_waits_for_them():
    for name in ONE_SHOTS:
        assert SERVICES[name]["deploy"]["restart_policy"]["condition"] in ("none", "on-failure"), name
        assert SERVICES[name]["command"][:4] == ["python", "/etc/league/swarm_entrypoint.py", "--no-wait", "--"]
        assert "migrate" in SERVICES[name]["command"][-1] and "setup_bus" in SERVICES[name]["command"][-1]
    for name in set(APP) - ONE_SHOTS:
        command = SERVICES[name]["command"]
        if name.endswith("-web"):
            # Out of the DNS name before gunicorn stops: longer than the front door's cache (10 s).
            assert command[2:4] == ["--stop-delay", "12"] and float(command[3]) > 10, name
            assert int(SERVICES[name]["stop_grace_period"].rstrip("s")) >= 12 + 30, name
            command = command[:2] + command[4:]
        assert command[:3] == ["python", "/etc/league/swarm_entrypoint.py", "--"], name
        assert SERVICES[name]["deploy"]["restart_policy"]["condition"] == "any", name
    entrypoint = STACK["configs"]["swarm_entrypoint"]["file"]
    assert (ROOT / entrypoint).is_file()
    for name in APP:
        assert {"source": "swarm_entrypoint", "target": "/etc/league/swarm_entrypoint.py", "mode": 0o444} in SERVICES[
            name
        ]["configs"]


def test_the_stop_grace_period_covers_a_consumers_drain():
    # A consumer's stop lets the receive in flight end (one long poll) and finishes its batch.
    seconds = int(SERVICES["transfers-consumer"]["stop_grace_period"].rstrip("s"))
    assert seconds >= settings.CONSUMER_WAIT_SECONDS + settings.CONSUMER_VISIBILITY_TIMEOUT + 10
    for name in APP:
        if name.endswith("-consumer"):
            assert SERVICES[name]["stop_grace_period"] == SERVICES["transfers-consumer"]["stop_grace_period"]


def test_long_running_services_have_health_checks_and_images_per_service():
    for name, spec in SERVICES.items():
        if name not in ONE_SHOTS:
            assert spec["healthcheck"]["test"], name
    for name in APP:
        assert SERVICES[name]["image"] == "${LEAGUE_IMAGE:-league-manager:latest}"
    # Every command and file the stack names exists in this repository.
    for spec in APP.values():
        check = spec.get("healthcheck", {}).get("test", [])
        if check[1:2] == ["python"]:
            assert (ROOT / check[2]).is_file()
        elif check:
            # The entrypoint's ready file: written only once its wait is over.
            assert check == ["CMD", "test", "-f", "/tmp/league-ready"]
    assert 'READY = Path("/tmp/league-ready")' in (ROOT / "docker" / "swarm_entrypoint.py").read_text()
    for config in STACK["configs"].values():
        assert (ROOT / config["file"]).is_file()


def test_the_same_settings_as_the_compose_file():
    """Each app service sets what its compose twin sets, secrets as files."""
    for name, spec in APP.items():
        twin = {k for k in COMPOSE[name]["environment"] if k not in SECRET_VARIABLES}
        mine = {k.removesuffix("_FILE") for k in spec["environment"]}
        assert twin - mine <= {"OTEL_EXPORTER_OTLP_ENDPOINT", "INTERNAL_TOKEN"}, name


def test_the_entrypoint_loads_secret_files_only_for_settings_that_do_not(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "docker"))
    try:
        import swarm_entrypoint
    finally:
        sys.path.remove(str(ROOT / "docker"))
    (tmp_path / "key").write_text("from-the-file\n")
    environ = {"SECRET_KEY_FILE": str(tmp_path / "key"), "DEBUG": "false"}
    ours = (ROOT / "league" / "settings.py").read_text()
    assert swarm_entrypoint.load_secret_files(environ, ours) == []  # they read the files themselves
    assert "SECRET_KEY" not in environ
    # The release before: environ.Env (and a name with _FILE in it that is no file variable).
    older = ours.replace("FileAwareMapping", "Env")
    assert swarm_entrypoint.load_secret_files(environ, older) == ["SECRET_KEY"]
    assert environ["SECRET_KEY"] == "from-the-file"


def test_docker_stack_config_accepts_it():
    requires.program(shutil.which("docker") is None, "docker", "docker.io")
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"}  # the file alone: no engine needed
    done = subprocess.run(
        ["docker", "stack", "config", "-c", "docker-stack.yml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "unknown command" in done.stderr or "is not a docker command" in done.stderr:
        pytest.skip("this docker CLI has no `docker stack config` (20.10 or later: apt-get install -y docker.io)")
    assert done.returncode == 0, done.stderr
    merged = yaml.safe_load(done.stdout)
    assert merged["services"]["teams-beat"]["deploy"]["update_config"]["order"] == "stop-first"
    assert merged["services"]["teams-web"]["deploy"]["update_config"]["order"] == "start-first"
    setup = merged["services"]["teams-setup"]["command"][-1]
    assert 'ensure_service_account("transfers-service", key=settings.TEAMS_SERVICE_TOKEN)' in setup
    assert "--token" not in setup  # a secret on a command line shows in ps
