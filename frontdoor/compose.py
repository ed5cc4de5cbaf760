"""The front door's configuration for each docker compose profile, rendered by
``frontdoor.nginx.render`` and checked in under docker/frontdoor/ (a test checks that each
file equals what ``render`` makes now). After changing the routes or the renderer:

    python -m frontdoor.compose            # rewrites docker/frontdoor/<profile>.conf

In the container nginx runs as the image's ``nginx`` user (no root), listens on 8080, keeps
pid and temp files in /tmp, logs to the container's stdout/stderr, and resolves the
upstreams' service names with Docker's DNS at request time (a web container that comes back
with a new address is found; nginx starts before its upstreams)."""

from __future__ import annotations

import sys
from pathlib import Path

from .nginx import render

LISTEN = "8080"
DOCKER_DNS = "127.0.0.11"
DIRECTORY = Path(__file__).resolve().parent.parent / "docker" / "frontdoor"

# profile -> (upstreams, default upstream, default's name in X-League-Upstream)
PROFILES: dict[str, tuple[dict[str, str], str, str]] = {
    # One process set serves everything.
    "monolith": ({}, "web:8000", "monolith"),
    # Each service's prefixes to its own web; the rest (the league page, /admin/, /healthz)
    # to the teams service's web.
    "microservices": (
        {"teams": "teams-web:8000", "transfers": "transfers-web:8000", "fixtures": "fixtures-web:8000"},
        "teams-web:8000",
        "teams",
    ),
}


def config(profile: str) -> str:
    upstreams, default, name = PROFILES[profile]
    return render(
        upstreams,
        default,
        LISTEN,
        prefix_dir="/tmp",
        default_name=name,
        resolver=DOCKER_DNS,
        error_log="stderr",
        access_log="/dev/stdout",
    )


def path(profile: str) -> Path:
    return DIRECTORY / f"{profile}.conf"


def main() -> int:
    DIRECTORY.mkdir(parents=True, exist_ok=True)
    for profile in PROFILES:
        path(profile).write_text(config(profile))
        print(f"wrote {path(profile)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
