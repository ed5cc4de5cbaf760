"""Scenarios over whole flows: the transfer saga past its deadline, ``runstack`` losing
its emulator, the transfers replica drifting and repaired by reconciliation, and
``split_service`` killed at each step of a move."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from ...stack import BASE_DIR, CONSUMED
from ..engine import Row, Suite


def saga_deadline(suite: Suite, row: Row):
    """A dead-lettered ``transfer.requested``: with the teams consumer stopped, the request
    is moved from the teams queue to its DLQ (what SQS redrive does after
    ``maxReceiveCount``). The saga's clock (``expire_transfers``, beat's job) must bring
    the transfer to a visible final state by its deadline (``TRANSFER_TIMEOUT_SECONDS``,
    10 s here) with nobody acting; the request redriven late moves nobody; the player can
    be transferred afterwards."""
    import json

    from django.conf import settings

    from events import aws
    from teams.models import Move, Player
    from transfers.models import PlayerReplica, TeamReplica

    deadline = settings.TRANSFER_TIMEOUT_SECONDS
    base, http = suite.writer.base, suite.writer.http
    src = suite.writer.create_team(players=1)
    dst, other = suite.writer.create_team(), suite.writer.create_team()
    if src is None or dst is None or other is None:
        raise RuntimeError("could not create the saga's teams")
    player_id = next(iter(suite.writer.teams[src]))
    for tid in (src, dst, other):  # the random writer leaves these teams alone
        suite.writer.teams.pop(tid)
    if "expire" not in suite.stack.procs:
        suite.stack.spawn(
            "expire", [sys.executable, str(BASE_DIR / "manage.py"), "expire_transfers", "--interval", "1"]
        )

    def until(what: str, predicate: Callable[[], object], timeout: float) -> float:
        started = time.monotonic()
        while not predicate():
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.2)
        return time.monotonic() - started

    def transfer(to_team: int) -> int:
        r = http.post(
            f"{base}/transfers/",
            json={"player_id": player_id, "from_team_id": src, "to_team_id": to_team, "fee": "1.00"},
            timeout=30,
        )
        if r.status_code != 201:
            raise RuntimeError(f"POST /api/transfers/ answered {r.status_code}: {r.text[:300]}")
        return r.json()["id"]

    def state(transfer_id: int) -> str:
        return http.get(f"{base}/transfers/{transfer_id}/", timeout=30).json()["state"]

    def replicated() -> bool:
        teams = TeamReplica.objects.visible().filter(team_id__in=[src, dst, other]).count()
        player = PlayerReplica.objects.filter(player_id=player_id, team__team_id=src, present=True).exists()
        return teams == 3 and player

    until("the transfers replica to know the teams and the player", replicated, 60)

    # The request is dead-lettered on the teams queue.
    suite.stack.stop("consume-teams")
    first = transfer(dst)
    requested_at = time.monotonic()
    sqs = aws.client("sqs")
    queue = aws.queue_url(aws.queue_name("teams"))
    dlq = aws.queue_url(aws.queue_name("teams", dlq=True))
    dead: list[dict] = []

    def dead_letter() -> bool:
        got = sqs.receive_message(
            QueueUrl=queue,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=30,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        for m in got:
            body = json.loads(m["Body"])
            if body.get("type") == "transfer.requested" and body["data"]["id"] == first:
                sqs.send_message(QueueUrl=dlq, MessageBody=m["Body"], MessageAttributes=m.get("MessageAttributes", {}))
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
                dead.append(m)
            else:
                sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
        return bool(dead)

    until("transfer.requested in the teams queue", dead_letter, 60)
    row.dlq = len(dead)
    suite.stack.start_consumer("teams")
    suite.stack.wait_ready("consume-teams", "consuming ")

    # Nobody acts: the clock asks teams to cancel, teams cancels, the player is free.
    until(f"transfer {first} to be cancelled", lambda: state(first) == "cancelled", deadline + 60)
    settled = time.monotonic() - requested_at
    # The request redriven late: teams' decision stands, nobody moves.
    suite.stack.manage("redrive_dlq", "--service", "teams")
    # The player can be transferred afterwards.
    second = transfer(other)
    until(f"transfer {second} to complete", lambda: state(second) == "completed", 60)
    row.faults = (
        f"transfer.requested dead-lettered; cancelled {settled:.1f} s after the request "
        f"(deadline {deadline} s); redriven late: moved nobody; next transfer completed"
    )

    def saga_settled() -> list[str]:
        problems = []
        if state(first) != "cancelled":
            problems.append(f"transfer {first} is {state(first)}, not cancelled")
        move = Move.objects.filter(transfer_id=first).first()
        if move is None or move.outcome != "cancelled":
            problems.append(f"teams' decision for transfer {first} is {move and move.outcome}, not cancelled")
        if Player.objects.filter(pk=player_id).values_list("team_id", flat=True).first() != other:
            problems.append(f"player {player_id} is not in team {other}")
        if settled > deadline + 30:
            problems.append(f"transfer {first} settled {settled:.0f} s after its request (deadline {deadline} s)")
        return problems

    return saga_settled


def runstack_moto_kill(suite: Suite, row: Row):
    """`manage.py runstack` (its own moto_server, uvicorn, Celery worker + beat, a
    consumer per service) on the suite's database, the suite's relays and consumers
    paused meanwhile. Drain, kill -9 its moto (it comes back empty), write at once:
    events must flow again within 30 s with nobody acting."""
    import re
    import signal
    import subprocess

    from devtools.netutil import free_port, wait_for_http

    lo = suite.last_outbox_id()
    suite.wait_drained(lo, time.monotonic())
    paused = suite.stack.pause(("relay", "consume-"))
    port, moto_port = free_port(span=2), free_port()  # --port and the web behind the front door
    env = {k: v for k, v in suite.stack.env.items() if k != "AWS_ENDPOINT_URL"}
    env.update(DATA_DIR=str(suite.stack.run_dir / "runstack"), OUTBOX_KICK="true")
    log_path = suite.stack.run_dir / "runstack.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            str(BASE_DIR / "manage.py"),
            "runstack",
            "--port",
            str(port),
            "--emulator",
            suite.stack.emulator,
            "--emulator-port",
            str(moto_port),
            "--workers",
            "1",
        ],
        env=env,
        cwd=BASE_DIR,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    suite.stack._started.append(proc)  # stopped by Stack.close() if this scenario breaks
    saved_base = suite.writer.base
    try:
        # Up, and each consumer past its startup hooks (the transfers replica's snapshot
        # sync), which print "consuming <queue>" when done.
        deadline = time.monotonic() + 180
        while not (
            "Ctrl-C stops everything" in log_path.read_text()
            and all(f"consuming faults-{s} " in log_path.read_text() for s in CONSUMED)
        ):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"runstack did not come up: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        kind = suite.stack.emulator
        moto_pid = int(re.search(rf"started\s+{kind} \(pid (\d+)\)", log_path.read_text()).group(1))
        suite.writer.base = f"http://127.0.0.1:{port}/api"
        lo = suite.last_outbox_id()
        suite.writer.write(suite.plan.runstack_events // 2)
        _, _, problems = suite.wait_drained(lo, time.monotonic())
        if problems:
            row.problems += [f"before the kill: {p}" for p in problems]
            return None
        os.kill(moto_pid, signal.SIGKILL)
        killed = time.monotonic()
        lo = suite.last_outbox_id()
        suite.writer.write(suite.plan.runstack_events - suite.plan.runstack_events // 2)
        verdict, _, problems = suite.wait_drained(lo, killed)
        flowed = time.monotonic() - killed
        row.faults = f"kill -9 of runstack's {kind}; events flowed again, all handled {flowed:.1f} s after the kill"
        if problems or verdict.lost:
            row.problems += problems or [f"{verdict.lost} lost"]
        elif flowed > (limit := 30 if kind == "moto" else 120):  # LocalStack alone takes ~30 s to start
            row.problems.append(f"events took {flowed:.1f} s to flow again (limit {limit} s)")
        if "restored  the bus" not in log_path.read_text():
            row.problems.append("runstack did not restore the bus")
    finally:
        suite.writer.base = saved_base
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        suite.stack.resume(paused)
    return None


def replica_drift(suite: Suite, row: Row):
    """An applied event removed from the transfers replica (a player that ``player.added``
    put there, with the team's sequence set back, as if the event had never been handled),
    then Celery beat and a worker started as the transfers service runs them: the
    reconciliation (``transfers.reconcile_teams``, every ``TEAMS_RECONCILE_SECONDS``, 3 s
    here) must find the drift and repair it with nobody running a command."""
    from league.management.commands.service_account import ensure_service_account
    from transfers.models import PlayerReplica, ReplicaRepair, TeamReplica

    period = 3.0
    lo = suite.last_outbox_id()
    team_id = suite.writer.create_team(players=3)
    if team_id is None:
        raise RuntimeError("could not create the drifting team")
    suite.writer.teams.pop(team_id)  # the random writer leaves it alone
    suite.writer.write(suite.plan.baseline // 4)
    _, _, problems = suite.wait_drained(lo, time.monotonic())
    if problems:
        row.problems += [f"before the drift: {p}" for p in problems]
        return None
    # The drift: the last player.added of the team never happened, as far as the replica knows.
    team = TeamReplica.objects.get(team_id=team_id)
    victim = PlayerReplica.objects.filter(team=team, present=True).order_by("-player_id").first()
    victim.delete()
    TeamReplica.objects.filter(pk=team.pk).update(sequence=team.sequence - 1)
    repairs_before = ReplicaRepair.objects.count()
    env = {
        "TEAMS_SERVICE_URL": suite.stack.web_url,
        "TEAMS_SERVICE_TOKEN": ensure_service_account("transfers-service").key,
        "TEAMS_RECONCILE_SECONDS": str(period),
        "CELERY_TASK_DEFAULT_QUEUE": f"faults-drift-{suite.tag}",
    }
    celery = os.path.join(os.path.dirname(sys.executable), "celery")
    suite.stack.spawn(
        "drift-beat",
        [celery, "-A", "league", "worker", "-B", "-P", "solo", "-l", "warning",
         "-s", str(suite.stack.run_dir / "drift-beat-schedule")],
        **env,
    )  # fmt: skip
    started = time.monotonic()
    seen: list[float] = []

    suite.after_drain.append(lambda: suite.stack.stop("drift-beat"))

    def repaired() -> list[str]:
        holds = PlayerReplica.objects.filter(team=team, player_id=victim.player_id, present=True).exists()
        if not holds or ReplicaRepair.objects.count() == repairs_before:
            return [f"the transfers replica of team {team_id} still lacks player {victim.player_id}"]
        if not seen:
            seen.append(time.monotonic() - started)
            row.faults = (
                f"player {victim.player_id} removed from the transfers replica of team {team_id}; "
                f"repaired by beat's reconciliation {seen[0]:.1f} s after the worker and beat were spawned "
                f"(their start included; every {period:g} s)"
            )
        return []

    row.faults = f"player removed from the transfers replica of team {team_id}; not repaired"
    return repaired


def split_kill(suite: Suite, row: Row):
    """`manage.py split_service transfers` killed with -9 at each step under traffic
    (faults/split.py), on a runstack of its own; the suite's relays and consumers are
    paused meanwhile. A kill before the switch is rolled back, the one after it is run
    again; the end state must pass devtools/cutover/checks.py."""
    from devtools.cutover.stack import CutoverStack
    from devtools.netutil import free_port

    from ... import split

    paused = suite.stack.pause(("relay", "consume-"))
    try:
        with CutoverStack(f"{suite.stack.db_name}_split", free_port(span=2), free_port()) as live:
            live.start()
            kills = split.run(live, suite.plan.split_points)
            row.faults = "kill -9 split_service at " + ", ".join(
                f"{k.point} [{k.landed}] -> {k.recovered or 'not recovered'}" for k in kills
            )
            for k in kills:
                row.problems += [f"{k.point}: {p}" for p in k.problems or []]
            if row.problems:
                row.problems.append(f"runstack errors: {live.errors()}\nrunstack (tail): {live.tail(40)}")
    finally:
        suite.stack.resume(paused)
    return None
