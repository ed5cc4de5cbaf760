"""The traffic of a run: random team and squad changes through the REST API."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import requests

from ..stack import Stack


class Writer:
    """Random team/squad changes through the REST API; the outbox is the record of what
    was written (an API call cut by a fault may or may not have committed)."""

    POSITIONS = ("GK", "DEF", "MID", "ST")

    def __init__(self, stack: Stack, token: str, seed: int) -> None:
        self.base = f"{stack.web_url}/api"
        self.http = stack.api(token)
        self.rng = random.Random(seed)
        self.teams: dict[int, dict[int, str]] = {}  # team id -> {player id: name}
        self.n = 0
        self.api_errors = 0

    def _call(self, method: str, path: str, **kw) -> requests.Response | None:
        try:
            r = self.http.request(method, f"{self.base}{path}", timeout=30, **kw)
        except requests.RequestException:
            self.api_errors += 1
            return None
        if r.status_code >= 500:
            self.api_errors += 1
            return None
        return r

    def _name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}-{self.rng.randrange(10**6)}"

    def create_team(self, name: str | None = None, players: int = 0) -> int | None:
        squad = [{"name": self._name("P"), "position": self.rng.choice(self.POSITIONS)} for _ in range(players)]
        r = self._call("POST", "/teams/", json={"name": name or self._name("Team "), "players": squad})
        if r is None or r.status_code != 201:
            return None
        body = r.json()
        self.teams[body["id"]] = {p["id"]: p["name"] for p in body["players"]}
        return body["id"]

    def step(self) -> bool:
        """One change; True if the API accepted it (one event)."""
        roll = self.rng.random()
        if len(self.teams) < 8 or roll < 0.25:
            return self.create_team(players=self.rng.randrange(3)) is not None
        tid = self.rng.choice(list(self.teams))
        squad = self.teams[tid]
        if roll < 0.55 and len(squad) < 20:
            r = self._call(
                "POST",
                f"/teams/{tid}/players/",
                json={"name": self._name("P"), "position": self.rng.choice(self.POSITIONS)},
            )
            if r is not None and r.status_code == 201:
                squad[r.json()["id"]] = r.json()["name"]
                return True
        elif roll < 0.75:
            r = self._call("PATCH", f"/teams/{tid}/", json={"name": self._name("Team ")})
            return r is not None and r.status_code == 200
        elif roll < 0.92 and squad:
            pid = self.rng.choice(list(squad))
            r = self._call("DELETE", f"/teams/{tid}/players/{pid}/")
            if r is not None and r.status_code in (204, 404):
                squad.pop(pid)
                return r.status_code == 204
        elif roll >= 0.92:
            r = self._call("DELETE", f"/teams/{tid}/")
            if r is not None and r.status_code in (204, 404):
                self.teams.pop(tid)
                return r.status_code == 204
        return False

    def write(self, events: int, *, on_progress: Callable[[int], None] | None = None, pace: float = 0) -> None:
        done = 0
        while done < events:
            if self.step():
                done += 1
                if on_progress:
                    on_progress(done)
            if pace:
                time.sleep(pace)
