"""Handlers of a throwaway service "probe", loaded into consumer processes a test starts
(EVENTS_HANDLER_MODULES=events.tests.probe_handlers). Each appends what it saw to the
file named by PROBE_OUT, one line per event: "<pid> <event id> <subject>". With PROBE_DELAY
(seconds) a handler takes that long first; with PROBE_STARTED it first appends "<pid> <event
id>" to that file, so a test knows a handler is running (inside its delay)."""

import os
import time

from events.registry import handler


def _record(event) -> None:
    if started := os.environ.get("PROBE_STARTED"):
        with open(started, "a") as out:
            out.write(f"{os.getpid()} {event.id}\n")
    delay = float(os.environ.get("PROBE_DELAY", "0"))
    if delay:
        time.sleep(delay)
    with open(os.environ["PROBE_OUT"], "a") as out:
        out.write(f"{os.getpid()} {event.id} {event.subject}\n")


@handler("team.created", service="probe", broadcast=True)
def on_team_created_broadcast(event) -> None:
    _record(event)


@handler("team.created", service="probe")
def on_team_created(event) -> None:
    _record(event)


@handler("team.renamed", service="probe")
def on_team_renamed(event) -> None:
    _record(event)
