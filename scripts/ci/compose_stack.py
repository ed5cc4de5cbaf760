"""One profile of docker-compose.yml (with the offline override) as a running stack, and how to
read its APIs."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from devtools.netutil import free_port
from scripts.ci.engine import ROOT, Failed, every_page, run, say, wait_until
from scripts.ci.tokens import api_tokens

PROJECT = "leagueci"
APP_IMAGE = "league-manager:ci"
COMPOSE_FILES = ["-f", "docker-compose.yml", "-f", "docker-compose.offline.yml"]
HTTPS = {"X-Forwarded-Proto": "https"}  # as if through the TLS proxy
SERVICES = ("teams", "transfers", "fixtures")


class Stack:
    """One profile of docker-compose.yml (+ the offline override) in project ``leagueci``."""

    def __init__(self, profile: str, workdir: Path) -> None:
        self.profile = profile
        self.ports = {
            "WEB_PORT": free_port(),
            "TEAMS_WEB_PORT": free_port(),
            "TRANSFERS_WEB_PORT": free_port(),
            "FIXTURES_WEB_PORT": free_port(),
            "POSTGRES_PORT": free_port(),  # loopback only: split_service runs on this host
        }
        self.workdir = workdir
        self.data_dir = workdir / f"{profile}-data"  # split_service's DATA_DIR (deployment.json)
        self.env_file = workdir / f"{profile}.env"
        # Every ${VAR:?} the file requires gets a random value (a token: 40 hex digits).
        required = re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "docker-compose.yml").read_text())
        values = {
            **{name: secrets.token_hex(20) for name in required},
            "SECRET_KEY": secrets.token_urlsafe(50),
            "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
            # The service account transfers reads the teams export with (setup creates it).
            "TEAMS_SERVICE_TOKEN": secrets.token_hex(20),
            "LEAGUE_IMAGE": APP_IMAGE,
            # The front door's routes after a cutover (split_service --supervisor compose).
            "FRONTDOOR_LIVE_DIR": str(workdir / f"{profile}-frontdoor"),
            **{k: str(v) for k, v in self.ports.items()},
        }
        self.values = values
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        self.tokens: dict[str, str] = {}

    def compose_argv(self) -> list[str]:
        """The compose command of this stack, without --profile."""
        return ["docker-compose", "-p", PROJECT, *COMPOSE_FILES, "--env-file", str(self.env_file)]

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*self.compose_argv(), "--profile", self.profile, *args], timeout=timeout, check=check)

    def database_url(self, name: str) -> str:
        """A database on the compose PostgreSQL, from this host (its loopback port)."""
        return f"postgres://league:{self.values['POSTGRES_PASSWORD']}@127.0.0.1:{self.ports['POSTGRES_PORT']}/{name}"

    def url(self, service: str) -> str:
        if self.profile == "monolith":
            return f"http://127.0.0.1:{self.ports['WEB_PORT']}"
        return f"http://127.0.0.1:{self.ports[service.upper() + '_WEB_PORT']}"

    def web(self, service: str) -> str:
        return "web" if self.profile == "monolith" else f"{service}-web"

    def containers(self) -> list[dict[str, Any]]:
        ids = self.compose("ps", "-a", "-q", timeout=60).stdout.split()
        if not ids:
            return []
        return json.loads(run(["docker", "inspect", *ids], timeout=60).stdout)

    def container_ids(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service, timeout=60).stdout.split()

    def up(self, *args: str, attempts: int = 3) -> None:
        """``up -d``, again if compose gave up on a dependency that was unhealthy for a
        while (1.29 stops at the first "unhealthy"; the checks recover on a loaded machine)."""
        for attempt in range(1, attempts + 1):
            done = self.compose("up", "-d", *args, timeout=420, check=attempt == attempts)
            if done.returncode == 0:
                return
            say(f"  up -d, attempt {attempt}: {done.stderr.strip().splitlines()[-2:]}; again")

    def not_ready(self) -> list[str]:
        """Containers not (yet) healthy, or one-shots not exited 0; [] when all are."""
        waiting = []
        for c in self.containers():
            name, state = c["Name"].lstrip("/"), c["State"]
            one_shot = c["HostConfig"]["RestartPolicy"]["Name"] == "no"
            if one_shot:
                if state["Status"] != "exited" or state["ExitCode"] != 0:
                    waiting.append(f"{name}={state['Status']}/{state['ExitCode']}")
            elif state["Status"] != "running" or state.get("Health", {}).get("Status") != "healthy":
                waiting.append(f"{name}={state['Status']}/{state.get('Health', {}).get('Status', 'no check')}")
        return waiting

    def wait_healthy(self, timeout: float = 300) -> None:
        self.last_waiting: list[str] = []

        def probe() -> bool:
            self.last_waiting = self.not_ready()
            return not self.last_waiting and bool(self.containers())

        try:
            wait_until(f"{self.profile}: every container healthy", probe, timeout=timeout, interval=2)
        except Failed as exc:
            raise Failed(f"{exc}; waiting for {', '.join(self.last_waiting)}") from None
        say(f"  {len(self.containers())} containers healthy (one-shots exited 0)")

    def login(self) -> None:
        """A superuser and an API token on each service's database (one in the monolith):
        one ``docker exec`` in its web container per service, the services side by side."""
        services = SERVICES if self.profile == "microservices" else ("teams",)

        def execute(service: str, env: list[str], script: str) -> str:
            container = self.container_ids(self.web(service))[0]
            return run(["docker", "exec", *env, container, "sh", "-ec", script], timeout=180).stdout

        self.tokens = api_tokens(services, execute)
        if self.profile == "monolith":
            self.tokens = dict.fromkeys(SERVICES, self.tokens["teams"])

    def api(self, method: str, service: str, path: str, body: Any = None, timeout: float = 10) -> requests.Response:
        headers = {**HTTPS, "Authorization": f"Token {self.tokens[service]}"}
        return requests.request(method, self.url(service) + path, json=body, headers=headers, timeout=timeout)

    def psql(self, database: str, sql: str) -> str:
        if self.profile == "monolith":
            database = "league"
        postgres = self.container_ids("postgres")[0]
        return run(["docker", "exec", postgres, "psql", "-U", "league", "-d", database, "-tAc", sql]).stdout.strip()

    def logs_of_failures(self) -> None:
        """The last lines of every container not ready, and always of PostgreSQL."""
        with contextlib.suppress(Exception):
            postgres = [c["Name"].lstrip("/") for c in self.containers() if "_postgres_" in c["Name"]]
            for name in dict.fromkeys([n.split("=")[0] for n in self.not_ready()] + postgres):
                container = name
                tail = run(["docker", "logs", "--tail", "25", container], check=False, quiet=True)
                print(f"\n--- {container} (last lines)\n{(tail.stdout + tail.stderr).strip()}", file=sys.stderr)

    def down(self) -> None:
        done = self.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=180, check=False)
        if done.returncode != 0:
            say(f"  down -v exited {done.returncode}: {done.stderr.strip()[-300:]}")


def created(response: requests.Response, what: str) -> dict[str, Any]:
    if response.status_code != 201:
        raise Failed(
            f"{what}: {response.request.method} {response.url} answered {response.status_code}: {response.text[:300]}"
        )
    return response.json()


def items(response: requests.Response) -> list[dict[str, Any]]:
    response.raise_for_status()
    body = response.json()
    return body.get("results", body) if isinstance(body, dict) else body


def all_items(stack: Stack, service: str, path: str) -> list[dict[str, Any]]:
    """Every item of a paginated list (follows ``next``)."""
    return every_page(stack.url(service), path, headers=HTTPS, pages=100)


def replica_ids(stack: Stack, service: str) -> set[int]:
    """Team ids in a service's replica (transfers says ``id``, fixtures ``team_id``)."""
    return {t["team_id"] if "team_id" in t else t["id"] for t in all_items(stack, service, f"/api/{service}/teams/")}


# ----------------------------------------------------------------------------- the flows


def image_sizes() -> list[tuple[str, float]]:
    out = run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}"]).stdout.splitlines()
    wanted = re.compile(r"^(local/|league-manager:ci)")
    return [(line.split()[0], line.split()[1]) for line in out if wanted.match(line)]  # type: ignore[misc]
