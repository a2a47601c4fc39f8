"""Deploys infra/member.yaml to organisational units as a service-managed StackSet.

Run from the management account or a CloudFormation delegated administrator
(``make deploy-members``). The hub's outputs (function role, queue) are read
from the hub stack, so the member stacks always point at the deployed hub.
Creates the StackSet the first time and updates it afterwards (same
parameters, template from this checkout); adds stack instances for the OUs
and regions asked, waits for each operation, and exits non-zero with the
operation's reason when it fails.

    python infra/deploy_members.py --hub-stack ecr-remediator --ous ou-ab12-cdef3456 \\
        --regions us-east-1,eu-west-1 --external-id "$EXTERNAL_ID"
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

TEMPLATE = Path(__file__).resolve().parent / "member.yaml"
CAPABILITIES = ["CAPABILITY_NAMED_IAM"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def hub_outputs(cfn: Any, stack: str) -> dict[str, str]:
    found = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}
    missing = [k for k in ("FunctionRoleArn", "PushQueueArn") if k not in outputs]
    if missing:
        raise SystemExit(f"stack {stack} has no {', '.join(missing)} output: is it the ecr-remediator hub, deployed with OrganizationId?")
    return outputs


def wait(cfn: Any, name: str, operation_id: str, poll_s: float, call_as: str) -> None:
    """Waits for a StackSet operation; exits with its reason unless it succeeded."""
    while True:
        op = cfn.describe_stack_set_operation(StackSetName=name, OperationId=operation_id, CallAs=call_as)["StackSetOperation"]
        status = op["Status"]
        print(f"  {op.get('Action', 'operation')} {operation_id}: {status}", file=sys.stderr)
        if status in TERMINAL:
            if status != "SUCCEEDED":
                raise SystemExit(f"StackSet operation {operation_id} ended {status}: {op.get('StatusReason', 'no reason given')}")
            return
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hub-stack", required=True, help="the hub stack's name (its FunctionRoleArn and PushQueueArn outputs)")
    p.add_argument("--ous", required=True, help="comma-separated organisational unit ids (or the root id) to deploy to")
    p.add_argument("--regions", required=True, help="comma-separated regions; each needs a hub of its own (ECR events are regional)")
    p.add_argument("--external-id", required=True, help="the hub's ExternalId (16+ characters)")
    p.add_argument("--stack-set", default="ecr-remediator-member", help="StackSet name (default %(default)s)")
    p.add_argument("--repository-prefixes", default="", help="as the hub's RepositoryPrefixes")
    p.add_argument("--delete-orphans", choices=["true", "false"], default="false", help="grant ecr:BatchDeleteImage (as the hub's policy)")
    p.add_argument("--keep-tag", default="{tag}-index", help="the hub's keep-tag template, or false")
    p.add_argument("--role-name", default="ecr-remediator-member", help="as the hub's MemberRoleName")
    p.add_argument("--role-region", help="the region whose stack creates the (global) member role; default: the first of --regions")
    p.add_argument("--delegated-admin", action="store_true", help="call as a CloudFormation delegated administrator")
    p.add_argument("--poll", type=float, default=15.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if len(args.external_id) < 16:
        p.error("--external-id must be at least 16 characters (the hub's ExternalId)")
    ous = [o.strip() for o in args.ous.split(",") if o.strip()]
    regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    if not ous or not regions:
        p.error("--ous and --regions need at least one value each")
    if args.role_region and args.role_region not in regions:
        p.error(f"--role-region {args.role_region} must be one of --regions, or no stack creates the member role")
    call_as = "DELEGATED_ADMIN" if args.delegated_admin else "SELF"

    cfn = boto3.client("cloudformation")
    hub = hub_outputs(cfn, args.hub_stack)
    hub_account = hub["FunctionRoleArn"].split(":")[4]
    parameters = {
        "HubAccountId": hub_account,
        "HubQueueArn": hub["PushQueueArn"],
        "HubFunctionRoleArn": hub["FunctionRoleArn"],
        "ExternalId": args.external_id,
        "RepositoryPrefixes": args.repository_prefixes,
        "DeleteOrphans": args.delete_orphans,
        "KeepTag": args.keep_tag,
        "RoleName": args.role_name,
        "RoleRegion": args.role_region or regions[0],
    }
    common = {
        "StackSetName": args.stack_set,
        "TemplateBody": TEMPLATE.read_text(),
        "Capabilities": CAPABILITIES,
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        "CallAs": call_as,
    }
    try:
        cfn.describe_stack_set(StackSetName=args.stack_set, CallAs=call_as)
        exists = True
    except ClientError as err:
        if err.response["Error"]["Code"] != "StackSetNotFoundException":
            raise
        exists = False
    if exists:
        print(f"updating StackSet {args.stack_set} (hub {args.hub_stack})", file=sys.stderr)
        op = cfn.update_stack_set(**common)
        wait(cfn, args.stack_set, op["OperationId"], args.poll, call_as)
    else:
        print(f"creating StackSet {args.stack_set} (service-managed, automatic deployment to new accounts)", file=sys.stderr)
        cfn.create_stack_set(
            **common,
            PermissionModel="SERVICE_MANAGED",
            AutoDeployment={"Enabled": True, "RetainStacksOnAccountRemoval": False},
        )
    op = cfn.create_stack_instances(
        StackSetName=args.stack_set,
        DeploymentTargets={"OrganizationalUnitIds": ous},
        Regions=regions,
        OperationPreferences={"RegionConcurrencyType": "PARALLEL", "FailureTolerancePercentage": 0, "MaxConcurrentPercentage": 25},
        CallAs=call_as,
    )
    wait(cfn, args.stack_set, op["OperationId"], args.poll, call_as)
    instances = cfn.list_stack_instances(StackSetName=args.stack_set, CallAs=call_as).get("Summaries", [])
    for i in instances:
        print(f"{i.get('Account')}\t{i.get('Region')}\t{i.get('OrganizationalUnitId', '')}\t{i.get('Status')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
