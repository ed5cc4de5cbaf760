"""The front door's nginx: its configuration (``render``) and a local nginx process (``FrontDoor``).

Guarantees kept here:

- ``render`` makes a complete nginx.conf from the route table (``frontdoor.routes``): each
  service in ``upstreams`` gets its prefixes, everything else goes to ``default``. Every
  response, errors included, carries ``X-League-Upstream: <service or default name>``.
- The configuration needs no root and no system path: pid, logs and every temp path live in
  ``prefix_dir``; ``daemon off`` (the caller supervises the master).
- Proxied requests keep the client's ``Host``; ``X-Forwarded-For`` gets the client appended;
  ``X-Forwarded-Proto`` and ``X-Request-ID`` pass through (nginx fills them in when absent:
  the scheme, a fresh request id). Bodies up to Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` pass
  (Django answers 413 itself above its limit). The live page's stream (``/live/``) is not
  buffered and may stay open for an hour.
- ``FrontDoor.switch`` changes routes without dropping a request: the new file is checked with
  ``nginx -t`` first (a refused one raises ``FrontDoorError`` and the running configuration
  stays as it was), then the master gets SIGHUP: new workers take new connections, old workers
  finish the requests they hold and exit. ``switch`` returns once the old workers accept nothing
  more and a request shows the new configuration answering (bounded by ``timeout``).
- ``FrontDoor.stop`` is graceful (SIGQUIT: in-flight requests finish), bounded, then kills the
  whole process group: no nginx worker is left behind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import string
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import routes

# Django's default DATA_UPLOAD_MAX_MEMORY_SIZE (league/settings.py keeps the default; a test
# checks the two agree).
MAX_BODY_BYTES = 2_621_440
STREAM_READ_TIMEOUT_S = 3600
TEMPLATE = Path(__file__).with_name("nginx.conf.template")
INSTALL_HINT = "apt-get install nginx (Debian's package)"

_HOSTPORT = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class FrontDoorError(RuntimeError):
    """Something about the front door is wrong; the message says what and what to do."""


def check_hostport(what: str, value: str) -> None:
    m = _HOSTPORT.match(value or "")
    if not m or not 0 < int(m.group(1)) < 65536:
        raise ValueError(f"upstream for {what} is {value!r}: give host:port, e.g. 127.0.0.1:8011")


def _listen(value: str) -> str:
    if value.isdigit() or _HOSTPORT.match(value) or value.startswith("unix:"):
        return value
    raise ValueError(f"listen is {value!r}: give port or host:port, e.g. 127.0.0.1:8000")


def render(
    upstreams: Mapping[str, str],
    default: str,
    listen: str,
    *,
    prefix_dir: str | os.PathLike[str],
    default_name: str = routes.DEFAULT,
    user: str | None = None,
    resolver: str | None = None,
    error_log: str | None = None,
    access_log: str | None = None,
    control: str | None = None,
    generation: str = "1",
    max_body_bytes: int = MAX_BODY_BYTES,
    worker_processes: int = 1,
) -> str:
    """A complete nginx.conf routing ``upstreams`` ({service: "host:port"}) by the route
    table and everything else to ``default`` ("host:port", named ``default_name`` in the
    X-League-Upstream header), listening on ``listen`` ("port" or "host:port").

    ``prefix_dir``: an absolute directory for pid, logs and temp files (must exist).
    ``user``: the workers' user, only meaningful when the master runs as root.
    ``resolver``: a DNS server (e.g. docker's 127.0.0.11): names are then resolved at request
    time, so an upstream container that comes back with a new address is found, and nginx
    starts before its upstreams exist. Without it names are resolved once at (re)load.
    ``error_log`` / ``access_log``: paths (or ``stderr`` / ``/dev/stdout``), default in prefix_dir.
    ``control``: a unix socket path answering ``GET /generation`` with ``generation`` (how
    ``FrontDoor`` knows a reload is live); not reachable from the network.
    """
    routes.check_services(upstreams)
    for service, hostport in upstreams.items():
        check_hostport(service, hostport)
    check_hostport(default_name, default)
    if not _NAME.match(default_name):
        raise ValueError(f"default_name {default_name!r}: lower-case letters, digits, - and _ only")
    listen = _listen(str(listen))
    prefix = str(prefix_dir).rstrip("/") or "/"
    if not os.path.isabs(prefix):
        raise ValueError(f"prefix_dir {prefix_dir!r} must be an absolute path")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", generation):
        raise ValueError(f"generation {generation!r}: letters, digits, . _ - only")
    error_log = error_log or f"{prefix}/error.log"
    access_log = access_log or f"{prefix}/access.log"

    def location(match: str, name: str, hostport: str, *, stream: bool = False) -> list[str]:
        lines = [f"        location {match} {{"]
        if resolver:
            lines += [
                f'            set $league_upstream "{hostport}";',
                "            proxy_pass http://$league_upstream;",
            ]
        else:
            lines.append(f"            proxy_pass http://league_{name.replace('-', '_')};")
        if stream:
            lines += [
                "            proxy_buffering off;",
                "            proxy_cache off;",
                f"            proxy_read_timeout {STREAM_READ_TIMEOUT_S}s;",
                f"            proxy_send_timeout {STREAM_READ_TIMEOUT_S}s;",
            ]
        lines += [f"            add_header X-League-Upstream {name} always;", "        }"]
        return lines

    if resolver:
        addressing = [f"    resolver {resolver} valid=10s ipv6=off;", "    resolver_timeout 5s;"]
    else:
        blocks: dict[str, str] = {}
        for name, hostport in [(default_name, default), *upstreams.items()]:
            if blocks.setdefault(name, hostport) != hostport:
                raise ValueError(f"{name} is both the default ({default}) and routed to {hostport}: give one address")
        addressing = []
        for name, hostport in blocks.items():
            addressing += [f"    upstream league_{name.replace('-', '_')} {{", f"        server {hostport};", "    }"]
    locations = [
        *location("/", default_name, default),
        *location(routes.STREAM_PREFIX, default_name, default, stream=True),
    ]
    for service, hostport in upstreams.items():
        for prefix_ in routes.ROUTES[service]:
            match = f"= {prefix_}" if routes.is_exact(prefix_) else prefix_
            locations += location(match, service, hostport)
    control_server = ""
    if control:
        control_server = "\n".join(
            [
                "",
                "    # Private: which configuration answers (FrontDoor.switch waits for it).",
                "    server {",
                f"        listen unix:{control};",
                "        access_log off;",
                f'        location = /generation {{ return 200 "{generation}\\n"; }}',
                "        location / { return 404; }",
                "    }",
                "",
            ]
        )
    return _Template(TEMPLATE.read_text()).substitute(
        generation=generation,
        worker_processes=worker_processes,
        prefix=prefix,
        error_log=error_log,
        access_log=access_log,
        user_line=f"user {user};\n" if user else "",
        max_body_bytes=max_body_bytes,
        addressing="\n".join(addressing),
        listen=listen,
        locations="\n".join(locations),
        control_server=control_server,
    )


class _Template(string.Template):
    """``@name`` placeholders: nginx's own variables start with ``$``."""

    delimiter = "@"


def nginx_binary() -> str | None:
    """Debian's nginx, if installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _unix_get(path: str, target: str, timeout: float = 1.0) -> str:
    """GET ``target`` over the unix socket ``path``; the body (raises OSError)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(f"GET {target} HTTP/1.0\r\nHost: frontdoor\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise OSError(f"control socket answered {head[:60]!r}")
    return body.decode().strip()


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return kids


def _group_alive(pgid: int) -> bool:
    """Some live (not zombie) process is in process group ``pgid``."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                return True
    return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class FrontDoor:
    """A local nginx in front of the processes: ``start``, ``switch`` (graceful), ``stop``.

    Everything it writes lives in ``prefix_dir``: nginx.conf, nginx.pid, error.log,
    access.log, nginx.out (the master's own output), the control socket and temp dirs.
    """

    def __init__(self, prefix_dir: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000) -> None:
        self.prefix_dir = Path(prefix_dir).resolve()
        self.host = host
        self.port = int(port)
        self.proc: subprocess.Popen | None = None
        self.upstreams: dict[str, str] = {}
        self.default: str | None = None
        self.generation = 0
        self._output: Any = None

    # ------------------------------------------------------------------ facts

    @staticmethod
    def binary() -> str | None:
        return nginx_binary()

    @classmethod
    def available(cls) -> bool:
        """Debian's nginx is installed (``nginx`` on PATH or /usr/sbin/nginx)."""
        return cls.binary() is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def conf_path(self) -> Path:
        return self.prefix_dir / "nginx.conf"

    @property
    def control_path(self) -> Path:
        return self.prefix_dir / "control.sock"

    @property
    def error_log(self) -> Path:
        return self.prefix_dir / "error.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # ------------------------------------------------------------------ configuration

    def render(self, upstreams: Mapping[str, str], default: str, generation: int) -> str:
        # As root (CI containers), workers keep root's user like every other child of the
        # caller: the default (nobody) could not reach temp dirs under a private prefix_dir.
        return render(
            upstreams,
            default,
            f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}",
            prefix_dir=self.prefix_dir,
            user="root" if os.geteuid() == 0 else None,
            control=str(self.control_path),
            generation=str(generation),
        )

    def _test(self, conf: Path) -> None:
        """``nginx -t`` on ``conf``; FrontDoorError with nginx's own words if refused."""
        done = subprocess.run(
            [self._nginx(), "-t", "-q", "-c", str(conf), "-p", f"{self.prefix_dir}/", "-e", str(self.error_log)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
            raise FrontDoorError(f"nginx -t refused the front-door configuration {conf}: {said}")

    def _nginx(self) -> str:
        binary = self.binary()
        if binary is None:
            raise FrontDoorError(f"nginx not found: {INSTALL_HINT}, or run without the front door")
        return binary

    def _write(self, upstreams: Mapping[str, str], default: str, generation: int, path: Path) -> None:
        try:
            text = self.render(upstreams, default, generation)
        except ValueError as exc:
            raise FrontDoorError(f"front-door routes: {exc}") from exc
        if len(str(self.control_path)) > 100:
            raise FrontDoorError(f"front-door prefix dir {self.prefix_dir} is too long for a unix socket path")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    # ------------------------------------------------------------------ lifecycle

    def start(self, upstreams: Mapping[str, str], default: str, *, timeout: float = 15.0) -> None:
        """Start nginx on ``host:port`` routing ``upstreams`` ({service: "host:port"}),
        everything else to ``default``; returns once it answers."""
        if self.running:
            raise FrontDoorError(f"the front door already runs (pid {self.pid}); use switch() to change routes")
        nginx = self._nginx()
        if _port_open(self.host, self.port):
            raise FrontDoorError(f"port {self.port} on {self.host} is taken: stop what runs there or pick another port")
        self.prefix_dir.mkdir(parents=True, exist_ok=True)
        self.control_path.unlink(missing_ok=True)
        generation = self.generation + 1
        self._write(upstreams, default, generation, self.conf_path)
        self._test(self.conf_path)
        self._output = open(self.prefix_dir / "nginx.out", "ab")
        self.proc = subprocess.Popen(
            [nginx, "-c", str(self.conf_path), "-p", f"{self.prefix_dir}/", "-e", str(self.error_log)],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() can end every worker
        )
        try:
            self._wait_generation(generation, timeout)
            deadline = time.monotonic() + timeout
            while not _port_open(self.host, self.port):
                if time.monotonic() > deadline:
                    raise FrontDoorError(f"nginx did not listen on {self.host}:{self.port} within {timeout} s")
                time.sleep(0.05)
        except BaseException:
            self.stop(timeout=5)
            raise
        self.generation = generation
        self.upstreams, self.default = dict(upstreams), default

    def switch(self, upstreams: Mapping[str, str], default: str, *, timeout: float = 15.0) -> None:
        """Route ``upstreams`` and ``default`` from now on, gracefully (SIGHUP): requests in
        flight finish on the workers that hold them. A configuration nginx refuses raises
        FrontDoorError and the running one stays. Returns once the new one is live."""
        if not self.running:
            raise FrontDoorError("the front door is not running: start() it first")
        assert self.proc is not None
        generation = self.generation + 1
        candidate = self.prefix_dir / "nginx.conf.new"
        self._write(upstreams, default, generation, candidate)
        try:
            self._test(candidate)
        except FrontDoorError as exc:
            candidate.unlink(missing_ok=True)
            raise FrontDoorError(f"{exc}; the running configuration stays (generation {self.generation})") from exc
        old_workers = set(_children(self.proc.pid))
        os.replace(candidate, self.conf_path)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        # Old workers stop accepting when they switch to "shutting down" (then they finish
        # the requests they hold and exit); after that every new connection meets a new worker.
        while any(pid in _children(self.proc.pid) and "shutting down" not in _cmdline(pid) for pid in old_workers):
            if not self.running:
                raise FrontDoorError(f"nginx exited during the reload: see {self.error_log}")
            if time.monotonic() > deadline:
                raise FrontDoorError(f"nginx did not reload within {timeout} s: see {self.error_log}")
            time.sleep(0.02)
        self._wait_generation(generation, max(deadline - time.monotonic(), 0.5))
        self.generation = generation
        self.upstreams, self.default = dict(upstreams), default

    def _wait_generation(self, generation: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            if not self.running:
                raise FrontDoorError(f"nginx exited: {self._tail()}")
            try:
                if _unix_get(str(self.control_path), "/generation") == str(generation):
                    return
                last = "an older configuration answered"
            except OSError as exc:
                last = exc
            if time.monotonic() > deadline:
                raise FrontDoorError(f"nginx's configuration {generation} was not live within {timeout} s ({last})")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop gracefully (SIGQUIT: in-flight requests finish), at most ``timeout`` s, then
        kill the process group. Returns the master's exit code (None if it was not running)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        code = proc.poll()
        if code is not None:
            # The master died on its own (kill -9): its workers may still hold the port. The
            # group outlives its leader while they do, so its id is still theirs.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            deadline = time.monotonic() + 5
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        else:
            proc.send_signal(signal.SIGQUIT)
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # The master and its workers share the group it leads (start_new_session).
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait(5)
                deadline = time.monotonic() + 5
                while _group_alive(proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
        if self._output:
            self._output.close()
            self._output = None
        return code

    def _tail(self) -> str:
        lines = []
        for path in (self.prefix_dir / "nginx.out", self.error_log):
            if path.exists():
                lines += path.read_text(errors="replace").splitlines()[-5:]
        return " | ".join(lines) or "no output"
