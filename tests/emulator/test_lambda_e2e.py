"""The built Lambda function (`bootstrap`) under cargo-lambda's Lambda runtime
API emulator, against the ECR emulator: a fixture push event in, the registry
checked afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ecr_emulator.oci import build_buildx_layout
from ecr_emulator.push import push
from ecr_emulator.testing import EmulatorProcess, account_session, member_role_trust, push_event

ROOT = Path(__file__).resolve().parents[2]
CARGO_LAMBDA = Path(sys.executable).parent / "cargo-lambda"

pytestmark = pytest.mark.emulator_only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SWEEP_QUEUE = "e2e-sweep-requests"


@contextlib.contextmanager
def run_function(emulator: EmulatorProcess, queue_url: str, extra_env: list[str]) -> Iterator[int]:
    """`cargo lambda watch` serving the bootstrap binary on a free port, with the test environment plus `extra_env`."""
    assert CARGO_LAMBDA.exists(), f"{CARGO_LAMBDA} missing: `make venv` installs cargo-lambda"
    port = free_port()
    env_lines = "\n".join(
        [
            f"AWS_ENDPOINT_URL={emulator.url}",
            "AWS_REGION=us-east-1",
            "AWS_ACCESS_KEY_ID=testing",
            "AWS_SECRET_ACCESS_KEY=testing",
            "AWS_EC2_METADATA_DISABLED=true",
            "ECR_REMEDIATOR_MODE=promote",
            "ECR_REMEDIATOR_PUT_TPS=10",
            f"ECR_REMEDIATOR_QUEUE_URL={queue_url}",
            *extra_env,
        ]
    )
    (ROOT / "target").mkdir(exist_ok=True)
    # A file, not --env-var: that one splits values on commas.
    env_file = ROOT / "target" / f"cargo-lambda-env-{port}"
    env_file.write_text(env_lines + "\n")
    log = open(ROOT / "target" / "cargo-lambda-watch.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(CARGO_LAMBDA),
            "lambda",
            "watch",
            "--bin",
            "bootstrap",
            "--ignore-changes",
            "-A",
            "127.0.0.1",
            "-P",
            str(port),
            "--env-file",
            str(env_file),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 900  # a first build on a fresh machine compiles the AWS SDK
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((ROOT / "target" / "cargo-lambda-watch.log").read_text()[-3000:]) from None
                time.sleep(1)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        env_file.unlink(missing_ok=True)


@pytest.fixture()
def lambda_runtime(emulator: EmulatorProcess, client_factory: Any) -> Iterator[int]:
    """The function for this account only."""
    queue_url = client_factory("sqs").create_queue(QueueName=SWEEP_QUEUE)["QueueUrl"]
    with run_function(emulator, queue_url, []) as port:
        yield port


def invoke(port: int, payload: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    data = tmp_path / f"payload-{time.monotonic_ns()}.json"
    data.write_text(json.dumps(payload))
    return subprocess.run(
        [
            str(CARGO_LAMBDA),
            "lambda",
            "invoke",
            "bootstrap",
            "-A",
            "127.0.0.1",
            "-P",
            str(port),
            "--data-file",
            str(data),
            "--output-format",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_bootstrap_remediates_a_push_event_and_an_sqs_batch(lambda_runtime: int, ecr: Any, repo: str, salt: str, tmp_path: Path) -> None:
    layout = build_buildx_layout(salt=salt)
    stored = push(ecr, repo, layout, ["v7"])
    index, runnable = stored[-1].digest, stored[0].digest

    direct = invoke(lambda_runtime, push_event(repo, index, "v7", stored[-1].media_type), tmp_path)
    assert direct.returncode == 0, direct.stderr
    assert json.loads(direct.stdout) == {"result": "handled", "outcome": "remediated", "digest": index}
    tags = {t: d["imageDigest"] for d in ecr.describe_images(repositoryName=repo)["imageDetails"] for t in d.get("imageTags", [])}
    assert tags == {"v7": runnable, "v7-index": index}

    # The same push again, inside an SQS batch with a child push: nothing fails, nothing changes.
    batch = {
        "Records": [
            {"messageId": "m1", "eventSource": "aws:sqs", "body": json.dumps(push_event(repo, index, "v7", stored[-1].media_type))},
            {"messageId": "m2", "eventSource": "aws:sqs", "body": json.dumps(push_event(repo, runnable, "", stored[0].media_type))},
        ]
    }
    batched = invoke(lambda_runtime, batch, tmp_path)
    assert batched.returncode == 0, batched.stderr
    assert json.loads(batched.stdout) == {"batchItemFailures": []}


def log_documents() -> list[dict[str, Any]]:
    """The JSON documents the function printed (cargo lambda passes its stdout through)."""
    out = []
    for line in (ROOT / "target" / "cargo-lambda-watch.log").read_text().splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            doc = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


def check_emf(doc: dict[str, Any]) -> None:
    """What CloudWatch requires of an embedded-metric-format document."""
    meta = doc["_aws"]
    assert isinstance(meta["Timestamp"], int)
    for directive in meta["CloudWatchMetrics"]:
        assert directive["Namespace"]
        for metric in directive["Metrics"]:
            assert isinstance(doc[metric["Name"]], int | float), metric
        for dimension_set in directive["Dimensions"]:
            assert len(dimension_set) <= 30
            for dimension in dimension_set:
                assert isinstance(doc[dimension], str), dimension


def test_each_record_is_logged_with_its_request_id_and_metrics(lambda_runtime: int, ecr: Any, repo: str, salt: str, tmp_path: Path) -> None:
    layout = build_buildx_layout(salt=salt)
    stored = push(ecr, repo, layout, ["v8"])
    index = stored[-1].digest
    result = invoke(lambda_runtime, push_event(repo, index, "v8", stored[-1].media_type), tmp_path)
    assert result.returncode == 0, result.stderr
    docs: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        docs = log_documents()
        if any(d.get("_aws") and d.get("index_digest") == index for d in docs):
            break
        time.sleep(0.2)
    records = [d["audit_record"] for d in docs if d.get("audit_record", {}).get("index_digest") == index]
    metrics = [d for d in docs if "_aws" in d and d.get("index_digest") == index]
    assert len(records) == 1 and len(metrics) == 1, docs[-6:]
    record, emf = records[0], metrics[0]
    assert record["request_id"], record
    assert emf["request_id"] == record["request_id"]
    assert record["policy"]["source"] == "no rule matched: the default policy"
    check_emf(emf)
    assert (emf["Outcome"], emf["Reason"], emf["Images"], emf["TagsMoved"]) == ("remediated", "none", 1, 1)
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "ECRRemediator"


def test_a_malformed_event_is_answered_not_crashed_on(lambda_runtime: int, tmp_path: Path) -> None:
    result = invoke(lambda_runtime, {"source": "aws.ecr", "detail-type": "ECR Image Action", "detail": {"oops": 1}}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outcome"] == "skipped"


def test_a_scheduled_sweep_enqueues_requests_that_the_function_then_handles(
    lambda_runtime: int, client_factory: Any, ecr: Any, repo: str, salt: str, tmp_path: Path
) -> None:
    sqs = client_factory("sqs")
    queue_url = sqs.get_queue_url(QueueName=SWEEP_QUEUE)["QueueUrl"]
    stored = push(ecr, repo, build_buildx_layout(salt=salt), ["v9"])
    index, runnable = stored[-1].digest, stored[0].digest

    # The schedule's payload: the function lists the registry and enqueues.
    result = invoke(lambda_runtime, {"ecr-remediator": "sweep"}, tmp_path)
    assert result.returncode == 0, result.stderr
    swept = json.loads(result.stdout)
    assert swept["result"] == "swept" and swept["account"] is None, "this account only"
    summary = swept["summary"]
    assert summary["enqueued"] >= 1 and summary["repositories_scanned"] >= 1, summary
    ours = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            break
        for m in got:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            if json.loads(m["Body"]).get("repository") == repo:
                ours.append(m)
    assert len(ours) == 1, ours
    request = json.loads(ours[0]["Body"])
    assert request["ecr-remediator"] == "remediate" and request["digest"] == index and request["tag"] == "v9"

    # The request comes back from the queue as any push event would.
    batch = {"Records": [{"messageId": ours[0]["MessageId"], "eventSource": "aws:sqs", "body": ours[0]["Body"]}]}
    handled = invoke(lambda_runtime, batch, tmp_path)
    assert handled.returncode == 0, handled.stderr
    assert json.loads(handled.stdout) == {"batchItemFailures": []}
    tags = {t: d["imageDigest"] for d in ecr.describe_images(repositoryName=repo)["imageDetails"] for t in d.get("imageTags", [])}
    assert tags == {"v9": runnable, "v9-index": index}


def drain(sqs: Any, queue_url: str, keep: Any) -> list[dict[str, Any]]:
    """Receives and deletes every message; returns the bodies `keep` accepts."""
    kept = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return kept
        for m in got:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            body = json.loads(m["Body"])
            if keep(body):
                kept.append({"messageId": m["MessageId"], "eventSource": "aws:sqs", "body": m["Body"]})


def test_the_hub_schedule_fans_out_one_sweep_per_member_account_and_one_failing_stops_none(
    emulator: EmulatorProcess, client_factory: Any, aws_session: Any, salt: str, tmp_path: Path
) -> None:
    """A hub with two member accounts: the schedule enqueues one sweep request per account; the member
    with the role has its image found and then remediated there; the one without fails alone."""

    member, missing, external_id = "222222222222", "444444444444", "hub-secret-0123456789"
    me = client_factory("sts").get_caller_identity()
    in_member = account_session(emulator.url, member)
    trust = member_role_trust(me["Arn"], external_id)
    iam = in_member.client("iam", endpoint_url=emulator.url)
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName="ecr-remediator-member", AssumeRolePolicyDocument=json.dumps(trust))
    member_ecr = in_member.client("ecr", endpoint_url=emulator.url)
    repo = f"hub-sweep-{salt}"
    member_ecr.create_repository(repositoryName=repo)
    stored = push(member_ecr, repo, build_buildx_layout(salt=salt), ["v1"])
    index, runnable = stored[-1].digest, stored[0].digest

    sqs = client_factory("sqs")
    queue_url = sqs.create_queue(QueueName="e2e-hub-requests")["QueueUrl"]
    hub_env = [
        "ECR_REMEDIATOR_MEMBER_ROLE=ecr-remediator-member",
        f"ECR_REMEDIATOR_EXTERNAL_ID={external_id}",
        f"ECR_REMEDIATOR_ACCOUNT_ID={me['Account']}",
        f"ECR_REMEDIATOR_MEMBER_ACCOUNTS={member},{missing}",
    ]
    with run_function(emulator, queue_url, hub_env) as port:
        # The schedule fans out: one request per account on the queue.
        result = invoke(port, {"ecr-remediator": "sweep"}, tmp_path)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"result": "fanned_out", "accounts": [None, member, missing]}
        requests = drain(sqs, queue_url, lambda b: b.get("ecr-remediator") == "sweep")
        assert sorted(json.loads(r["body"])["account"] or "" for r in requests) == ["", member, missing], requests

        # Each account's request, as the queue delivers it: the one without a role fails alone and
        # is left for redelivery (then the dead-letter queue); the others enqueue their images.
        handled = invoke(port, {"Records": requests}, tmp_path)
        assert handled.returncode == 0, handled.stderr
        failed = [f["itemIdentifier"] for f in json.loads(handled.stdout)["batchItemFailures"]]
        missing_id = next(r["messageId"] for r in requests if json.loads(r["body"])["account"] == missing)
        assert failed == [missing_id], handled.stdout

        ours = drain(sqs, queue_url, lambda b: b.get("repository") == repo)
        assert len(ours) == 1, ours
        request = json.loads(ours[0]["body"])
        assert request["account"] == member and request["digest"] == index

        handled = invoke(port, {"Records": ours}, tmp_path)
        assert handled.returncode == 0, handled.stderr
        assert json.loads(handled.stdout) == {"batchItemFailures": []}
    tags = {t: d["imageDigest"] for d in member_ecr.describe_images(repositoryName=repo)["imageDetails"] for t in d.get("imageTags", [])}
    assert tags == {"v1": runnable, "v1-index": index}, "remediated in the member account"
