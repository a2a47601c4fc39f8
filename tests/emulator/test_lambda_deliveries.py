"""Issue 36's reproductions through the built Lambda function (`bootstrap`),
as the Lambda runtime calls it: cargo-lambda's runtime API emulator
(`cargo lambda watch`, see test_lambda_e2e.py) sends each payload as Lambda's
SQS event source mapping would (an SQS batch, each record with its message id
and `ApproximateReceiveCount`), against the ECR emulator. The audit trail is
read where the stack keeps it: an audit rule on the bus delivering the records
to a CloudWatch Logs group, the one the function reads back
(`ECR_REMEDIATOR_AUDIT_LOG_GROUP`).

Faults on `PutEvents` and `GetParameter` apply to the whole emulator: each
test sets them through the `control` fixture, which clears them after it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ecr_emulator.oci import build_buildx_layout
from ecr_emulator.push import push
from ecr_emulator.testing import Control, EmulatorProcess, push_event, wait_for
from test_lambda_e2e import invoke, run_function

pytestmark = pytest.mark.emulator_only

ACCOUNT = "123456789012"
REGION = "us-east-1"


# -- the audit trail, as the stack wires it ----------------------------------


class AuditTrail:
    """A log group fed by an audit rule on the default bus (the records of
    some repositories, or of some event ids), as the stack's audit rule feeds
    its audit log group."""

    def __init__(self, client_factory: Any, salt: str):
        self.logs = client_factory("logs")
        self.events = client_factory("events")
        self.group = f"/test/deliveries/{salt}"
        self.rules: list[str] = []
        self.logs.create_log_group(logGroupName=self.group)

    @property
    def arn(self) -> str:
        return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{self.group}"

    def route(self, **detail: list[str]) -> None:
        """Sends the audit records whose detail matches (e.g. ``repository=[...]``) to the log group."""
        name = f"deliveries-audit-{uuid.uuid4().hex[:12]}"
        pattern = {"source": ["ecr-remediator"], "detail-type": ["ECR Remediation Record"], "detail": detail}
        self.events.put_rule(Name=name, EventPattern=json.dumps(pattern))
        self.events.put_targets(Rule=name, Targets=[{"Id": "audit-log-group", "Arn": self.arn}])
        self.rules.append(name)

    def records(self) -> list[dict[str, Any]]:
        """Every record in the log group, oldest first."""
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"logGroupName": self.group}
        while True:
            page = self.logs.filter_log_events(**kwargs)
            events.extend(page["events"])
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
        events.sort(key=lambda e: e["timestamp"])
        return [json.loads(e["message"])["detail"] for e in events]

    def wait(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The records, once at least `count` arrived (or `timeout` passed)."""

        def enough() -> list[dict[str, Any]] | None:
            records = self.records()
            return records if len(records) >= count else None

        return wait_for(enough, timeout) or self.records()

    def close(self) -> None:
        for name in self.rules:
            self.events.remove_targets(Rule=name, Ids=["audit-log-group"])
            self.events.delete_rule(Name=name)
        self.logs.delete_log_group(logGroupName=self.group)


@pytest.fixture()
def trail(client_factory: Any, salt: str) -> Iterator[AuditTrail]:
    t = AuditTrail(client_factory, salt)
    try:
        yield t
    finally:
        t.close()


# -- what Lambda's SQS event source mapping sends ----------------------------


class Queue:
    """An SQS queue, and the batches Lambda's event source mapping would make of its messages."""

    def __init__(self, sqs: Any, name: str):
        self.sqs = sqs
        self.url = sqs.create_queue(QueueName=name)["QueueUrl"]
        self.arn = sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def send(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=body)

    def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        """One message, received as the event source mapping receives it (every system attribute)."""

        def poll() -> dict[str, Any] | None:
            got = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=1, AttributeNames=["All"]).get("Messages", [])
            return got[0] if got else None

        message = wait_for(poll, timeout)
        assert message, f"no message on {self.url} within {timeout} s"
        return message

    def record(self, message: dict[str, Any], **attributes: str) -> dict[str, Any]:
        """`message` as a record of the SQS event Lambda invokes the function with; `attributes`
        override its system attributes (``ApproximateReceiveCount="2"``)."""
        attrs = {
            k: message["Attributes"][k]
            for k in ("ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp")
            if k in message["Attributes"]
        }
        attrs.update(attributes)
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": attrs,
            "messageAttributes": {},
            "md5OfBody": hashlib.md5(message["Body"].encode()).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.arn,
            "awsRegion": REGION,
        }

    def settle(self, message: dict[str, Any], response: dict[str, Any]) -> None:
        """What the event source mapping does with the function's answer: deletes the message unless
        the partial batch response names it; a failed one comes back after its visibility timeout
        (here at once)."""
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        if message["MessageId"] in failed:
            self.sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
        else:
            self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def close(self) -> None:
        self.sqs.delete_queue(QueueUrl=self.url)


@pytest.fixture()
def queue(client_factory: Any, salt: str) -> Iterator[Queue]:
    q = Queue(client_factory("sqs"), f"deliveries-{salt}")
    try:
        yield q
    finally:
        q.close()


#: An event the function ignores (not a push): no registry call, no record.
IGNORED = {
    "version": "0",
    "id": "warm-up",
    "detail-type": "ECR Image Action",
    "source": "aws.ecr",
    "account": ACCOUNT,
    "region": REGION,
    "resources": [],
    "detail": {
        "result": "SUCCESS",
        "repository-name": "warm-up",
        "image-digest": "sha256:" + "0" * 64,
        "action-type": "DELETE",
        "image-tag": "x",
    },
}


#: What the stack always sets (infra/template.yaml): its own account, and the queue's receive limit.
STACK_ENV = [f"ECR_REMEDIATOR_ACCOUNT_ID={ACCOUNT}", "ECR_REMEDIATOR_MAX_RECEIVE_COUNT=5"]


@contextlib.contextmanager
def function(emulator: EmulatorProcess, queue_url: str, env: list[str], tmp_path: Path) -> Iterator[int]:
    """`bootstrap` under `cargo lambda watch` (see run_function) with the stack's settings and `env`,
    started: the runtime API emulator builds and starts the function on its first invocation, so an
    ignored event goes first and a build never delays what a test times (a grace period, a refresh)."""
    with run_function(emulator, queue_url, [*STACK_ENV, *env]) as port:
        started = invoke(port, IGNORED, tmp_path)
        assert started.returncode == 0, f"the function did not start: {started.stderr[-3000:]}"
        assert json.loads(started.stdout).get("result") == "ignored", started.stdout
        yield port


def deliver(port: int, records: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    """Invokes the function with one SQS batch; returns its partial batch response."""
    result = invoke(port, {"Records": records}, tmp_path)
    assert result.returncode == 0, f"the invocation failed: {result.stderr[-3000:]}"
    response = json.loads(result.stdout)
    assert set(response) == {"batchItemFailures"}, f"not a partial batch response: {response}"
    return response


def event_now(repo: str, stored: list[Any], tag: str) -> dict[str, Any]:
    """The PUSH event of `stored`'s index, stamped now, as ECR sends it (the grace period runs from its time)."""
    event = push_event(repo, stored[-1].digest, tag, stored[-1].media_type, event_id=str(uuid.uuid4()))
    event["time"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return event


def tags_of(ecr: Any, repo: str) -> dict[str, str]:
    return {t: d["imageDigest"] for d in ecr.describe_images(repositoryName=repo)["imageDetails"] for t in d.get("imageTags", [])}


def digests_in(ecr: Any, repo: str) -> set[str]:
    return {d["imageDigest"] for d in ecr.describe_images(repositoryName=repo)["imageDetails"]}


# -- 1. another account's event, no member role ------------------------------


def test_another_accounts_event_is_refused_with_no_registry_call(
    emulator: EmulatorProcess,
    control: Control,
    ecr: Any,
    repo: str,
    salt: str,
    queue: Queue,
    trail: AuditTrail,
    tmp_path: Path,
) -> None:
    """A push event naming account 333333333333, to a single-account deployment
    (ECR_REMEDIATOR_ACCOUNT_ID set, no member role), whose repository also exists
    here: refused before any registry call, nothing moved, recorded once."""
    stored = push(ecr, repo, build_buildx_layout(salt=salt), ["v1"])
    index = stored[-1].digest
    trail.route(repository=[repo])
    event = event_now(repo, stored, "v1")
    event["account"] = "333333333333"
    queue.send(json.dumps(event))
    message = queue.receive()
    with function(emulator, queue.url, [f"ECR_REMEDIATOR_AUDIT_LOG_GROUP={trail.group}"], tmp_path) as port:
        before, everywhere = control.calls(repo), control.calls()
        response = deliver(port, [queue.record(message)], tmp_path)
        after, since = control.calls(repo), control.calls()
    assert response == {"batchItemFailures": []}, "a refusal is final: not delivered again"
    assert after == before, f"no registry call on {repo}: {before} -> {after}"
    made = {k: n - everywhere.get(k, 0) for k, n in since.items() if n != everywhere.get(k, 0)}
    assert not [k for k in made if k.startswith("ecr:") or k == "sts:AssumeRole"], f"no registry call, no role assumed: {made}"
    assert tags_of(ecr, repo)["v1"] == index, "the tag was not moved"
    records = trail.wait(1)
    assert len(records) == 1, records
    record = records[0]
    assert (record["code"], record["account"], record["final"]) == ("other_account", "333333333333", True), record
    assert request_id_parts(record)[1] == message["MessageId"], record["request_id"]


# -- 2. oversized input --------------------------------------------------------

#: `MAX_DETAIL_BYTES` (src/engine/audit.rs): a record fits one EventBridge entry under the former 256 KB limit.
MAX_DETAIL_BYTES = 256 * 1024 - 1024


def test_oversized_input_is_recorded_once_within_the_entry_limit(
    emulator: EmulatorProcess,
    control: Control,
    repo: str,
    salt: str,
    queue: Queue,
    trail: AuditTrail,
    tmp_path: Path,
) -> None:
    """Two messages near SQS's 256 KiB limit in one batch: a remediate request whose id is 261,800
    bytes, and an ECR event whose repository-name is 100,000 `"`. Each is answered (no batch item
    failure: never retried for its record) and recorded exactly once, its long fields cut, within
    EventBridge's former 256 KB entry limit (the emulator enforces it for this test)."""
    malformed_id = f"oversized-{salt}"
    trail.route(repository=[repo])
    trail.route(event_id=[malformed_id])
    request = {"ecr-remediator": "remediate", "id": "i" * 261_800, "repository": repo, "digest": "sha256:" + "0" * 64, "tag": "v1"}
    event = push_event(repo, "sha256:" + "1" * 64, "v1", "application/vnd.oci.image.index.v1+json", event_id=malformed_id)
    event["detail"]["repository-name"] = '"' * 100_000
    bodies = [json.dumps(request), json.dumps(event)]
    assert all(200_000 < len(b.encode()) <= 256 * 1024 for b in bodies), "both near SQS's limit, both accepted by it"
    for body in bodies:
        queue.send(body)
    messages = [queue.receive(), queue.receive()]
    control.config(put_events_max_bytes=256 * 1024)
    try:
        with function(emulator, queue.url, [], tmp_path) as port:
            before = control.calls().get("events:PutEvents", 0)
            response = deliver(port, [queue.record(m) for m in messages], tmp_path)
            put_events = control.calls().get("events:PutEvents", 0) - before
    finally:
        control.config(put_events_max_bytes=1024 * 1024)
    assert response == {"batchItemFailures": []}, "neither message is delivered again"
    assert put_events == 2, f"one PutEvents per message, none retried: {put_events}"
    records = trail.wait(2)
    by_repository = [r for r in records if r.get("repository") == repo]
    by_event = [r for r in records if r.get("event_id") == malformed_id]
    assert len(by_repository) == 1 and len(by_event) == 1 and len(records) == 2, f"one record each: {[r['code'] for r in records]}"
    for record, code in ((by_repository[0], "index_gone"), (by_event[0], "malformed_event")):
        written = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
        assert len(written) <= MAX_DETAIL_BYTES, f"{code}: {len(written)} bytes"
        assert record["code"] == code, record["code"]
        assert record["fields_cut"] >= 1, f"{code}: the long fields are cut and counted: {written[:400]!r}"
        assert record["final"] is True, code
    assert by_repository[0]["fields_cut"] == 1, by_repository[0]["fields_cut"]
    assert by_repository[0]["event_id"].startswith("iiii") and by_repository[0]["event_id"].endswith("more bytes cut]")


# -- 3. the policy's refresh hangs --------------------------------------------

#: `REFRESH_WAIT` and `RELOAD_EVERY` (src/service/live_policy.rs).
REFRESH_WAIT_S = 2.0
RELOAD_EVERY_S = 60.0


def test_a_hanging_policy_refresh_delays_a_push_by_the_bound_and_says_stale(
    emulator: EmulatorProcess,
    control: Control,
    client_factory: Any,
    ecr: Any,
    repo: str,
    salt: str,
    queue: Queue,
    trail: AuditTrail,
    tmp_path: Path,
) -> None:
    """The policy in SSM (ECR_REMEDIATOR_POLICY_PARAMETER) is read at start, then again at most once a
    minute. A minute on, a new version is stored and SSM stops answering: the next push is handled
    under the last policy read, waiting on the refresh no longer than its bound (well inside even the
    smallest Timeout the template allows, 10 s), and its record says the policy may be stale."""
    ssm = client_factory("ssm")
    parameter = f"/deliveries/{salt}/policy"
    ssm.put_parameter(Name=parameter, Value='[default]\nmode = "promote"\n', Type="String")
    trail.route(repository=[repo])
    first = push(ecr, repo, build_buildx_layout(salt=f"{salt}-1"), ["a"])
    second = push(ecr, repo, build_buildx_layout(salt=f"{salt}-2"), ["b"])
    # The policy comes from the parameter alone (run_function's mode is unset: both would be refused).
    env = ["ECR_REMEDIATOR_MODE=", f"ECR_REMEDIATOR_POLICY_PARAMETER={parameter}"]
    before = control.calls().get("ssm:GetParameter", 0)
    try:
        with function(emulator, queue.url, env, tmp_path) as port:
            # The policy is read once, when the function starts.
            queue.send(json.dumps(event_now(repo, first, "a")))
            message = queue.receive()
            response = deliver(port, [queue.record(message)], tmp_path)
            queue.settle(message, response)
            assert response == {"batchItemFailures": []}
            read_at = time.monotonic()
            assert control.calls().get("ssm:GetParameter", 0) - before == 1, "read once, at start"
            assert tags_of(ecr, repo)["a"] == first[0].digest, "promoted under version 1"

            # A new version that would only observe, and SSM hanging once the minute is up.
            ssm.put_parameter(Name=parameter, Value='[default]\nmode = "observe"\n', Type="String", Overwrite=True)
            time.sleep(max(0.0, read_at + RELOAD_EVERY_S + 1 - time.monotonic()))
            control.fault("ssm:GetParameter", latency_ms=20_000, user_agent="aws-sdk-rust")
            queue.send(json.dumps(event_now(repo, second, "b")))
            message = queue.receive()
            before = control.calls().get("ssm:GetParameter", 0)
            started = time.monotonic()
            response = deliver(port, [queue.record(message)], tmp_path)
            took = time.monotonic() - started
            refreshes = control.calls().get("ssm:GetParameter", 0) - before
            queue.settle(message, response)
    finally:
        ssm.delete_parameter(Name=parameter)
    assert response == {"batchItemFailures": []}
    assert REFRESH_WAIT_S - 0.1 <= took < REFRESH_WAIT_S + 6, f"waited on the hanging refresh for its bound only: {took:.1f} s"
    assert refreshes == 1, f"the handling re-read the policy once (and SSM hung): {refreshes}"
    assert tags_of(ecr, repo)["b"] == second[0].digest, "handled under the last policy read (promote), not the unread version"
    record = next(r for r in trail.records() if r.get("index_digest") == second[-1].digest and r["final"])
    assert record["outcome"] == "remediated", record
    stale = [n for n in record["notes"] if "policy may be stale" in n]
    assert len(stale) == 1, f"the record says the policy may be stale: {record['notes']}"
    assert "no answer within 2 s" in stale[0] and "version 1 applied" in stale[0] and parameter in stale[0], stale[0]


# -- 5 to 7. what a redelivery may claim ----------------------------------------

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def trail_env(trail: AuditTrail, grace: str) -> list[str]:
    """Promote, delete orphans after `grace`, no keep tag, the trail read back."""
    return [
        "ECR_REMEDIATOR_DELETE_ORPHANS=true",
        f"ECR_REMEDIATOR_GRACE_PERIOD={grace}",
        "ECR_REMEDIATOR_KEEP_TAG=false",
        f"ECR_REMEDIATOR_AUDIT_LOG_GROUP={trail.group}",
    ]


def deliver_losing_the_final_record(port: int, control: Control, records: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    """One delivery whose checkpoint reaches the trail and whose final record fails on every attempt
    the function makes (its retries included)."""
    control.fault("events:PutEvents", sequence=["ok"], rate=1.0, error="InternalError", user_agent="aws-sdk-rust")
    before = control.calls().get("events:PutEvents", 0)
    try:
        response = deliver(port, records, tmp_path)
        calls = control.calls().get("events:PutEvents", 0) - before
        failed = control.faults()["injected"].get("events:PutEvents", {}).get("InternalError", 0)
    finally:
        control.clear_faults()
    assert calls >= 2 and failed == calls - 1, (
        f"the checkpoint went through, then every attempt at the final record failed: {calls} calls, {failed} failed"
    )
    return response


def request_id_parts(record: dict[str, Any]) -> tuple[str, str]:
    """(Lambda request id, SQS message id) of a record written inside an SQS batch."""
    lambda_id, _, message_id = record["request_id"].partition("/")
    assert UUID.fullmatch(lambda_id), f"<lambda request id>/<message id>: {record['request_id']}"
    return lambda_id, message_id


def deletions(record: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return sorted((a["digest"], a["outcome"], a.get("earlier_attempt")) for a in record["actions"] if a["action"] == "delete")


#: A grace period short enough for a test, long enough that the push (an invocation away) defers.
GRACE_S = 3


def test_a_follow_ups_redelivery_says_what_its_first_delivery_did(
    emulator: EmulatorProcess,
    control: Control,
    ecr: Any,
    repo: str,
    salt: str,
    queue: Queue,
    trail: AuditTrail,
    tmp_path: Path,
) -> None:
    """Issue 36, item 5: the push defers its deletions and enqueues its follow-up on the queue; the
    follow-up, delivered as Lambda delivers it, deletes and loses its final record; SQS delivers it
    again (receive count 2) and that delivery's record says what the first one did."""
    trail.route(repository=[repo])
    stored = push(ecr, repo, build_buildx_layout(salt=salt), ["v5"])
    index, attestation, runnable = stored[-1].digest, stored[1].digest, stored[0].digest
    with function(emulator, queue.url, trail_env(trail, f"{GRACE_S}s"), tmp_path) as port:
        event = event_now(repo, stored, "v5")
        queue.send(json.dumps(event))
        message = queue.receive()
        response = deliver(port, [queue.record(message)], tmp_path)
        queue.settle(message, response)
        assert response == {"batchItemFailures": []}
        pushed_at = time.monotonic()
        assert digests_in(ecr, repo) == {index, attestation, runnable}, "the push deferred its deletions"

        follow_up = queue.receive(timeout=15)
        assert json.loads(follow_up["Body"])["id"] == f"{event['id']}/follow-up-1", follow_up["Body"]
        time.sleep(max(0.0, pushed_at + GRACE_S + 0.2 - time.monotonic()))  # the grace period is over
        first = queue.record(follow_up)
        assert first["attributes"]["ApproximateReceiveCount"] == "1"
        response = deliver_losing_the_final_record(port, control, [first], tmp_path)
        assert response == {"batchItemFailures": [{"itemIdentifier": follow_up["MessageId"]}]}, "delivered again"
        queue.settle(follow_up, response)
        assert digests_in(ecr, repo) == {runnable}, "the follow-up deleted the index and its attestation"

        again = queue.receive()
        assert again["MessageId"] == follow_up["MessageId"]
        second = queue.record(again)
        assert second["attributes"]["ApproximateReceiveCount"] == "2", second["attributes"]
        response = deliver(port, [second], tmp_path)
        queue.settle(again, response)
        assert response == {"batchItemFailures": []}

    history = [r for r in trail.records() if r.get("index_digest") == index]
    steps = [(r["trigger"], r["outcome"], r["attempt"]) for r in history]
    checkpoint = next(r for r in history if r["trigger"] == "follow_up" and r["outcome"] == "in_progress")
    first_id, message_id = request_id_parts(checkpoint)
    assert message_id == follow_up["MessageId"]
    assert [r["outcome"] for r in history if r["request_id"] == checkpoint["request_id"]] == ["in_progress"], (
        f"its final record was lost: {steps}"
    )
    last = history[-1]
    assert (last["trigger"], last["attempt"], last["final"]) == ("follow_up", 2, True), steps
    assert last["event_id"] == f"{event['id']}/follow-up-1", last["event_id"]
    lambda_id, message_id = request_id_parts(last)
    assert message_id == follow_up["MessageId"] and lambda_id != first_id, "its own delivery: another invocation, the same message"
    assert last["outcome"] == "remediated", last
    assert last["deleted"] == 2 and last["reclaimed_bytes"] > 0, last
    assert deletions(last) == sorted([(index, "applied", 1), (attestation, "applied", 1)]), last["actions"]


def test_a_checkpoint_in_one_repository_is_never_claimed_from_another(
    emulator: EmulatorProcess,
    control: Control,
    ecr: Any,
    repo: str,
    salt: str,
    queue: Queue,
    trail: AuditTrail,
    tmp_path: Path,
) -> None:
    """Issue 36, item 6: a request in repository P deletes and loses its final record (its checkpoint
    stays open); a request with the same id for the same digest in repository Q, delivered with the
    same message id and receive count 2, claims nothing of P's."""
    other = f"{repo}-other"
    ecr.create_repository(repositoryName=other)
    try:
        trail.route(repository=[repo, other])
        stored = push(ecr, repo, build_buildx_layout(salt=salt), ["v6"])
        index, runnable = stored[-1].digest, stored[0].digest
        request_id = f"sweep-repeated-{salt}"

        def request(repository: str) -> str:
            return json.dumps({"ecr-remediator": "remediate", "id": request_id, "repository": repository, "digest": index, "tag": "v6"})

        with function(emulator, queue.url, trail_env(trail, "0s"), tmp_path) as port:
            queue.send(request(repo))
            in_p = queue.receive()
            response = deliver_losing_the_final_record(port, control, [queue.record(in_p)], tmp_path)
            assert response == {"batchItemFailures": [{"itemIdentifier": in_p["MessageId"]}]}
            queue.sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=in_p["ReceiptHandle"])  # on to the dead-letter queue
            assert digests_in(ecr, repo) == {runnable}, "P's delivery deleted the index and its attestation"

            queue.send(request(other))
            in_q = queue.receive()
            forged = queue.record(in_q, ApproximateReceiveCount="2") | {"messageId": in_p["MessageId"]}
            response = deliver(port, [forged], tmp_path)
            queue.settle(in_q, response)
            assert response == {"batchItemFailures": []}
        records = trail.records()
        in_other = [r for r in records if r["repository"] == other]
        assert len(in_other) == 1, in_other
        record = in_other[0]
        summary = {k: record.get(k) for k in ("outcome", "code", "attempt", "deleted", "reclaimed_bytes")}
        assert summary == {"outcome": "skipped", "code": "index_gone", "attempt": 2, "deleted": 0, "reclaimed_bytes": 0}, (
            f"Q never held the image, and nothing of P's is counted: {record}"
        )
        assert deletions(record) == [], f"no deletion of P's copied: {record['actions']}"
        assert all("earlier_attempt" not in a for a in record["actions"]), record["actions"]
        assert [r["outcome"] for r in records if r["repository"] == repo] == ["in_progress"], "P's checkpoint is still open"
    finally:
        ecr.delete_repository(repositoryName=other, force=True)


def test_a_redriven_delivery_at_receive_count_one_still_reconciles(
    emulator: EmulatorProcess,
    control: Control,
    ecr: Any,
    repo: str,
    salt: str,
    queue: Queue,
    trail: AuditTrail,
    tmp_path: Path,
) -> None:
    """Issue 36, item 7: a push's delivery deletes and loses its final record; the message is redriven
    from the dead-letter queue, which starts the receive count again: delivered with
    ApproximateReceiveCount 1 (the same message id, another invocation), it still says what the
    cut delivery did."""
    trail.route(repository=[repo])
    stored = push(ecr, repo, build_buildx_layout(salt=salt), ["v7"])
    index, attestation, runnable = stored[-1].digest, stored[1].digest, stored[0].digest
    queue.send(json.dumps(event_now(repo, stored, "v7")))
    message = queue.receive()
    with function(emulator, queue.url, trail_env(trail, "0s"), tmp_path) as port:
        cut = queue.record(message)
        response = deliver_losing_the_final_record(port, control, [cut], tmp_path)
        assert response == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
        assert digests_in(ecr, repo) == {runnable}, "the cut delivery deleted the index and its attestation"
        redriven = cut | {"receiptHandle": uuid.uuid4().hex, "attributes": cut["attributes"] | {"ApproximateReceiveCount": "1"}}
        assert deliver(port, [redriven], tmp_path) == {"batchItemFailures": []}
    history = [r for r in trail.records() if r.get("index_digest") == index]
    steps = [(r["outcome"], r["attempt"], r["request_id"]) for r in history]
    cut_id, _ = request_id_parts(history[0])
    assert [r["outcome"] for r in history if r["request_id"] == history[0]["request_id"]] == ["in_progress"], (
        f"its final record was lost: {steps}"
    )
    last = history[-1]
    lambda_id, message_id = request_id_parts(last)
    assert message_id == message["MessageId"] and lambda_id != cut_id, steps
    assert (last["attempt"], last["final"], last["outcome"]) == (1, True, "remediated"), steps
    assert last["deleted"] == 2 and last["reclaimed_bytes"] > 0, last
    assert deletions(last) == sorted([(index, "applied", 1), (attestation, "applied", 1)]), last["actions"]
