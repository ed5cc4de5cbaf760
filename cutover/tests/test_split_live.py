"""Proof under traffic: ``manage.py runstack`` as a real process set
(PostgreSQL, ``moto_server``, the front door's nginx, web, Celery relay, consumers), driven
by the traffic generator through the front door only, while ``manage.py split_service``
moves transfers, then fixtures, to databases of their own. After the traffic stops and the
bus settles (bounded), the checks of ``devtools/cutover/checks.py`` must hold across every database:
every event handled exactly once by every service that consumes it, every transfer
requested completed/rejected/cancelled, the replicas equal to the teams service, no 5xx
but the documented 503 of the service being moved, and that service answering through
the front door (``X-League-Upstream``).

Ports: 18300-18329 (this work's range). Every wait is bounded; a failure prints the tail of
runstack's output."""

from __future__ import annotations

import re
import subprocess
import time

import psycopg
import pytest
import requests

from devtools.cutover import checks
from devtools.cutover.stack import CutoverStack
from devtools.cutover.traffic import Traffic

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SETTLE = 180  # seconds for the bus and the sagas to settle after the traffic stops


def explain(stack: CutoverStack, *parts: object) -> str:
    return "\n".join(
        [
            *(str(p) for p in parts),
            "--- runstack: errors ---",
            stack.errors(),
            "--- runstack (tail) ---",
            stack.tail(80),
        ]
    )


@pytest.fixture
def monolith_stack():
    with CutoverStack("league_tr_live", 18300, 18309) as stack:
        stack.start()
        yield stack


def test_the_checks_pass_on_a_monolith_under_traffic_and_catch_a_lost_handling(monolith_stack):
    stack = monolith_stack
    traffic = Traffic(stack.base_url, stack.token, rate=8, threads=6, seed=17)
    traffic.seed(teams=6, players=5)
    traffic.start()
    time.sleep(20)
    summary = traffic.stop()
    placement = checks.Placement(stack.url)
    verdict = checks.settled(placement, transfer_ids=summary.transfer_ids, timeout=SETTLE)
    assert verdict.ok, explain(stack, summary.describe(), verdict.describe())
    assert checks.http(summary) == [], explain(stack, summary.describe())
    assert summary.transfer_ids and summary.fixtures_played and summary.ops["team_create"], summary.describe()
    assert verdict.events > 50, verdict.describe()

    # The check itself: one inbox row gone is one event lost.
    with psycopg.connect(checks.psycopg_url(stack.url), autocommit=True) as conn:
        row = conn.execute(
            "DELETE FROM events_inboxmessage WHERE id = (SELECT max(id) FROM events_inboxmessage "
            "WHERE handler LIKE 'transfers:%') RETURNING event_id::text, handler"
        ).fetchone()
    broken = checks.bus(placement)
    assert [p for p in broken.lost if row[0] in p and row[1] in p] and len(broken.lost) == 1, broken.describe()


def split(stack: CutoverStack, service: str, url: str, timeout: float = 300) -> tuple[str, float]:
    """Run split_service to completion; its output, and when it ended (time.monotonic())."""
    proc = stack.manage("split_service", service, "--database-url", url, "--yes")
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    ended = time.monotonic()
    output = stack.output_of(proc)
    assert proc.returncode == 0, explain(stack, f"split_service {service} exited {proc.returncode}:", output)
    return output, ended


def move_under_traffic(stack: CutoverStack, service: str, placement: checks.Placement) -> checks.Placement:
    url = stack.database(service)
    traffic = Traffic(stack.base_url, stack.token, rate=8, threads=6, seed=hash(service) % 1000)
    traffic.seed(teams=6, players=5)
    traffic.start()
    try:
        time.sleep(8)  # traffic flowing before the move
        output, switched = split(stack, service, url)
        time.sleep(8)  # and after it, through the switched route
    finally:
        summary = traffic.stop()
    print(f"split_service {service}:\n{output}\ntraffic: {summary.describe()}")
    done = re.findall(r"step (\d+)/(\d+): .*: done in", output)
    assert done and {int(n) for n, _ in done} == set(range(1, int(done[0][1]) + 1)), explain(stack, output)

    after = checks.Placement.from_data_dir(stack.data_dir, stack.url)
    assert after.home(service) == url, explain(stack, f"deployment.json does not place {service} at {url}", output)
    assert {s: u for s, u in after.moved.items() if s != service} == placement.moved
    verdict = checks.settled(after, transfer_ids=summary.transfer_ids, timeout=SETTLE)
    problems = checks.http(summary, moved=[service], switched_at=switched)
    assert verdict.ok and not problems, explain(stack, output, summary.describe(), verdict.describe(), *problems)
    # Traffic reached the service before, during and after the move.
    calls = [c for c in summary.calls if c.service == service and c.status]
    assert calls[0].ended < switched - 2 and calls[-1].ended > switched + 2, summary.describe()
    # The moved service answers through the front door.
    prefix = {"transfers": "/api/transfers/", "fixtures": "/api/seasons/"}[service]
    r = requests.get(stack.base_url + prefix, timeout=10)
    assert r.status_code == 200 and r.headers.get("X-League-Upstream") == service, (r.status_code, r.headers)
    return after


@pytest.fixture
def split_stack():
    with CutoverStack("league_tr_split", 18310, 18319) as stack:
        stack.start()
        yield stack


def test_transfers_then_fixtures_move_out_under_traffic(split_stack):
    placement = checks.Placement(split_stack.url)
    placement = move_under_traffic(split_stack, "transfers", placement)
    placement = move_under_traffic(split_stack, "fixtures", placement)
    assert set(placement.moved) == {"transfers", "fixtures"}
