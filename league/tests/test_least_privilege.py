"""Least privilege enforced for real (events/iam.py): ``moto_server`` with IAM enforcement on
(devtools/moto_iam.py), an IAM user per service and role holding its generated policy, and the
whole flow (a team reaches both replicas, a transfer completes) run with those keys only; each
forgery is refused."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ClientError
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError

from devtools import emulators
from devtools.netutil import free_port
from events import aws, iam
from events.consumer import Consumer
from events.models import OutboxFailure, OutboxMessage, OutboxState
from events.relay import relay

pytestmark = pytest.mark.django_db
slow = pytest.mark.slow  # each starts (or shares) a moto_server process

SERVICES = ("teams", "transfers", "fixtures")
RUNTIME = ("relay", "consumer", "web")


@pytest.fixture(scope="module")
def enforcing() -> Iterator[tuple[str, dict[tuple[str, str], dict[str, str]]]]:
    """moto with IAM enforced after the 3 requests that make an administrator; then, as that
    administrator, a user per (service, role) with the generated policy. Yields the endpoint
    and each user's keys."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.moto_iam", "-H", "127.0.0.1", "-p", str(port)],
        cwd=django_settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        emulators.wait_ready("moto", url, timeout=60, proc=proc)
        iam_client = boto3.client("iam", endpoint_url=url, region_name="us-east-1", **_keys(emulators.CREDENTIALS))
        iam_client.create_user(UserName="admin")
        admin_policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam_client.put_user_policy(UserName="admin", PolicyName="admin", PolicyDocument=json.dumps(admin_policy))
        admin = iam_client.create_access_key(UserName="admin")["AccessKey"]
        admin_iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", **_keys(_env_keys(admin)))
        with pytest.raises(ClientError):  # enforcement is on: the bootstrap keys no longer work
            iam_client.list_users()
        users: dict[tuple[str, str], dict[str, str]] = {}
        arns = iam.Arns("aws", django_settings.AWS_REGION, "123456789012")
        for service in (*SERVICES, iam.ALL):
            for role in (*RUNTIME, "setup"):
                name = f"{service}-{role}"
                admin_iam.create_user(UserName=name)
                document = json.dumps(iam.policy(service, role, arns))
                admin_iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=document)
                users[service, role] = _env_keys(admin_iam.create_access_key(UserName=name)["AccessKey"])
        yield url, users
    finally:
        proc.terminate()
        proc.wait(15)


def _env_keys(key: dict) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def _keys(env: dict[str, str]) -> dict[str, str]:
    return {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}


@pytest.fixture
def bus_as(enforcing, settings, monkeypatch):
    """``with bus_as(service, role):`` the bus's clients hold that user's keys only."""
    url, users = enforcing
    settings.AWS_ENDPOINT_URL = url
    settings.OUTBOX_KICK = False

    @contextlib.contextmanager
    def as_user(service: str, role: str) -> Iterator[None]:
        for name, value in users[service, role].items():
            monkeypatch.setenv(name, value)
        aws.reset()
        try:
            yield
        finally:
            aws.reset()

    with as_user(iam.ALL, "setup"):
        call_command("setup_bus", stdout=open(os.devnull, "w"))
    return as_user


def relay_as(bus_as, service: str) -> int:
    """Relay with ``service``'s relay keys: every pending row is that service's."""
    pending = OutboxMessage.objects.filter(state=OutboxState.PENDING)
    assert {iam.catalogue.EVENT_TYPES[t].source for t in pending.values_list("type", flat=True)} <= {service}
    with bus_as(service, "relay"):
        result = relay()
    assert not OutboxMessage.objects.filter(state=OutboxState.FAILED).exists(), OutboxMessage.objects.filter(
        state=OutboxState.FAILED
    ).values_list("last_error", flat=True)
    return result.published


def consume_as(bus_as, service: str) -> int:
    with bus_as(service, "consumer"):
        return Consumer(service, wait_seconds=0).run(drain=True).handled


@slow
def test_the_whole_flow_runs_with_each_process_s_own_keys(bus_as, auth_client):
    from fixtures.models import TeamReplica as FixturesTeam
    from transfers.models import TeamReplica as TransfersTeam

    reds = auth_client.post(
        "/api/teams/", {"name": "Reds", "players": [{"name": "Ann Smith", "position": "GK"}]}, format="json"
    ).json()
    blues = auth_client.post("/api/teams/", {"name": "Blues", "players": []}, format="json").json()
    assert relay_as(bus_as, "teams") == 2
    assert consume_as(bus_as, "transfers") == 2 and consume_as(bus_as, "fixtures") == 2
    assert set(TransfersTeam.objects.values_list("name", flat=True)) == {"Reds", "Blues"}
    assert set(FixturesTeam.objects.values_list("name", flat=True)) == {"Reds", "Blues"}

    ann = reds["players"][0]["id"]
    body = {"player_id": ann, "from_team_id": reds["id"], "to_team_id": blues["id"], "fee": "1000"}
    transfer = auth_client.post("/api/transfers/", body, format="json").json()
    for service, consumer in (("transfers", "teams"), ("teams", "transfers"), ("transfers", "teams")):
        relay_as(bus_as, service)
        consume_as(bus_as, consumer)
        for other in {"transfers", "fixtures"} - {consumer}:
            consume_as(bus_as, other)
    assert auth_client.get(f"/api/transfers/{transfer['id']}/").json()["state"] == "completed"
    assert [p["name"] for p in auth_client.get(f"/api/teams/{blues['id']}/").json()["players"]] == ["Ann Smith"]


def _denied(call) -> None:
    """The call is refused for want of a permission (AccessDenied, SNS's AuthorizationError)."""
    with pytest.raises(ClientError) as caught:
        call()
    assert iam.is_access_denied(caught.value), caught.value


@slow
def test_a_relay_cannot_publish_another_service_s_events(bus_as):
    with bus_as("teams", "relay"):
        sns = aws.client("sns")
        arn = aws.topic_arn("transfer.requested")
        _denied(lambda: sns.publish(TopicArn=arn, Message="{}"))
        own = aws.topic_arn("team.renamed")
        assert sns.publish(TopicArn=own, Message="{}")["MessageId"]


@slow
def test_the_relay_fails_a_denied_row_naming_the_missing_permission(bus_as):
    from events import publisher

    data = {"id": 7, "player_id": 1, "from_team_id": 1, "to_team_id": 2, "reason": "deadline"}
    publisher.publish("transfer.cancellation_requested", subject=7, data=data)
    with bus_as("teams", "relay"):
        result = relay()
    assert result.published == 0
    row = OutboxMessage.objects.get(type="transfer.cancellation_requested")
    assert row.state == OutboxState.FAILED and row.failure == OutboxFailure.ACCESS_DENIED and row.attempts == 1
    topic = "arn:aws:sns:eu-west-1:123456789012:leaguemanager-transfer-cancellation_requested"
    assert f"lacks sns:Publish on {topic}" in row.last_error


@slow
def test_a_consumer_cannot_read_another_service_s_queue(bus_as):
    with bus_as(iam.ALL, "setup"):
        teams_queue = aws.queue_url(aws.queue_name("teams"))
    with bus_as("transfers", "consumer"):
        sqs = aws.client("sqs")
        _denied(lambda: sqs.receive_message(QueueUrl=teams_queue, WaitTimeSeconds=0))
        _denied(lambda: sqs.get_queue_url(QueueName=aws.queue_name("teams")))


@slow
@pytest.mark.parametrize("role", RUNTIME)
@pytest.mark.parametrize("service", (*SERVICES, iam.ALL))
def test_no_runtime_role_sends_to_a_queue_or_creates_a_topic(bus_as, service, role):
    with bus_as(iam.ALL, "setup"):
        queues = [aws.queue_url(aws.queue_name(s)) for s in SERVICES]
    forged = json.dumps({"type": "team.renamed", "subject": "1", "sequence": 1_000_003})
    with bus_as(service, role):
        sqs, sns = aws.client("sqs"), aws.client("sns")
        for url in queues:
            _denied(lambda url=url: sqs.send_message(QueueUrl=url, MessageBody=forged))
        _denied(lambda: sns.create_topic(Name=aws.topic_name("team.renamed")))
        _denied(lambda: sns.create_topic(Name=f"{django_settings.BUS_PREFIX}-forged"))


@slow
def test_check_says_what_it_cannot_verify_with_a_runtime_role(bus_as, capsys):
    with bus_as(iam.ALL, "setup"):
        call_command("setup_bus", "--check")
    with bus_as("transfers", "consumer"), pytest.raises(CommandError, match="could not be verified"):
        call_command("setup_bus", "--check", "--service", "teams")
    out = capsys.readouterr().out
    assert "UNVERIFIED  queue leaguemanager-teams: cannot verify, these credentials lack sqs:" in out
    assert "DRIFT" not in out


def test_iam_policy_prints_a_role_s_policy(capsys):
    call_command("iam_policy", "teams", "--role", "relay", "--account", "123456789012")
    document = json.loads(capsys.readouterr().out)
    publish = next(s for s in document["Statement"] if s["Action"] == ["sns:Publish"])
    teams_types = sorted(t for t, et in iam.catalogue.EVENT_TYPES.items() if et.source == "teams" and not et.retired)
    prefix = "arn:aws:sns:eu-west-1:123456789012:"
    assert publish["Resource"] == sorted(prefix + aws.topic_name(t) for t in teams_types)
    actions = {a for s in document["Statement"] for a in s["Action"]}
    assert actions == {"sns:Publish", "sns:ListTopics"}


def test_iam_policy_refuses_an_unknown_service():
    with pytest.raises(CommandError, match="unknown service 'scouting': one of"):
        call_command("iam_policy", "scouting", "--role", "relay")


@pytest.mark.parametrize("role", RUNTIME)
@pytest.mark.parametrize("service", (*SERVICES, iam.ALL))
def test_only_a_consumer_sends_and_only_to_its_own_dead_letter_queue(service, role):
    sends = [
        r for s in iam.statements(service, role) for r in s["Resource"] if {"sqs:SendMessage", "sqs:*"} & set(s["Action"])
    ]
    assert all(r.endswith("-dlq") for r in sends)
    assert bool(sends) == (role == "consumer")
