"""A fault-injecting HTTP proxy in front of ``moto_server``, for one process of the
crash suite (a relay). It forwards every request as it is, except that after
``hold_next_publish(seconds)`` it holds the next SNS ``PublishBatch`` that long before
forwarding it: a call that hangs past the relay's lease. If the caller hung up meanwhile
(its client timed out), the request is dropped, as a request that never reached SNS; if
the caller is still waiting, it is forwarded late and SNS publishes it then."""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_plus

import requests

_SKIP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "keep-alive", "accept-encoding"}


class DelayingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._lock = threading.Lock()
        self._hold: float | None = None
        self.held_rows: list[int] = []  # outbox ids (PublishBatch entry ids) of the held call
        self.outcome = ""  # "dropped" / "forwarded late" once the held call is over
        self.done = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="delaying-proxy", daemon=True)

    def start(self) -> DelayingProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def hold_next_publish(self, seconds: float) -> None:
        with self._lock:
            self._hold = seconds

    def _take_hold(self, body: bytes) -> float | None:
        if b"Action=PublishBatch" not in body:
            return None
        with self._lock:
            hold, self._hold = self._hold, None
        if hold is not None:
            text = unquote_plus(body.decode("utf-8", "replace"))
            self.held_rows = [int(x) for x in re.findall(r"PublishBatchRequestEntries\.member\.\d+\.Id=(\d+)", text)]
        return hold


def _client_gone(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _handler(proxy: DelayingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hold = proxy._take_hold(body)
            if hold is not None:
                deadline = time.monotonic() + hold
                while time.monotonic() < deadline:
                    time.sleep(0.05)
                if _client_gone(self.connection):
                    proxy.outcome = "dropped"
                    proxy.done.set()
                    self.close_connection = True
                    return
                proxy.outcome = "forwarded late"
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _SKIP_HEADERS}
            try:
                upstream = requests.request(
                    self.command, proxy.upstream + self.path, data=body, headers=headers, timeout=60
                )
            except requests.RequestException:
                self.close_connection = True
                return
            finally:
                if hold is not None:
                    proxy.done.set()
            content = upstream.content
            self.send_response(upstream.status_code)
            for key, value in upstream.headers.items():
                if key.lower() not in _SKIP_HEADERS and key.lower() != "content-encoding":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

    return Handler
