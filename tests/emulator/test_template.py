"""infra/template.yaml: its event pattern and its wiring, read from the template.

The SAM template is transformed to CloudFormation with aws-sam-translator (the
version aws-sam-cli uses) and deployed into the emulator's CloudFormation
(moto). The trigger rule's pattern is then read back from EventBridge, as
deployed, and tested against fixture events with TestEventPattern, and a real
push into the emulator's ECR is followed to the deployed queue.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ecr_emulator.oci import build_buildx_layout
from ecr_emulator.push import push
from ecr_emulator.testing import account_session

pytestmark = pytest.mark.emulator_only

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "template.yaml"
INDEX = "application/vnd.oci.image.index.v1+json"
LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_BUCKET = "ecr-remediator-artifacts"


def cloudformation(parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """The template after the SAM transform (code from a stand-in S3 object)."""
    from cfnlint.decode import cfn_yaml
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    template = json.loads(json.dumps(cfn_yaml.load(str(TEMPLATE))))
    template["Resources"]["Function"]["Properties"]["CodeUri"] = f"s3://{ARTIFACT_BUCKET}/bootstrap.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return transform(template, parameters or {}, NoManagedPolicies())


@pytest.fixture(scope="module")
def clients(emulator: Any, client_factory: Any) -> dict[str, Any]:
    return {name: client_factory(name) for name in ("cloudformation", "events", "sqs", "lambda", "iam", "logs", "s3", "ecr")}


Stack = dict[str, Any]
#: The tests' own principal (moto's, for the static test credentials): the operator the module's
#: stack names in AuditWriterArns, as a team names the role it runs `--stack` commands with.
OPERATOR = "arn:aws:iam::123456789012:user/moto"


def deploy(clients: dict[str, Any], name: str, parameters: dict[str, str]) -> Stack:
    s3 = clients["s3"]
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=ARTIFACT_BUCKET)
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("bootstrap", "stand-in: the function is exercised by test_lambda_e2e.py")
    s3.put_object(Bucket=ARTIFACT_BUCKET, Key="bootstrap.zip", Body=code.getvalue())
    cf = clients["cloudformation"]
    cf.create_stack(
        StackName=name,
        TemplateBody=json.dumps(cloudformation()),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    stack = cf.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    resources = {r["LogicalResourceId"]: r for r in cf.list_stack_resources(StackName=name)["StackResourceSummaries"]}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return {"name": name, "resources": resources, "outputs": outputs}


@pytest.fixture(scope="module")
def stack(clients: dict[str, Any]) -> Iterator[Stack]:
    parameters = {"RepositoryPrefixes": "team-a/,svc-", "Mode": "promote", "DeleteOrphans": "true", "AuditWriterArns": OPERATOR}
    deployed = deploy(clients, "remediator", parameters)
    yield deployed
    clients["cloudformation"].delete_stack(StackName="remediator")


def physical(stack: Stack, logical: str) -> str:
    return stack["resources"][logical]["PhysicalResourceId"]


def event(detail_type: str = "ECR Image Action", source: str = "aws.ecr", **detail: Any) -> dict[str, Any]:
    base = {
        "result": "SUCCESS",
        "repository-name": "team-a/api",
        "image-digest": "sha256:" + "a" * 64,
        "action-type": "PUSH",
        "image-tag": "v7",
        "manifest-media-type": INDEX,
    }
    base.update({k.replace("_", "-"): v for k, v in detail.items()})
    return {
        "version": "0",
        "id": "f1b2c3d4-0000-4000-8000-000000000000",
        "detail-type": detail_type,
        "source": source,
        "account": "123456789012",
        "time": "2026-11-23T12:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": base,
    }


CASES = [
    ("buildx index push", event(), True),
    ("manifest list push", event(manifest_media_type=LIST), True),
    ("second selected prefix", event(repository_name="svc-billing"), True),
    (
        "child manifest push",
        event(image_tag="", manifest_media_type=IMAGE, artifact_media_type="application/vnd.oci.image.config.v1+json"),
        False,
    ),
    (
        "own retag: v7 onto the image manifest",
        event(manifest_media_type=IMAGE, artifact_media_type="application/vnd.oci.image.config.v1+json"),
        False,
    ),
    ("own keep tag on the index", event(image_tag="v7-index"), False),
    ("DELETE", event(action_type="DELETE"), False),
    ("FAILURE", event(result="FAILURE"), False),
    ("scan", event(detail_type="ECR Image Scan"), False),
    ("replication", event(detail_type="ECR Replication Action"), False),
    ("referrer action", event(detail_type="ECR Referrer Action"), False),
    ("storage class change", event(action_type="UPDATE_STORAGE_CLASS"), False),
    ("repository outside the selection", event(repository_name="team-b/api"), False),
    ("prefix must be a prefix", event(repository_name="x-team-a/api"), False),
    ("another source", event(source="aws.s3"), False),
]


@pytest.mark.parametrize(("name", "fixture_event", "expected"), CASES, ids=[c[0] for c in CASES])
def test_the_deployed_trigger_pattern(
    stack: Stack, clients: dict[str, Any], name: str, fixture_event: dict[str, Any], expected: bool
) -> None:
    rule = clients["events"].describe_rule(Name=physical(stack, "PushRule"))
    result = clients["events"].test_event_pattern(EventPattern=rule["EventPattern"], Event=json.dumps(fixture_event))
    assert result["Result"] is expected, f"{name}: {rule['EventPattern']}"


def replication(tag: str = "v7", repository_name: str = "team-a/api", result: str = "SUCCESS") -> dict[str, Any]:
    """An ``ECR Replication Action`` event as the destination registry receives it."""
    e = event(repository_name=repository_name, image_tag=tag, result=result)
    e["detail-type"] = "ECR Replication Action"
    e["detail"] = {
        "result": result,
        "repository-name": repository_name,
        "image-digest": e["detail"]["image-digest"],
        "source-account": "111111111111",
        "action-type": "REPLICATE",
        "source-region": "eu-west-1",
        "image-tag": tag,
    }
    return e


def test_replicated_images_reach_the_queue_through_their_own_rule(stack: Stack, clients: dict[str, Any]) -> None:
    events = clients["events"]
    rule = events.describe_rule(Name=physical(stack, "ReplicationRule"))
    for name, e, expected in [
        ("tagged manifest replicated in", replication(), True),
        ("the source's keep tag (recognised by the function)", replication(tag="v7-index"), True),
        ("untagged child", replication(tag=""), False),
        ("failed replication", replication(result="FAILURE"), False),
        ("outside the selection", replication(repository_name="team-b/api"), False),
        ("a push", event(), False),
    ]:
        got = events.test_event_pattern(EventPattern=rule["EventPattern"], Event=json.dumps(e))["Result"]
        assert got is expected, f"{name}: {rule['EventPattern']}"
    queue_name = stack["outputs"]["PushQueueUrl"].rsplit("/", 1)[-1]
    queue_arn = clients["sqs"].get_queue_attributes(
        QueueUrl=clients["sqs"].get_queue_url(QueueName=queue_name)["QueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    targets = events.list_targets_by_rule(Rule=physical(stack, "ReplicationRule"))["Targets"]
    assert [t["Arn"] for t in targets] == [queue_arn]


def test_without_keep_tag_and_prefixes_every_tagged_index_push_matches(clients: dict[str, Any]) -> None:
    deployed = deploy(clients, "remediator-open", {"KeepTag": "false", "AuditBus": "default"})
    try:
        pattern = clients["events"].describe_rule(Name=physical(deployed, "PushRule"))["EventPattern"]
        for e, expected in [
            (event(repository_name="anything/at-all"), True),
            (event(image_tag="v7-index"), True),
            (event(manifest_media_type=IMAGE), False),
        ]:
            assert clients["events"].test_event_pattern(EventPattern=pattern, Event=json.dumps(e))["Result"] is expected
    finally:
        clients["cloudformation"].delete_stack(StackName="remediator-open")


def test_a_real_push_reaches_the_queue_as_one_index_event(stack: Stack, clients: dict[str, Any], salt: str) -> None:
    ecr, sqs = clients["ecr"], clients["sqs"]
    repo = f"team-a/{salt}"
    ecr.create_repository(repositoryName=repo)
    try:
        layout = build_buildx_layout(salt=salt)
        stored = push(ecr, repo, layout, ["v7"])
        # The service's own writes, as it makes them in promote mode.
        index_bytes = layout.blobs[stored[-1].digest].decode()
        ecr.put_image(repositoryName=repo, imageManifest=index_bytes, imageManifestMediaType=INDEX, imageTag="v7-index")
        image_bytes = layout.blobs[stored[0].digest].decode()
        ecr.put_image(repositoryName=repo, imageManifest=image_bytes, imageManifestMediaType=IMAGE, imageTag="v7")
        url = stack["outputs"]["PushQueueUrl"]
        url = sqs.get_queue_url(QueueName=url.rsplit("/", 1)[-1])["QueueUrl"]
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        bodies = [json.loads(m["Body"]) for m in got]
        assert [(b["detail"]["image-digest"], b["detail"]["image-tag"]) for b in bodies] == [(stored[-1].digest, "v7")]
    finally:
        ecr.delete_repository(repositoryName=repo, force=True)


def test_wiring_queue_dead_letter_mapping_audit(stack: Stack, clients: dict[str, Any]) -> None:
    events, sqs, lam = clients["events"], clients["sqs"], clients["lambda"]
    queue_name = stack["outputs"]["PushQueueUrl"].rsplit("/", 1)[-1]
    queue_url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    queue_arn = attributes["QueueArn"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(stack["outputs"]["PushDeadLetterQueueUrl"].rsplit("/", 1)[-1])
    assert int(redrive["maxReceiveCount"]) == 5
    assert attributes.get("SqsManagedSseEnabled") == "true"

    targets = events.list_targets_by_rule(Rule=physical(stack, "PushRule"))["Targets"]
    assert [t["Arn"] for t in targets] == [queue_arn]

    function = stack["outputs"]["FunctionName"]
    mappings = lam.list_event_source_mappings(FunctionName=function)["EventSourceMappings"]
    assert len(mappings) == 1
    mapping = mappings[0]
    assert mapping["EventSourceArn"] == queue_arn
    assert mapping["BatchSize"] == 10
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}

    config = lam.get_function_configuration(FunctionName=function)
    env = config["Environment"]["Variables"]
    assert env["ECR_REMEDIATOR_MODE"] == "promote"
    assert env["ECR_REMEDIATOR_DELETE_ORPHANS"] == "true"
    assert env["ECR_REMEDIATOR_AUDIT_BUS"].endswith(":event-bus/remediator-audit")
    assert "ECR_REMEDIATOR_POLICY_FILE" not in env
    assert str(env["ECR_REMEDIATOR_MAX_RECEIVE_COUNT"]) == "5", "the function knows which delivery is the last"
    assert str(env["ECR_REMEDIATOR_PUT_BURST"]) == "4"
    assert "RUST_LOG" not in env, "RUST_LOG would override the function's ApplicationLogLevel"
    assert config["Runtime"] == "provided.al2023" and config["Handler"] == "bootstrap"
    # moto does not keep Architectures; the transformed template says it.
    transformed = cloudformation()
    assert transformed["Resources"]["Function"]["Properties"]["Architectures"] == [{"Ref": "Architecture"}]
    assert transformed["Parameters"]["Architecture"]["Default"] == "arm64"
    assert transformed["Resources"]["Function"]["Properties"]["LoggingConfig"]["ApplicationLogLevel"] == {"Ref": "LogLevel"}

    bus = "remediator-audit"
    audit_rule = physical(stack, "AuditRule")
    audit_targets = events.list_targets_by_rule(Rule=audit_rule, EventBusName=bus)["Targets"]
    assert [t["Arn"].split(":log-group:")[-1] for t in audit_targets] == [stack["outputs"]["AuditLogGroupName"]]
    archives = events.list_archives()["Archives"]
    assert any(a["EventSourceArn"].endswith(f":event-bus/{bus}") for a in archives)


def test_audit_records_land_in_the_log_group(stack: Stack, clients: dict[str, Any]) -> None:
    record = {"schema": "ecr-remediator/audit-record", "schema_version": 1, "repository": "team-a/api", "outcome": "remediated"}
    reply = clients["events"].put_events(
        Entries=[
            {
                "Source": "ecr-remediator",
                "DetailType": "ECR Remediation Record",
                "Detail": json.dumps(record),
                "EventBusName": "remediator-audit",
            }
        ]
    )
    assert reply["FailedEntryCount"] == 0
    group = stack["outputs"]["AuditLogGroupName"]
    messages = [e["message"] for e in clients["logs"].filter_log_events(logGroupName=group)["events"]]
    assert any(json.loads(m)["detail"] == record for m in messages), messages


def assumed_events_client(clients: dict[str, Any], emulator: Any, role: str) -> Any:
    """An EventBridge client acting as a new role of the account (one any principal of it may assume)."""
    import boto3

    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}],
    }
    arn = clients["iam"].create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    sts = boto3.client(
        "sts", endpoint_url=emulator.url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    c = sts.assume_role(RoleArn=arn, RoleSessionName="writer")["Credentials"]
    session = boto3.Session(
        aws_access_key_id=c["AccessKeyId"],
        aws_secret_access_key=c["SecretAccessKey"],
        aws_session_token=c["SessionToken"],
        region_name="us-east-1",
    )
    return session.client("events", endpoint_url=emulator.url)


def test_only_the_function_and_the_named_operators_may_write_audit_records(stack: Stack, clients: dict[str, Any], emulator: Any) -> None:
    """The created audit bus's policy denies events:PutEvents to every principal but the function's
    role and AuditWriterArns, so a record on it (and a checkpoint the reconciler reads back) is the
    service's: another principal of the account, one whose own policy allows PutEvents, is refused."""
    bus = clients["events"].describe_event_bus(Name="remediator-audit")
    [deny] = json.loads(bus["Policy"])["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "events:PutEvents"), deny
    assert deny["Resource"] == bus["Arn"]
    exempt = sorted(as_list(deny["Condition"]["ArnNotLike"]["aws:PrincipalArn"]))
    assert exempt == sorted([stack["outputs"]["FunctionRoleArn"], OPERATOR]), deny
    record = {"schema": "ecr-remediator/audit-record", "schema_version": 1, "repository": "team-a/api", "outcome": "in_progress"}
    entry = {
        "Source": "ecr-remediator",
        "DetailType": "ECR Remediation Record",
        "Detail": json.dumps(record),
        "EventBusName": "remediator-audit",
    }
    intruder = assumed_events_client(clients, emulator, "remediator-test-intruder")
    try:
        refused = intruder.put_events(Entries=[entry])
    finally:
        clients["iam"].delete_role(RoleName="remediator-test-intruder")
    assert refused["FailedEntryCount"] == 1 and refused["Entries"][0]["ErrorCode"] == "AccessDeniedException", refused
    # The operator the stack names writes, as before (test_audit_records_land_in_the_log_group).
    assert clients["events"].put_events(Entries=[entry])["FailedEntryCount"] == 0
    # Without AuditWriterArns only the function's role is exempt.
    bare = cloudformation()["Resources"]["AuditEventBus"]["Properties"]["Policy"]["Statement"][0]
    assert bare["Condition"]["Null"] == {"aws:PrincipalArn": "false"}, "the archive's replays are not denied"
    assert bare["Condition"]["ArnNotLike"]["aws:PrincipalArn"]["Fn::If"][2] == [{"Fn::GetAtt": ["FunctionRole", "Arn"]}]


def test_audit_writers_are_role_or_user_arns_never_every_principal() -> None:
    """AuditWriterArns takes a role or user ARN, path included, with wildcards for a family of
    roles; not a session ARN (which aws:PrincipalArn never is), not every role of an account."""
    import re

    from cfnlint.decode import cfn_yaml

    pattern = re.compile(cfn_yaml.load(str(TEMPLATE))["Parameters"]["AuditWriterArns"]["AllowedPattern"])
    for ok in (
        "",
        "arn:aws:iam::123456789012:role/platform-deployer",
        "arn:aws:iam::123456789012:role/team/ops-*",
        "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Platform_*",
        "arn:aws-us-gov:iam::123456789012:user/ci",
    ):
        assert pattern.fullmatch(ok), ok
    for refused in (
        "*",
        "arn:aws:iam::123456789012:*",
        "arn:aws:iam::123456789012:role/*",
        "arn:aws:iam::*:role/ops",
        "arn:aws:iam::123456789012:root",
        "arn:aws:sts::123456789012:assumed-role/ops/alice",
    ):
        assert not pattern.fullmatch(refused), refused


def policy_statements(clients: dict[str, Any], stack: Stack) -> list[dict[str, Any]]:
    iam = clients["iam"]
    role = physical(stack, "FunctionRole")
    out = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        doc = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        if isinstance(doc, str):
            # moto returns the stored document as a Python literal, AWS as JSON.
            try:
                doc = json.loads(doc)
            except ValueError:
                doc = ast.literal_eval(doc)
        # moto's CloudFormation keeps an `!If [..., !Ref AWS::NoValue]` list item as
        # null; CloudFormation drops it (conditional statements rely on that).
        out.extend(s for s in doc["Statement"] if s is not None)
    return out


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_least_privilege(stack: Stack, clients: dict[str, Any]) -> None:
    statements = policy_statements(clients, stack)
    writes = ("ecr:PutImage", "ecr:BatchDeleteImage", "events:PutEvents")
    for s in statements:
        actions, resources = as_list(s["Action"]), as_list(s["Resource"])
        if any(a in writes for a in actions):
            assert "*" not in resources, s
    ecr = next(s for s in statements if "ecr:PutImage" in as_list(s["Action"]))
    assert "ecr:BatchDeleteImage" in as_list(ecr["Action"])
    resources = set(as_list(ecr["Resource"]))
    assert resources == {
        "arn:aws:ecr:us-east-1:123456789012:repository/team-a/*",
        "arn:aws:ecr:us-east-1:123456789012:repository/svc-*",
    }
    put_events = next(s for s in statements if "events:PutEvents" in as_list(s["Action"]))
    assert as_list(put_events["Resource"]) == ["arn:aws:events:us-east-1:123456789012:event-bus/remediator-audit"]
    # Deletion on: the read-only workload scan that gates it, and nothing else of ECS or Lambda.
    scan = next(s for s in statements if "ecs:ListClusters" in as_list(s["Action"]))
    assert all(a.split(":")[1].startswith(("List", "Describe", "Get")) for a in as_list(scan["Action"])), scan
    assert {"lambda:ListFunctions", "lambda:GetFunction", "ecs:DescribeServiceRevisions"} <= set(as_list(scan["Action"]))
    missing = workload_scan_calls() - set(as_list(scan["Action"]))
    assert not missing, f"the workload scan calls {missing}, which the role may not: every deletion would be kept"
    # The function's own reads are not pulls (keep_if_pulled_within would keep everything it read).
    exclusion = cloudformation()["Resources"]["OwnReadsAreNotPulls"]
    assert exclusion["Type"] == "AWS::ECR::PullTimeUpdateExclusion"
    assert exclusion["Properties"]["PrincipalArn"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]}
    env = clients["lambda"].get_function_configuration(FunctionName=stack["outputs"]["FunctionName"])["Environment"]["Variables"]
    assert (env["ECR_REMEDIATOR_GRACE_PERIOD"], env["ECR_REMEDIATOR_KEEP_IF_PULLED_WITHIN"]) == ("15m", "30d")
    assert "ECR_REMEDIATOR_QUEUE_URL" in env, "the follow-ups of deferred deletions go on the push queue"
    # A redelivery reads the event's earlier records back from the audit log group, and only from it.
    assert env["ECR_REMEDIATOR_AUDIT_LOG_GROUP"] == stack["outputs"]["AuditLogGroupName"]
    start = next(s for s in statements if "logs:StartQuery" in as_list(s["Action"]))
    assert as_list(start["Action"]) == ["logs:StartQuery"]
    assert "*" not in as_list(start["Resource"]), start
    by_id = next(s for s in statements if "logs:GetQueryResults" in as_list(s["Action"]))
    assert set(as_list(by_id["Action"])) == {"logs:GetQueryResults", "logs:StopQuery"}, "nothing else on *"


def test_no_delete_permission_unless_deletion_is_on(clients: dict[str, Any]) -> None:
    deployed = deploy(clients, "remediator-safe", {})
    try:
        actions = [a for s in policy_statements(clients, deployed) for a in as_list(s["Action"])]
        assert "ecr:PutImage" in actions
        assert "ecr:BatchDeleteImage" not in actions
        assert not [a for a in actions if isinstance(a, str) and a.startswith(("ecs:", "lambda:"))], "no scan without deletion"
        # ListImageReferrers (verifying referrer copies) is authorised by ecr:BatchGetImage; there is no IAM action of its own.
        assert "ecr:BatchGetImage" in actions and "ecr:ListImageReferrers" not in actions
        env = clients["lambda"].get_function_configuration(FunctionName=deployed["outputs"]["FunctionName"])["Environment"]["Variables"]
        assert env["ECR_REMEDIATOR_MODE"] == "promote" and env["ECR_REMEDIATOR_DELETE_ORPHANS"] == "false", (
            "the default fixes the seed case"
        )
        assert env["ECR_REMEDIATOR_PROVENANCE"] == "index", "referrers only once chosen"
    finally:
        clients["cloudformation"].delete_stack(StackName="remediator-safe")


def test_the_scheduled_sweep_enqueues_on_the_push_queue_and_can_be_turned_off(stack: Stack, clients: dict[str, Any]) -> None:
    events = clients["events"]
    rule = events.describe_rule(Name=physical(stack, "SweepRule"))
    assert rule["ScheduleExpression"] == "rate(1 day)" and rule["State"] == "ENABLED"
    function = stack["outputs"]["FunctionName"]
    targets = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert [t["Arn"].rsplit(":", 1)[-1] for t in targets] == [function]
    assert json.loads(targets[0]["Input"]) == {"ecr-remediator": "sweep"}
    env = clients["lambda"].get_function_configuration(FunctionName=function)["Environment"]["Variables"]
    assert env["ECR_REMEDIATOR_QUEUE_URL"].endswith(physical(stack, "PushQueue").rsplit("/", 1)[-1])
    assert env["ECR_REMEDIATOR_SWEEP_PREFIXES"] == "team-a/,svc-"
    statements = policy_statements(clients, stack)
    listing = next(s for s in statements if "ecr:DescribeRepositories" in as_list(s["Action"]))
    assert as_list(listing["Resource"]) == ["arn:aws:ecr:us-east-1:123456789012:repository/*"]
    enqueue = next(s for s in statements if "sqs:SendMessage" in as_list(s["Action"]))
    assert as_list(enqueue["Resource"])[0].endswith(":" + physical(stack, "PushQueue").rsplit("/", 1)[-1])

    off = deploy(clients, "remediator-no-sweep", {"SweepSchedule": "none"})
    try:
        assert "SweepRule" not in off["resources"]
        actions = [a for s in policy_statements(clients, off) for a in as_list(s["Action"])]
        assert "ecr:DescribeRepositories" not in actions and "sqs:SendMessage" not in actions
        env = clients["lambda"].get_function_configuration(FunctionName=off["outputs"]["FunctionName"])["Environment"]["Variables"]
        assert "ECR_REMEDIATOR_QUEUE_URL" not in env
    finally:
        clients["cloudformation"].delete_stack(StackName="remediator-no-sweep")


def test_operations_dashboard_and_failed_records_alarm(stack: Stack, clients: dict[str, Any], client_factory: Any) -> None:
    cloudwatch = client_factory("cloudwatch")
    name = stack["outputs"]["DashboardName"]
    body = json.loads(cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"])
    titles = [w["properties"]["title"] for w in body["widgets"]]
    assert titles == [
        "Images handled by outcome",
        "Actions",
        "Handling latency (ms)",
        "Queue",
        "Function",
        "Kept: in use, signed",
        "Deployable to Lambda?",
        "Recent failures and skips",
    ]
    kept = [m[1] for m in body["widgets"][5]["properties"]["metrics"]]
    assert kept == ["KeptInUse", "InUseUnknown", "IndexSigned", "SignatureGaps"], "the metrics the service emits"
    lambda_ = [m[1] for m in body["widgets"][6]["properties"]["metrics"]]
    assert lambda_ == ["LambdaWouldRefuse", "LambdaUnknown"], "the metrics the service emits"
    outcomes = [m[3] for m in body["widgets"][0]["properties"]["metrics"]]
    assert outcomes == ["remediated", "noop", "skipped", "retrying", "failed"]
    group = stack["outputs"]["AuditLogGroupName"]
    assert body["widgets"][-1]["properties"]["query"].startswith(f"SOURCE '{group}' | fields @timestamp")
    # moto's CloudFormation does not create alarms: read the alarm from the template.
    alarm = cloudformation()["Resources"]["FailedRecordsAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ({"Ref": "MetricsNamespace"}, "Images")
    assert alarm["Dimensions"] == [{"Name": "Outcome", "Value": "failed"}], (
        "the outcome the metrics line gives a failure with no retry to come"
    )
    assert (alarm["Statistic"], alarm["ComparisonOperator"], alarm["Threshold"]) == ("Sum", "GreaterThanThreshold", 0)
    env = clients["lambda"].get_function_configuration(FunctionName=stack["outputs"]["FunctionName"])["Environment"]["Variables"]
    assert env["ECR_REMEDIATOR_METRICS_NAMESPACE"] == "ECRRemediator"
    assert str(env["ECR_REMEDIATOR_METRICS_PER_REPOSITORY"]).lower() == "false"


MEMBER = Path(__file__).resolve().parents[2] / "infra" / "member.yaml"
HUB_ROLE = "arn:aws:iam::111111111111:role/hub-function"
HUB_QUEUE = "arn:aws:sqs:us-east-1:111111111111:hub-pushes"


def member_template() -> dict[str, Any]:
    from cfnlint.decode import cfn_yaml

    return json.loads(json.dumps(cfn_yaml.load(str(MEMBER))))


def workload_scan_calls() -> set[str]:
    """Every ECS and Lambda operation the workload scan (src/aws/workloads.rs) calls, as it names
    them in its errors: the role of the function and of each member must allow them all."""
    import re

    text = (Path(__file__).resolve().parents[2] / "src" / "aws" / "workloads.rs").read_text()
    found = set(re.findall(r'registry_error\("((?:ecs|lambda):\w+)"', text))
    assert len(found) >= 8, found
    return found


def test_the_member_role_allows_every_call_of_the_workload_scan() -> None:
    role = member_template()["Resources"]["MemberRole"]
    allowed: set[str] = set()
    for statement in statements_of(role):
        # A conditional statement ({"Fn::If": [cond, statement, NoValue]}) counts as its statement.
        if isinstance(statement, dict) and "Fn::If" in statement:
            statement = statement["Fn::If"][1]
        if isinstance(statement, dict) and "Action" in statement:
            allowed |= {a if isinstance(a, str) else a["Fn::If"][1] for a in as_list(statement["Action"])}
    missing = workload_scan_calls() - allowed
    assert not missing, f"the member role may not {missing}: the hub would keep every deletion in members"


def statements_of(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def test_the_member_template_is_plain_cloudformation_with_no_wildcard_writes() -> None:
    template = member_template()
    assert "Transform" not in template, "service-managed StackSets refuse templates with a Transform"
    writes = {"ecr:PutImage", "ecr:BatchDeleteImage", "sqs:SendMessage"}
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for statement in statements_of(resource):
            if not isinstance(statement, dict) or "Action" not in statement:
                continue  # a conditional statement (Fn::If)
            # Conditional actions ({"Fn::If": [cond, action, NoValue]}) count as their action.
            actions = {a if isinstance(a, str) else a["Fn::If"][1] for a in as_list(statement["Action"])}
            if actions & writes:
                assert "*" not in as_list(statement["Resource"]), f"{name}: a write action on *"


def test_the_member_stack_forwards_index_pushes_and_trusts_only_the_hub_function(clients: dict[str, Any]) -> None:
    cf, events, iam = clients["cloudformation"], clients["events"], clients["iam"]
    params = {
        "HubAccountId": "111111111111",
        "HubQueueArn": HUB_QUEUE,
        "HubFunctionRoleArn": HUB_ROLE,
        "ExternalId": "an-external-id-of-16+",
        "RepositoryPrefixes": "team-a/",
    }
    cf.create_stack(
        StackName="member",
        TemplateBody=MEMBER.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    try:
        stack = cf.describe_stacks(StackName="member")["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
        resources = {
            r["LogicalResourceId"]: r["PhysicalResourceId"] for r in cf.list_stack_resources(StackName="member")["StackResourceSummaries"]
        }
        rule = events.describe_rule(Name=resources["ForwardRule"])
        pattern = json.loads(rule["EventPattern"])
        assert pattern["detail"]["repository-name"] == [{"prefix": "team-a/"}]
        assert pattern["detail"]["image-tag"] == [{"anything-but": {"suffix": "-index"}}]
        targets = events.list_targets_by_rule(Rule=resources["ForwardRule"])["Targets"]
        assert [(t["Arn"], "RoleArn" in t) for t in targets] == [(HUB_QUEUE, True)]
        # Images replicated into the member's registry go to the hub too.
        replicated = json.loads(events.describe_rule(Name=resources["ForwardReplicationRule"])["EventPattern"])
        assert replicated["detail-type"] == ["ECR Replication Action"]
        assert replicated["detail"]["action-type"] == ["REPLICATE"]
        assert replicated["detail"]["repository-name"] == [{"prefix": "team-a/"}]
        targets = events.list_targets_by_rule(Rule=resources["ForwardReplicationRule"])["Targets"]
        assert [(t["Arn"], "RoleArn" in t) for t in targets] == [(HUB_QUEUE, True)]
        role = iam.get_role(RoleName="ecr-remediator-member")["Role"]
        trust = role["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        condition = trust["Statement"][0]["Condition"]["StringEquals"]
        assert condition == {"sts:ExternalId": "an-external-id-of-16+", "aws:PrincipalArn": HUB_ROLE}
        assert trust["Statement"][0]["Principal"] == {"AWS": "arn:aws:iam::111111111111:root"}
    finally:
        cf.delete_stack(StackName="member")
    # In a region other than RoleRegion the stack only forwards: IAM roles are global, so the member
    # role (allowing the selected repositories in every region) comes from one region's stack.
    cf.create_stack(
        StackName="member-other-region",
        TemplateBody=MEMBER.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in {**params, "RoleRegion": "eu-west-1"}.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    try:
        logical = {r["LogicalResourceId"] for r in cf.list_stack_resources(StackName="member-other-region")["StackResourceSummaries"]}
        assert "MemberRole" not in logical and "ForwardRule" in logical, logical
    finally:
        cf.delete_stack(StackName="member-other-region")
    # Deletion is granted only when the hub's policy deletes.
    template = member_template()
    role = template["Resources"]["MemberRole"]
    actions = as_list(statements_of(role)[0]["Action"])
    assert {"Fn::If": ["DeleteEnabled", "ecr:BatchDeleteImage", {"Ref": "AWS::NoValue"}]} in actions
    resources = statements_of(role)[0]["Resource"]
    assert all(r["Fn::Sub"][0].startswith("arn:${AWS::Partition}:ecr:*:${AWS::AccountId}:repository/") for r in resources), resources


def test_an_organisation_wide_hub_accepts_its_members_and_may_assume_their_role(clients: dict[str, Any]) -> None:
    sqs, lam = clients["sqs"], clients["lambda"]
    hub = deploy(
        clients,
        "remediator-hub",
        {"OrganizationId": "o-abcdef1234", "ExternalId": "hub-secret-0123456789", "MemberAccounts": "222222222222,333333333333"},
    )
    try:
        queue_url = sqs.get_queue_url(QueueName=hub["outputs"]["PushQueueUrl"].rsplit("/", 1)[-1])["QueueUrl"]
        # The queue policy as deployed (the emulator attaches AWS::SQS::QueuePolicy, which moto skips).
        policy = json.loads(sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["Policy"])["Attributes"]["Policy"])
        members = [s for s in policy["Statement"] if s.get("Sid") == "OrganizationMembersForwardPushes"]
        assert len(members) == 1, policy
        assert members[0]["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": "o-abcdef1234"}}
        assert (members[0]["Action"], members[0]["Principal"]) == ("sqs:SendMessage", {"AWS": "*"})
        statements = policy_statements(clients, hub)
        assume = [s for s in statements if "sts:AssumeRole" in as_list(s["Action"])]
        assert len(assume) == 1, statements
        assert as_list(assume[0]["Resource"]) == ["arn:aws:iam::*:role/ecr-remediator-member"]
        assert assume[0]["Condition"] == {"StringEquals": {"aws:ResourceOrgID": "o-abcdef1234"}}
        env = lam.get_function_configuration(FunctionName=hub["outputs"]["FunctionName"])["Environment"]["Variables"]
        assert env["ECR_REMEDIATOR_MEMBER_ROLE"] == "ecr-remediator-member"
        assert env["ECR_REMEDIATOR_ACCOUNT_ID"] == "123456789012"
        assert env["ECR_REMEDIATOR_MEMBER_ACCOUNTS"] == "222222222222,333333333333", "the scheduled sweep covers them"
        assert env["ECR_REMEDIATOR_REPOSITORY_TAG"] == "allowed"
        assert hub["outputs"]["PushQueueArn"].endswith(":" + queue_url.rsplit("/", 1)[-1])
        assert hub["outputs"]["FunctionRoleArn"].startswith("arn:aws:iam::123456789012:role/")
    finally:
        clients["cloudformation"].delete_stack(StackName="remediator-hub")
    single = deploy(clients, "remediator-single", {})
    try:
        env = lam.get_function_configuration(FunctionName=single["outputs"]["FunctionName"])["Environment"]["Variables"]
        assert "ECR_REMEDIATOR_MEMBER_ROLE" not in env
        actions = [a for s in policy_statements(clients, single) for a in as_list(s["Action"])]
        assert "sts:AssumeRole" not in actions, "a single-account stack assumes no role"
    finally:
        clients["cloudformation"].delete_stack(StackName="remediator-single")


def test_member_pushes_reach_the_hub_queue_only_from_inside_the_organisation(
    clients: dict[str, Any], emulator: Any, control: Any, salt: str
) -> None:
    """The whole forwarding chain as deployed: the hub stack (queue policy with aws:PrincipalOrgID) and the
    member stack in two accounts, one inside the organisation and one outside it. A push in each is
    forwarded by the member rule through its execution role; only the member's reaches the hub."""
    org = control.config()["organizations"]
    org_id = next(iter(org))
    inside, outside = "222222222222", "444444444444"
    assert inside in org[org_id] and outside not in org[org_id], org
    hub = deploy(clients, "remediator-org", {"OrganizationId": org_id, "ExternalId": "hub-secret-0123456789"})
    sqs = clients["sqs"]
    queue_url = sqs.get_queue_url(QueueName=hub["outputs"]["PushQueueUrl"].rsplit("/", 1)[-1])["QueueUrl"]
    params = {
        "HubAccountId": "123456789012",
        "HubQueueArn": hub["outputs"]["PushQueueArn"],
        "HubFunctionRoleArn": hub["outputs"]["FunctionRoleArn"],
        "ExternalId": "hub-secret-0123456789",
        "RoleName": "ecr-remediator-member-fwd",
    }
    pushed = {}
    try:
        for account in (inside, outside):
            session = account_session(emulator.url, account)
            cf = session.client("cloudformation", endpoint_url=emulator.url)
            cf.create_stack(
                StackName="ecr-remediator-member",
                TemplateBody=MEMBER.read_text(),
                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
                Capabilities=["CAPABILITY_NAMED_IAM"],
            )
            status = cf.describe_stacks(StackName="ecr-remediator-member")["Stacks"][0]["StackStatus"]
            assert status == "CREATE_COMPLETE", status
            ecr = session.client("ecr", endpoint_url=emulator.url)
            repo = f"fwd-{account[:3]}-{salt}"
            ecr.create_repository(repositoryName=repo)
            pushed[account] = (repo, push(ecr, repo, build_buildx_layout(salt=salt + account), ["v1"])[-1].digest)

        bodies = []
        while got := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
            for m in got:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
                bodies.append(json.loads(m["Body"]))
        forwarded = [(b["account"], b["detail"]["repository-name"], b["detail"]["image-digest"]) for b in bodies]
        refusals = [f["reason"] for f in control.deliveries()["failed"]]
        assert forwarded == [(inside, *pushed[inside])], f"one index push, from inside the organisation: {refusals}"
        refused = [f for f in control.deliveries()["failed"] if f["target"] == hub["outputs"]["PushQueueArn"]]
        assert len(refused) == 1, refused
        assert f":{outside}:" in refused[0]["rule"] and "queue policy" in refused[0]["reason"], refused[0]
    finally:
        for account in (inside, outside):
            account_session(emulator.url, account).client("cloudformation", endpoint_url=emulator.url).delete_stack(
                StackName="ecr-remediator-member"
            )
        clients["cloudformation"].delete_stack(StackName="remediator-org")


def test_make_deploy_members_creates_a_service_managed_stack_set_for_the_ous(
    clients: dict[str, Any], client_factory: Any, emulator: Any, monkeypatch: Any
) -> None:
    """infra/deploy_members.py (what `make deploy-members` runs): the hub's outputs into a service-managed
    StackSet of the member template, with instances for each account of the OU in each region."""
    import importlib.util

    orgs = client_factory("organizations")
    with contextlib.suppress(orgs.exceptions.AlreadyInOrganizationException):
        orgs.create_organization(FeatureSet="ALL")
    root = orgs.list_roots()["Roots"][0]["Id"]
    ou = orgs.create_organizational_unit(ParentId=root, Name=f"platform-{os.getpid()}")["OrganizationalUnit"]["Id"]
    created = orgs.create_account(Email=f"team-{os.getpid()}@example.com", AccountName="team")["CreateAccountStatus"]
    orgs.move_account(AccountId=created["AccountId"], SourceParentId=root, DestinationParentId=ou)
    hub = deploy(clients, "remediator-stackset", {"OrganizationId": "o-abcdef1234", "ExternalId": "hub-secret-0123456789"})
    spec = importlib.util.spec_from_file_location("deploy_members", TEMPLATE.parent / "deploy_members.py")
    assert spec and spec.loader
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setenv("AWS_ENDPOINT_URL", emulator.url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    cf = clients["cloudformation"]
    try:
        args = [
            "--hub-stack",
            "remediator-stackset",
            "--ous",
            ou,
            "--regions",
            "us-east-1",
            "--external-id",
            "hub-secret-0123456789",
            "--poll",
            "0",
        ]
        assert tool.main(args) == 0
        stack_set = cf.describe_stack_set(StackSetName="ecr-remediator-member")["StackSet"]
        assert stack_set["PermissionModel"] == "SERVICE_MANAGED"
        params = {p["ParameterKey"]: p["ParameterValue"] for p in stack_set["Parameters"]}
        assert params["HubQueueArn"] == hub["outputs"]["PushQueueArn"]
        assert params["HubFunctionRoleArn"] == hub["outputs"]["FunctionRoleArn"]
        assert params["HubAccountId"] == "123456789012"
        instances = cf.list_stack_instances(StackSetName="ecr-remediator-member")["Summaries"]
        assert {(i["Account"], i["Region"]) for i in instances} == {(created["AccountId"], "us-east-1")}, instances
        # A second run updates the StackSet in place.
        assert tool.main([*args, "--delete-orphans", "true"]) == 0
        stack_set = cf.describe_stack_set(StackSetName="ecr-remediator-member")["StackSet"]
        assert {p["ParameterKey"]: p["ParameterValue"] for p in stack_set["Parameters"]}["DeleteOrphans"] == "true"
        with pytest.raises(SystemExit):
            tool.main(["--hub-stack", "remediator-stackset", "--ous", ou, "--regions", "us-east-1", "--external-id", "short"])
    finally:
        with contextlib.suppress(Exception):
            cf.delete_stack_instances(
                StackSetName="ecr-remediator-member",
                DeploymentTargets={"OrganizationalUnitIds": [ou]},
                Regions=["us-east-1"],
                RetainStacks=False,
            )
            cf.delete_stack_set(StackSetName="ecr-remediator-member")
        cf.delete_stack(StackName="remediator-stackset")


def test_a_policy_parameter_travels_with_the_stack_and_only_it_is_readable(clients: dict[str, Any]) -> None:
    deployed = deploy(clients, "remediator-ssm", {"PolicyParameter": "/ecr-remediator/policy"})
    try:
        env = clients["lambda"].get_function_configuration(FunctionName=deployed["outputs"]["FunctionName"])["Environment"]["Variables"]
        assert env["ECR_REMEDIATOR_POLICY_PARAMETER"] == "/ecr-remediator/policy"
        assert env["ECR_REMEDIATOR_DELETION_ALLOWED"] == "false", "the policy may delete only with DeleteOrphans=true"
        assert "ECR_REMEDIATOR_MODE" not in env and "ECR_REMEDIATOR_DELETE_ORPHANS" not in env, "no second source"
        statements = policy_statements(clients, deployed)
        read = [s for s in statements if "ssm:GetParameter" in as_list(s["Action"])]
        assert len(read) == 1 and as_list(read[0]["Action"]) == ["ssm:GetParameter"], read
        assert as_list(read[0]["Resource"]) == ["arn:aws:ssm:us-east-1:123456789012:parameter/ecr-remediator/policy"]
        actions = [a for s in statements for a in as_list(s["Action"])]
        assert "ecr:BatchDeleteImage" not in actions
    finally:
        clients["cloudformation"].delete_stack(StackName="remediator-ssm")
