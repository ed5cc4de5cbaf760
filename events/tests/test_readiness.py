"""A process says that its start-up is over (events/readiness.py): unit behaviour, then real
processes (a consumer, a Celery worker and beat) started with ``READY_FILE``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from devtools.testing import child_env, manage_argv, wait_until
from events import gate, readiness, topology

PROBE = {"EVENTS_HANDLER_MODULES": "events.tests.probe_handlers"}


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(readiness, "_said", threading.Event())


def test_the_pid_is_written_once_and_whole(fresh, settings, tmp_path):
    settings.READY_FILE = str(tmp_path / "ready")
    readiness.announce()
    assert (tmp_path / "ready").read_text() == f"{os.getpid()}\n"
    (tmp_path / "ready").unlink()
    readiness.announce()  # once per process: a supervisor waits on the first
    assert not (tmp_path / "ready").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left


def test_without_a_ready_file_nothing_is_written(fresh, settings, tmp_path, monkeypatch):
    settings.READY_FILE = ""
    monkeypatch.chdir(tmp_path)
    readiness.announce()
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_cannot_be_written_is_logged_and_the_process_runs_on(fresh, settings, tmp_path, caplog):
    settings.READY_FILE = str(tmp_path / "no such directory" / "ready")
    readiness.announce()
    assert "could not write the ready file" in caplog.text


def _running(argv: list[str], env: dict[str, str], ready) -> subprocess.Popen:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, timeout=60, what="the ready file", interval=0.1)
        assert proc.poll() is None, f"exited {proc.returncode} before it said it was ready"
        assert ready.read_text() == f"{proc.pid}\n"
    except BaseException:
        proc.kill()
        raise
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.django_db(transaction=True)
def test_a_consumer_says_it_is_ready_once_it_receives(moto_server, recorder, tmp_path):
    topology.ensure(["probe"])
    ready = tmp_path / "ready"
    env = child_env(moto_server, READY_FILE=str(ready), PROBE_OUT=str(tmp_path / "out"), **PROBE)
    _stop(_running(manage_argv("consume", "--service", "probe"), env, ready))


@pytest.mark.django_db(transaction=True)
def test_a_consumer_behind_its_closed_gate_says_it_is_ready(moto_server, tmp_path):
    """Its start-up is over; what is left is the gate's business (split_service's way back
    starts the monolith's consumer behind a ``moved`` gate before the pause)."""
    topology.ensure(["transfers"])
    gate.mark_moved("transfers", note="moved for the test")
    ready = tmp_path / "ready"
    env = child_env(moto_server, READY_FILE=str(ready))
    proc = _running(manage_argv("consume", "--service", "transfers"), env, ready)
    try:
        assert gate.current("transfers") == gate.MOVED
    finally:
        _stop(proc)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("program", ["worker", "beat"])
def test_celery_worker_and_beat_say_they_are_ready(moto_server, settings, tmp_path, program):
    ready = tmp_path / "ready"
    for folder in ("out", "processed", "control"):  # a broker of its own (filesystem, DATA_DIR)
        (tmp_path / "broker" / folder).mkdir(parents=True)
    celery = os.path.join(os.path.dirname(sys.executable), "celery")
    extra = ["-P", "solo"] if program == "worker" else ["-s", str(tmp_path / "schedule")]
    env = child_env(moto_server, READY_FILE=str(ready), DATA_DIR=str(tmp_path))
    _stop(_running([celery, "-A", "league", program, "-l", "warning", *extra], env, ready))
