"""The transfer saga with a clock, over the bus (moto in-process, drained synchronously):
lost messages, deadlines, cancellations, late answers. Whatever the order, the transfers
service ends where the teams service decided, and the player is free afterwards."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from events import aws, operations
from teams import services as teams_services
from teams.models import Move, Player
from transfers import services
from transfers.models import Transfer, TransferState

pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # an end-to-end flow


# --- the bus, by hand ----------------------------------------------------------------------


def hold(service: str, event_type: str) -> list[dict]:
    """Take every ``event_type`` message out of ``service``'s queue for now (a consumer that
    took it and stalled); the others go back at once."""
    sqs = aws.client("sqs")
    url = aws.queue_url(aws.queue_name(service))
    held: list[dict] = []
    for _ in range(20):
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=3600,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            break
        for message in got:
            if json.loads(message["Body"])["type"] == event_type:
                held.append(message)
            else:
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    assert held, f"no {event_type} in the {service} queue"
    return held


def release(service: str, held: list[dict]) -> None:
    sqs = aws.client("sqs")
    url = aws.queue_url(aws.queue_name(service))
    for message in held:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)


def dead_letter(service: str, held: list[dict]) -> None:
    """What SQS redrive does after ``maxReceiveCount``: the message moves to the DLQ."""
    sqs = aws.client("sqs")
    url = aws.queue_url(aws.queue_name(service))
    dlq = aws.queue_url(aws.queue_name(service, dlq=True))
    for message in held:
        sqs.send_message(
            QueueUrl=dlq, MessageBody=message["Body"], MessageAttributes=message.get("MessageAttributes", {})
        )
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


LATER = timedelta(seconds=3600)


def after_deadline(extra: float = 0) -> services.ExpireResult:
    """The saga's clock at a time past every deadline (what beat does every few seconds)."""
    return services.transfers_expire(now=timezone.now() + LATER + timedelta(seconds=extra))


# --- the league ----------------------------------------------------------------------------


@pytest.fixture
def league(bus, settings):
    """Reds with Ann, Blues and Greens, replicated to transfers."""
    settings.TRANSFER_TIMEOUT_SECONDS = 60
    reds = teams_services.team_create(name="Reds", players=[{"name": "Ann Smith", "position": "GK"}])
    blues = teams_services.team_create(name="Blues")
    greens = teams_services.team_create(name="Greens")
    bus.drain()
    return reds, blues, greens, reds.players.get()


def request(player, from_team, to_team) -> Transfer:
    return services.transfer_request(player_id=player.id, from_team_id=from_team.id, to_team_id=to_team.id, fee="10")


def state(transfer: Transfer) -> str:
    transfer.refresh_from_db()
    return transfer.state


def team_of(player) -> int:
    return Player.objects.get(pk=player.pk).team_id


def replica_squads(client) -> dict[int, list[int]]:
    return {t["id"]: [p["id"] for p in t["players"]] for t in client.get("/api/transfers/teams/").json()["results"]}


# --- the deadline --------------------------------------------------------------------------


def test_a_lost_request_is_cancelled_at_its_deadline_and_refused_when_redriven_later(bus, league, api_client):
    """``transfer.requested`` is dead-lettered on the teams queue. At the deadline transfers
    asks teams to cancel; teams, which never saw the request, cancels; the player is free.
    When the request is redriven later, teams refuses it by the same decision: nobody moves."""
    reds, blues, greens, ann = league
    transfer = request(ann, reds, blues)
    bus.relay()
    dead_letter("teams", hold("teams", "transfer.requested"))
    bus.drain()
    assert state(transfer) == TransferState.REQUESTED

    after_deadline()
    assert state(transfer) == TransferState.CANCELLING
    assert list(Transfer.objects.overdue(timezone.now() + LATER)) == [transfer]
    bus.drain()

    assert state(transfer) == TransferState.CANCELLED
    assert transfer.reason.startswith("No answer from the teams service within 60 s")
    assert Move.objects.get(transfer_id=transfer.pk).outcome == "cancelled"

    assert operations.redrive_dlq("teams") == 1
    bus.drain()
    assert state(transfer) == TransferState.CANCELLED
    assert team_of(ann) == reds.id

    # The player is free: a new transfer goes through.
    again = request(ann, reds, greens)
    bus.drain()
    assert state(again) == TransferState.COMPLETED
    assert team_of(ann) == greens.id
    assert replica_squads(api_client)[greens.id] == [ann.id]


def test_a_transfer_answered_in_time_is_left_alone_by_the_clock(bus, league):
    reds, blues, _, ann = league
    transfer = request(ann, reds, blues)
    bus.drain()
    after_deadline()
    assert state(transfer) == TransferState.COMPLETED
    assert not Transfer.objects.filter(state=TransferState.CANCELLING).exists()


def test_a_reply_arriving_after_the_deadline_completes_the_transfer(bus, league, api_client):
    """Teams moved the player, but its ``player.transferred`` reached transfers only after
    the deadline had passed and a cancellation was asked for: the move stands, and teams'
    answer to the cancellation says so too."""
    reds, blues, _, ann = league
    transfer = request(ann, reds, blues)
    bus.relay()
    bus.consume("teams")
    bus.relay()
    late = hold("transfers", "player.transferred")
    bus.drain()
    assert state(transfer) == TransferState.REQUESTED

    after_deadline()
    assert state(transfer) == TransferState.CANCELLING
    release("transfers", late)
    bus.drain()

    assert state(transfer) == TransferState.COMPLETED
    assert team_of(ann) == blues.id
    assert replica_squads(api_client)[blues.id] == [ann.id]
    assert replica_squads(api_client)[reds.id] == []


def test_a_refusal_arriving_after_the_deadline_rejects_the_transfer(bus, league):
    reds, blues, _, ann = league
    transfer = request(ann, reds, blues)
    teams_services.player_remove(team_id=reds.id, player_id=ann.id)  # gone before teams decides
    bus.relay()
    bus.consume("teams")
    bus.relay()
    late = hold("transfers", "move.refused")
    bus.drain()

    after_deadline()
    release("transfers", late)
    bus.drain()

    assert state(transfer) == TransferState.REJECTED
    assert transfer.reason == f"Player {ann.id} is no longer in team {reds.id}."


def test_an_unanswered_cancellation_is_asked_again(bus, league, settings):
    """The cancellation itself was dead-lettered: one timeout later the clock asks again,
    so the player is freed once the bus works, with nobody acting."""
    reds, blues, _, ann = league
    transfer = request(ann, reds, blues)
    bus.relay()
    dead_letter("teams", hold("teams", "transfer.requested"))
    after_deadline()
    bus.relay()
    dead_letter("teams", hold("teams", "transfer.cancellation_requested"))
    bus.drain()
    assert state(transfer) == TransferState.CANCELLING

    assert after_deadline(30).asked_again == []  # within the timeout
    bus.drain()
    assert state(transfer) == TransferState.CANCELLING

    result = after_deadline(61)
    assert result.asked_again == [transfer.pk]
    bus.drain()
    assert state(transfer) == TransferState.CANCELLED
    assert team_of(ann) == reds.id


# --- people cancel -------------------------------------------------------------------------


@pytest.fixture
def desk_client(auth_client, user):
    user.user_permissions.add(Permission.objects.get(codename="cancel_transfer"))
    return auth_client


def test_cancel_before_the_move(bus, league, desk_client):
    """The request is still on its way (a stalled teams consumer holds it) when a person
    cancels: teams sees the cancellation first and cancels; the request, handled later,
    moves nobody."""
    reds, blues, _, ann = league
    transfer = request(ann, reds, blues)
    bus.relay()
    stalled = hold("teams", "transfer.requested")

    response = desk_client.post(f"/api/transfers/{transfer.pk}/cancel/", {"reason": "Called off."}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["state"] == "cancelling"
    bus.drain()
    assert state(transfer) == TransferState.CANCELLED
    assert transfer.reason == "Called off."

    release("teams", stalled)
    bus.drain()
    assert state(transfer) == TransferState.CANCELLED
    assert team_of(ann) == reds.id


def test_cancel_after_the_move(bus, league, desk_client, api_client):
    """Teams moved the player, but transfers has not heard yet when a person cancels: the
    cancellation is answered "moved", and the transfer completes."""
    reds, blues, _, ann = league
    transfer = request(ann, reds, blues)
    bus.relay()
    bus.consume("teams")
    bus.relay()
    late = hold("transfers", "player.transferred")

    response = desk_client.post(f"/api/transfers/{transfer.pk}/cancel/", {}, format="json")
    assert response.status_code == 202, response.content
    bus.drain()
    assert state(transfer) == TransferState.COMPLETED
    assert "had moved before the cancellation" in transfer.reason

    release("transfers", late)
    bus.drain()
    assert state(transfer) == TransferState.COMPLETED
    assert team_of(ann) == blues.id
    assert replica_squads(api_client)[blues.id] == [ann.id]
