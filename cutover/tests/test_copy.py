"""The copy of one service's data (cutover/copy.py) and the command's refusals
(cutover/split.py): on the same database engine the suite runs on (SQLite, or PostgreSQL
with DATABASE_URL), with a real second database migrated as the moved service's."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction

import events
from cutover import copy as copying
from cutover import deployment, split
from events import gate
from events.models import InboxMessage, SubjectSequence

pytestmark = pytest.mark.django_db(transaction=True)


def _target_url(tmp_path: Path) -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{tmp_path / 'moved.sqlite3'}"
    return f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}_moved"


@pytest.fixture
def target(tmp_path):
    url = _target_url(tmp_path)
    split.drop_database(url)
    split.create_database(url)
    split.migrate("transfers", url)
    split.connect_target(url)
    # Connected here, not on first use: Django's test case refuses new connections to an
    # alias it did not know at setup (the command adds its target alias at run time).
    connections[split.TARGET].connect()
    yield url
    split.drop_database(url)


def _league():
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from conftest import with_roles
    from transfers.factories import TeamReplicaFactory, TransferFactory

    clerk = with_roles(get_user_model().objects.create_user("clerk", password="pw-clerk-123"), "Transfer desk")
    token = Token.objects.create(user=clerk)
    a, b = TeamReplicaFactory(), TeamReplicaFactory()
    transfers = [TransferFactory(from_team_id=a.id, to_team_id=b.id) for _ in range(5)]
    with transaction.atomic():
        for t in transfers[:2]:
            events.publish(
                "transfer.requested",
                subject=t.id,
                data={"id": t.id, "player_id": t.player_id, "from_team_id": a.id, "to_team_id": b.id, "fee": "1.00"},
            )
        events.publish("team.created", subject=999, data={"id": 999, "name": "Not transfers'", "short_name": "TM"})
    InboxMessage.objects.create(
        event_id="5f0f0f0f-0000-0000-0000-000000000001",
        handler="transfers.handlers.x",
        type="team.created",
        subject="1",
        service="transfers",
    )
    InboxMessage.objects.create(
        event_id="5f0f0f0f-0000-0000-0000-000000000002",
        handler="fixtures.handlers.y",
        type="team.created",
        subject="1",
        service="fixtures",
    )
    return token, transfers


def test_the_copy_holds_every_row_of_the_service_and_nothing_else(target):
    from transfers.models import Transfer

    token, transfers = _league()
    reports = copying.copy("transfers", source="default", target=split.TARGET)

    by_label = {r.label: r.rows for r in reports}
    assert by_label["transfers.transfer"] == 5
    assert by_label["transfers.teamreplica"] == 2
    assert by_label["events.outboxmessage"] == 2  # transfer.requested only, not team.created
    assert by_label["events.inboxmessage"] == 1  # the transfers handler's row, not fixtures'
    assert set(SubjectSequence.objects.using(split.TARGET).values_list("key", flat=True)) == {
        f"transfer:{t.id}" for t in transfers[:2]
    }
    # Timestamps and primary keys as they were (auto_now fields are not re-stamped).
    source = {t.pk: t.created_at for t in Transfer.objects.all()}
    copied = {t.pk: t.created_at for t in Transfer.objects.using(split.TARGET).all()}
    assert copied == source
    # The client's token and role work against the new database.
    from rest_framework.authtoken.models import Token

    moved = Token.objects.using(split.TARGET).select_related("user").get(key=token.key)
    assert list(moved.user.groups.values_list("name", flat=True)) == ["Transfer desk"]


def test_the_next_event_continues_each_subject_sequence_in_the_new_database(target):
    """A publish by the moved service, in a process of its own on the new database (as its
    web would), numbers the subject's next event after the last one the monolith gave."""
    _token, transfers = _league()
    copying.copy("transfers", source="default", target=split.TARGET)
    moved = transfers[0]
    before = SubjectSequence.objects.get(key=f"transfer:{moved.id}").last
    assert before >= 1
    gate.open_("transfers", using=split.TARGET)  # as step 6 leaves it
    data = {"id": moved.id, "player_id": moved.player_id, "from_team_id": 1, "to_team_id": 2, "fee": "1.00"}
    script = (
        "import django, json, sys; django.setup(); from django.db import transaction; import events\n"
        "with transaction.atomic():\n"
        f"    row = events.publish('transfer.requested', subject={moved.id}, data={data!r})\n"
        "print(json.dumps([row.sequence, row.envelope['sequence']]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS"))}
    env.update(DATABASE_URL=target, DJANGO_SETTINGS_MODULE="league.settings", LEAGUE_SERVICE="transfers")
    env.update(OUTBOX_KICK="false", LOG_LEVEL="WARNING")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [before + 1, before + 1]
    # The monolith's counter is not touched by the moved service.
    assert SubjectSequence.objects.get(key=f"transfer:{moved.id}").last == before


def test_a_rerun_of_the_copy_starts_clean(target):
    _league()
    first = copying.copy("transfers", source="default", target=split.TARGET)
    second = copying.copy("transfers", source="default", target=split.TARGET)
    assert [(r.label, r.rows, r.checksum) for r in first] == [(r.label, r.rows, r.checksum) for r in second]


def test_verify_names_the_table_that_differs(target):
    from transfers.models import Transfer

    _league()
    reports = copying.copy("transfers", source="default", target=split.TARGET)
    Transfer.objects.using(split.TARGET).filter(pk=Transfer.objects.first().pk).update(fee="9.99")
    with pytest.raises(copying.CopyError, match="transfers.transfer"):
        copying.verify(copying.owned("transfers"), reports, split.TARGET)


def test_new_ids_in_the_new_database_do_not_collide_with_copied_ones(target):
    from transfers.models import Transfer

    _league()
    copying.copy("transfers", source="default", target=split.TARGET)
    template = Transfer.objects.using(split.TARGET).first()
    template.pk, template.player_id = None, 424242
    template.save(using=split.TARGET)
    assert template.pk > max(Transfer.objects.values_list("pk", flat=True))


@pytest.mark.postgres
def test_the_way_back_leaves_the_monoliths_shared_id_sequences_where_other_writers_took_them(target):
    """The monolith's bus tables are written by the other services while the copy back runs:
    their writers hold ids they have not committed yet. The rows copied back take new ids
    from the sequences, so the copy must not set those sequences to the largest committed id
    (the next writer would be given an id a writer under way already holds)."""
    from events.models import OutboxMessage

    _league()
    OutboxMessage.objects.filter(aggregate_key__startswith="transfer:").update(state="published")
    copying.copy("transfers", source="default", target=split.TARGET)
    with connection.cursor() as cursor:  # two writers of teams under way, ids taken, not committed
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('events_outboxmessage', 'id')) FROM generate_series(1, 2)"
        )
        held = [row[0] for row in cursor.fetchall()]

    copying.copy("transfers", source=split.TARGET, target="default", shared_target=True, history=False)

    with transaction.atomic():
        row = events.publish("team.created", subject=777, data={"id": 777, "name": "After the way back", "short_name": "AWB"})
    assert row.pk > max(held)


class _Routes:
    """A supervisor whose route switch is instant (the phases are what is under test)."""

    name = "test"

    def route(self, service: str) -> str:
        return "http://front-door.invalid"


def test_the_pause_holds_the_same_phases_each_way_in_the_same_order(target, tmp_path, settings, monkeypatch):
    """What runs between "writes paused" and "writes resumed" is timed phase by phase, and
    the way back holds the same phases as the way out: nothing extra waits inside its pause."""
    from events.models import OutboxMessage

    settings.DATA_DIR = tmp_path
    _league()
    OutboxMessage.objects.update(state="published")  # no relay runs here to publish them
    monkeypatch.setattr(split.Split, "probe", lambda self, front_door, upstream: None)
    monkeypatch.setattr(split.Split, "wait_stack", lambda self, ok, what: {"front_door": "http://front-door.invalid"})

    out = split.Split("transfers", target, io.StringIO(), supervisor=_Routes())  # type: ignore[arg-type]
    for action in (out.pause, out.drain, out.copy, out.switch):
        action()
    back = split.Split("transfers", target, io.StringIO(), supervisor=_Routes())  # type: ignore[arg-type]
    for action in (back.pause_moved, lambda: back.drain(using=split.TARGET), back.copy_back, back.switch_back):
        action()

    assert [p.name for p in out.phases] == list(split.PAUSE_PHASES)
    assert [p.name for p in back.phases] == list(split.PAUSE_PHASES)
    for run in (out, back):
        assert run.pause_seconds is not None and run.pause_seconds >= sum(p.seconds for p in run.phases)
        assert "    phase: copy the rows: " in run.out.getvalue()  # type: ignore[attr-defined]


# ----------------------------------------------------------------- the command's refusals
def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("split_service", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_unknown_service_bad_url_and_own_database_are_refused_before_anything_changes(tmp_path):
    with pytest.raises(CommandError, match="unknown service 'players'.*teams, transfers, fixtures"):
        _run("players", "--database-url", "sqlite:////tmp/x.sqlite3", "--yes")
    with pytest.raises(CommandError, match="--database-url is required"):
        _run("transfers", "--yes")
    with pytest.raises(CommandError, match="not a database URL|use postgres"):
        _run("transfers", "--database-url", "mysql://x/y", "--yes")
    s = connection.settings_dict
    own = (
        f"sqlite:///{s['NAME']}"
        if connection.vendor == "sqlite"
        else f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
    )
    with pytest.raises(CommandError, match="the monolith's own database"):
        _run("transfers", "--database-url", own, "--yes")
    assert gate.current("transfers") == gate.OPEN
    assert deployment.placement(settings.DATA_DIR, "transfers") is None


def test_without_a_supervising_runstack_nothing_changes(tmp_path, settings):
    settings.DATA_DIR = tmp_path
    with pytest.raises(CommandError, match="no runstack supervises DATA_DIR"):
        _run("transfers", "--database-url", f"sqlite:///{tmp_path / 'moved.sqlite3'}", "--yes")
    assert gate.current("transfers") == gate.OPEN
    assert not (tmp_path / "deployment.json").exists()
    assert not (tmp_path / "moved.sqlite3").exists()


def test_not_confirmed_changes_nothing(tmp_path):
    with pytest.raises(CommandError, match="not confirmed"):
        _run("transfers", "--database-url", f"sqlite:///{tmp_path / 'moved.sqlite3'}")


def test_the_dry_run_prints_the_plan_and_the_row_counts(tmp_path):
    _league()
    out = _run("transfers", "--database-url", f"sqlite:///{tmp_path / 'moved.sqlite3'}", "--dry-run")
    assert "step 3/7: pause the writes of transfers in the monolith" in out
    assert "transfers.transfer" in out and "       5" in out
    assert "Pending outbox rows of transfers (published in step 4): 2" in out
    assert gate.current("transfers") == gate.OPEN and not (tmp_path / "moved.sqlite3").exists()


def test_cleanup_refuses_a_service_that_has_not_moved(tmp_path, settings):
    settings.DATA_DIR = tmp_path
    with pytest.raises(CommandError, match="has not moved out of this monolith"):
        _run("--cleanup", "transfers", "--yes")
    assert not (tmp_path / "deployment.json").exists()


def test_the_way_back_renumbers_the_bus_rows_and_keeps_the_monoliths_accounts(target):
    """Into a database other services write too (the monolith): its outbox ids have moved on
    meanwhile, so the service's bus rows get new ids there; the monolith's users stay."""
    from django.contrib.auth import get_user_model

    from transfers.models import Transfer

    _league()
    copying.copy("transfers", source="default", target=split.TARGET)
    # After the move: the monolith writes teams' events (taking the next outbox ids), the
    # service writes its own (its ids continue from the copied ones: the same numbers).
    for team_id in (501, 502, 503):
        with transaction.atomic():
            events.publish("team.created", subject=team_id, data={"id": team_id, "name": f"Club {team_id}", "short_name": "TM"})
    moved = Transfer.objects.using(split.TARGET).first()
    from events.models import OutboxMessage

    template = OutboxMessage.objects.using(split.TARGET).first()
    template.pk, template.event_id, template.sequence = None, "6f0f0f0f-0000-0000-0000-000000000009", 99
    template.save(using=split.TARGET)
    Transfer.objects.using(split.TARGET).filter(pk=moved.pk).update(state="completed")
    get_user_model().objects.create_user("monolith-only", password="pw-only-1234")

    reports = copying.copy("transfers", source=split.TARGET, target="default", shared_target=True)

    assert {r.label for r in reports} >= {"transfers.transfer", "events.outboxmessage"}
    assert "auth.user" not in {r.label for r in reports}
    assert Transfer.objects.get(pk=moved.pk).state == "completed"  # what it wrote on its own
    assert OutboxMessage.objects.filter(aggregate_key__startswith="team:").count() == 4  # teams' rows untouched
    assert OutboxMessage.objects.filter(aggregate_key__startswith="transfer:").count() == 3
    assert get_user_model().objects.filter(username="monolith-only").exists()


def test_the_published_history_waits_for_after_the_pause_and_a_rerun_adds_nothing_twice(target):
    from events.models import OutboxMessage

    _league()
    OutboxMessage.objects.filter(aggregate_key__startswith="transfer:").update(state="published")
    paused = {r.label: r.rows for r in copying.copy("transfers", source="default", target=split.TARGET, history=False)}
    assert paused["events.outboxmessage"] == 0  # nothing of the history in the pause
    # The moved service writes its own event before the history arrives (same id numbers).
    mine = OutboxMessage.objects.first()
    mine.pk, mine.event_id = None, "7f0f0f0f-0000-0000-0000-000000000001"
    mine.save(using=split.TARGET)

    first = copying.copy_history("transfers", source="default", target=split.TARGET)
    again = copying.copy_history("transfers", source="default", target=split.TARGET)

    assert first.rows == again.rows == 2 and first.checksum == again.checksum
    assert OutboxMessage.objects.using(split.TARGET).count() == 3  # its own + the two published, once each


def test_the_way_back_copies_the_published_history_after_the_pause_without_doubling_it(target):
    """``split_service --back`` copies the service's rows in the pause without its published
    outbox rows, then its history after the switch: the rows the monolith kept from before
    the move are skipped, the ones the service published on its own arrive once."""
    from events.models import OutboxMessage

    _league()
    OutboxMessage.objects.filter(aggregate_key__startswith="transfer:").update(state="published")
    copying.copy("transfers", source="default", target=split.TARGET)
    mine = OutboxMessage.objects.using(split.TARGET).filter(aggregate_key__startswith="transfer:").first()
    mine.pk, mine.event_id = None, "8f0f0f0f-0000-0000-0000-000000000001"
    mine.save(using=split.TARGET)
    kept = set(OutboxMessage.objects.filter(aggregate_key__startswith="transfer:").values_list("event_id", flat=True))

    paused = {r.label: r.rows for r in copying.copy(
        "transfers", source=split.TARGET, target="default", shared_target=True, history=False
    )}  # fmt: skip
    assert paused["events.outboxmessage"] == 0  # nothing of the history in the pause
    history = copying.copy_history("transfers", source=split.TARGET, target="default")

    rows = [
        str(e)
        for e in OutboxMessage.objects.filter(aggregate_key__startswith="transfer:").values_list("event_id", flat=True)
    ]
    assert sorted(rows) == sorted({str(e) for e in kept} | {str(mine.event_id)}) and history.rows == len(rows)
