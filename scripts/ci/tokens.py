"""A superuser and an API token on a service's database, the same for every stack CI runs:
the stack only says how a script runs in a container of the service (compose: ``docker
exec`` in its web container; swarm: through the stack's entrypoint, for the secrets)."""

from __future__ import annotations

import concurrent.futures
import re
import secrets
from collections.abc import Callable, Sequence

from scripts.ci.engine import Failed

USERNAME = "ci"
# Run with the variables of superuser_env() set; prints "Generated token <key>".
SCRIPT = f"python manage.py createsuperuser --noinput >/dev/null && python manage.py drf_create_token {USERNAME}"


def superuser_env(password: str) -> list[str]:
    """``docker exec`` options: the superuser ``createsuperuser --noinput`` makes."""
    return [
        "-e",
        f"DJANGO_SUPERUSER_USERNAME={USERNAME}",
        "-e",
        f"DJANGO_SUPERUSER_EMAIL={USERNAME}@example.com",
        "-e",
        f"DJANGO_SUPERUSER_PASSWORD={password}",
    ]


def token_in(service: str, out: str) -> str:
    """The key ``drf_create_token`` printed; Failed with the end of its output if none."""
    token = re.search(r"Generated token (\S+)", out)
    if not token:
        raise Failed(f"{service}: drf_create_token printed no token: {out[-300:]}")
    return token.group(1)


def api_tokens(services: Sequence[str], execute: Callable[[str, list[str], str], str]) -> dict[str, str]:
    """Service -> its API token, the services side by side. ``execute(service, env, script)``
    runs ``script`` (sh) in a container of the service with the ``docker exec`` options
    ``env`` and returns its output."""
    env = superuser_env(secrets.token_urlsafe(16))

    def one(service: str) -> tuple[str, str]:
        return service, token_in(service, execute(service, env, SCRIPT))

    with concurrent.futures.ThreadPoolExecutor(len(services)) as pool:
        return dict(pool.map(one, services))
