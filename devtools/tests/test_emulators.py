"""The emulator launcher (devtools/emulators.py): either emulator is chosen by name, starts on
loopback only, and is emptied through the AWS API; the bus assumes neither's account id nor
its URL shapes."""

from __future__ import annotations

import re
from pathlib import Path

import boto3
import pytest

import events
import kernel
from devtools import emulators


def test_bus_emulator_must_name_a_known_emulator(monkeypatch):
    monkeypatch.setenv("BUS_EMULATOR", "localstak")
    with pytest.raises(emulators.EmulatorError, match="not one of moto, localstack"):
        emulators.selected()
    monkeypatch.setenv("BUS_EMULATOR", "LocalStack")
    assert emulators.selected() == "localstack"
    monkeypatch.delenv("BUS_EMULATOR")
    assert emulators.selected() == "moto"


def test_both_emulators_listen_on_loopback_only(tmp_path, monkeypatch):
    argv, env = emulators.command("moto", 4599)
    assert argv[-4:] == ["-H", "127.0.0.1", "-p", "4599"]
    monkeypatch.setenv("LOCALSTACK_HOME", str(tmp_path))
    with pytest.raises(emulators.EmulatorError, match="python -m devtools.emulators install"):
        emulators.command("localstack", 4599)
    # Installed (as the marker says): loopback gateway, no DNS server, no downloads, files kept in our folder.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    (venv / ".installed").write_text(emulators._requirements_digest())
    argv, env = emulators.command("localstack", 4599, data_dir=tmp_path / "data")
    assert env["GATEWAY_LISTEN"] == "127.0.0.1:4599"
    assert env["GATEWAY_SERVER"] == "hypercorn"
    assert env["DNS_ADDRESS"] == "0" and env["SKIP_SSL_CERT_DOWNLOAD"] == "1"
    assert Path(env["FILESYSTEM_ROOT"]).is_relative_to(tmp_path / "data")
    assert env["SERVICES"] == "sns,sqs"


def test_unknown_emulator_is_refused():
    with pytest.raises(emulators.EmulatorError, match="unknown emulator 'kinesalite'"):
        emulators.command("kinesalite", 1)


def test_reset_empties_sns_and_sqs_of_one_region_only(moto_server_url, settings):
    kwargs = dict(endpoint_url=moto_server_url, aws_access_key_id="testing", aws_secret_access_key="testing")
    here = {s: boto3.client(s, region_name=settings.AWS_REGION, **kwargs) for s in ("sns", "sqs")}
    other = boto3.client("sqs", region_name="ap-southeast-2", **kwargs)
    topic = here["sns"].create_topic(Name="reset-me")["TopicArn"]
    queue = here["sqs"].create_queue(QueueName="reset-me")["QueueUrl"]
    arn = here["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    here["sns"].subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    here["sqs"].send_message(QueueUrl=queue, MessageBody="left over")
    kept = other.create_queue(QueueName="not-mine")["QueueUrl"]

    emulators.reset(moto_server_url, region=settings.AWS_REGION)

    assert here["sns"].list_topics()["Topics"] == []
    assert [s for s in here["sns"].list_subscriptions()["Subscriptions"] if s["TopicArn"] == topic] == []
    assert here["sqs"].list_queues().get("QueueUrls", []) == []
    queue = here["sqs"].create_queue(QueueName="reset-me")["QueueUrl"]
    assert here["sqs"].receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages") is None
    assert other.list_queues()["QueueUrls"] == [kept]
    emulators.reset(moto_server_url, region="ap-southeast-2")


def test_the_bus_assumes_no_account_id_or_emulator_url_shape():
    """Emulators differ in account id (moto 123456789012, LocalStack 000000000000) and queue
    URL shape; ARNs and URLs must always come from the API's answers. The bus and the kernel
    are read (the emulators' own tooling in devtools names them on purpose)."""
    pattern = re.compile(r"123456789012|000000000000|localstack\.cloud|/moto-api")
    offenders = [
        f"{path.relative_to(root.parent)}:{n}"
        for package in (events, kernel)
        for root in [Path(package.__file__).resolve().parent]
        for path in root.rglob("*.py")
        if "tests" not in path.parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
