"""Test helpers for the front door: tiny real HTTP upstreams on loopback threads and a
one-shot HTTP client that returns the upstream's name."""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .nginx import FrontDoor


class Upstream:
    """A tiny HTTP server on a thread: answers JSON {upstream, path, headers}; ``/slow``
    sets ``slow_arrived`` and sleeps ``slow`` seconds first; ``/live/events`` streams two
    events 1.5 s apart."""

    def __init__(self, name: str, slow: float = 2.0) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/live/events"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(b"data: first\n\n")
                    self.wfile.flush()
                    time.sleep(1.5)
                    self.wfile.write(b"data: second\n\n")
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if "/slow" in self.path:
                    outer.slow_arrived.set()
                    time.sleep(outer.slow)
                outer.hits += 1
                body = json.dumps({"upstream": name, "path": self.path, "headers": dict(self.headers)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self.rfile.read(length)
                self.do_GET()

        self.slow = slow
        self.slow_arrived = threading.Event()
        self.hits = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def get(door: FrontDoor, path: str, *, method: str = "GET", body: bytes | None = None, headers=None, timeout=10):
    """(status, X-League-Upstream, parsed JSON body or raw text)."""
    conn = http.client.HTTPConnection(door.host, door.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        return resp.status, resp.getheader("X-League-Upstream"), payload
    finally:
        conn.close()
