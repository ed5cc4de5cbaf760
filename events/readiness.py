"""A long-running process of the bus says that its start-up is over, for the supervisor
that started it (``runstack``; the notify-socket idea of systemd, with a file).

The supervisor names a file in ``READY_FILE``; the process writes its pid there once it is
ready: a consumer once it receives, or once it waits behind its closed gate (its start-up is
over: what is left is the gate's business); a Celery worker once it takes tasks; beat once
its schedule runs. Without ``READY_FILE`` nothing is written.

Guarantees:
- Written at most once per process, whole (a temporary file renamed over it): a reader sees
  no file or the whole pid, never a part.
- Never stops the process: a file that cannot be written is logged and left out (readiness
  serves a supervisor's waits; the work does not depend on it).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)
_said = threading.Event()


def announce() -> None:
    """Say once that this process is ready (``READY_FILE``, if the supervisor named one)."""
    path = settings.READY_FILE
    if not path or _said.is_set():
        return
    _said.set()
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        temporary.write_text(f"{os.getpid()}\n")
        temporary.replace(target)
    except OSError as exc:
        log.warning("could not write the ready file %s (%s); the process runs on", path, exc)
