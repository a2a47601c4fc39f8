"""Fixtures for the ECR contract suite.

By default every test talks to a private emulator started for the session.
With ``ECR_CONTRACT_TARGET=aws`` the same tests run against real ECR, using
the credentials and region of the standard AWS configuration and the scratch
repository named by ``ECR_CONTRACT_REPOSITORY`` (it is emptied before each
test!). Tests that need the emulator's control API are skipped there.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from ecr_emulator.testing import Control, EmulatorProcess, wait_for

TARGET = os.environ.get("ECR_CONTRACT_TARGET", "emulator")
if TARGET not in ("emulator", "aws"):
    raise pytest.UsageError("ECR_CONTRACT_TARGET must be 'emulator' or 'aws'")
ON_AWS = TARGET == "aws"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "emulator_only: needs the emulator's control API; skipped against real AWS")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not ON_AWS:
        return
    skip = pytest.mark.skip(reason="needs the emulator's control API")
    for item in items:
        if "emulator_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorProcess | None]:
    if ON_AWS:
        yield None
        return
    proc = EmulatorProcess()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def aws_session(emulator: EmulatorProcess | None) -> boto3.Session:
    if emulator is None:
        return boto3.Session()
    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")


def _client(session: boto3.Session, emulator: EmulatorProcess | None, service: str, **config: Any) -> Any:
    kwargs: dict[str, Any] = {"config": Config(**config)} if config else {}
    if emulator is not None:
        kwargs["endpoint_url"] = emulator.url
    return session.client(service, **kwargs)


@pytest.fixture(scope="session")
def client_factory(aws_session: boto3.Session, emulator: EmulatorProcess | None) -> Any:
    """Makes a client for a service, pointed at the target, with optional botocore Config."""
    return lambda service, **config: _client(aws_session, emulator, service, **config)


@pytest.fixture(scope="session")
def ecr(client_factory: Any) -> Any:
    return client_factory("ecr")


@pytest.fixture()
def control(emulator: EmulatorProcess | None) -> Iterator[Control]:
    if emulator is None:
        pytest.skip("needs the emulator's control API")
    emulator.control.clear_faults()
    emulator.control.config(check_layers=True)
    yield emulator.control
    emulator.control.clear_faults()
    emulator.control.config(check_layers=True)


@pytest.fixture()
def salt() -> str:
    """Unique per test, so digests never collide with earlier runs on real ECR."""
    return uuid.uuid4().hex[:12]


def empty_repository(ecr: Any, name: str) -> None:
    """Deletes every image: indexes first, so their children become deletable."""
    for _ in range(5):
        details = [d for page in ecr.get_paginator("describe_images").paginate(repositoryName=name) for d in page["imageDetails"]]
        if not details:
            return
        index_types = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
        ordered = sorted(details, key=lambda d: d.get("imageManifestMediaType") not in index_types)
        for start in range(0, len(ordered), 100):
            ids = [{"imageDigest": d["imageDigest"]} for d in ordered[start : start + 100]]
            ecr.batch_delete_image(repositoryName=name, imageIds=ids)


@pytest.fixture()
def repo(ecr: Any, salt: str) -> Iterator[str]:
    """An empty mutable repository for one test."""
    if ON_AWS:
        name = os.environ.get("ECR_CONTRACT_REPOSITORY")
        if not name:
            raise pytest.UsageError("ECR_CONTRACT_TARGET=aws needs ECR_CONTRACT_REPOSITORY (a scratch repository)")
        ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="MUTABLE")
        empty_repository(ecr, name)
        yield name
        empty_repository(ecr, name)
        ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="MUTABLE")
        return
    name = f"contract/{salt}"
    ecr.create_repository(repositoryName=name)
    yield name
    ecr.delete_repository(repositoryName=name, force=True)


class EventQueue:
    """An SQS queue fed by an EventBridge rule on ECR image actions in one repository."""

    def __init__(self, sqs: Any, url: str):
        self.sqs = sqs
        self.url = url
        self.received: list[dict[str, Any]] = []

    def drain(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Receives until ``count`` events arrived (or ``timeout``); returns all received so far."""

        def poll() -> bool:
            reply = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1 if ON_AWS else 0)
            for message in reply.get("Messages", []):
                self.received.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
            return len(self.received) >= count

        wait_for(poll, timeout)
        return list(self.received)


@pytest.fixture()
def event_queue(client_factory: Any, repo: str, salt: str) -> Iterator[EventQueue]:
    sqs, events = client_factory("sqs"), client_factory("events")
    rule = f"ecr-contract-{salt}"
    url = sqs.create_queue(QueueName=rule)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = {"source": ["aws.ecr"], "detail-type": ["ECR Image Action"], "detail": {"repository-name": [repo]}}
    rule_arn = events.put_rule(Name=rule, EventPattern=json.dumps(pattern))["RuleArn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": arn}])
    try:
        yield EventQueue(sqs, url)
    finally:
        events.remove_targets(Rule=rule, Ids=["queue"])
        events.delete_rule(Name=rule)
        sqs.delete_queue(QueueUrl=url)


#: How long to wait for events: EventBridge in AWS takes seconds, the emulator none.
EVENT_TIMEOUT = 90.0 if ON_AWS else 5.0
