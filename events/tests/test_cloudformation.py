"""The bus as a CloudFormation template (events/cloudformation.py): cfn-lint passes on it, and
deployed to LocalStack's CloudFormation it is what setup_bus makes (``setup_bus --check``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from django.core.management import call_command

from devtools import emulators
from events import aws, iam, topology


def rendered(tmp_path) -> Path:
    path = tmp_path / "bus.json"
    with open(path, "w") as out:
        call_command("setup_bus", "--format", "cloudformation", stdout=out)
    return path


@pytest.mark.django_db
def test_the_template_holds_everything_setup_bus_makes(tmp_path):
    body = rendered(tmp_path).read_text()
    assert len(body.encode()) <= 51_200, "CloudFormation's limit for a template body passed inline"
    resources = json.loads(body)["Resources"]
    by_type: dict[str, list[dict]] = {}
    for resource in resources.values():
        by_type.setdefault(resource["Type"], []).append(resource["Properties"])
    topics = {p["TopicName"] for p in by_type["AWS::SNS::Topic"]}
    assert topics == {aws.topic_name(t) for t, et in iam.catalogue.EVENT_TYPES.items() if not et.retired}
    queues = {p["QueueName"]: p for p in by_type["AWS::SQS::Queue"]}
    specs = topology.queue_specs()
    assert set(queues) == {n for s in specs for n in (s.name, s.dlq_name)}
    assert all(q["SqsManagedSseEnabled"] is True for q in queues.values())
    assert all("RedrivePolicy" in queues[s.name] for s in specs)
    subscriptions = by_type["AWS::SNS::Subscription"]
    assert len(subscriptions) == sum(len(s.event_types) for s in specs)
    assert all(s["RawMessageDelivery"] is True and s["Protocol"] == "sqs" for s in subscriptions)
    assert len(by_type["AWS::SQS::QueuePolicy"]) == len(specs)
    roles = [p["Description"] for p in by_type["AWS::IAM::Role"]]
    assert "League Manager: the relay processes of teams" in roles


@pytest.mark.slow
@pytest.mark.django_db
def test_cfn_lint_passes(tmp_path):
    lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent))
    assert lint, "cfn-lint is in requirements-dev.txt"
    done = subprocess.run([lint, str(rendered(tmp_path))], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.localstack
@pytest.mark.slow
@pytest.mark.django_db
def test_the_stack_deployed_to_localstack_is_what_setup_bus_makes(tmp_path, settings, capsys):
    template = rendered(tmp_path).read_text()
    emulator = emulators.start("localstack", services=("cloudformation", "iam", "sts"), timeout=180)
    try:
        settings.AWS_ENDPOINT_URL = emulator.url
        aws.reset()
        cfn = boto3.client(
            "cloudformation",
            endpoint_url=emulator.url,
            region_name=settings.AWS_REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        cfn.create_stack(StackName="league-bus", TemplateBody=template, Capabilities=["CAPABILITY_IAM"])
        deadline = time.monotonic() + 240
        status = ""
        while time.monotonic() < deadline:
            status = cfn.describe_stacks(StackName="league-bus")["Stacks"][0]["StackStatus"]
            if not status.endswith("IN_PROGRESS"):
                break
            time.sleep(1)
        assert status == "CREATE_COMPLETE", cfn.describe_stack_events(StackName="league-bus")["StackEvents"][:5]
        capsys.readouterr()
        call_command("setup_bus", "--check")
        assert "The bus topology matches." in capsys.readouterr().out
    finally:
        aws.reset()
        emulator.stop()
