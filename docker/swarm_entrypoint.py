"""The entrypoint of League Manager's swarm services (docker-stack.yml mounts this file as
a swarm config at /etc/league/swarm_entrypoint.py, so any image version runs it the same):

    python /etc/league/swarm_entrypoint.py [--no-wait] [--timeout SECONDS] [--stop-delay SECONDS] -- COMMAND [ARG...]

1. Secrets: ``<NAME>_FILE`` variables name files under /run/secrets. An image whose
   settings read ``<NAME>_FILE`` themselves (league/settings.py) gets them as they are; an
   older image gets ``NAME`` set from the file for the command (the "file_env" pattern of
   the official database images), never in the stack file or ``docker inspect``.
2. Unless ``--no-wait`` (the one-shot setup itself): wait until this service's setup has
   run, what swarm offers no way to say (it starts every service at once and ignores
   compose's ``depends_on: service_completed_successfully``). Ready means: the database answers, every migration this image knows is applied (the
service's ``setup`` task of the same image ran ``migrate``), and the service's SQS queue
exists (it ran ``setup_bus``). Checked every 5 s; after ``--timeout`` (default 300) it exits
1 saying what it still waits for, and the orchestrator starts the task again. On success it
writes /tmp/league-ready and the command replaces this process (``exec``: signals reach it
directly), or with ``--stop-delay`` (web) runs as its child and passes SIGTERM on that many
seconds late (``run_with_stop_delay``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

APP = Path.cwd()  # the image's WORKDIR (/app): the code, wherever this file is mounted
sys.path.insert(0, str(APP))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "league.settings")


# Written when the wait is over, just before the command replaces this process: the health
# check of the processes without an HTTP port (docker-stack.yml) is that this file exists (the
# command runs, or the container would have exited), with no Python started per check.
READY = Path("/tmp/league-ready")


def load_secret_files(environ: dict[str, str], settings_source: str) -> list[str]:
    """Set NAME from the file ``NAME_FILE`` names (one final newline dropped) where NAME is
    unset, unless the settings read ``_FILE`` variables themselves; returns the names set."""
    if "FileAwareMapping" in settings_source:  # league/settings.py reads <NAME>_FILE itself
        return []
    loaded = []
    for key, path in sorted(environ.items()):
        name = key[: -len("_FILE")]
        if key.endswith("_FILE") and name and name not in environ:
            value = Path(path).read_text()
            environ[name] = value[:-1] if value.endswith("\n") else value
            loaded.append(name)
    return loaded


def not_ready() -> str:
    """What is still missing; "" when ready. The cheap checks first (the setup runs
    ``migrate`` before ``setup_bus``, so on a first deploy no queue means no schema yet):
    the migration graph is loaded only once the database answers and the queues exist."""
    from django.conf import settings
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from events import aws

    try:
        connection.ensure_connection()
    except Exception as exc:  # the database is not there yet
        connection.close()
        return f"database: {type(exc).__name__}: {str(exc).strip()[:200]}"
    for service in settings.ACTIVE_SERVICES:
        try:
            aws.client("sqs").get_queue_url(QueueName=aws.queue_name(service))
        except Exception as exc:  # the bus, or its topology, is not there yet
            return f"queue {aws.queue_name(service)}: {type(exc).__name__}"
    try:
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:
        connection.close()
        return f"database: {type(exc).__name__}: {str(exc).strip()[:200]}"
    if pending:
        return f"{len(pending)} migrations not applied (first: {pending[0][0]})"
    return ""


def run_with_stop_delay(argv: list[str], delay: float) -> int:
    """Run the command as a child; on SIGTERM wait ``delay`` seconds before passing it on.
    Swarm takes a stopping task out of its service's DNS name when it sends SIGTERM, but a
    proxy that resolved the name a moment before (the front door caches 10 s) still sends
    it requests: a server that stopped at once would refuse or reset them. Meanwhile it
    serves them; then the command's own graceful stop runs."""
    import signal
    import subprocess

    child = subprocess.Popen(argv)
    stopping: list[int] = []

    def later(signum: int, _frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, later)
    signal.signal(signal.SIGINT, lambda signum, _frame: child.send_signal(signum))
    while child.poll() is None:
        if stopping:
            print(f"swarm_entrypoint: stop in {delay:.0f} s (out of the service's DNS name by then)", flush=True)
            time.sleep(delay)
            child.send_signal(stopping[0])
            return child.wait()
        time.sleep(0.2)
    return child.returncode


def main(argv: list[str]) -> int:
    timeout, wait, stop_delay = 300.0, True, 0.0
    while argv[:1] in (["--timeout"], ["--no-wait"], ["--stop-delay"]):
        if argv[0] == "--no-wait":
            wait, argv = False, argv[1:]
        elif argv[0] == "--stop-delay":
            stop_delay, argv = float(argv[1]), argv[2:]
        else:
            timeout, argv = float(argv[1]), argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: swarm_entrypoint.py [--no-wait] [--timeout SECONDS] -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    load_secret_files(os.environ, (APP / "league" / "settings.py").read_text())  # type: ignore[arg-type]
    if not wait:
        os.execvp(argv[0], argv)
    import django

    django.setup()
    deadline, missing, said = time.monotonic() + timeout, "", ""
    while True:
        missing = not_ready()
        if not missing:
            break
        if missing != said:
            print(f"swarm_entrypoint: waiting: {missing}", file=sys.stderr, flush=True)
            said = missing
        if time.monotonic() >= deadline:
            print(f"swarm_entrypoint: not ready after {timeout:.0f} s: {missing}", file=sys.stderr, flush=True)
            return 1
        time.sleep(5)
    from django.db import connection

    connection.close()
    READY.write_text(f"{os.getpid()}\n")
    if stop_delay:
        return run_with_stop_delay(argv, stop_delay)
    os.execvp(argv[0], argv)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
