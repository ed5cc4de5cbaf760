"""docker-stack.yml deployed on a one-node swarm, and how to read it: its services and
tasks, its APIs through the front door, its databases and queues."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from typing import Any

import requests

from devtools.netutil import free_port
from scripts.ci.engine import ROOT, Failed, every_page, run, say, wait_until
from scripts.ci.tokens import api_tokens

STACK = "league"
HTTPS = {"X-Forwarded-Proto": "https"}  # as if through the TLS proxy
SERVICES = ("teams", "transfers", "fixtures")
# Images built offline (docker/build_offline_images.sh) for the infrastructure services.
MOTO = re.search(r"^moto\[server\]==(\S+)", (ROOT / "requirements.txt").read_text(), flags=re.M)
INFRA_IMAGES = {
    "POSTGRES_IMAGE": "local/postgres:15",
    "REDIS_IMAGE": "local/redis:7.0",
    "BUS_IMAGE": f"local/moto:{MOTO.group(1) if MOTO else '5.2.5'}",
    "NGINX_IMAGE": "local/nginx:1.22",
}
SECRET_NAMES = (
    "league_secret_key",
    "league_postgres_password",
    "league_teams_service_token",
    *(f"league_{s}_database_url" for s in SERVICES),
)


def docker_json(*argv: str, timeout: float = 60) -> Any:
    return json.loads(run(["docker", *argv], timeout=timeout).stdout or "null")


class SwarmStack:
    """The stack ``league`` from docker-stack.yml, every app service on ``image``."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        password = secrets.token_hex(16)
        self.secrets = {
            "league_secret_key": secrets.token_urlsafe(50),
            "league_postgres_password": password,
            "league_teams_service_token": secrets.token_hex(20),
            **{f"league_{s}_database_url": f"postgres://league:{password}@postgres:5432/league_{s}" for s in SERVICES},
        }
        self.tokens: dict[str, str] = {}

    # ------------------------------------------------------------------ life cycle
    def deploy(self) -> None:
        for name, value in self.secrets.items():
            done = subprocess.run(
                ["docker", "secret", "create", name, "-"], input=value, capture_output=True, text=True, timeout=30
            )
            if done.returncode != 0:
                raise Failed(f"docker secret create {name}: {done.stderr.strip()}")
        env = {"LEAGUE_IMAGE": self.image, "WEB_PORT": str(self.port), **INFRA_IMAGES}
        run(["docker", "stack", "deploy", "--resolve-image", "never", "-c", "docker-stack.yml", STACK], env=env)
        say(f"  docker stack deploy -c docker-stack.yml {STACK} (LEAGUE_IMAGE={self.image}, front door :{self.port})")

    def remove(self) -> None:
        self.remove_leftovers()

    @staticmethod
    def remove_leftovers() -> None:
        """No stack ``league``: its services, containers, networks, secrets and volume gone."""
        if (
            not run(["docker", "stack", "ls", "--format", "{{.Name}}"], check=False, quiet=True)
            .stdout.split()
            .count(STACK)
            and not run(
                ["docker", "secret", "ls", "-q", "--filter", "name=league_"], check=False, quiet=True
            ).stdout.split()
        ):
            return
        run(["docker", "stack", "rm", STACK], check=False, timeout=120)

        def gone() -> bool:
            left = run(["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}"]).stdout
            networks = run(["docker", "network", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}"])
            return not left.split() and not networks.stdout.split()

        try:
            wait_until("the stack's containers and networks gone", gone, timeout=120, interval=2)
        except Failed as exc:
            say(f"  {exc}")
        for name in SECRET_NAMES:
            run(["docker", "secret", "rm", name], check=False, quiet=True)
        volumes = run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}"]).stdout
        for volume in volumes.split():
            run(["docker", "volume", "rm", "-f", volume], check=False, quiet=True, timeout=60)

    # ------------------------------------------------------------------ services and tasks
    def services(self) -> dict[str, dict[str, Any]]:
        """Service (short name) -> its spec, as ``docker service inspect`` says."""
        ids = run(["docker", "service", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}"]).stdout
        if not ids.split():
            return {}
        return {s["Spec"]["Name"][len(STACK) + 1 :]: s for s in docker_json("service", "inspect", *ids.split())}

    def tasks(self, service: str) -> list[dict[str, Any]]:
        """The tasks of a service that swarm wants running, or that completed (one-shots)."""
        ids = run(["docker", "service", "ps", "-q", f"{STACK}_{service}"], timeout=60).stdout.split()
        if not ids:
            return []
        # A task may go between the two commands (history trimmed): inspect says what is left.
        found = run(["docker", "inspect", *ids], timeout=60, check=False, quiet=True).stdout
        return [
            t
            for t in json.loads(found or "[]")
            if t["DesiredState"] in ("running", "complete") or t["Status"]["State"] == "complete"
        ]

    def not_ready(self) -> list[str]:
        """Services whose tasks are not all running (healthy: swarm counts a task with a health
        check as running once it passed) or, for one-shots, not complete; [] when all are."""
        waiting = []
        for name, spec in sorted(self.services().items()):
            mode = spec["Spec"]["Mode"]
            wanted = mode.get("Replicated", {}).get("Replicas", 1)
            tasks = self.tasks(name)
            one_shot = spec["Spec"]["TaskTemplate"].get("RestartPolicy", {}).get("Condition") == "on-failure"
            image = spec["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0]
            if one_shot:
                done = [
                    t
                    for t in tasks
                    if t["Status"]["State"] == "complete" and t["Spec"]["ContainerSpec"]["Image"].split("@")[0] == image
                ]
                if not done:
                    waiting.append(f"{name}=" + ",".join(t["Status"]["State"] for t in tasks[-2:]))
                continue
            running = [
                t
                for t in tasks
                if t["Status"]["State"] == "running"
                and t["DesiredState"] == "running"
                and t["Spec"]["ContainerSpec"]["Image"].split("@")[0] == image
            ]
            if len(running) != wanted or len([t for t in tasks if t["DesiredState"] == "running"]) != wanted:
                waiting.append(f"{name}={len(running)}/{wanted}")
        return waiting

    def wait_healthy(self, timeout: float = 420) -> None:
        last: list[str] = []

        def probe() -> bool:
            nonlocal last
            last = self.not_ready()
            return not last and bool(self.services())

        try:
            wait_until("every service's tasks running and healthy", probe, timeout=timeout, interval=3)
        except Failed as exc:
            raise Failed(f"{exc}; waiting for {', '.join(last)}") from None
        say(f"  {len(self.services())} services converged (one-shots complete)")

    def containers(self, service: str) -> list[str]:
        """The ids of the running containers of a service."""
        return run(
            ["docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_{service}"]
        ).stdout.split()

    def exec(self, service: str, script: str, *, timeout: float = 120, env: list[str] | None = None) -> str:
        """``sh -ec script`` in a running container of the service, with the secrets of its
        entrypoint (an exec does not go through it)."""
        container = wait_until(f"a running container of {service}", lambda: self.containers(service), timeout=60)[0]
        argv = ["docker", "exec", *(env or []), container, "python", "/etc/league/swarm_entrypoint.py", "--no-wait"]
        return run([*argv, "--", "sh", "-ec", script], timeout=timeout).stdout

    def login(self) -> None:
        """A superuser and an API token on each service's database, through the entrypoint
        of a ``-web`` task (for the secrets), the services side by side."""

        def execute(service: str, env: list[str], script: str) -> str:
            return self.exec(f"{service}-web", script, env=env, timeout=180)

        self.tokens = api_tokens(SERVICES, execute)

    # ------------------------------------------------------------------ reading it
    def api(self, method: str, service: str, path: str, body: Any = None, timeout: float = 10) -> requests.Response:
        """A request through the front door, with the token of the service that owns the path."""
        headers = {**HTTPS, "Authorization": f"Token {self.tokens[service]}"}
        return requests.request(method, self.base + path, json=body, headers=headers, timeout=timeout)

    def all_items(self, path: str) -> list[dict[str, Any]]:
        return every_page(self.base, path, headers=HTTPS)

    def replica(self, service: str) -> dict[int, str]:
        """A service's replica of teams: team id -> name (transfers says ``id``, fixtures ``team_id``)."""
        return {
            t["team_id"] if "team_id" in t else t["id"]: t["name"] for t in self.all_items(f"/api/{service}/teams/")
        }

    def psql(self, database: str, sql: str) -> str:
        postgres = self.containers("postgres")[0]
        return run(["docker", "exec", postgres, "psql", "-U", "league", "-d", database, "-tAc", sql]).stdout.strip()

    def queues(self) -> list[dict[str, Any]]:
        """Every service queue's depth, in flight and DLQ (events.operations.queue_status)."""
        script = (
            "python -c 'import django, json; django.setup(); from events import operations; "
            "print(json.dumps(operations.queue_status()))'"
        )
        out: list[dict[str, Any]] = []
        for service in SERVICES:
            out += json.loads(self.exec(f"{service}-web", script).strip().splitlines()[-1])
        return out

    def logs_of_failures(self) -> None:
        for line in self.not_ready():
            service = line.split("=")[0]
            ids = run(["docker", "service", "ps", "-q", f"{STACK}_{service}"], check=False).stdout.split()[:3]
            for task in ids:
                err = run(["docker", "inspect", "-f", "{{.Status.Err}}", task], check=False, quiet=True).stdout.strip()
                say(f"  {service} task {task[:12]}: {err or 'no error'}")
            tail = run(["docker", "service", "logs", "--tail", "20", f"{STACK}_{service}"], check=False, quiet=True)
            print(f"\n--- {service} (last lines)\n{(tail.stdout + tail.stderr).strip()[-3000:]}", flush=True)


def timed_update(stack: SwarmStack, service: str, image: str, timeout: float = 420) -> float:
    """``docker service update --image`` of one service, until swarm says it converged
    (one-shot: its new task completed); returns the seconds it took."""
    started = time.monotonic()
    one_shot = service.endswith("-setup")
    argv = ["docker", "service", "update", "--image", image, "--no-resolve-image", "--quiet"]
    if one_shot:
        argv.append("--detach")
    run([*argv, f"{STACK}_{service}"], timeout=timeout)
    if one_shot:

        def completed() -> bool:
            tasks = stack.tasks(service)
            states = [t["Status"]["State"] for t in tasks if t["Spec"]["ContainerSpec"]["Image"].split("@")[0] == image]
            if any(s in ("failed", "rejected") for s in states) and not any(s == "complete" for s in states):
                say(f"  {service}: a task {states}; swarm runs it again")
            return "complete" in states

        wait_until(f"{service} on {image} completed", completed, timeout=timeout, interval=1)
    spec = stack.services()[service]
    state = (spec.get("UpdateStatus") or {}).get("State", "")
    if state.startswith("rollback"):
        raise Failed(f"{service}: the update to {image} was rolled back ({spec['UpdateStatus'].get('Message')})")
    return time.monotonic() - started
