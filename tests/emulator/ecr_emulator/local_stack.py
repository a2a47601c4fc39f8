"""A local stack on the emulator, wired as ``infra/template.yaml`` wires the function.

* the push rule: ECR ``PUSH`` events of an image index, in the stack's repository prefixes, to the
  push queue (which a ``serve`` worker plays the function on);
* the audit bus, whose policy denies ``events:PutEvents`` to every principal but the one running
  this (the static test credentials' ``user/moto`` stands for the function's role, as the worker
  plays the function), and its audit rule: records (source ``ecr-remediator``) to the audit log group;
* a CloudFormation stack carrying the parameters and outputs ``selftest`` and ``--stack`` read
  (``RepositoryPrefixes``; ``AuditLogGroupName``, ``AuditBusArn``, ``FunctionName``,
  ``PushQueueUrl``).

``python -m ecr_emulator.local_stack --name NAME [--prefix P]`` creates it against
``AWS_ENDPOINT_URL`` and prints it as JSON (``stack``, ``queue_url``, ``log_group``), with
``serve_args``: the arguments a worker runs with.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import boto3

from .resource_policy import iam_principal

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


def create(session: boto3.Session, endpoint: str, name: str, prefixes: list[str]) -> dict[str, Any]:
    """Creates the local stack ``name`` scoped to ``prefixes`` (empty: every repository)."""
    sqs = session.client("sqs", endpoint_url=endpoint)
    events = session.client("events", endpoint_url=endpoint)
    logs = session.client("logs", endpoint_url=endpoint)
    cfn = session.client("cloudformation", endpoint_url=endpoint)
    account = session.client("sts", endpoint_url=endpoint).get_caller_identity()["Account"]
    region = session.region_name

    queue_url = sqs.create_queue(QueueName=f"{name}-push")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    detail: dict[str, Any] = {"action-type": ["PUSH"], "result": ["SUCCESS"], "manifest-media-type": list(INDEX_TYPES)}
    if prefixes:
        detail["repository-name"] = [{"prefix": p} for p in prefixes]
    pushes = {"source": ["aws.ecr"], "detail-type": ["ECR Image Action"], "detail": detail}
    events.put_rule(Name=f"{name}-push", EventPattern=json.dumps(pushes))
    events.put_targets(Rule=f"{name}-push", Targets=[{"Id": "push-queue", "Arn": queue_arn}])

    bus = f"{name}-audit"
    bus_arn = events.create_event_bus(Name=bus)["EventBusArn"]
    caller = session.client("sts", endpoint_url=endpoint).get_caller_identity()["Arn"]
    writers = {
        "Sid": "OnlyTheServiceWritesAuditRecords",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "events:PutEvents",
        "Resource": bus_arn,
        "Condition": {"Null": {"aws:PrincipalArn": "false"}, "ArnNotLike": {"aws:PrincipalArn": [iam_principal(caller)]}},
    }
    events.put_permission(EventBusName=bus, Policy=json.dumps({"Version": "2012-10-17", "Statement": [writers]}))
    log_group = f"/aws/events/{name}/audit"
    logs.create_log_group(logGroupName=log_group)
    audit = {"source": ["ecr-remediator"], "detail-type": ["ECR Remediation Record"]}
    events.put_rule(Name=f"{name}-audit", EventBusName=bus, EventPattern=json.dumps(audit))
    log_group_arn = f"arn:aws:logs:{region}:{account}:log-group:{log_group}"
    events.put_targets(Rule=f"{name}-audit", EventBusName=bus, Targets=[{"Id": "audit-log-group", "Arn": log_group_arn}])

    template = {
        "Parameters": {"RepositoryPrefixes": {"Type": "String", "Default": ""}},
        "Resources": {"Marker": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {
            "AuditLogGroupName": {"Value": log_group},
            "AuditBusArn": {"Value": bus_arn},
            "FunctionName": {"Value": f"{name}-function"},
            "PushQueueUrl": {"Value": queue_url},
        },
    }
    cfn.create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": "RepositoryPrefixes", "ParameterValue": ",".join(prefixes)}],
    )
    return {
        "stack": name,
        "queue_url": queue_url,
        "log_group": log_group,
        "serve_args": ["serve", "--queue-url", queue_url, "--wait", "1", "--stack", name],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecr_emulator.local_stack", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the stack's name")
    parser.add_argument("--prefix", action="append", default=[], help="a repository prefix in scope (repeatable)")
    args = parser.parse_args(argv)
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint or not endpoint.startswith("http://127.0.0.1:"):
        print("set AWS_ENDPOINT_URL to the local emulator (http://127.0.0.1:PORT)", file=sys.stderr)
        return 2
    session = boto3.Session(
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )
    print(json.dumps(create(session, endpoint, args.name, args.prefix)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
