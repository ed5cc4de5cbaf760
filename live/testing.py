"""Test helpers for the league page: web instances as real ASGI server processes (uvicorn,
as ``runstack`` serves them), each with its own live feed, and a Server-Sent-Events client.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import requests
from django.conf import settings

from devtools.netutil import free_port, wait_for_http
from devtools.testing import child_env, wait_until
from events import aws
from events.broadcasting import TAG_INSTANCE

from .feed import SERVICE


def instance_queues() -> list[str]:
    """The live feeds' instance queues that exist now."""
    sqs = aws.client("sqs")
    urls = sqs.list_queues(QueueNamePrefix=aws.queue_name(SERVICE)).get("QueueUrls", [])
    return [u for u in urls if TAG_INSTANCE in sqs.list_queue_tags(QueueUrl=u).get("Tags", {})]


@dataclass
class Web:
    url: str
    proc: subprocess.Popen


@contextmanager
def web_instances(count: int, moto_url: str, **env: str) -> Iterator[list[Web]]:
    """``count`` web instances side by side (one uvicorn process each, on its own port),
    on this test's database and the given moto_server; stopped with SIGTERM at the end,
    which must leave no instance queue behind."""
    uvicorn = os.path.join(os.path.dirname(sys.executable), "uvicorn")
    environment = child_env(moto_url, LIVE_FEED_WAIT_SECONDS="1", **env)
    webs: list[Web] = []
    try:
        for _ in range(count):
            port = free_port()
            argv = [uvicorn, "league.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
            argv += ["--lifespan", "on", "--timeout-graceful-shutdown", "2", "--no-access-log"]
            argv += ["--no-proxy-headers"]  # as runstack: the client's address is Django's to find
            # The monolith: transfers reads teams from this same web (unless the test says otherwise).
            own = {"TEAMS_SERVICE_URL": f"http://127.0.0.1:{port}"} if "TEAMS_SERVICE_URL" not in env else {}
            proc = subprocess.Popen(argv, cwd=settings.BASE_DIR, env={**environment, **own})
            webs.append(Web(f"http://127.0.0.1:{port}", proc))
        for web in webs:
            wait_for_http(f"{web.url}/healthz", timeout=60)
        wait_until(lambda: len(instance_queues()) == count, timeout=30, what=f"{count} live instance queues")
        yield webs
        for web in webs:
            web.proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal it stopped on after a clean shutdown: -SIGTERM.
        codes = [web.proc.wait(30) for web in webs]
        assert set(codes) <= {0, -signal.SIGTERM}, f"web instances exited with {codes}"
        wait_until(lambda: not instance_queues(), timeout=10, what="the instance queues to be deleted")
    finally:
        for web in webs:
            if web.proc.poll() is None:
                web.proc.kill()
                web.proc.wait(10)


@dataclass
class Stream:
    """A Server-Sent-Events client on a thread: ``events`` collects (event, data) pairs."""

    url: str
    events: list[tuple[str, str]] = field(default_factory=list)
    opened: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._response: requests.Response | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            self._stream()
        except (requests.RequestException, AttributeError, ValueError):
            pass  # closed by close(), or the server went away

    def _stream(self) -> None:
        with requests.get(self.url, stream=True, timeout=(5, 60)) as response:
            self._response = response
            response.raise_for_status()
            name, data = "message", []
            for raw in response.iter_lines():
                line = raw.decode()  # an event stream is UTF-8
                self.opened.set()
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    self.events.append((name, "\n".join(data)))
                    name, data = "message", []

    def wait_for(self, text: str, *, timeout: float) -> float:
        """Seconds until an event containing ``text`` arrived."""
        started = time.monotonic()
        wait_until(
            lambda: any(text in d for _, d in self.events),
            timeout=timeout,
            what=f"{text!r} on {self.url}",
            interval=0.02,
        )
        return time.monotonic() - started

    def close(self) -> None:
        if self._response is not None:
            self._response.close()


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def chromium(*, width: int = 1280, height: int = 900) -> Iterator[object]:
    """A headless Chromium of its own (Debian's ``chromium`` and ``chromium-driver``;
    nothing is downloaded), with its own profile, quit at the end."""
    import shutil
    import tempfile

    import pytest

    from devtools import requires

    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install -r requirements-dev.txt")
    from selenium.webdriver.chrome.service import Service

    for exe in (CHROMIUM, CHROMEDRIVER):
        requires.program(not os.path.exists(exe), exe, "chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="league-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
