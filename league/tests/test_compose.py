"""docker-compose.yml without a Docker engine: the file (alone and with the offline
override) is valid compose, every command is a real entry point of this repository, every
variable it sets is one the settings read, pulled images are pinned and the offline build
makes each of them. The stack itself runs in a Docker engine in CI: scripts/compose_ci.py."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.apps import apps
from django.conf import settings
from django.core.management import get_commands

from events import registry

ROOT = Path(settings.BASE_DIR)
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = {name: spec for name, spec in SERVICES.items() if "build" in spec}
PROFILES = ("monolith", "microservices")
ENTRY_POINTS = ("python", "celery", "gunicorn", "uvicorn", "sh")
# Read by boto3's credential chain, not by the settings (events/aws.py).
BOTO3_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


def compose_binary() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def settings_variables() -> set[str]:
    """Names league/settings.py reads: env("X"), env.str("X", ...), env.db_url("X") ..."""
    source = (ROOT / "league" / "settings.py").read_text()
    return set(re.findall(r"\benv(?:\.\w+)?\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']", source))


def commands_for(league_service: str) -> set[str]:
    """manage.py subcommands with LEAGUE_SERVICE=league_service: Django's own plus those
    of the apps that service installs (the other services' apps are not installed)."""
    others = set(settings.SERVICES) - ({league_service} if league_service != "all" else set(settings.SERVICES))
    installed = {c.name for c in apps.get_app_configs()} - others
    return {name for name, app in get_commands().items() if app == "django.core" or app in installed}


def manage_commands(spec: dict) -> list[list[str]]:
    """The manage.py invocations of a service: its command, or each part of an
    ``sh -ec "a && b"`` one-shot."""
    command = spec["command"]
    if command[0] == "sh":
        assert command[1] == "-ec" and len(command) == 3, command
        return [shlex.split(part) for part in command[2].split("&&")]
    return [command] if command[0] == "python" else []


def interpolated_environment(spec: dict) -> dict[str, str]:
    """The environment with each ``${X:-default}`` at its default (what compose gives when X is unset)."""
    return {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in (spec.get("environment") or {}).items()}


def in_profile(profile: str) -> dict[str, dict]:
    return {n: s for n, s in APP_SERVICES.items() if profile in s.get("profiles", [])}


# ----------------------------------------------------------------------------- the compose binary


@pytest.mark.parametrize("profile", PROFILES)
def test_compose_config_is_valid(profile, tmp_path):
    binary = compose_binary()
    if binary is None:
        pytest.skip("no docker-compose here (CI installs it: apt-get install -y docker-compose)")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    env = {
        **os.environ,
        "SECRET_KEY": "config-check",
        "POSTGRES_PASSWORD": "config-check",
        "TEAMS_SERVICE_TOKEN": "config-check",
    }
    done = subprocess.run(
        [*binary, "--env-file", str(empty), "-f", "docker-compose.yml", "--profile", profile, "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_compose_refuses_to_run_without_secrets(tmp_path):
    binary = compose_binary()
    if binary is None:
        pytest.skip("no docker-compose here (CI installs it: apt-get install -y docker-compose)")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "POSTGRES_PASSWORD")}
    done = subprocess.run(
        [*binary, "--env-file", str(empty), "-f", "docker-compose.yml", "--profile", "monolith", "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "SECRET_KEY" in done.stderr or "POSTGRES_PASSWORD" in done.stderr


# ----------------------------------------------------------------------------- the file itself


def test_profiles_hold_the_whole_system():
    for profile in PROFILES:
        names = {n for n, s in SERVICES.items() if profile in s.get("profiles", [])}
        assert {"postgres", "redis", "bus"} <= names
    assert {"setup", "web", "worker", "beat", "consumer-teams", "consumer-transfers", "consumer-fixtures"} == set(
        in_profile("monolith")
    )
    roles = ("setup", "web", "worker", "beat", "consumer")
    assert {f"{s}-{r}" for s in settings.SERVICES for r in roles} == set(in_profile("microservices"))
    assert SERVICES["bus"]["image"].startswith("motoserver/moto")


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_command_is_an_entry_point_of_this_repository(name):
    spec = APP_SERVICES[name]
    command = spec["command"]
    assert isinstance(command, list) and command[0] in ENTRY_POINTS, command
    league_service = interpolated_environment(spec)["LEAGUE_SERVICE"]
    available = commands_for(league_service)
    for argv in manage_commands(spec):
        assert argv[:2] == ["python", "manage.py"], argv
        assert argv[2] in available, f"{name}: manage.py {argv[2]} does not exist with LEAGUE_SERVICE={league_service}"
        if argv[2] == "consume":
            consumed = argv[argv.index("--service") + 1] if "--service" in argv else league_service
            assert consumed in settings.SERVICES, f"{name}: consume needs --service under LEAGUE_SERVICE=all"
            assert league_service in ("all", consumed)
            assert registry.subscriptions(consumed), f"{name}: {consumed} has no handlers"
    if command[0] == "celery":
        assert command[1:3] == ["-A", "league"] and command[3] in ("worker", "beat"), command
    if command[0] == "gunicorn":
        assert command[1] == "league.wsgi" and (ROOT / "league" / "wsgi.py").exists()
        assert command[command.index("--bind") + 1] == "0.0.0.0:8000"
    if command[0] == "uvicorn":
        assert command[1] == "league.asgi:application" and (ROOT / "league" / "asgi.py").exists()
        assert command[command.index("--port") + 1] == "8000" and "--lifespan" in command


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_environment_is_read_by_the_settings(name):
    known = settings_variables() | BOTO3_VARIABLES
    unknown = set(interpolated_environment(APP_SERVICES[name])) - known
    assert not unknown, f"{name} sets {sorted(unknown)}, which league/settings.py never reads"


def test_no_secret_has_a_value_in_the_file():
    raw = (ROOT / "docker-compose.yml").read_text()
    for variable in ("SECRET_KEY", "POSTGRES_PASSWORD", "TEAMS_SERVICE_TOKEN"):
        for value in re.findall(rf"^\s*{variable}:\s*(.+)$", raw, flags=re.M):
            assert value.startswith(f"${{{variable}:?"), f"{variable} must come from the environment: {value}"
    example = (ROOT / ".env.example").read_text()
    for required in set(re.findall(r"\$\{([A-Z_]+):\?", raw)):
        assert re.search(rf"^{required}=", example, flags=re.M), f".env.example does not mention {required}"


def test_every_long_running_service_has_a_health_check():
    checks = (ROOT / "docker" / "healthcheck.py").read_text()
    for name, spec in SERVICES.items():
        if spec.get("restart") == "no":
            continue
        test = spec.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
        if test[1:3] == ["python", "docker/healthcheck.py"]:
            assert f'"{test[3]}": check_' in checks, f"{name}: healthcheck.py has no {test[3]!r} check"


def test_depends_on_waits_for_health_and_setup():
    for name, spec in APP_SERVICES.items():
        depends = spec.get("depends_on") or {}
        assert isinstance(depends, dict) and depends, f"{name} starts without waiting"
        for dep, rule in depends.items():
            assert dep in SERVICES
            wanted = "service_completed_successfully" if SERVICES[dep].get("restart") == "no" else "service_healthy"
            assert rule["condition"] == wanted, f"{name} -> {dep}"
        if spec.get("restart") != "no":
            setups = [d for d in depends if SERVICES[d].get("restart") == "no"]
            assert len(setups) == 1, f"{name} must wait for its setup"


def test_the_front_door_is_the_public_port_of_each_profile():
    """One front door per profile (nginx, pinned, rendered config checked in, no root),
    published on WEB_PORT; the monolith's web is reached only through it."""
    doors = {n: s for n, s in SERVICES.items() if n.startswith("frontdoor")}
    for profile in PROFILES:
        (name,) = [n for n, s in doors.items() if profile in s["profiles"]]
        spec = doors[name]
        assert spec["image"] == "nginx:1.22.1" and spec["user"] == "nginx"
        assert spec["ports"] == ["${WEB_PORT:-8000}:8080"]
        assert (ROOT / "docker" / "frontdoor" / f"{profile}.conf").exists()
        if profile == "monolith":
            # Routes that change while it runs (split_service --supervisor compose): the master
            # runs on a copy of the live file when there is one, else of the checked-in file.
            assert spec["command"][:2] == ["sh", "-ec"], spec["command"]
            script = spec["command"][2]
            assert "/etc/frontdoor-live/monolith.conf" in script and "src=/etc/frontdoor/monolith.conf" in script
            assert "exec nginx -c /tmp/frontdoor.conf" in script
            assert "${FRONTDOOR_LIVE_DIR:-./.data/frontdoor}:/etc/frontdoor-live:ro" in spec["volumes"]
        else:
            conf = spec["command"][spec["command"].index("-c") + 1]
            assert conf == f"/etc/frontdoor/{profile}.conf"
        assert "./docker/frontdoor:/etc/frontdoor:ro" in spec["volumes"]
        webs = {n for n, s in in_profile(profile).items() if "web" in n}
        assert set(spec["depends_on"]) == webs
    assert "ports" not in SERVICES["web"]


def test_consumers_scale():
    """No container_name or host port on a consumer: ``--scale transfers-consumer=4`` works."""
    for name, spec in APP_SERVICES.items():
        if "consume" in str(spec["command"]):
            assert "container_name" not in spec and "ports" not in spec, name


def test_each_microservice_has_its_own_database_and_broker():
    envs = {n: interpolated_environment(s) for n, s in in_profile("microservices").items()}
    by_service: dict[str, set[tuple[str, str]]] = {}
    for env in envs.values():
        by_service.setdefault(env["LEAGUE_SERVICE"], set()).add((env["DATABASE_URL"], env["CELERY_BROKER_URL"]))
    assert set(by_service) == set(settings.SERVICES)
    assert all(len(pairs) == 1 for pairs in by_service.values()), "one database and broker per service"
    pairs = [next(iter(p)) for p in by_service.values()]
    assert len({db for db, _ in pairs}) == 3 and len({broker for _, broker in pairs}) == 3
    init = (ROOT / "docker" / "postgres-init" / "01-databases.sql").read_text()
    for db, _ in pairs:
        assert f"CREATE DATABASE {db.rsplit('/', 1)[1]};" in init
    transfers = {e["TEAMS_SERVICE_URL"] for e in envs.values() if e["LEAGUE_SERVICE"] == "transfers"}
    assert transfers == {"http://teams-web:8000"}


def test_dockerfile():
    """Two stages on one pinned base (a build argument): dependencies into /opt/venv, then
    only the venv and the code in the final image, run as a non-root user."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, flags=re.M)
    assert default and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", default.group(1)), "pin the official slim image"
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
    assert [s.split()[0] for s in stages] == ["${BASE_IMAGE}", "${BASE_IMAGE}"], "two stages on BASE_IMAGE"
    deps, final = stages
    assert "pip install" in deps and "-r /tmp/requirements.txt" in deps
    assert "pip install" not in final and "PIP_CONF" not in final, "no pip run or pip configuration in the final stage"
    assert "COPY --from=deps /opt/venv /opt/venv" in final
    assert re.search(r"^USER league$", final, flags=re.M)
    assert re.search(r"DEBUG=false SECRET_KEY=.*\n\s+python manage.py collectstatic --noinput", final)
    assert 'CMD ["gunicorn", "league.wsgi"' in final
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env", ".data", "docs", "bench", "scripts"} <= set(ignored)


def test_official_images_are_pinned():
    """Every image pulled from a registry has an explicit tag that is not ``latest``; moto's
    is the version requirements.txt pins, so the container and the embedded stack agree."""
    for name, spec in SERVICES.items():
        if "build" in spec:
            continue
        image = re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", spec["image"])
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: pin the image tag ({spec['image']})"
        assert re.match(r"\d", tag), f"{name}: a version tag, not {tag!r}"
    moto = re.search(r"^moto\[server\]==(\S+)", (ROOT / "requirements.txt").read_text(), flags=re.M).group(1)
    assert SERVICES["bus"]["image"] == f"motoserver/moto:${{MOTO_TAG:-{moto}}}"


def test_app_containers_run_with_an_init_and_restart():
    for name, spec in APP_SERVICES.items():
        assert spec.get("init") is True, f"{name}: init: true (signals, zombies)"
        assert spec.get("restart") in ("no", "unless-stopped"), name


OFFLINE = yaml.safe_load((ROOT / "docker-compose.offline.yml").read_text())


def test_offline_override_builds_every_pulled_image_locally():
    """docker-compose.offline.yml replaces exactly the pulled images with local/... ones,
    and docker/build_offline_images.sh builds each of them (and nothing is pulled then)."""
    # The two profiles run offline; optional extras (jaeger, --profile observability) need a registry.
    pulled = {name for name, spec in SERVICES.items() if "build" not in spec and set(spec["profiles"]) & set(PROFILES)}
    assert set(OFFLINE["services"]) == pulled
    script = (ROOT / "docker" / "build_offline_images.sh").read_text()
    for name, spec in OFFLINE["services"].items():
        assert set(spec) == {"image"}, f"{name}: the override changes only the image"
        image = re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", spec["image"])
        assert image.startswith("local/"), image
        built = image.replace(image.rpartition(":")[2], "$moto_version") if name == "bus" else image
        assert re.search(rf"(?:^|&&)\s*build \w+ \"?{re.escape(built)}\"? ", script, flags=re.M), (
            f"{image} is not built"
        )
        # Named after the image: local/nginx:1.22 is docker/offline/nginx.Dockerfile.
        dockerfile = ROOT / "docker" / "offline" / f"{image.split('/', 1)[1].split(':')[0]}.Dockerfile"
        base = re.search(r"^ARG (?:BASE|APP)_IMAGE=(\S+)", dockerfile.read_text(), flags=re.M)
        assert base and base.group(1).startswith(("local/", "league-manager:")), f"{dockerfile}: built on a local image"
    assert "BASE_IMAGE=local/python:3.11" in script


def test_offline_build_names_no_mirror_or_registry_host():
    """Mirror and index come from the host's apt and pip configuration at build time."""
    for path in [ROOT / "Dockerfile", *(ROOT / "docker").rglob("*")]:
        if path.is_file():
            hosts = re.findall(r"(?:https?|ftp)://([A-Za-z0-9.-]+\.[a-z]{2,})", path.read_text())
            assert not hosts, f"{path.relative_to(ROOT)} names {hosts}"


def merged_config(override: str, profile: str, tmp_path, **variables: str) -> dict:
    """``docker-compose config`` of docker-compose.yml plus ``override`` for ``profile``, with
    every required variable given a value (and ``variables`` set); the merged services."""
    binary = compose_binary()
    if binary is None:
        pytest.skip("no docker-compose here (CI installs it: apt-get install -y docker-compose)")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    required = set(re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    env = {**os.environ, **dict.fromkeys(required, "config-check"), **variables}
    files = ["-f", "docker-compose.yml", "-f", override]
    done = subprocess.run(
        [*binary, "--env-file", str(empty), *files, "--profile", profile, "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["services"]


@pytest.mark.parametrize("profile", PROFILES)
def test_offline_override_is_valid_compose(profile, tmp_path):
    merged = merged_config("docker-compose.offline.yml", profile, tmp_path)
    assert {merged[name]["image"].split(":")[0] for name in ("postgres", "redis", "bus")} == {
        "local/postgres",
        "local/redis",
        "local/moto",
    }
    assert merged["postgres"]["environment"]["POSTGRES_USER"] == "league"


@pytest.mark.parametrize("profile", PROFILES)
def test_localstack_override_swaps_the_emulator_only(profile, tmp_path):
    """docker-compose.localstack.yml puts LocalStack (pinned, the version the tests install)
    in the emulator's place; every app keeps its AWS_ENDPOINT_URL."""
    merged = merged_config("docker-compose.localstack.yml", profile, tmp_path)
    pinned = re.search(r"^localstack-core==(\S+)$", (ROOT / "requirements-localstack.txt").read_text(), re.M)
    assert merged["bus"]["image"] == f"localstack/localstack:{pinned.group(1)}"
    assert merged["bus"]["environment"]["GATEWAY_LISTEN"] == "0.0.0.0:5000"
    assert merged["bus"]["environment"]["SERVICES"] == "sns,sqs"
    apps = [s for name, s in merged.items() if "AWS_ENDPOINT_URL" in (s.get("environment") or {})]
    assert apps and {s["environment"]["AWS_ENDPOINT_URL"] for s in apps} == {"http://bus:5000"}


@pytest.mark.slow
@pytest.mark.parametrize("profile", PROFILES)
def test_aws_override_names_no_emulator(profile, tmp_path):
    """docker-compose.aws.yml: no emulator image or command, no endpoint, and credentials only
    from the environment (or, empty, the host's role): every app service of the profile, and
    the gate it waits for, which checks that AWS answers."""
    merged = merged_config("docker-compose.aws.yml", profile, tmp_path, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    text = yaml.safe_dump(merged).lower()
    for emulator in ("moto", "localstack", "testing", ":5000"):
        assert emulator not in text, f"the merged configuration still names {emulator!r}"
    assert merged["bus"]["image"].startswith("league-manager")
    assert merged["bus"]["healthcheck"]["test"] == ["CMD", "python", "docker/healthcheck.py", "aws"]
    for name in APP_SERVICES:
        env = merged[name]["environment"]
        assert env["AWS_ENDPOINT_URL"] in ("", None), name
        assert not env["AWS_ACCESS_KEY_ID"] and not env["AWS_SECRET_ACCESS_KEY"], name
    given = merged_config("docker-compose.aws.yml", profile, tmp_path, AWS_ACCESS_KEY_ID="AKIAEXAMPLE")
    assert {given[name]["environment"]["AWS_ACCESS_KEY_ID"] for name in APP_SERVICES} == {"AKIAEXAMPLE"}


@pytest.mark.slow
def test_the_aws_gate_is_unhealthy_without_credentials(tmp_path):
    """docker-compose.aws.yml's bus gate (healthcheck.py aws): no credentials is a one-line "no"."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(tmp_path / "none"))
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    done = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "healthcheck.py"), "aws"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("unhealthy: NoCredentialsError"), done.stderr
