"""Where each service runs: the hand-over between ``split_service`` and the supervisor.

Two small JSON files in ``DATA_DIR``, each with one writer:

- ``deployment.json`` (written by ``split_service``, mode 0600: it holds database URLs): the
  deployment wanted, ``{"services": {NAME: {"database_url": …, "state": …}}}``. A service
  not listed runs in the monolith. States, in order: ``starting`` (start NAME's processes on
  its database, idle behind its closed gate), ``switching`` (route NAME's paths to them),
  ``moved`` (the monolith drops NAME from ``LEAGUE_SERVICE``), and on the way back
  ``rejoining`` (the monolith is restarted with NAME in ``LEAGUE_SERVICE``, idle behind its
  gate there, while NAME's own processes keep serving: before the pause, so that the pause
  includes no process start) and ``returning`` (the front door routes NAME's paths to the
  monolith again, then NAME's own processes stop). No entry: stop NAME's own processes (a
  rollback, or the end of the way back).
- ``stack.json`` (written by ``runstack``): what runs now, ``{"pid", "front_door",
  "monolith": {"web", "services"}, "services": {NAME: {"web", "state"}}}`` with state
  ``standby`` (up, not routed) or ``serving`` (routed).

Both are replaced atomically (write a temporary file, then rename), so a reader never sees
half a file, and a crash of either side leaves the last whole version.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

DEPLOYMENT = "deployment.json"
STACK = "stack.json"

STARTING, SWITCHING, MOVED, REJOINING, RETURNING = "starting", "switching", "moved", "rejoining", "returning"
STANDBY, SERVING = "standby", "serving"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise RuntimeError(f"{path} is not valid JSON ({exc}); restore it or remove it") from exc


def _write(path: Path, doc: dict[str, Any], mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(data_dir: Path) -> dict[str, Any]:
    doc = _read(Path(data_dir) / DEPLOYMENT)
    doc.setdefault("services", {})
    return doc


def placement(data_dir: Path, service: str) -> dict[str, Any] | None:
    return load(data_dir)["services"].get(service)


def place(data_dir: Path, service: str, **fields: Any) -> None:
    doc = load(data_dir)
    doc["services"].setdefault(service, {}).update(fields)
    _write(Path(data_dir) / DEPLOYMENT, doc)


def unplace(data_dir: Path, service: str) -> None:
    doc = load(data_dir)
    if doc["services"].pop(service, None) is not None:
        _write(Path(data_dir) / DEPLOYMENT, doc)


def moved(data_dir: Path) -> list[str]:
    return [s for s, p in load(data_dir)["services"].items() if p.get("state") == MOVED]


def stack(data_dir: Path) -> dict[str, Any] | None:
    """What the running ``runstack`` reports, or None when no runstack supervises this
    ``DATA_DIR`` (no file, or its process is gone)."""
    doc = _read(Path(data_dir) / STACK)
    pid = doc.get("pid")
    if not pid:
        return None
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return None
    except PermissionError:
        pass
    return doc
