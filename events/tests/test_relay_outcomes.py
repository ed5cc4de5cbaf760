"""The relay's outcome writes are tied to its claim, its SNS calls fit inside the lease,
and only errors that retrying cannot fix mark a row ``failed``."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from datetime import timedelta

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from django.db import transaction
from django.utils import timezone

import events
from events import aws, relay
from events.models import OutboxFailure, OutboxMessage, OutboxState


def _create(team_id: int) -> OutboxMessage:
    with transaction.atomic():
        return events.publish("team.created", subject=team_id, data={"id": team_id, "name": f"Team {team_id}", "short_name": "TM"})


def _expire_leases() -> None:
    OutboxMessage.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))


def _client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PublishBatch"
    )


class StalledThen(relay.NullPublisher):
    """Relay A's publisher: while it 'hangs', its lease runs out and relay B takes the
    rows (``meanwhile``); then A's call returns ``outcome``."""

    def __init__(self, meanwhile, outcome) -> None:
        self.meanwhile, self.outcome = meanwhile, outcome

    def publish(self, event_type, rows):
        _expire_leases()
        self.meanwhile()
        return {row.pk: self.outcome(row) for row in rows}


def test_a_stale_relays_late_failure_does_not_fail_a_row_the_new_owner_published(probe_bus):
    row = _create(1)
    stale = StalledThen(lambda: relay.relay_once(relay.NullPublisher()), lambda r: aws.TopicMissing("topic gone"))
    result = relay.relay_once(stale)
    row.refresh_from_db()
    assert row.state == OutboxState.PUBLISHED and row.sns_message_id == f"null-{row.pk}"
    assert row.failure == "" and row.attempts == 0
    assert result.failed == 0 and result.lost == 1


def test_a_stale_relays_late_retry_does_not_wipe_the_new_owners_lease(probe_bus):
    row = _create(1)
    taken: list[OutboxMessage] = []
    stale = StalledThen(
        lambda: taken.extend(relay.claim(10, token=uuid.uuid4())),  # relay B claims, still publishing
        lambda r: RuntimeError("connection reset"),
    )
    relay.relay_once(stale)
    assert [r.pk for r in taken] == [row.pk]
    row.refresh_from_db()
    assert row.claimed_until is not None and row.claimed_until > timezone.now()
    assert row.attempts == 0 and row.next_attempt_at is None
    assert relay.claim(10, token=uuid.uuid4()) == []  # no third relay gets it


def test_a_stale_relays_late_success_does_not_clear_the_new_owners_claim(probe_bus):
    row = _create(1)
    new_owner = uuid.uuid4()
    stale = StalledThen(lambda: relay.claim(10, token=new_owner), lambda r: "late-message-id")
    relay.relay_once(stale)
    row.refresh_from_db()
    # Relay B still owns it; B's own outcome decides (at-least-once: B publishes it too).
    assert row.state == OutboxState.PENDING and row.claim_token == new_owner and row.sns_message_id == ""


@pytest.mark.parametrize("lease", [30, 5])
def test_a_hanging_sns_call_gives_up_well_inside_the_lease(aws_mock, db, settings, lease):
    """Connect and read timeouts times attempts stay inside the lease: an SNS endpoint that
    accepts and never answers costs less than half the lease, and is a transient error."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    settings.OUTBOX_LEASE_SECONDS = lease
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{listener.getsockname()[1]}"
    aws.reset()
    aws.remember_topic(aws.topic_name("team.created"), "arn:aws:sns:eu-west-1:123456789012:leaguemanager-team-created")
    row = _create(1)
    aws.client("sns", budget=relay.call_budget())  # built before the clock starts (slow on a loaded machine)
    started = time.monotonic()
    out = relay.SnsPublisher().publish("team.created", [row])
    elapsed = time.monotonic() - started
    stop.set()
    for s in accepted:
        s.close()
    listener.close()
    assert elapsed < lease * 0.8, f"one PublishBatch took {elapsed:.1f} s of a {lease} s lease"
    assert relay.classify(out[row.pk]).transient


@pytest.mark.parametrize(
    "error",
    [
        _client_error("Throttling", 400, "Rate exceeded"),
        _client_error("ThrottlingException", 400),
        _client_error("InternalError", 500),
        _client_error("ServiceUnavailable", 503),
        _client_error("SomethingNew", 502),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ConnectionResetError("reset by peer"),
    ],
    ids=lambda e: type(e).__name__ + (e.response["Error"]["Code"] if isinstance(e, ClientError) else ""),
)
def test_network_throttling_and_5xx_are_transient(error):
    assert relay.classify(error).transient


@pytest.mark.parametrize(
    "error, failure",
    [
        (
            _client_error("AuthorizationError", 403, "not authorized to perform SNS:Publish"),
            OutboxFailure.ACCESS_DENIED,
        ),
        (_client_error("AccessDenied", 403), OutboxFailure.ACCESS_DENIED),
        (_client_error("InvalidClientTokenId", 403), OutboxFailure.ACCESS_DENIED),
        (_client_error("BatchRequestTooLong", 400), OutboxFailure.TOO_LARGE),
        (_client_error("InvalidParameter", 400, "Invalid parameter: Message too long"), OutboxFailure.TOO_LARGE),
        (_client_error("NotFound", 404, "Topic does not exist"), OutboxFailure.TOPIC_MISSING),
        (aws.TopicMissing("no such topic"), OutboxFailure.TOPIC_MISSING),
        (_client_error("InvalidParameter", 400, "Invalid parameter: TopicArn"), OutboxFailure.REJECTED),
    ],
)
def test_errors_retrying_cannot_fix_are_permanent_and_say_which(error, failure):
    verdict = relay.classify(error)
    assert not verdict.transient and verdict.failure == failure


def test_a_missing_topic_on_real_moto_fails_the_row_at_once_and_says_so(probe_bus, settings):
    row = _create(1)
    aws.remember_topic(aws.topic_name("team.created"), "arn:aws:sns:eu-west-1:123456789012:leaguemanager-gone")
    result = relay.relay_once()
    row.refresh_from_db()
    assert result.failed == 1
    assert row.state == OutboxState.FAILED and row.failure == OutboxFailure.TOPIC_MISSING
    assert row.attempts == 1 and row.last_error


def test_transient_errors_keep_retrying_past_the_old_bound_then_give_up_after_the_window(probe_bus, settings):
    settings.OUTBOX_RETRY_FOR_SECONDS = 3600
    row = _create(1)

    class Throttled:
        def publish(self, event_type, rows):
            return {r.pk: _client_error("Throttling", 400, "Rate exceeded") for r in rows}

    for _ in range(25):  # an SNS outage far longer than 10 attempts
        OutboxMessage.objects.update(next_attempt_at=None)
        relay.relay_once(Throttled())
    row.refresh_from_db()
    assert row.state == OutboxState.PENDING and row.attempts == 25 and row.failure == ""
    assert row.next_attempt_at - timezone.now() >= timedelta(seconds=settings.OUTBOX_BACKOFF_MAX_SECONDS * 0.5 - 5)
    # Past the retry window the row is failed, and says why.
    OutboxMessage.objects.update(next_attempt_at=None, retrying_since=timezone.now() - timedelta(seconds=3601))
    result = relay.relay_once(Throttled())
    row.refresh_from_db()
    assert result.failed == 1 and row.state == OutboxState.FAILED and row.failure == OutboxFailure.GAVE_UP
    assert "Throttling" in row.last_error
    # Requeued, it starts a new window.
    assert relay.requeue(OutboxMessage.objects.all()) == 1
    row.refresh_from_db()
    assert (row.state, row.failure, row.retrying_since, row.attempts) == (OutboxState.PENDING, "", None, 0)


def test_a_per_entry_sender_fault_is_permanent_and_a_service_fault_transient():
    from events.relay import SnsPublisher

    class FakeSns:
        def publish_batch(self, TopicArn, PublishBatchRequestEntries):
            ids = [e["Id"] for e in PublishBatchRequestEntries]
            return {
                "Successful": [],
                "Failed": [
                    {"Id": ids[0], "Code": "InvalidParameter", "Message": "Message too long", "SenderFault": True},
                    {"Id": ids[1], "Code": "InternalError", "Message": "oops", "SenderFault": False},
                ],
            }

    rows = [
        OutboxMessage(pk=1, type="team.created", envelope={}, event_id=uuid.uuid4(), aggregate_key="team:1"),
        OutboxMessage(pk=2, type="team.created", envelope={}, event_id=uuid.uuid4(), aggregate_key="team:2"),
    ]
    results = SnsPublisher()._publish_chunks(FakeSns(), "arn:x", rows)
    assert relay.classify(results[1]).failure == OutboxFailure.TOO_LARGE
    assert relay.classify(results[2]).transient


def test_a_sweep_tries_each_row_once_and_leaves_its_retries_to_the_next(probe_bus, settings):
    """``relay_outbox --once`` (and each sweep of the running relay) publishes what is due
    when it starts. A row that fails meanwhile is due again only after its back-off, which
    on a slow emulator can be shorter than one call: the sweep must not chase it, or
    ``--once`` never returns while SNS times out (CI: a child still retrying after 300 s)."""
    settings.OUTBOX_BACKOFF_BASE_SECONDS = 0.0  # due again the moment it fails
    rows = [_create(team_id) for team_id in range(1, 4)]
    calls = []

    class TimingOut:
        def publish(self, event_type, chunk):
            calls.append([r.pk for r in chunk])
            return {r.pk: ReadTimeoutError(endpoint_url="http://sns") for r in chunk}

    result = relay.relay(TimingOut(), max_batches=50)
    assert calls == [[r.pk for r in rows]]
    assert result.batches == 1 and result.retried == 3
    assert set(OutboxMessage.objects.values_list("attempts", flat=True)) == {1}
    # The next sweep tries them again, and a row written meanwhile goes with them.
    late = _create(4)
    relay.relay(relay.NullPublisher(), max_batches=50)
    assert set(OutboxMessage.objects.values_list("state", flat=True)) == {OutboxState.PUBLISHED}
    assert OutboxMessage.objects.get(pk=late.pk).state == OutboxState.PUBLISHED
