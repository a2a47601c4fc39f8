"""The workload scan that gates deletions, at scale, for ``make bench``: an
account with N ECS clusters, M services spread over them (each its own task
definition naming its image by tag, so every deployment pinned a digest; no
running task: the emulator's RunTask needs container instances) and L Lambda
image functions; then one push handled
with deletion at once (``--grace-period 0s``), which scans the account once:
ECS and Lambda calls, wall time and peak resident set of that handling."""

from __future__ import annotations

import json
import sys
from typing import Any

import boto3
from bench import base_env, push_image, run_measured
from ecr_emulator.testing import EmulatorProcess

ACCOUNT = "123456789012"
REGION = "us-east-1"


def _client(emu: EmulatorProcess, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=emu.url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def populate(emu: EmulatorProcess, repository: str, clusters: int, services: int, functions: int) -> None:
    """The account's workloads, all running images of ``repository``."""
    ecr, ecs, lam, iam = (_client(emu, s) for s in ("ecr", "ecs", "lambda", "iam"))
    index = push_image(ecr, repository, "base", "scan-base")
    got = ecr.batch_get_image(
        repositoryName=repository, imageIds=[{"imageDigest": index}], acceptedMediaTypes=["application/vnd.oci.image.index.v1+json"]
    )
    entries = json.loads(got["images"][0]["imageManifest"])["manifests"]
    # Lambda takes the runnable image, never the index.
    image = next(e["digest"] for e in entries if e.get("platform", {}).get("os") != "unknown")
    uri = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repository}"
    for c in range(clusters):
        ecs.create_cluster(clusterName=f"bench-{c}")
    for s in range(services):
        cluster = f"bench-{s % clusters}"
        td = ecs.register_task_definition(
            family=f"bench-{s}", containerDefinitions=[{"name": "app", "image": f"{uri}:base", "memory": 128}]
        )["taskDefinition"]["taskDefinitionArn"]
        ecs.create_service(cluster=cluster, serviceName=f"svc-{s}", taskDefinition=td, desiredCount=0)
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
        }
    )
    role = iam.create_role(RoleName="bench-scan", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    for f in range(functions):
        lam.create_function(FunctionName=f"bench-{f}", Role=role, PackageType="Image", Code={"ImageUri": f"{uri}@{image}"})


def scan_runs(cli: Any, emu: EmulatorProcess, clusters: int, services: int, functions: int) -> dict[str, Any]:
    ecr = _client(emu, "ecr")
    repository = "bench/scan"
    ecr.create_repository(repositoryName=repository)
    populate(emu, repository, clusters, services, functions)
    digest = push_image(ecr, repository, "v1", "scan-push")
    before = emu.control.calls()
    env = base_env(emu.url) | {
        "ECR_REMEDIATOR_MODE": "promote",
        "ECR_REMEDIATOR_DELETE_ORPHANS": "true",
        "ECR_REMEDIATOR_KEEP_TAG": "false",
        "ECR_REMEDIATOR_GRACE_PERIOD": "0s",
    }
    code, wall, rss, out = run_measured(
        [str(cli), "remediate", "--repository", repository, "--image-digest", digest, "--image-tag", "v1", "--output", "json"], env
    )
    after = emu.control.calls()
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
    scan = {k: v for k, v in delta.items() if k.split(":")[0] in ("ecs", "lambda")}
    record = json.loads(out) if out.strip() else {}
    row = {
        "clusters": clusters,
        "services": services,
        "functions": functions,
        "exit": code,
        "outcome": record.get("outcome"),
        "deleted": record.get("deleted"),
        "scan_calls": scan,
        "scan_calls_total": sum(scan.values()),
        "ecr_calls": {k: v for k, v in delta.items() if k.startswith("ecr:")},
        "wall_ms": round(wall * 1000),
        "peak_rss_mb": round(rss / 1024, 1),
    }
    print(
        f"  {clusters} clusters, {services} services, {functions} functions: {row['scan_calls_total']} scan calls, "
        f"{row['wall_ms']} ms, {row['peak_rss_mb']} MB",
        file=sys.stderr,
    )
    return row


def scan_table(row: dict[str, Any]) -> str:
    calls = ", ".join(f"{k} {v}" for k, v in sorted(row["scan_calls"].items()))
    return "\n".join(
        [
            "| clusters | services | Lambda functions | outcome | scan calls | by operation | wall time (whole handling) | peak RSS |",
            "|---:|---:|---:|---|---:|---|---:|---:|",
            f"| {row['clusters']} | {row['services']} | {row['functions']} | {row['outcome']}, {row['deleted']} deleted | "
            f"{row['scan_calls_total']} | {calls} | {row['wall_ms']} ms | {row['peak_rss_mb']} MB |",
        ]
    )
