"""Where the bus is, by configuration alone (events/aws.py): no endpoint is AWS itself with
boto3's credential chain; an endpoint is that endpoint with the same chain."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command

from events import aws
from events.consumer import Consumer
from events.relay import relay

pytestmark = pytest.mark.django_db

PROBE = (
    "from events import aws; c = aws.client('sns'); creds = c._request_signer._credentials; "
    "print(c.meta.endpoint_url, creds.access_key if creds else None)"
)


def probe(tmp_path, **env: str) -> list[str]:
    """What a fresh process's bus client addresses, and with which access key, given ``env``
    (no AWS variable of this test process leaks in)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "DJANGO_SETTINGS_MODULE"}
    base.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    base.update(AWS_EC2_METADATA_DISABLED="true", **env)
    done = subprocess.run(
        [sys.executable, str(django_settings.BASE_DIR / "manage.py"), "shell", "-v", "0", "-c", PROBE],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1].split()


@pytest.mark.slow  # a fresh process
def test_no_endpoint_is_aws_itself(tmp_path):
    assert probe(tmp_path) == ["https://sns.eu-west-1.amazonaws.com", "None"]
    assert probe(tmp_path, AWS_ENDPOINT_URL="", AWS_REGION="us-east-2")[0] == "https://sns.us-east-2.amazonaws.com"


@pytest.mark.slow  # a fresh process
def test_credentials_come_from_the_chain_with_or_without_an_endpoint(tmp_path):
    """A profile's keys (as a role's would be) are used as found, also behind an endpoint such
    as a VPC endpoint; nothing replaces them with an emulator's."""
    credentials = tmp_path / "credentials"
    credentials.write_text("[league]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = secret\n")
    chain = {"AWS_SHARED_CREDENTIALS_FILE": str(credentials), "AWS_PROFILE": "league"}
    assert probe(tmp_path, **chain) == ["https://sns.eu-west-1.amazonaws.com", "AKIAPROFILE"]
    vpce = "https://vpce-0123-abcd.sns.eu-west-1.vpce.amazonaws.com"
    assert probe(tmp_path, AWS_ENDPOINT_URL=vpce, **chain) == [vpce, "AKIAPROFILE"]
    assert probe(tmp_path, AWS_ENDPOINT_URL=vpce) == [vpce, "None"]


@pytest.mark.slow  # a fresh process
def test_only_the_setting_says_where_the_bus_is(tmp_path):
    """boto3's own per-service endpoint variables do not move the bus."""
    assert probe(tmp_path, AWS_ENDPOINT_URL_SNS="http://127.0.0.1:9")[0] == "https://sns.eu-west-1.amazonaws.com"


def test_setup_bus_relay_and_consumers_on_aws_itself(settings, monkeypatch):
    """No endpoint: every call goes to AWS's real endpoints, which moto intercepts in-process
    (``mock_aws``): setup_bus makes the topology, the relay publishes a team's event and both
    consumers replicate it."""
    from moto import mock_aws

    from fixtures.models import TeamReplica as FixturesTeam
    from teams import services
    from transfers.models import TeamReplica as TransfersTeam

    settings.AWS_ENDPOINT_URL = None
    settings.OUTBOX_KICK = False
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    aws.reset()
    with mock_aws():
        call_command("setup_bus", stdout=open(os.devnull, "w"))
        sns, sqs = aws.client("sns"), aws.client("sqs")
        assert sns.meta.endpoint_url == "https://sns.eu-west-1.amazonaws.com"
        assert sqs.meta.endpoint_url == "https://sqs.eu-west-1.amazonaws.com"
        assert aws.queue_url(aws.queue_name("transfers")).startswith("https://sqs.eu-west-1.amazonaws.com/")
        team = services.team_create(name="Reds", players=[{"name": "Ann Smith", "position": "GK"}])
        assert relay().published == 1  # team.created carries the squad
        for service in ("transfers", "fixtures"):
            Consumer(service, wait_seconds=0).run(drain=True)
        assert TransfersTeam.objects.get(team_id=team.pk).name == "Reds"
        assert FixturesTeam.objects.get(team_id=team.pk).name == "Reds"
    aws.reset()
