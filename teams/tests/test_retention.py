"""Teams' decisions (``Move``) are kept as long as a message can still ask about their
transfer, then purged with the sequence of their answers, by beat and by ``purge_events``
(events/retention.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from events import retention
from events.models import SubjectSequence
from events.tasks import purge_retained
from league.celery import _schedule, app
from teams import services
from teams.factories import PlayerFactory, TeamFactory
from teams.models import Move

pytestmark = pytest.mark.django_db


def decide(transfer_id: int) -> Move:
    """A transfer teams carries out (a Move, ``player.transferred``) and one more message
    about it (a cancellation, answered ``move.confirmed``: the ``move:<id>`` sequence)."""
    player = PlayerFactory()
    to = TeamFactory()
    services.move_apply(transfer_id=transfer_id, player_id=player.id, from_team_id=player.team_id, to_team_id=to.id)
    return services.move_cancel(
        transfer_id=transfer_id, player_id=player.id, from_team_id=player.team_id, to_team_id=to.id, reason="late"
    )


def age(transfer_id: int, by: timedelta) -> None:
    Move.objects.filter(transfer_id=transfer_id).update(asked_at=timezone.now() - by)


def keys(prefix: str) -> set[str]:
    return set(SubjectSequence.objects.filter(key__startswith=prefix).values_list("key", flat=True))


def test_a_move_nobody_asked_about_for_the_redelivery_window_is_purged_with_its_sequence():
    window = retention.inbox_retention()
    for transfer_id in (1, 2, 3):
        decide(transfer_id)
    age(1, window + timedelta(minutes=1))  # past the window: purged
    age(2, window - timedelta(minutes=1))  # a message may still ask: kept
    teams = keys("team:")
    assert keys("move:") == {"move:1", "move:2", "move:3"}

    assert purge_retained() >= 1

    assert set(Move.objects.values_list("transfer_id", flat=True)) == {2, 3}
    assert keys("move:") == {"move:2", "move:3"}
    assert keys("team:") == teams  # a team's sequence stays: the team still publishes


def test_a_message_about_a_decided_transfer_renews_its_move():
    move = decide(7)
    age(7, retention.inbox_retention() + timedelta(minutes=1))
    services.move_cancel(
        transfer_id=7, player_id=move.player_id, from_team_id=move.from_team_id, to_team_id=move.to_team_id, reason=""
    )
    assert Move.objects.get(transfer_id=7).asked_at > timezone.now() - timedelta(minutes=1)

    purge_retained()

    assert Move.objects.filter(transfer_id=7).exists() and keys("move:") == {"move:7"}


def test_purge_events_purges_moves_too(capsys):
    decide(1)
    age(1, retention.inbox_retention() + timedelta(days=1))

    call_command("purge_events")

    assert "1 moves" in capsys.readouterr().out
    assert not Move.objects.exists() and keys("move:") == set()


def test_beat_runs_the_purge():
    _schedule(app)
    entry = app.conf.beat_schedule["purge-retained"]
    assert entry["task"] == purge_retained.name and entry["schedule"] <= timedelta(hours=1)
