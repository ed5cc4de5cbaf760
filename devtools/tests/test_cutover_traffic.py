"""The traffic generator (devtools/cutover/traffic.py) against a small fake server: it follows the
write gate's contract (a 503 with Retry-After is retried after that long, one without is
an error), records every answer, and measures the pause; and the HTTP part of the checks
(devtools/cutover/checks.py) on recorded calls."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devtools.cutover import checks
from devtools.cutover.traffic import Call, Summary, Traffic

PORTS = range(18380, 18390)  # this work's range (18300-18399)


class Fake:
    """A tiny League API: teams and transfers, and a switch that pauses transfer writes."""

    def __init__(self) -> None:
        self.paused_until = 0.0
        self.retry_after: str | None = "0.2"
        self.ids = 0
        self.lock = threading.Lock()
        self.server = self._bind()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _bind(self) -> ThreadingHTTPServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self, status: int, body: dict, **headers: str) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-League-Upstream", "transfers" if "/transfers" in self.path else "monolith")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _new_id(self) -> int:
                with fake.lock:
                    fake.ids += 1
                    return fake.ids

            def do_GET(self):
                self._answer(200, {"results": []})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if self.path.startswith("/api/teams/"):
                    players = [{"id": self._new_id(), **p} for p in body.get("players", [])]
                    self._answer(201, {"id": self._new_id(), "name": body["name"], "players": players})
                elif time.monotonic() < fake.paused_until:
                    headers = {"Retry-After": fake.retry_after} if fake.retry_after else {}
                    self._answer(503, {"status": 503, "detail": "paused"}, **headers)
                else:
                    self._answer(201, {"id": self._new_id(), "state": "requested"})

        for port in PORTS:
            try:
                return ThreadingHTTPServer(("127.0.0.1", port), Handler)
            except OSError:
                continue
        raise RuntimeError(f"no free port in {PORTS}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    f = Fake()
    yield f
    f.close()


def run(fake: Fake, seconds: float, **kw) -> Summary:
    traffic = Traffic(fake.url, "token", rate=30, threads=4, seed=7, mix={"transfer_request": 1}, **kw)
    traffic.seed(teams=3, players=4)
    traffic.start()
    time.sleep(seconds)
    return traffic.stop(timeout=10)


def test_a_paused_write_is_retried_after_retry_after_and_the_pause_measured(fake):
    fake.paused_until = time.monotonic() + 1.5
    s = run(fake, 2.5)
    refused = [c for c in s.calls if c.status == 503]
    assert refused and all(c.retry_after == "0.2" and c.documented_pause for c in refused)
    assert s.other_5xx == [] and s.no_answer == [] and s.gave_up == 0
    # Every refused request was sent again and got through.
    assert [c for c in s.calls if c.attempt > 1 and c.status == 201]
    assert 0.9 < s.pause_window <= 1.6, s.describe()
    assert s.pause_window <= s.user_pause < 2.2, s.describe()
    created = [c for c in s.calls if c.status == 201 and c.path == "/api/transfers/"]
    assert len(s.transfer_ids) == len(set(s.transfer_ids)) == len(created) > 10
    assert s.statuses[503] == s.refused == len(refused)
    assert s.upstreams["transfers"] == {"transfers": len([c for c in s.calls if c.service == "transfers"])}
    # Retries wait as told (0.2 s): 4 threads during 1.5 s, not a busy loop.
    assert len(refused) <= 4 * (1.5 / 0.2 + 1) + 4, len(refused)


def test_a_503_without_retry_after_is_an_error_not_retried(fake):
    fake.retry_after = None
    fake.paused_until = time.monotonic() + 0.5
    s = run(fake, 1.0)
    assert s.other_5xx and all(c.status == 503 and c.attempt == 1 for c in s.other_5xx)
    assert s.refused == 0 and s.pause_window is None
    assert checks.http(s, moved=["transfers"])


def test_a_write_still_refused_at_the_deadline_is_given_up(fake):
    fake.paused_until = time.monotonic() + 60
    started = time.monotonic()
    s = run(fake, 1.0, retry_deadline=0.5)
    assert time.monotonic() - started < 10
    assert s.gave_up > 0 and s.user_pause is None
    assert "writes still refused" in " ".join(checks.http(s, moved=["transfers"]))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        Traffic("http://x", "t", rate=0)


# ------------------------------------------------------------------------------ HTTP
def call(method: str, path: str, status: int, *, ended: float = 1.0, upstream: str = "", retry_after: str = ""):
    return Call("op", method, path, status, 0.01, ended - 0.01, ended, upstream=upstream, retry_after=retry_after)


def summary(*calls: Call) -> Summary:
    t = Traffic("http://x", "t")
    t.calls = list(calls)
    return t.summary()


def test_http_only_the_documented_pause_of_the_moved_service():
    ok = summary(
        call("POST", "/api/transfers/", 503, ended=1, retry_after="1", upstream="monolith"),
        call("POST", "/api/transfers/", 201, ended=2, upstream="monolith"),
        call("GET", "/api/transfers/1/", 200, ended=5, upstream="transfers"),
    )
    assert checks.http(ok, moved=["transfers"], switched_at=3) == []
    assert checks.http(ok, moved=["fixtures"]) != []  # a 503 on a service not being moved
    assert checks.http(summary(call("POST", "/api/transfers/", 502)), moved=["transfers"]) != []
    assert checks.http(summary(call("POST", "/api/transfers/", 503)), moved=["transfers"]) != []  # no Retry-After
    assert checks.http(summary(call("GET", "/api/teams/", 0)), moved=["transfers"]) != []
    late = summary(call("GET", "/api/transfers/1/", 200, ended=5, upstream="monolith"))
    assert checks.http(late, moved=["transfers"], switched_at=3) == [
        "transfers paths answered by {'monolith': 1} after the switch"
    ]


def test_placement_from_deployment_json(tmp_path):
    assert checks.Placement.from_data_dir(tmp_path, "postgres://m") == checks.Placement("postgres://m")
    (tmp_path / "deployment.json").write_text(
        '{"services": {"transfers": {"database_url": "postgres://t", "state": "moved"},'
        ' "fixtures": {"database_url": "postgres://f", "state": "copying"}}}'
    )
    placement = checks.Placement.from_data_dir(tmp_path, "postgres://m")
    assert placement.home("transfers") == "postgres://t" and placement.home("fixtures") == "postgres://m"
    assert placement.databases() == ["postgres://m", "postgres://t"]
