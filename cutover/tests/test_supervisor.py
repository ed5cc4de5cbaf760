"""cutover/supervisor.py without Docker: the compose commands ComposeSupervisor builds, the
front door configuration it renders, and its refusals before anything changes. The real
run is scripts/compose_ci.py (the monolith profile's cutover step)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cutover import deployment
from cutover.supervisor import ComposeSupervisor, SplitError, SupervisorError, compose_command

COMPOSE = ["docker-compose", "-p", "league", "-f", "docker-compose.yml"]
URL = "postgres://league:pw@127.0.0.1:15433/league_transfers"


class FakeDocker:
    """Answers the commands ComposeSupervisor runs, records them with their extra environment."""

    def __init__(self, tmp_path: Path, *, frontdoor: bool = True, web: bool = True, live: bool = True) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.live = tmp_path / "live"
        self.frontdoor, self.web, self.mounts = frontdoor, web, live
        self.web_env = ["LEAGUE_SERVICE=all"]

    def __call__(self, argv, *, env, capture_output, text, timeout, input=None):
        extra = {k: v for k, v in env.items() if k in ("MONOLITH_SERVICES", "TRANSFERS_DATABASE", "FIXTURES_DATABASE")}
        extra.update({k: v for k, v in env.items() if k == "TRANSFERS_TEAMS_SERVICE_URL"})
        self.calls.append((list(argv), extra))
        out = ""
        args = argv[len(COMPOSE) :]
        if args[:1] == ["--profile"]:
            args = args[2:]
        if argv[:2] == ["docker", "inspect"]:
            out = json.dumps([self.inspect(i) for i in argv[2:]])
        elif args[:2] == ["ps", "-q"]:
            name = args[2]
            out = {"web": "web1" if self.web else "", "frontdoor": "fd1" if self.frontdoor else ""}.get(
                name, f"{name}1"
            )
        elif args[:1] == ["port"]:
            out = {"postgres": "127.0.0.1:15433", "frontdoor": "0.0.0.0:18480"}[args[1]]
        return subprocess.CompletedProcess(argv, 0, out + "\n", "")

    def inspect(self, cid: str) -> dict:
        mounts = [{"Destination": "/etc/frontdoor", "Source": "/repo/docker/frontdoor"}]
        if self.mounts:
            mounts.append({"Destination": "/etc/frontdoor-live", "Source": str(self.live)})
        return {
            "Id": cid,
            "State": {"Running": True, "Health": {"Status": "healthy"}},
            "Mounts": mounts if cid == "fd1" else [],
            "Config": {"Env": self.web_env if cid == "web1" else []},
        }

    def commands(self) -> list[list[str]]:
        return [argv[len(COMPOSE) :] for argv, _ in self.calls if argv[: len(COMPOSE)] == COMPOSE]


def supervisor(tmp_path: Path, docker: FakeDocker) -> ComposeSupervisor:
    return ComposeSupervisor(COMPOSE, tmp_path, timeout=5, say=lambda line: None, runner=docker, environ={})


def test_preflight_refuses_a_stack_that_is_not_running(tmp_path):
    with pytest.raises(SupervisorError, match="compose monolith is not running"):
        supervisor(tmp_path, FakeDocker(tmp_path, web=False)).preflight("transfers", URL)
    with pytest.raises(SupervisorError, match="front door .* is not running"):
        supervisor(tmp_path, FakeDocker(tmp_path, frontdoor=False)).preflight("transfers", URL)
    with pytest.raises(SupervisorError, match="mounts no /etc/frontdoor-live"):
        supervisor(tmp_path, FakeDocker(tmp_path, live=False)).preflight("transfers", URL)


def test_preflight_refuses_a_database_the_containers_cannot_reach(tmp_path):
    sup = supervisor(tmp_path, FakeDocker(tmp_path))
    sup.preflight("transfers", URL)  # the compose PostgreSQL's loopback port: fine
    with pytest.raises(SupervisorError, match="published here on 127.0.0.1:15433"):
        sup.preflight("transfers", "postgres://postgres@127.0.0.1:5432/league_transfers")
    with pytest.raises(SupervisorError, match="compose PostgreSQL"):
        sup.preflight("transfers", "sqlite:////tmp/transfers.sqlite3")


def test_no_compose_binary_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(SupervisorError, match="docker compose was not found"):
        compose_command()
    with pytest.raises(SupervisorError, match="not installed"):
        compose_command("docker-compose -p x")
    assert issubclass(SupervisorError, SplitError)  # split_service prints it, no traceback


def test_start_runs_the_services_containers_on_the_new_database(tmp_path):
    docker = FakeDocker(tmp_path)
    supervisor(tmp_path, docker).start("transfers", URL)
    up = [(argv, env) for argv, env in docker.calls if "up" in argv]
    assert len(up) == 1
    argv, env = up[0]
    assert argv == [
        *COMPOSE,
        "--profile",
        "microservices",
        "up",
        "-d",
        "--no-deps",
        "transfers-web",
        "transfers-worker",
        "transfers-beat",
        "transfers-consumer",
    ]
    assert env == {"TRANSFERS_DATABASE": "league_transfers", "TRANSFERS_TEAMS_SERVICE_URL": "http://web:8000"}
    assert ["--profile", "microservices", "ps", "-q", "transfers-web"] in docker.commands()
    assert not [c for c in docker.commands() if "exec" in c]  # Docker's health verdict, no probe of our own


def test_route_renders_the_config_into_the_live_dir_then_reloads(tmp_path, monkeypatch):
    docker = FakeDocker(tmp_path)
    deployment.place(tmp_path, "fixtures", database_url="postgres://x@h:1/league_fixtures", state=deployment.MOVED)
    deployment.place(tmp_path, "transfers", database_url=URL, state=deployment.SWITCHING)
    seen = []
    monkeypatch.setattr(ComposeSupervisor, "upstream", staticmethod(lambda url: seen.append(url) or "transfers"))
    front_door = supervisor(tmp_path, docker).route("transfers")
    assert front_door == "http://127.0.0.1:18480" and seen == ["http://127.0.0.1:18480/api/transfers/"]
    conf = (docker.live / "monolith.conf").read_text()
    assert not (docker.live / "monolith.conf.next").exists()
    assert 'set $league_upstream "transfers-web:8000";' in conf and 'set $league_upstream "fixtures-web:8000";' in conf
    assert "add_header X-League-Upstream transfers always;" in conf
    assert 'set $league_upstream "web:8000";' in conf and "listen 8080;" in conf and "resolver 127.0.0.11" in conf
    assert (docker.live / "monolith.conf").stat().st_mode & 0o044 == 0o044  # the container's nginx user reads it
    execs = [c for c in docker.commands() if "exec" in c]
    assert execs[0][-1].startswith("nginx -t -q -c /etc/frontdoor-live/monolith.conf.next")
    assert "nginx -c /tmp/frontdoor.conf -s reload" in execs[1][-1] and "nginx -t" in execs[1][-1]
    # The checked-in configuration is not touched.
    checked_in = Path(__file__).resolve().parents[2] / "docker" / "frontdoor" / "monolith.conf"
    assert "transfers-web" not in checked_in.read_text()


def test_a_config_nginx_refuses_is_not_made_live(tmp_path):
    docker = FakeDocker(tmp_path)

    def refuse(argv, **kw):
        if "nginx -t" in argv[-1] and "reload" not in argv[-1]:
            return subprocess.CompletedProcess(argv, 1, "", "nginx: [emerg] bad")
        return docker(argv, **kw)

    deployment.place(tmp_path, "transfers", database_url=URL, state=deployment.SWITCHING)
    sup = ComposeSupervisor(COMPOSE, tmp_path, timeout=5, say=lambda line: None, runner=refuse, environ={})
    with pytest.raises(SupervisorError, match="bad"):
        sup.route("transfers")
    assert not (docker.live / "monolith.conf").exists()


def test_resume_restarts_the_monolith_without_the_service_web_last(tmp_path, monkeypatch):
    docker = FakeDocker(tmp_path)
    deployment.place(tmp_path, "transfers", database_url=URL, state=deployment.MOVED)
    monkeypatch.setattr(ComposeSupervisor, "upstream", staticmethod(lambda url: "monolith"))
    lines: list[str] = []
    sup = ComposeSupervisor(COMPOSE, tmp_path, timeout=5, say=lines.append, runner=docker, environ={})
    sup.resume("transfers")
    changing = [(argv[len(COMPOSE) :], env) for argv, env in docker.calls if "rm" in argv or "up" in argv]
    assert changing == [
        (["--profile", "monolith", "rm", "-s", "-f", "consumer-transfers"], {}),
        (
            ["--profile", "monolith", "up", "-d", "--no-deps", "worker", "beat", "consumer-teams", "consumer-fixtures"],
            {"MONOLITH_SERVICES": "teams,fixtures"},
        ),
        (["--profile", "monolith", "up", "-d", "--no-deps", "web"], {"MONOLITH_SERVICES": "teams,fixtures"}),
    ]
    assert "MONOLITH_SERVICES=teams,fixtures" in lines[-1] and "TRANSFERS_DATABASE=league_transfers" in lines[-1]

    # Again (a rerun after a crash): the monolith already runs without it, nothing recreated.
    docker.calls.clear()
    docker.web_env = ["LEAGUE_SERVICE=teams,fixtures"]
    sup.resume("transfers")
    assert not [argv for argv, _ in docker.calls if "up" in argv]


def test_stop_removes_the_services_containers(tmp_path):
    docker = FakeDocker(tmp_path)
    supervisor(tmp_path, docker).stop("transfers")
    assert docker.commands() == [
        [
            "--profile",
            "microservices",
            "rm",
            "-s",
            "-f",
            "transfers-web",
            "transfers-worker",
            "transfers-beat",
            "transfers-consumer",
        ]
    ]


def test_a_failing_compose_command_says_which_and_why(tmp_path):
    def fail(argv, **kw):
        return subprocess.CompletedProcess(argv, 1, "", "ERROR: no such service: transfers-web")

    sup = ComposeSupervisor(COMPOSE, tmp_path, timeout=5, say=lambda line: None, runner=fail, environ={})
    with pytest.raises(SupervisorError, match="exited 1:\nERROR: no such service"):
        sup.start("transfers", URL)
