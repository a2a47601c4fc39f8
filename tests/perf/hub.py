"""The organisation-wide hub at scale, for ``make bench``: N member accounts,
each with the member role and one pushed index; the release ``serve``
handles one push event per account from the hub's queue (peak resident set,
``sts:AssumeRole`` calls, time per event), then the release ``bootstrap``
fans the schedule out to one request per account (time of the fan-out)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
from bench import RuntimeApi, base_env, run_measured
from ecr_emulator.testing import EmulatorProcess, account_session, member_role_trust, push_event

ROLE = "ecr-remediator-member"
EXTERNAL_ID = "bench-hub-0123456789"
HUB_ACCOUNT = "123456789012"
INDEX = "application/vnd.oci.image.index.v1+json"


def accounts_for(size: int, offset: int, series: int = 5) -> list[str]:
    """``size`` 12-digit member account ids, distinct for each (series, offset < 10)."""
    return [f"{series}{offset}{n:010d}" for n in range(size)]


def setup_members(emu: EmulatorProcess, accounts: list[str]) -> dict[str, str]:
    """The member role, a repository and one seeded buildx push in each account
    (the emulator's ``members`` control call); returns each account's index digest."""
    sts = boto3.client("sts", endpoint_url=emu.url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    me = sts.get_caller_identity()
    trust = member_role_trust(me["Arn"], EXTERNAL_ID, me["Account"])
    indexes: dict[str, str] = {}
    for n in range(0, len(accounts), 100):
        reply = emu.control._call(
            "POST", "members", {"accounts": accounts[n : n + 100], "role_name": ROLE, "trust": trust, "repository": "hub/app", "count": 1}
        )
        indexes.update(reply["indexes"])
    return indexes


def hub_env(emu: EmulatorProcess, accounts: list[str]) -> dict[str, str]:
    return base_env(emu.url) | {
        "ECR_REMEDIATOR_MODE": "promote",
        "ECR_REMEDIATOR_MEMBER_ROLE": ROLE,
        "ECR_REMEDIATOR_EXTERNAL_ID": EXTERNAL_ID,
        "ECR_REMEDIATOR_ACCOUNT_ID": HUB_ACCOUNT,
        "ECR_REMEDIATOR_MEMBER_ACCOUNTS": ",".join(accounts),
    }


def assume_role_calls(emu: EmulatorProcess) -> int:
    return int(emu.control.calls().get("sts:AssumeRole", 0))


def serve_run(cli: Path, emu: EmulatorProcess, size: int, offset: int) -> dict[str, Any]:
    accounts = accounts_for(size, offset)
    started = time.monotonic()
    indexes = setup_members(emu, accounts)
    setup_s = time.monotonic() - started
    sqs = boto3.client("sqs", endpoint_url=emu.url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    url = sqs.create_queue(QueueName=f"hub-bench-{size}-{offset}")["QueueUrl"]
    events = []
    for account, index in indexes.items():
        event = push_event("hub/app", index, "seed-0", INDEX, event_id=str(uuid.uuid4()))
        event["account"] = account
        events.append(json.dumps(event))
    for n in range(0, len(events), 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(events[n : n + 10])])
    before = assume_role_calls(emu)
    code, wall, rss, _ = run_measured([str(cli), "serve", "--queue-url", url, "--exit-when-idle", "--wait", "1"], hub_env(emu, accounts))
    assumed = assume_role_calls(emu) - before
    # Every account's push remediated: `seed-0` on the image manifest now.
    wrong = []
    for account in accounts[:: max(1, size // 10)]:
        ecr = account_session(emu.url, account).client("ecr", endpoint_url=emu.url)
        holder = ecr.describe_images(repositoryName="hub/app", imageIds=[{"imageTag": "seed-0"}])["imageDetails"][0]
        if holder["imageManifestMediaType"] == INDEX:
            wrong.append(account)
    row = {
        "accounts": size,
        "exit": code,
        "not_remediated_sampled": len(wrong),
        "peak_rss_mb": round(rss / 1024, 1),
        "assume_role_calls": assumed,
        "wall_s": round(wall, 1),
        "ms_per_event": round(wall * 1000 / size, 1),
        "setup_s": round(setup_s, 1),
    }
    print(f"  hub, {size} member accounts: {row}", file=sys.stderr)
    return row


def fan_out_run(bootstrap: Path, emu: EmulatorProcess, size: int, offset: int) -> dict[str, Any]:
    """The schedule's fan-out in one invocation: one request per account (and the hub's own)."""
    accounts = accounts_for(size, offset)
    sqs = boto3.client("sqs", endpoint_url=emu.url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    url = sqs.create_queue(QueueName=f"hub-fanout-{size}-{offset}")["QueueUrl"]
    api = RuntimeApi()
    env = hub_env(emu, accounts) | api.environment() | {"ECR_REMEDIATOR_QUEUE_URL": url}
    proc = subprocess.Popen([str(bootstrap)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with api.waiting:
            api.waiting.wait_for(lambda: api.first_next_at is not None, timeout=30)
            api.events.append({"ecr-remediator": "sweep"})
            api.waiting.notify_all()
            api.waiting.wait_for(lambda: api.responses, timeout=300)
        if not api.responses:
            raise RuntimeError("bootstrap did not answer the schedule")
        request_id, (answered, body) = next(iter(api.responses.items()))
        took = answered - api.sent_at[request_id]
        status = Path(f"/proc/{proc.pid}/status").read_text()
        peak = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024
    finally:
        proc.kill()
        proc.wait()
        api.close()
    queued = int(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"]
    )
    fanned = len(json.loads(body).get("accounts") or [])
    row = {"accounts": size, "fanned_out": fanned, "requests_queued": queued, "fan_out_s": round(took, 2), "peak_rss_mb": round(peak, 1)}
    print(f"  fan-out, {size} member accounts: {row}", file=sys.stderr)
    return row


def sweep_all_run(cli: Path, emu: EmulatorProcess, size: int, offset: int) -> dict[str, Any]:
    """``sweep --all-accounts`` over ``size`` fresh member accounts, one index each to promote."""
    accounts = accounts_for(size, offset, series=8)
    setup_members(emu, accounts)
    before = assume_role_calls(emu)
    code, wall, rss, out = run_measured(
        # Only the members' repository: in a full `make bench` the hub's own
        # account also holds the per-push benchmark's repositories.
        [str(cli), "sweep", "--all-accounts", "--repository-prefix", "hub/", "--mode", "promote", "--output", "json"],
        hub_env(emu, accounts),
    )
    summaries = [json.loads(line)["summary"] for line in out.splitlines() if line.startswith('{"account"')]
    row = {
        "accounts": size,
        "exit": code,
        "remediated": sum(s["remediated"] for s in summaries),
        "assume_role_calls": assume_role_calls(emu) - before,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(rss / 1024, 1),
    }
    print(f"  sweep --all-accounts, {size} member accounts: {row}", file=sys.stderr)
    return row


def hub_runs(cli: Path, bootstrap: Path, emu: EmulatorProcess, sizes: list[int]) -> dict[str, list[dict[str, Any]]]:
    serve = [serve_run(cli, emu, size, n) for n, size in enumerate(sizes)]
    fan_out = [fan_out_run(bootstrap, emu, size, n) for n, size in enumerate(sizes)]
    sweep_all = [sweep_all_run(cli, emu, size, n) for n, size in enumerate(sizes)]
    return {"serve": serve, "fan_out": fan_out, "sweep_all": sweep_all}


def hub_table(result: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        "| member accounts | peak RSS (`serve`) | `AssumeRole` calls | time per event | fan-out (one invocation) | fan-out peak RSS |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s, f in zip(result["serve"], result["fan_out"], strict=True):
        lines.append(
            f"| {s['accounts']:,} | {s['peak_rss_mb']} MB | {s['assume_role_calls']:,} | {s['ms_per_event']} ms "
            f"| {f['fan_out_s']} s ({f['requests_queued']:,} requests) | {f['peak_rss_mb']} MB |"
        )
    lines += [
        "",
        "| member accounts | `sweep --all-accounts` wall time | remediated | `AssumeRole` calls | peak RSS |",
        "|---:|---:|---:|---:|---:|",
    ]
    for w in result["sweep_all"]:
        lines.append(f"| {w['accounts']:,} | {w['wall_s']} s | {w['remediated']:,} | {w['assume_role_calls']:,} | {w['peak_rss_mb']} MB |")
    return "\n".join(lines)
