"""Start and drive a private emulator from test code.

``EmulatorProcess`` runs ``python -m ecr_emulator --port 0`` in a child
process, waits for its ready line and stops it again; ``Control`` wraps the
``/_emulator/`` control API (faults, call counts, recorded events, reset).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


#: The principal the tests' ``testing`` keys act as (moto's default user).
TEST_USER = "arn:aws:iam::123456789012:user/moto"


class EmulatorProcess:
    """A private emulator on a free loopback port."""

    def __init__(self, *args: str, ready_timeout: float = 60.0, exclude_test_user: bool = True):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(PACKAGE_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        # The test user's reads (the service's, in these tests) are not pulls, as
        # the stack's function role's are not: registered, not built in.
        standing = ["--pull-time-exclusion", TEST_USER] if exclude_test_user else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ecr_emulator", "--port", "0", *standing, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline() if self.proc.stdout else ""), daemon=True)
        reader.start()
        reader.join(ready_timeout)
        if not line or "ready on " not in line[0]:
            self.stop()
            raise RuntimeError(f"emulator did not start within {ready_timeout}s: {line} {''.join(self.stderr_lines[-20:])}")
        self.url = line[0].strip().rsplit(" ", 1)[-1]
        self.control = Control(self.url)

    def _drain_stderr(self) -> None:
        if self.proc.stderr is None:
            return
        for text in self.proc.stderr:
            self.stderr_lines.append(text)

    def stop(self) -> None:
        """Stops the emulator (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Control:
    """The emulator's control API."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}/_emulator/{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def health(self) -> dict[str, Any]:
        return self._call("GET", "health")

    def reset(self) -> None:
        self._call("POST", "reset", {})

    def fault(self, operation: str, **spec: Any) -> dict[str, Any]:
        """Sets the fault rule for ``operation`` (see :mod:`ecr_emulator.faults`)."""
        return self._call("POST", "faults", {"operation": operation, **spec})

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def faults(self) -> dict[str, Any]:
        return self._call("GET", "faults")

    def calls(self, repository: str | None = None) -> dict[str, int]:
        """Calls per ``service:Operation``; with ``repository``, only ECR calls on it."""
        return self._call("GET", "calls" + (f"?repository={urllib.parse.quote(repository)}" if repository else ""))

    def clear_calls(self) -> None:
        self._call("DELETE", "calls")

    def events(self) -> list[dict[str, Any]]:
        return self._call("GET", "events")

    def deliveries(self) -> dict[str, list[dict[str, Any]]]:
        """Cross-account EventBridge deliveries made and refused (see ``delivery.py``)."""
        return self._call("GET", "deliveries")

    def config(self, **settings: Any) -> dict[str, Any]:
        return self._call("POST", "config", settings)

    def set_status(self, repository: str, digest: str, status: str) -> None:
        """Moves an image to ``ACTIVE``, ``ARCHIVED`` or ``ACTIVATING`` (as ECR's archiving does)."""
        self._call("POST", "status", {"repository": repository, "digest": digest, "status": status})

    def sso_token(self, token: str, account_id: str, role_name: str) -> None:
        """Makes the IAM Identity Center portal accept ``token`` for ``role_name`` in ``account_id``
        (as if ``aws sso login`` had issued it)."""
        self._call("POST", "sso-token", {"token": token, "account_id": account_id, "role_name": role_name})


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> Any:
    """Polls ``predicate`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def push_event(repository: str, digest: str, tag: str, media_type: str, event_id: str | None = None) -> dict[str, Any]:
    """An ``ECR Image Action`` PUSH event as ECR sends it to EventBridge."""
    return {
        "version": "0",
        "id": event_id or f"evt-{digest[7:15]}-{tag}",
        "detail-type": "ECR Image Action",
        "source": "aws.ecr",
        "account": "123456789012",
        "time": "2026-11-23T12:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "result": "SUCCESS",
            "repository-name": repository,
            "image-digest": digest,
            "action-type": "PUSH",
            "image-tag": tag,
            "manifest-media-type": media_type,
        },
    }


#: The emulator's default account, as the static test credentials see it.
HUB_ACCOUNT = "123456789012"


def account_session(url: str, account: str, region: str = "us-east-1") -> Any:
    """A boto3 session acting in ``account``, through the OrganizationAccountAccessRole that trusts the
    management account (the test credentials' account), as in accounts AWS Organizations creates."""
    import boto3

    sts = boto3.client("sts", endpoint_url=url, region_name=region, aws_access_key_id="testing", aws_secret_access_key="testing")
    c = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole", RoleSessionName="setup")["Credentials"]
    return boto3.Session(
        aws_access_key_id=c["AccessKeyId"],
        aws_secret_access_key=c["SecretAccessKey"],
        aws_session_token=c["SessionToken"],
        region_name=region,
    )


def member_role_trust(hub_principal_arn: str, external_id: str, hub_account: str = HUB_ACCOUNT) -> dict[str, Any]:
    """The member role's trust policy, as infra/member.yaml writes it: the hub account, only for the hub's
    principal, with the external id."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{hub_account}:root"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id, "aws:PrincipalArn": hub_principal_arn}},
            }
        ],
    }
