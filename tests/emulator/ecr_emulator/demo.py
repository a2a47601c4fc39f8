"""``make demo``: a default buildx push into the local ECR, remediated end to end.

Starts a private emulator, creates a repository, an EventBridge rule sending
its push events to an SQS queue (the wiring the SAM template deploys), and a
rule sending audit records to a second queue. Pushes a default-buildx
single-platform image (image manifest + provenance attestation) as ``v7``,
runs ``ecr-remediator serve`` on the queue until it is idle, and prints the
repository before and after, and the audit record. Ends with ``ecr-remediator
selftest`` against a local stack (``local_stack``), as a user runs it against a
deployed one. Then stops the emulator.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import boto3

from .local_stack import create as create_local_stack
from .oci import build_buildx_layout
from .push import push
from .testing import EmulatorProcess

REPOSITORY = "demo/app"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


def banner(text: str) -> None:
    print(f"\n=== {text}")


def show(ecr: Any, title: str) -> None:
    banner(title)
    details = ecr.describe_images(repositoryName=REPOSITORY)["imageDetails"]
    tag_map = {t: d for d in details for t in d.get("imageTags", [])}
    v7 = tag_map.get("v7")
    if v7:
        kind = (
            "an image INDEX (Lambda refuses it)"
            if v7["imageManifestMediaType"] in INDEX_TYPES
            else "a single IMAGE MANIFEST (Lambda accepts it)"
        )
        print(f"v7 -> {v7['imageDigest'][:19]}…  {v7['imageManifestMediaType']}  = {kind}")
    for d in sorted(details, key=lambda d: d["imagePushedAt"]):
        tags = ",".join(d.get("imageTags", [])) or "<untagged>"
        size = d.get("imageSizeInBytes", 0)
        artifact = d.get("artifactMediaType", "-")
        print(f"  {d['imageDigest'][:19]}…  {tags:<12} {size:>8} B  {d['imageManifestMediaType']}  config={artifact}")
    untagged = [d for d in details if not d.get("imageTags")]
    print(f"untagged images: {len(untagged)}")


def selftest(binary: Path, env: dict[str, str], session: Any, endpoint: str) -> int:
    """What a user runs against a deployed stack, against the local one: the stack's rules and
    a ``serve`` worker playing its function (``local_stack``), then ``ecr-remediator selftest``."""
    stack = create_local_stack(session, endpoint, "demo-stack", ["selftest/"])
    banner("ecr-remediator selftest --stack demo-stack (the local stack: rules as the template wires them, a serve worker as its function)")
    worker = subprocess.Popen(
        [str(binary), *stack["serve_args"]],
        env=env | {"ECR_REMEDIATOR_MODE": "promote"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run = subprocess.run([str(binary), "selftest", "--stack", "demo-stack", "--timeout", "60s"], env=env, text=True, timeout=300)
        return run.returncode
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecr_emulator.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True, type=Path, help="the ecr-remediator binary")
    parser.add_argument("--mode", default="promote", choices=("observe", "tag", "promote", "strip"))
    parser.add_argument("--delete-orphans", action="store_true")
    args = parser.parse_args(argv)
    if not args.binary.exists():
        print(f"{args.binary} not found (run `cargo build` first)", file=sys.stderr)
        return 2

    print("starting the local ECR emulator …")
    emulator = EmulatorProcess()
    try:
        env = dict(
            os.environ,
            AWS_ENDPOINT_URL=emulator.url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_REGION="us-east-1",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
        )
        for k in [k for k in env if k.startswith("ECR_REMEDIATOR_")]:
            del env[k]
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
        ecr = session.client("ecr", endpoint_url=emulator.url)
        sqs = session.client("sqs", endpoint_url=emulator.url)
        events = session.client("events", endpoint_url=emulator.url)
        print(f"emulator on {emulator.url}")

        ecr.create_repository(repositoryName=REPOSITORY)
        queues = {}
        patterns = {
            "pushes": {
                "source": ["aws.ecr"],
                "detail-type": ["ECR Image Action"],
                "detail": {"action-type": ["PUSH"], "result": ["SUCCESS"], "manifest-media-type": list(INDEX_TYPES)},
            },
            "audit": {"source": ["ecr-remediator"], "detail-type": ["ECR Remediation Record"]},
        }
        for name, pattern in patterns.items():
            url = sqs.create_queue(QueueName=f"demo-{name}")["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            events.put_rule(Name=f"demo-{name}", EventPattern=json.dumps(pattern))
            events.put_targets(Rule=f"demo-{name}", Targets=[{"Id": "queue", "Arn": arn}])
            queues[name] = url
        print(f"repository {REPOSITORY}; rule demo-pushes -> queue demo-pushes (index pushes only); rule demo-audit -> queue demo-audit")

        banner("docker buildx build --push -t …/demo/app:v7 (default: provenance on), without Docker")
        layout = build_buildx_layout(["linux/arm64"])
        with tempfile.TemporaryDirectory() as tmp:
            layout.write(Path(tmp))
        for item in push(ecr, REPOSITORY, layout, ["v7"]):
            print(f"  PutImage {item.digest[:19]}…  tag={item.tag or '<none>'}  {item.media_type}")
        show(ecr, "before")

        def serve(mode: str, delete: bool, extra_env: dict[str, str]) -> int:
            cmd = [str(args.binary), "serve", "--queue-url", queues["pushes"], "--wait", "1", "--exit-when-idle", "--mode", mode]
            if delete:
                cmd.append("--delete-orphans")
            run = subprocess.run(cmd, env=env | extra_env, capture_output=True, text=True, timeout=300)
            for line in run.stdout.splitlines():
                if line.startswith('{"audit_record"') or '"_aws"' in line:
                    continue  # the record (shown below) and its metrics line
                try:
                    entry = json.loads(line)
                    fields = entry.get("fields", {})
                    print(f"  [{entry.get('level')}] {fields.pop('message', '')} {json.dumps(fields) if fields else ''}")
                except ValueError:
                    print(f"  {line}")
            if run.returncode != 0:
                print(run.stderr, file=sys.stderr)
            return run.returncode

        banner(f"ecr-remediator serve --mode {args.mode}{' --delete-orphans' if args.delete_orphans else ''} (until the queue is idle)")
        code = serve(args.mode, args.delete_orphans, {})
        if code != 0:
            return code
        show(ecr, "after")

        banner("audit record (from the audit rule's queue)")
        reply = sqs.receive_message(QueueUrl=queues["audit"], MaxNumberOfMessages=10)
        for message in reply.get("Messages", []):
            print(json.dumps(json.loads(message["Body"])["detail"], indent=2))
            sqs.delete_message(QueueUrl=queues["audit"], ReceiptHandle=message["ReceiptHandle"])

        second = f"{REPOSITORY}-referrers"
        banner(
            f"second pass, in {second}: push v8, then provenance = referrers, no keep tag, --delete-orphans, "
            "--grace-period 0s (by default deletions wait 15 minutes after the push)"
        )
        ecr.create_repository(repositoryName=second)
        layout = build_buildx_layout(["linux/arm64"], salt="demo-v8")
        for item in push(ecr, second, layout, ["v8"]):
            print(f"  PutImage {item.digest[:19]}…  tag={item.tag or '<none>'}  {item.media_type}")
        code = serve(
            "promote",
            True,
            {"ECR_REMEDIATOR_PROVENANCE": "referrers", "ECR_REMEDIATOR_KEEP_TAG": "false", "ECR_REMEDIATOR_GRACE_PERIOD": "0s"},
        )
        if code != 0:
            return code
        v8 = ecr.describe_images(repositoryName=second, imageIds=[{"imageTag": "v8"}])["imageDetails"][0]
        print(f"v8 -> {v8['imageDigest'][:19]}…  {v8['imageManifestMediaType']}  = runnable image manifest")
        untagged = ecr.describe_images(repositoryName=second, filter={"tagStatus": "UNTAGGED"})["imageDetails"]
        for d in untagged:
            print(f"untagged: {d['imageDigest'][:19]}…  referrer of {d.get('subjectManifestDigest', '-')[:19]}…")
        print(f"untagged images: {len(untagged)}, all referrers: {all('subjectManifestDigest' in d for d in untagged)}")
        banner("aws ecr list-image-referrers --subject-id imageDigest=<v8>")
        referrers = ecr.list_image_referrers(repositoryName=second, subjectId={"imageDigest": v8["imageDigest"]})["referrers"]
        for r in referrers:
            print(f"  {r['digest'][:19]}…  artifactType={r['artifactType']}  {r['size']} B  {r['artifactStatus']}")
            manifest = json.loads(
                ecr.batch_get_image(repositoryName=second, imageIds=[{"imageDigest": r["digest"]}], acceptedMediaTypes=[r["mediaType"]])[
                    "images"
                ][0]["imageManifest"]
            )
            for layer in manifest["layers"]:
                predicate = layer.get("annotations", {}).get("in-toto.io/predicate-type")
                print(f"    statement {layer['digest'][:19]}…  {predicate}  (the pushed statement, unchanged)")
            print(f"    subject {manifest['subject']['digest'][:19]}…")

        return selftest(args.binary, env, session, emulator.url)
    finally:
        emulator.stop()
        print("\nemulator stopped.")


if __name__ == "__main__":
    sys.exit(main())
