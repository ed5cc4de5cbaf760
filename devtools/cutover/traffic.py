"""A traffic generator that drives a running system through its front door only.

``Traffic(base_url, token)`` talks HTTP to one base URL with an API token, nothing else:
no database, no bus. A dispatcher hands out operations at ``rate`` per second to
``threads`` workers, in a realistic mix: teams created and renamed, players added and
removed, transfers requested between teams (``POST /api/transfers/``), seasons scheduled
and results recorded (``PATCH /api/fixtures/{id}/``), and reads of every service.

What it promises:

- Every request is recorded (``Call``): method, path, status, latency, the
  ``X-League-Upstream`` header (which process answered), ``Retry-After`` on a 503, and
  the time it ended. A request that did not get an answer is status 0.
- It follows the write gate's contract: a 503 **with** ``Retry-After`` is retried after
  that many seconds (capped), until it gets another answer or ``retry_deadline`` passes.
  A 503 without ``Retry-After`` is not the documented pause: it is counted, not retried.
- ``stop()`` waits for the workers (bounded) and returns a ``Summary``: counts by status,
  every 5xx other than a documented 503 (a correct cutover has none), the pause window
  (first 503 to last 503), the pause as users feel it (first 503 to the last success of a
  write that had been refused), and the ids of every transfer requested (201).

The generator keeps its own view of teams and squads from the answers it gets and from its
reads; it can be stale (a transfer completes asynchronously), so some writes are refused
with a 400/404/409. Those are fine: they are counted, and the system decides.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta

import requests

# The service behind each path prefix (docs/../CUTOVER.md: the front door's routes).
PREFIXES = (
    ("/api/teams", "teams"),
    ("/api/transfers", "transfers"),
    ("/api/seasons", "fixtures"),
    ("/api/fixtures", "fixtures"),
)
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
POSITIONS = ("GK", "DEF", "MID", "ST")

# Operation -> weight. Writes of every service, and reads (a third of the traffic).
DEFAULT_MIX: dict[str, float] = {
    "team_create": 6,
    "team_rename": 5,
    "player_add": 12,
    "player_remove": 4,
    "transfer_request": 22,
    "season_schedule": 3,
    "result_record": 14,
    "read": 34,
}


def service_of(path: str) -> str:
    """The service that owns ``path`` (``monolith`` for everything else)."""
    for prefix, service in PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return service
    return "monolith"


@dataclass
class Call:
    """One HTTP request and its answer."""

    op: str
    method: str
    path: str
    status: int  # 0: no answer (connection refused, reset, timeout)
    latency: float  # seconds
    started: float  # time.monotonic()
    ended: float
    upstream: str = ""  # X-League-Upstream
    retry_after: str = ""  # Retry-After of a 503
    attempt: int = 1  # 2+: a retry after a 503 with Retry-After
    error: str = ""  # the exception, or the start of an unexpected 5xx body

    @property
    def service(self) -> str:
        return service_of(self.path)

    @property
    def write(self) -> bool:
        return self.method in WRITE_METHODS

    @property
    def documented_pause(self) -> bool:
        return self.status == 503 and bool(self.retry_after)


@dataclass
class Summary:
    calls: list[Call]
    statuses: Counter
    other_5xx: list[Call]  # every 5xx but a 503 with Retry-After: must be empty
    no_answer: list[Call]  # status 0: must be empty
    refused: int  # 503 with Retry-After
    pause_window: float | None  # first 503 -> last 503, seconds
    user_pause: float | None  # first 503 -> last success of a write that had been refused
    gave_up: int  # writes still refused at retry_deadline
    transfer_ids: list[int]
    fixtures_played: list[int]
    upstreams: dict[str, Counter]  # service of the path -> X-League-Upstream values seen
    duration: float
    ops: Counter = field(default_factory=Counter)

    def upstream_after(self, service: str, since: float) -> Counter:
        """``X-League-Upstream`` values of answers (any status but 0) to ``service``'s paths
        that ended after ``since`` (time.monotonic())."""
        return Counter(c.upstream for c in self.calls if c.service == service and c.ended >= since and c.status)

    def latency(self, q: float, *, writes: bool = True) -> float:
        values = sorted(c.latency for c in self.calls if c.write == writes and c.status)
        if not values:
            return 0.0
        return values[min(int(q * len(values)), len(values) - 1)]

    def describe(self) -> str:
        pause = "none" if self.pause_window is None else f"{self.pause_window:.2f} s"
        felt = "none" if self.user_pause is None else f"{self.user_pause:.2f} s"
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (
            f"{len(self.calls)} requests in {self.duration:.1f} s ({statuses}); 503 with Retry-After: {self.refused}, "
            f"pause window {pause}, felt by writers {felt}; other 5xx: {len(self.other_5xx)}, no answer: "
            f"{len(self.no_answer)}, gave up: {self.gave_up}; {len(self.transfer_ids)} transfers requested; "
            f"write latency p50 {self.latency(0.5) * 1000:.0f} ms p99 {self.latency(0.99) * 1000:.0f} ms"
        )


@dataclass
class _Team:
    id: int
    players: dict[int, str] = field(default_factory=dict)  # player id -> name


class Traffic:
    """Threads that drive the system at ``base_url`` with ``token``. ``start()``, then ``stop()``."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        rate: float = 6.0,
        threads: int = 6,
        seed: int | None = None,
        mix: dict[str, float] | None = None,
        retry_deadline: float = 120.0,
        retry_cap: float = 5.0,
        timeout: float = 30.0,
    ) -> None:
        if rate <= 0 or threads < 1:
            raise ValueError("rate must be positive and threads at least 1")
        self.base = base_url.rstrip("/")
        self.token = token
        self.rate = rate
        self.threads = threads
        self.rng = random.Random(seed)
        self.mix = dict(mix or DEFAULT_MIX)
        self.retry_deadline = retry_deadline
        self.retry_cap = retry_cap
        self.timeout = timeout
        self.calls: list[Call] = []
        self.transfer_ids: list[int] = []
        self.fixtures_played: list[int] = []
        self.ops: Counter = Counter()
        self.gave_up = 0
        self._lock = threading.Lock()
        self._teams: dict[int, _Team] = {}
        self._fixtures: list[int] = []  # not played yet, as far as we know
        self._seasons: list[int] = []
        self._n = 0
        self._stop = threading.Event()
        self._work: queue.Queue[str | None] = queue.Queue(maxsize=max(threads * 2, 4))
        self._workers: list[threading.Thread] = []
        self._dispatcher: threading.Thread | None = None
        self._local = threading.local()
        self._started = 0.0
        self.skipped = 0  # ticks dropped because every worker was busy (e.g. waiting out a pause)

    # ---------------------------------------------------------------- HTTP
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers["Authorization"] = f"Token {self.token}"
        return s

    def request(self, op: str, method: str, path: str, body: dict | None = None) -> requests.Response | None:
        """One call as a client that follows the contract: a write answered 503 with
        ``Retry-After`` is sent again after that long (capped at ``retry_cap``) until it
        gets another answer or ``retry_deadline`` passes. Returns the last answer (None: no answer)."""
        first = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                r = self._session().request(method, self.base + path, json=body, timeout=self.timeout)
            except requests.RequestException as exc:
                self._record(Call(op, method, path, 0, time.monotonic() - started, started, time.monotonic(),
                                  attempt=attempt, error=f"{type(exc).__name__}: {exc}"[:300]))  # fmt: skip
                return None
            ended = time.monotonic()
            retry_after = r.headers.get("Retry-After", "") if r.status_code == 503 else ""
            error = r.text[:300] if r.status_code >= 500 else ""
            self._record(
                Call(
                    op,
                    method,
                    path,
                    r.status_code,
                    ended - started,
                    started,
                    ended,
                    upstream=r.headers.get("X-League-Upstream", ""),
                    retry_after=retry_after,
                    attempt=attempt,
                    error=error,
                )
            )
            if r.status_code != 503 or not retry_after or method not in WRITE_METHODS:
                return r
            if time.monotonic() - first > self.retry_deadline:
                with self._lock:
                    self.gave_up += 1
                return r
            try:
                wait = float(retry_after)
            except ValueError:
                wait = 1.0  # an HTTP date: not what the gate sends; retry soon
            # Bounded by the cap, and by stop() (a stopped run still finishes its writes).
            time.sleep(min(max(wait, 0.05), self.retry_cap))

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    # ---------------------------------------------------------------- model
    def _name(self, prefix: str) -> str:
        with self._lock:
            self._n += 1
            return f"{prefix} {self._n}-{self.rng.randrange(10**6)}"

    def _remember_team(self, body: dict) -> None:
        with self._lock:
            self._teams[body["id"]] = _Team(body["id"], {p["id"]: p["name"] for p in body.get("players", [])})

    def _pick_team(self, *, with_players: bool = False) -> _Team | None:
        with self._lock:
            teams = [t for t in self._teams.values() if t.players or not with_players]
            return self.rng.choice(teams) if teams else None

    def seed(self, teams: int = 6, players: int = 5) -> None:
        """Learn the teams already there (reads) and create teams up to ``teams``."""
        r = self.request("seed", "GET", "/api/teams/?limit=1000")
        if r is not None and r.status_code == 200:
            for t in r.json()["results"]:
                if "players" in t:
                    self._remember_team(t)
        while len(self._teams) < teams:
            if self.team_create(players=players) is None:
                raise RuntimeError(f"could not create a team: {self.calls[-1]}")

    # ---------------------------------------------------------------- operations
    def team_create(self, players: int | None = None) -> int | None:
        count = self.rng.randrange(1, 5) if players is None else players
        squad = [{"name": self._name("P"), "position": self.rng.choice(POSITIONS)} for _ in range(count)]
        r = self.request("team_create", "POST", "/api/teams/", {"name": self._name("Team"), "players": squad})
        if r is None or r.status_code != 201:
            return None
        self._remember_team(r.json())
        return r.json()["id"]

    def team_rename(self) -> None:
        team = self._pick_team()
        if team is not None:
            self.request("team_rename", "PATCH", f"/api/teams/{team.id}/", {"name": self._name("Team")})

    def player_add(self) -> None:
        team = self._pick_team()
        if team is None or len(team.players) >= 20:
            return
        r = self.request(
            "player_add",
            "POST",
            f"/api/teams/{team.id}/players/",
            {"name": self._name("P"), "position": self.rng.choice(POSITIONS)},
        )
        if r is not None and r.status_code == 201:
            with self._lock:
                team.players[r.json()["id"]] = r.json()["name"]

    def player_remove(self) -> None:
        team = self._pick_team(with_players=True)
        if team is None or len(team.players) < 3:
            return
        with self._lock:
            pid = self.rng.choice(list(team.players))
        r = self.request("player_remove", "DELETE", f"/api/teams/{team.id}/players/{pid}/")
        if r is not None and r.status_code in (204, 404):
            with self._lock:
                team.players.pop(pid, None)

    def transfer_request(self) -> None:
        source = self._pick_team(with_players=True)
        target = self._pick_team()
        if source is None or target is None or source.id == target.id:
            return
        with self._lock:
            pid = self.rng.choice(list(source.players))
        body = {
            "player_id": pid,
            "from_team_id": source.id,
            "to_team_id": target.id,
            "fee": f"{self.rng.randrange(1, 5000) * 1000}.00",
        }
        r = self.request("transfer_request", "POST", "/api/transfers/", body)
        if r is not None and r.status_code == 201:
            with self._lock:
                self.transfer_ids.append(r.json()["id"])
                # Optimistic: the teams service completes it (or the next read corrects us).
                name = source.players.pop(pid, None)
                if name is not None:
                    target.players[pid] = name

    def season_schedule(self) -> None:
        with self._lock:
            ids = list(self._teams)
        if len(ids) < 4:
            return
        team_ids = self.rng.sample(ids, 4)
        starts = date(2027, 1, 1) + timedelta(days=self.rng.randrange(365))
        r = self.request(
            "season_schedule",
            "POST",
            "/api/seasons/",
            {"name": self._name("Season"), "starts_on": starts.isoformat(), "team_ids": team_ids},
        )
        if r is not None and r.status_code == 201:
            season = r.json()["id"]
            fixtures = self.request("read", "GET", f"/api/seasons/{season}/fixtures/?limit=1000")
            with self._lock:
                self._seasons.append(season)
                if fixtures is not None and fixtures.status_code == 200:
                    self._fixtures.extend(f["id"] for f in fixtures.json()["results"] if not f["played"])

    def result_record(self) -> None:
        with self._lock:
            if not self._fixtures:
                return
            fixture = self.rng.choice(self._fixtures)
        body = {"home_goals": self.rng.randrange(5), "away_goals": self.rng.randrange(5)}
        r = self.request("result_record", "PATCH", f"/api/fixtures/{fixture}/", body)
        if r is not None and r.status_code in (200, 400, 404):
            with self._lock:
                if fixture in self._fixtures:
                    self._fixtures.remove(fixture)
                if r.status_code == 200:
                    self.fixtures_played.append(fixture)

    def read(self) -> None:
        roll = self.rng.random()
        team = self._pick_team()
        if roll < 0.35 and team is not None:
            r = self.request("read", "GET", f"/api/teams/{team.id}/")
            if r is not None and r.status_code == 200:
                self._remember_team(r.json())  # corrects the squad after transfers
            elif r is not None and r.status_code == 404:
                with self._lock:
                    self._teams.pop(team.id, None)
        elif roll < 0.5:
            self.request("read", "GET", "/api/teams/?limit=20")
        elif roll < 0.7:
            with self._lock:
                tid = self.rng.choice(self.transfer_ids) if self.transfer_ids else None
            self.request("read", "GET", f"/api/transfers/{tid}/" if tid else "/api/transfers/?limit=20")
        elif roll < 0.8:
            self.request("read", "GET", "/api/transfers/teams/?limit=20")
        elif roll < 0.9 and self._seasons:
            with self._lock:
                season = self.rng.choice(self._seasons)
            self.request("read", "GET", f"/api/seasons/{season}/standings/")
        else:
            self.request("read", "GET", "/api/fixtures/teams/?limit=20")

    # ---------------------------------------------------------------- running
    def _choose(self) -> str:
        ops = list(self.mix)
        return self.rng.choices(ops, weights=[self.mix[o] for o in ops])[0]

    def _dispatch(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self._work.put_nowait(self._choose())
            except queue.Full:
                with self._lock:
                    self.skipped += 1
            next_at += interval
            self._stop.wait(max(next_at - time.monotonic(), 0))

    def _work_loop(self) -> None:
        while True:
            op = self._work.get()
            if op is None:
                return
            try:
                getattr(self, op)()
                with self._lock:
                    self.ops[op] += 1
            except Exception as exc:  # a bug here must show in the summary, not kill the thread
                now = time.monotonic()
                self._record(Call(op, "-", "-", 0, 0.0, now, now, error=f"generator: {type(exc).__name__}: {exc}"))

    def start(self) -> Traffic:
        self._started = time.monotonic()
        self._workers = [
            threading.Thread(target=self._work_loop, name=f"traffic-{i}", daemon=True) for i in range(self.threads)
        ]
        for w in self._workers:
            w.start()
        self._dispatcher = threading.Thread(target=self._dispatch, name="traffic-dispatch", daemon=True)
        self._dispatcher.start()
        return self

    def stop(self, timeout: float | None = None) -> Summary:
        """Stop issuing, let the workers finish what they hold (a write waiting out a pause
        goes on until ``retry_deadline``), and summarize. Bounded by ``timeout``
        (default: retry_deadline + 2 request timeouts)."""
        self._stop.set()
        if self._dispatcher is not None:
            self._dispatcher.join(5)
        while True:  # drop what was queued but not started
            try:
                self._work.get_nowait()
            except queue.Empty:
                break
        for _ in self._workers:
            self._work.put(None)
        deadline = time.monotonic() + (timeout if timeout is not None else self.retry_deadline + 2 * self.timeout)
        for w in self._workers:
            w.join(max(deadline - time.monotonic(), 0.1))
        alive = [w.name for w in self._workers if w.is_alive()]
        if alive:
            raise RuntimeError(f"traffic workers still running after stop(): {alive}")
        return self.summary()

    def summary(self) -> Summary:
        with self._lock:
            calls = sorted(self.calls, key=lambda c: c.started)
            transfer_ids = list(self.transfer_ids)
            played = list(self.fixtures_played)
            ops = Counter(self.ops)
        refused = [c for c in calls if c.documented_pause]
        pause_window = user_pause = None
        if refused:
            first = min(c.ended for c in refused)
            pause_window = max(c.ended for c in refused) - first
            # A write refused then accepted: the (method, path, op) retried in the same thread;
            # its success is the first later answer that is not a 503 for the same request.
            recovered = [
                c.ended for c in calls if c.write and c.attempt > 1 and c.status and c.status != 503 and c.status < 500
            ]
            user_pause = (max(recovered) - first) if recovered else None
        upstreams: dict[str, Counter] = {}
        for c in calls:
            if c.status:
                upstreams.setdefault(c.service, Counter())[c.upstream or "-"] += 1
        return Summary(
            calls=calls,
            statuses=Counter(c.status for c in calls),
            other_5xx=[c for c in calls if c.status >= 500 and not c.documented_pause],
            no_answer=[c for c in calls if c.status == 0],
            refused=len(refused),
            pause_window=pause_window,
            user_pause=user_pause,
            gave_up=self.gave_up,
            transfer_ids=transfer_ids,
            fixtures_played=played,
            upstreams=upstreams,
            duration=(calls[-1].ended - self._started) if calls and self._started else 0.0,
            ops=ops,
        )
