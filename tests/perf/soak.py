"""``make soak``: many pushes through ``serve`` workers under sustained faults,
then an independent check of every promise on what is left.

Starts a private emulator; creates repositories with different policies
(promote, strip, tag, with and without the keep tag and deletion, a
multi-platform one, immutable ones, one under ``provenance = "referrers"``,
two in a member account whose pushes reach the hub's queue through the member
rule and are handled through the member role), the EventBridge wiring the SAM template
deploys (an index-push rule to an SQS queue with a dead-letter queue, audit
records to a second queue), and ``--workers`` ``ecr-remediator serve``
processes. Faults hit only the service's own calls (User-Agent
``aws-sdk-rust``): 30 % throttling, 10 % HTTP 500 and 0-300 ms of latency on
every ECR operation it uses, 10 % failing ``PutEvents``. The pusher makes at
least ``--pushes`` pushes over at least ``--minutes`` minutes: bursts of one
tag, several platforms, both attestation formats, SBOMs, SOCI indexes,
signatures, nested indexes. With ``--crash``, one worker at a time is
SIGKILLed at a random moment every 6-20 s until the queue is drained, and restarted
(a handling cut anywhere: before, between or after its writes, deletions and
records). When the queue is drained the workers stop and ``checker.py``
verifies the final registry and the audit trail: records reach both the
audit queue (what the checker reads) and an audit log group the workers read
back when an event is delivered again.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import boto3
from checker import Policy, Push, World, check
from ecr_emulator.oci import build_buildx_layout
from ecr_emulator.push import plan_order, push
from ecr_emulator.testing import EmulatorProcess, account_session, member_role_trust

INDEX_TYPES = ["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"]
ALL_TYPES = [*INDEX_TYPES, "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"]

#: name -> (policy for the checker, policy rule for the service, weight)
REPOSITORIES: dict[str, tuple[Policy, dict[str, Any], int]] = {
    "soak/promote": (Policy("promote", keep=True, immutable=False), {"mode": "promote", "delete_orphans": True}, 3),
    "soak/promote-delete": (
        Policy("promote", keep=False, immutable=False),
        {"mode": "promote", "keep_tag": False, "delete_orphans": True},
        3,
    ),
    "soak/strip": (Policy("strip", keep=True, immutable=False), {"mode": "strip"}, 2),
    "soak/strip-delete": (Policy("strip", keep=False, immutable=False), {"mode": "strip", "keep_tag": False, "delete_orphans": True}, 2),
    "soak/tag": (Policy("tag", keep=True, immutable=False), {"mode": "tag"}, 2),
    "soak/multi": (
        Policy("promote", keep=True, immutable=False),
        {"mode": "promote", "promote_platform": "linux/arm64", "delete_orphans": True},
        2,
    ),
    "soak/immutable-promote": (Policy("promote", keep=True, immutable=True), {"mode": "promote", "delete_orphans": True}, 1),
    "soak/immutable-strip": (Policy("strip", keep=False, immutable=True), {"mode": "strip", "keep_tag": False, "delete_orphans": True}, 1),
    "soak/referrers": (
        Policy("promote", keep=False, immutable=False, referrers=True),
        {"mode": "promote", "keep_tag": False, "delete_orphans": True, "provenance": "referrers"},
        2,
    ),
    # In a member account: pushes forwarded to the hub's queue by the member rule, handled through the member role.
    "soak-member/promote": (
        Policy("promote", keep=False, immutable=False),
        {"mode": "promote", "keep_tag": False, "delete_orphans": True},
        2,
    ),
    "soak-member/tag": (Policy("tag", keep=True, immutable=False), {"mode": "tag"}, 1),
}
#: Repositories in a member account (the others are in the hub's).
MEMBER = "222222222222"
MEMBER_REPOSITORIES = {"soak-member/promote", "soak-member/tag"}
EXTERNAL_ID = "soak-external-id-0123456789"
ORGANIZATION = "o-emulator01"
SERVICE_FAULTS = {"errors": {"ThrottlingException": 0.3, "ServerException": 0.1}, "latency_ms_max": 300, "user_agent": "aws-sdk-rust"}
AUDIT_FAULTS = {"errors": {"InternalError": 0.1}, "user_agent": "aws-sdk-rust"}
MAX_RECEIVE_COUNT = 5
AUDIT_LOG_GROUP = "/soak/audit"


def policy_toml() -> str:
    lines = ['[default]\nmode = "tag"\n']
    for name, (_, rule, _) in REPOSITORIES.items():
        lines.append(f'[[rules]]\nname = "{name}"\nrepositories = ["{name}"]')
        if name in MEMBER_REPOSITORIES:
            lines.append(f'accounts = ["{MEMBER}"]')
        for key, value in rule.items():
            lines.append(f"{key} = {json.dumps(value)}")
        if rule.get("delete_orphans"):
            # Deletions as each push is handled, as the checker expects them (the grace
            # period's follow-up is tested in tests/in_use.rs).
            lines.append('grace_period = "0s"')
        lines.append("")
    return "\n".join(lines)


def clients(url: str) -> dict[str, Any]:
    args = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return {name: boto3.client(name, **args) for name in ("ecr", "sqs", "events", "logs")}


def wire_member(url: str, hub: dict[str, Any], work_queue_arn: str) -> dict[str, Any]:
    """The member stack's parts in the member account (as infra/member.yaml makes them): the forwarding
    rule and its role, and the member role the hub assumes; the hub queue accepts the organisation."""
    sts = boto3.client("sts", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    hub_arn = sts.get_caller_identity()["Arn"]
    session = account_session(url, MEMBER)
    member = {name: session.client(name, endpoint_url=url) for name in ("ecr", "events", "iam")}
    iam = member["iam"]
    events_trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": MEMBER}},
            }
        ],
    }
    forward = iam.create_role(RoleName="soak-forward", AssumeRolePolicyDocument=json.dumps(events_trust))["Role"]["Arn"]
    send = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": work_queue_arn}]}
    iam.put_role_policy(RoleName="soak-forward", PolicyName="send", PolicyDocument=json.dumps(send))
    hub_trust = member_role_trust(hub_arn, EXTERNAL_ID)
    iam.create_role(RoleName="ecr-remediator-member", AssumeRolePolicyDocument=json.dumps(hub_trust))
    member["events"].put_rule(Name="soak-forward", EventPattern=json.dumps(PUSH_PATTERN))
    member["events"].put_targets(Rule="soak-forward", Targets=[{"Id": "hub", "Arn": work_queue_arn, "RoleArn": forward}])
    queue_policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OrganizationMembersForwardPushes",
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "sqs:SendMessage",
                "Resource": work_queue_arn,
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": ORGANIZATION}},
            }
        ],
    }
    hub["sqs"].set_queue_attributes(
        QueueUrl=hub["sqs"].get_queue_url(QueueName="soak-work")["QueueUrl"], Attributes={"Policy": json.dumps(queue_policy)}
    )
    return member


PUSH_PATTERN = {
    "source": ["aws.ecr"],
    "detail-type": ["ECR Image Action"],
    "detail": {"action-type": ["PUSH"], "result": ["SUCCESS"], "manifest-media-type": INDEX_TYPES},
}


def wire(c: dict[str, Any]) -> tuple[str, str, str]:
    """The template's wiring: index pushes -> work queue (-> DLQ), audit records -> audit queue."""
    sqs, events = c["sqs"], c["events"]
    dlq = sqs.create_queue(QueueName="soak-dlq")["QueueUrl"]
    redrive = json.dumps({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:soak-dlq", "maxReceiveCount": str(MAX_RECEIVE_COUNT)})
    work = sqs.create_queue(QueueName="soak-work", Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": "60"})["QueueUrl"]
    audit = sqs.create_queue(QueueName="soak-audit")["QueueUrl"]
    for rule, pat, queue in (
        ("soak-pushes", PUSH_PATTERN, "soak-work"),
        ("soak-audit", {"source": ["ecr-remediator"], "detail-type": ["ECR Remediation Record"]}, "soak-audit"),
    ):
        events.put_rule(Name=rule, EventPattern=json.dumps(pat))
        events.put_targets(Rule=rule, Targets=[{"Id": "q", "Arn": f"arn:aws:sqs:us-east-1:123456789012:{queue}"}])
    # The stack's audit log group, which a redelivered event reads back.
    c["logs"].create_log_group(logGroupName=AUDIT_LOG_GROUP)
    events.put_targets(
        Rule="soak-audit", Targets=[{"Id": "logs", "Arn": f"arn:aws:logs:us-east-1:123456789012:log-group:{AUDIT_LOG_GROUP}"}]
    )
    return work, dlq, audit


def describe_push(layout: Any, stored: list[Any], repository: str, tag: str, seq: int, promote_platform: str | None, mode: str) -> Push:
    top = stored[-1].digest
    index = json.loads(layout.blobs[top])
    kinds: dict[str, str] = {}

    def kind_of(desc: dict[str, Any]) -> str:
        annotations = desc.get("annotations") or {}
        if annotations.get("vnd.docker.reference.type") == "attestation-manifest":
            return "attestation"
        if desc.get("mediaType") in INDEX_TYPES:
            return "index"
        if desc.get("artifactType"):
            return "other"
        platform = desc.get("platform") or {}
        return "runnable" if platform.get("os") not in (None, "unknown") else "other"

    entries = [(d["digest"], kind_of(d)) for d in index["manifests"]]
    for digest, media_type in plan_order(layout, {"digest": top, "mediaType": index["mediaType"]})[:-1]:
        kinds[digest] = next((k for d, k in entries if d == digest), "runnable" if media_type not in INDEX_TYPES else "index")
    attestations: dict[str, tuple[str, list[str]]] = {}
    for d in index["manifests"]:
        if kind_of(d) == "attestation":
            doc = json.loads(layout.blobs[d["digest"]])
            subject = (d.get("annotations") or {}).get("vnd.docker.reference.digest") or (doc.get("subject") or {}).get("digest")
            attestations[d["digest"]] = (subject, [x["digest"] for x in doc.get("layers") or []])
    runnables = [d for d in index["manifests"] if kind_of(d) == "runnable"]
    promoted = None
    if mode == "promote":
        if len(runnables) == 1:
            promoted = runnables[0]["digest"]
        elif promote_platform:
            os_, arch = promote_platform.split("/")
            chosen = [d for d in runnables if d["platform"]["os"] == os_ and d["platform"]["architecture"] == arch]
            promoted = chosen[0]["digest"] if len(chosen) == 1 else None
    return Push(seq, repository, tag, top, kinds, entries, promoted, attestations)


def pusher(ecr_of: dict[str, Any], args: argparse.Namespace, rng: random.Random) -> list[Push]:
    names = list(REPOSITORIES)
    weights = [REPOSITORIES[n][2] for n in names]
    pushes: list[Push] = []
    started = time.monotonic()
    interval = args.minutes * 60 / args.pushes
    burst: list[tuple[str, str]] = []
    unique = 0
    while len(pushes) < args.pushes or time.monotonic() - started < args.minutes * 60:
        if burst:
            repository, tag = burst.pop()
        else:
            due = started + len(pushes) * interval
            time.sleep(max(0.0, due - time.monotonic()))
            repository = rng.choices(names, weights)[0]
            policy = REPOSITORIES[repository][0]
            if policy.immutable:
                unique += 1
                tag = f"r{unique}"
            else:
                tag = f"v{rng.randint(1, 40)}"
                if rng.random() < 0.3:
                    burst = [(repository, tag)] * rng.randint(1, 2)
        rule = REPOSITORIES[repository][1]
        platforms = ["linux/arm64"]
        if repository == "soak/multi":
            platforms = ["linux/arm64", "linux/amd64", "linux/arm/v7"][: rng.randint(2, 3)]
        elif rng.random() < 0.25:
            platforms = ["linux/amd64", "linux/arm64"]
        extras = tuple(e for e, p in (("soci", 0.15), ("signature", 0.15), ("nested", 0.05)) if rng.random() < p)
        layout = build_buildx_layout(
            platforms,
            attestation_format=rng.choice(["legacy", "artifact"]),
            sbom=rng.random() < 0.3,
            salt=f"soak-{len(pushes)}",
            extras=extras,
        )
        stored = push(ecr_of[repository], repository, layout, [tag])
        pushes.append(describe_push(layout, stored, repository, tag, len(pushes), rule.get("promote_platform"), rule["mode"]))
        if len(pushes) % 100 == 0:
            print(f"  {len(pushes)} pushes, {time.monotonic() - started:.0f} s", file=sys.stderr)
    return pushes


def queue_depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])[
        "Attributes"
    ]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300).get("Messages", [])
        if not got:
            return out
        for m in got:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def redrive(sqs: Any, dlq: str, work: str) -> int:
    """Moves every message of ``dlq`` back to ``work`` as SQS's redrive does (new messages: the
    receive count starts again); returns how many."""
    moved = 0
    while True:
        got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=300).get("Messages", [])
        if not got:
            return moved
        for m in got:
            sqs.send_message(QueueUrl=work, MessageBody=m["Body"])
            sqs.delete_message(QueueUrl=dlq, ReceiptHandle=m["ReceiptHandle"])
            moved += 1


def final_registry(ecr_of: dict[str, Any]) -> dict[str, dict[str, tuple[list[str], dict[str, Any]]]]:
    out: dict[str, dict[str, tuple[list[str], dict[str, Any]]]] = {}
    for repository in REPOSITORIES:
        ecr = ecr_of[repository]
        details = []
        for page in ecr.get_paginator("describe_images").paginate(repositoryName=repository):
            details.extend(page["imageDetails"])
        images: dict[str, tuple[list[str], dict[str, Any]]] = {}
        for first in range(0, len(details), 100):
            chunk = details[first : first + 100]
            got = ecr.batch_get_image(
                repositoryName=repository, imageIds=[{"imageDigest": d["imageDigest"]} for d in chunk], acceptedMediaTypes=ALL_TYPES
            )
            docs = {i["imageId"]["imageDigest"]: json.loads(i["imageManifest"]) for i in got["images"]}
            for d in chunk:
                images[d["imageDigest"]] = (d.get("imageTags", []), docs.get(d["imageDigest"], {}))
        out[repository] = images
    return out


def windows(log_files: list[Path]) -> dict[str, float]:
    values = []
    for f in log_files:
        for line in f.read_text().splitlines():
            if '"window_ms"' in line and "writes landed" in line:
                values.append(json.loads(line)["fields"]["window_ms"])
    if not values:
        return {}
    values.sort()
    return {
        "samples": len(values),
        "p50_ms": round(statistics.median(values), 2),
        "p99_ms": round(values[int(len(values) * 0.99) - 1], 2),
        "max_ms": round(values[-1], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak.py", description=__doc__.splitlines()[0])
    parser.add_argument("--binary", type=Path, default=Path("target/release/ecr-remediator"))
    parser.add_argument("--pushes", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=Path("target/soak.json"))
    parser.add_argument("--crash", action="store_true", help="SIGKILL a worker every 6-20 s until the queue is drained, and restart it")
    parser.add_argument("--put-events-failures", type=float, default=0.1, help="share of failing PutEvents calls (default 0.1)")
    args = parser.parse_args(argv)
    if not args.binary.is_file():
        parser.error(f"{args.binary} not found: cargo build --release first (make soak does)")
    rng = random.Random(args.seed)
    emu = EmulatorProcess()
    workers: list[subprocess.Popen[bytes]] = []
    logs = Path(tempfile.mkdtemp(prefix="ecr-remediator-soak-"))
    try:
        c = clients(emu.url)
        work, dlq, audit = wire(c)
        member = wire_member(emu.url, c, "arn:aws:sqs:us-east-1:123456789012:soak-work")
        ecr_of = {name: member["ecr"] if name in MEMBER_REPOSITORIES else c["ecr"] for name in REPOSITORIES}
        for name, (policy, _, _) in REPOSITORIES.items():
            ecr_of[name].create_repository(repositoryName=name, imageTagMutability="IMMUTABLE" if policy.immutable else "MUTABLE")
        policy_file = logs / "policy.toml"
        policy_file.write_text(policy_toml())
        env = {k: v for k, v in os.environ.items() if not k.startswith("ECR_REMEDIATOR_")} | {
            "AWS_ENDPOINT_URL": emu.url,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
            "ECR_REMEDIATOR_POLICY_FILE": str(policy_file),
            "ECR_REMEDIATOR_MAX_RECEIVE_COUNT": str(MAX_RECEIVE_COUNT),
            "ECR_REMEDIATOR_PUT_TPS": "5",
            "ECR_REMEDIATOR_MEMBER_ROLE": "ecr-remediator-member",
            "ECR_REMEDIATOR_EXTERNAL_ID": EXTERNAL_ID,
            "ECR_REMEDIATOR_ACCOUNT_ID": "123456789012",
            "ECR_REMEDIATOR_AUDIT_LOG_GROUP": AUDIT_LOG_GROUP,
            "RUST_LOG": "info",
        }
        for op in ("BatchGetImage", "PutImage", "DescribeImages", "BatchDeleteImage", "ListImageReferrers", "ListTagsForResource"):
            emu.control.fault(f"ecr:{op}", **SERVICE_FAULTS, seed=args.seed)
        audit_faults = AUDIT_FAULTS | {"errors": {"InternalError": args.put_events_failures}}
        emu.control.fault("events:PutEvents", **audit_faults, seed=args.seed)
        log_files = [logs / f"worker-{n}.log" for n in range(args.workers)]

        def start_worker(n: int) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [str(args.binary), "serve", "--queue-url", work, "--wait", "5", "--visibility-timeout", "30"],
                env=env,
                stdout=log_files[n].open("ab"),
                stderr=subprocess.STDOUT,
            )

        workers.extend(start_worker(n) for n in range(args.workers))
        crashing = threading.Event()
        kills: list[float] = []

        def killer() -> None:
            chaos = random.Random(args.seed + 1)
            while not crashing.wait(chaos.uniform(6, 20)):
                n = chaos.randrange(len(workers))
                workers[n].kill()
                workers[n].wait(30)
                kills.append(time.monotonic())
                workers[n] = start_worker(n)

        mode = ", a worker killed every 6-20 s" if args.crash else ""
        print(f"soak: {args.pushes}+ pushes over {args.minutes}+ min, {args.workers} workers{mode}, logs in {logs}", file=sys.stderr)
        started = time.monotonic()
        chaos_thread = threading.Thread(target=killer, daemon=True)
        if args.crash:
            chaos_thread.start()
        pushes = pusher(ecr_of, args, rng)
        pushed_for = time.monotonic() - started
        print(
            "  waiting for the queue to drain (workers still killed)" if args.crash else "  waiting for the queue to drain", file=sys.stderr
        )
        quiet, deadline = 0, time.monotonic() + 1200
        while quiet < 3 and time.monotonic() < deadline:
            time.sleep(2)
            quiet = quiet + 1 if queue_depth(c["sqs"], work) == 0 else 0
        drained = quiet >= 3
        crashing.set()
        if args.crash:
            chaos_thread.join()
        # What docs/operations.md tells an operator: once the cause is fixed
        # (here: no more kills), redrive the dead-letter queue. The moved
        # messages start their receive count again; their deliveries must
        # close the trail the cut ones left.
        redriven = redrive(c["sqs"], dlq, work)
        if redriven:
            print(f"  redriving {redriven} dead letter(s) to the work queue", file=sys.stderr)
            quiet, deadline = 0, time.monotonic() + 600
            while quiet < 3 and time.monotonic() < deadline:
                time.sleep(2)
                quiet = quiet + 1 if queue_depth(c["sqs"], work) == 0 else 0
            drained = drained and quiet >= 3
        total = time.monotonic() - started
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(60)
        injected = emu.control.faults()["injected"]
        emu.control.clear_faults()
        emu_deliveries = emu.control.deliveries()
        world = World(
            pushes=pushes,
            policies={n: p for n, (p, _, _) in REPOSITORIES.items()},
            images=final_registry(ecr_of),
            ecr_events=[e["detail"] for e in emu.control.events()],
            records=[e["detail"] for e in drain(c["sqs"], audit)],
            dead_letters=drain(c["sqs"], dlq),
        )
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        emu.stop()
    violations, figures = check(world)
    if not drained:
        violations.append("the queue did not drain within 20 minutes")
    figures |= {
        "pushing_s": round(pushed_for),
        "redriven": redriven,
        "total_s": round(total),
        "workers": args.workers,
        "faults_injected": injected,
        "precondition_window": windows(log_files),
        "cross_account_deliveries": len(emu_deliveries.get("delivered", [])),
        "cross_account_refusals": len(emu_deliveries.get("failed", [])),
        "workers_killed": len(kills),
        "put_events_failure_rate": args.put_events_failures,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"figures": figures, "violations": violations, "pushes": [asdict(p) for p in pushes]}, indent=1))
    print(json.dumps(figures, indent=2))
    if violations:
        print(f"\n{len(violations)} VIOLATIONS:", file=sys.stderr)
        for v in violations[:50]:
            print(f"  {v}", file=sys.stderr)
        return 1
    print(f"\nall promises held over {len(pushes)} pushes (worker logs: {logs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
