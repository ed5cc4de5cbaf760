"""The saga's clock and the people's cancel: deadline, overdue (API, admin, metric), the
sweeper, the cancel endpoint (permissions, 400/404/409) and the admin action."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.utils import timezone

from devtools.problems import problem_fields
from events.models import OutboxMessage
from transfers import services
from transfers.factories import PlayerReplicaFactory, TeamReplicaFactory, TransferFactory
from transfers.models import Transfer, TransferState

pytestmark = pytest.mark.django_db

PAST = timedelta(seconds=1)


def overdue_transfer(**kwargs) -> Transfer:
    return TransferFactory(expires_at=timezone.now() - PAST, **kwargs)


def asks(transfer: Transfer) -> list[dict]:
    return [
        m.envelope["data"]
        for m in OutboxMessage.objects.filter(type="transfer.cancellation_requested", subject=str(transfer.pk))
    ]


# --- the deadline ---------------------------------------------------------------------------


def test_a_request_gets_its_deadline(settings):
    settings.TRANSFER_TIMEOUT_SECONDS = 120
    reds = TeamReplicaFactory(team_id=1, name="Reds", name_sequence=1)
    TeamReplicaFactory(team_id=2, name="Blues", name_sequence=1)
    PlayerReplicaFactory(team=reds, player_id=7, name="Ann")
    before = timezone.now()

    transfer = services.transfer_request(player_id=7, from_team_id=1, to_team_id=2, fee="1")

    assert before + timedelta(seconds=120) <= transfer.expires_at <= timezone.now() + timedelta(seconds=120)
    assert not transfer.overdue


def test_the_clock_asks_teams_to_cancel_overdue_transfers_only(settings):
    settings.TRANSFER_TIMEOUT_SECONDS = 60
    late = overdue_transfer()
    on_time = TransferFactory(expires_at=timezone.now() + timedelta(seconds=30))
    done = overdue_transfer(state=TransferState.COMPLETED)

    result = services.transfers_expire()

    assert result.expired == [late.pk] and result.asked_again == []
    late.refresh_from_db()
    assert late.state == TransferState.CANCELLING and late.overdue
    assert late.reason == "No answer from the teams service within 60 s: cancellation requested."
    assert asks(late) == [
        {
            "id": late.pk,
            "player_id": late.player_id,
            "from_team_id": 1,
            "to_team_id": 2,
            "reason": late.reason,
        }
    ]
    assert asks(on_time) == [] and asks(done) == []
    assert services.transfers_expire().expired == []  # asked once, not on every sweep


def test_a_cancelling_transfer_holds_its_player():
    """Until teams answers, the player may still move: no second transfer of him."""
    reds = TeamReplicaFactory(team_id=1, name="Reds", name_sequence=1)
    TeamReplicaFactory(team_id=2, name="Blues", name_sequence=1)
    PlayerReplicaFactory(team=reds, player_id=7, name="Ann")
    transfer = TransferFactory(player_id=7, state=TransferState.CANCELLING)

    with pytest.raises(Exception, match=f"already has a transfer in progress \\(#{transfer.pk}\\)"):
        services.transfer_request(player_id=7, from_team_id=1, to_team_id=2, fee="1")


def test_the_expire_command_runs_one_pass():
    late = overdue_transfer()
    call_command("expire_transfers", "--once")
    late.refresh_from_db()
    assert late.state == TransferState.CANCELLING


def test_the_beat_schedule_runs_the_clock():
    from league.celery import app

    app.loader.import_default_modules()
    app.finalize(auto=True)
    entry = app.conf.beat_schedule["expire-transfers"]
    assert entry["task"] == "transfers.expire_transfers"
    assert "transfers.expire_transfers" in app.tasks


def test_overdue_is_a_metric(client):
    overdue_transfer()
    overdue_transfer(state=TransferState.CANCELLING)
    TransferFactory(expires_at=timezone.now() + timedelta(hours=1))

    text = client.get("/metrics").content.decode()

    assert 'league_transfers_overdue{state="requested"} 1.0' in text
    assert 'league_transfers_overdue{state="cancelling"} 1.0' in text


def test_overdue_is_in_the_api(api_client):
    late = overdue_transfer()
    body = api_client.get(f"/api/transfers/{late.pk}/").json()
    assert body["overdue"] is True and body["expires_at"]


# --- people cancel: the API ------------------------------------------------------------------


@pytest.fixture
def desk(user):
    user.user_permissions.add(Permission.objects.get(codename="cancel_transfer"))
    return user


def cancel(client, pk, body=None):
    return client.post(f"/api/transfers/{pk}/cancel/", body or {}, format="json")


def test_cancel_asks_teams_and_answers_202(auth_client, desk):
    transfer = TransferFactory()

    response = cancel(auth_client, transfer.pk, {"reason": "The clubs called it off."})

    assert response.status_code == 202, response.content
    assert response.json()["state"] == "cancelling"
    assert asks(transfer)[0]["reason"] == "The clubs called it off."


def test_cancel_without_a_reason_records_who(auth_client, desk):
    transfer = TransferFactory()
    assert cancel(auth_client, transfer.pk).status_code == 202
    assert asks(transfer)[0]["reason"] == "Cancelled by manager."


def test_cancelling_twice_asks_again(auth_client, desk):
    transfer = TransferFactory()
    cancel(auth_client, transfer.pk)
    assert cancel(auth_client, transfer.pk).status_code == 202
    assert len(asks(transfer)) == 2


@pytest.mark.parametrize("state", [TransferState.COMPLETED, TransferState.REJECTED, TransferState.CANCELLED])
def test_cancelling_a_finished_transfer_is_409(auth_client, desk, state):
    transfer = TransferFactory(state=state)

    response = cancel(auth_client, transfer.pk)

    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"Transfer {transfer.pk} is already {state}; only a transfer in flight (requested or cancelling) "
        "can be cancelled."
    )
    assert asks(transfer) == []


def test_cancelling_an_unknown_transfer_is_404(auth_client, desk):
    response = cancel(auth_client, 424242)
    assert response.status_code == 404
    assert response.json()["detail"] == "Transfer 424242 does not exist."


@pytest.mark.parametrize("reason", ["", "x" * 501, ["list"]])
def test_a_bad_reason_is_400(auth_client, desk, reason):
    transfer = TransferFactory()
    response = cancel(auth_client, transfer.pk, {"reason": reason})
    assert response.status_code == 400
    assert "reason" in problem_fields(response)
    assert asks(transfer) == []


def test_cancel_needs_a_login_and_the_permission(api_client, auth_client, user):
    transfer = TransferFactory()
    assert cancel(api_client, transfer.pk).status_code == 401
    user.groups.remove(*user.groups.filter(name="Transfer desk"))  # the role that grants it
    response = cancel(auth_client, transfer.pk)
    assert response.status_code == 403
    assert "transfers.cancel_transfer" in response.json()["detail"]
    assert "Transfer desk" in response.json()["detail"]
    assert asks(transfer) == []


# --- people cancel: the admin ----------------------------------------------------------------


@pytest.fixture
def admin_client(client):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin)
    return client


def test_the_admin_lists_overdue_transfers(admin_client):
    overdue_transfer(player_name="Late Lou")
    TransferFactory(player_name="Timely Tom", expires_at=timezone.now() + timedelta(hours=1))
    url = "/admin/transfers/transfer/"
    page = admin_client.get(url + "?overdue=yes").content
    assert b"Late Lou" in page and b"Timely Tom" not in page
    page = admin_client.get(url + "?overdue=no").content
    assert b"Late Lou" not in page and b"Timely Tom" in page


def test_the_admin_cancel_action(admin_client):
    flying = TransferFactory()
    done = TransferFactory(state=TransferState.COMPLETED)

    response = admin_client.post(
        "/admin/transfers/transfer/",
        {"action": "cancel_transfers", "_selected_action": [flying.pk, done.pk]},
        follow=True,
    )

    assert response.status_code == 200
    flying.refresh_from_db()
    assert flying.state == TransferState.CANCELLING
    assert asks(flying)[0]["reason"] == "Cancelled by root (admin)."
    assert asks(done) == []
    assert f"#{done.pk} (completed)".encode() in response.content


def test_the_admin_does_not_delete_transfers(admin_client):
    """Deleting a transfer in flight would free its player here while teams may still move
    him, and publishes nothing: cancel instead."""
    transfer = TransferFactory()
    assert admin_client.get(f"/admin/transfers/transfer/{transfer.pk}/delete/").status_code == 403


def test_the_cancel_action_needs_the_permission(client):
    staff = get_user_model().objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_transfer"))
    client.force_login(staff)
    page = client.get("/admin/transfers/transfer/")
    assert page.status_code == 200 and b"cancel_transfers" not in page.content


def test_the_expire_loop_outlives_a_database_outage(monkeypatch, caplog):
    """A pass that cannot reach the database is logged once and tried again; the loop goes
    on and, with the database back, cancels what is overdue (it used to exit)."""
    import signal

    from django.db import OperationalError

    late = overdue_transfer()
    real = services.transfers_expire
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] <= 3:
            raise OperationalError("connection refused")
        if calls["n"] == 5:
            signal.raise_signal(signal.SIGTERM)  # the loop's own handler stops it after this pass
        return real()

    monkeypatch.setattr(services, "transfers_expire", flaky)
    monkeypatch.setattr("django.db.connections.close_all", lambda: None)  # keep the test's transaction
    saved = signal.getsignal(signal.SIGTERM)
    try:
        with caplog.at_level("INFO", logger="transfers.expire"):
            call_command("expire_transfers", "--interval", "0.1")
    finally:
        signal.signal(signal.SIGTERM, saved)
    late.refresh_from_db()
    assert late.state == TransferState.CANCELLING
    assert calls["n"] == 5
    messages = [r.getMessage() for r in caplog.records]
    assert sum("database unavailable" in m for m in messages) == 1
    assert sum("database back" in m for m in messages) == 1
