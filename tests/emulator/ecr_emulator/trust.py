"""``sts:AssumeRole`` as IAM decides it: moto 5.2.5 hands out credentials for
any role ARN, even one that does not exist or does not trust the caller.

:func:`check` evaluates the role's trust policy for the caller, with the
subset of IAM the project's templates use: ``Allow`` statements on
``sts:AssumeRole`` whose ``Principal`` is an ``AWS`` account (id or
``:root`` ARN) or principal ARN, and ``StringEquals`` conditions on
``sts:ExternalId``, ``aws:PrincipalArn`` and ``aws:PrincipalAccount``. Any
other condition key or operator makes the statement not apply (fail
closed), so a policy this module cannot evaluate is never taken as allowing.
``Deny`` statements and organisations (``aws:PrincipalOrgID``) are not
evaluated.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

ASSUMED = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/.+$")
KNOWN_KEYS = {"sts:externalid", "aws:principalarn", "aws:principalaccount"}


def principal_arn(caller_arn: str) -> str:
    """The ARN IAM compares with ``aws:PrincipalArn``: a role's, for an assumed-role session."""
    m = ASSUMED.match(caller_arn)
    return f"arn:{m.group(1)}:iam::{m.group(2)}:role/{m.group(3)}" if m else caller_arn


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def _principal_matches(principal: Any, account: str, arn: str) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    return any(p in ("*", account, f"arn:aws:iam::{account}:root", arn) for p in _list(principal.get("AWS", [])))


def _conditions_hold(condition: Any, context: dict[str, str | None]) -> bool:
    if not condition:
        return True
    if not isinstance(condition, dict):
        return False
    for operator, tests in condition.items():
        if operator != "StringEquals" or not isinstance(tests, dict):
            return False
        for key, wanted in tests.items():
            if key.lower() not in KNOWN_KEYS:
                return False
            have = context.get(key.lower())
            if have is None or have not in [str(w) for w in _list(wanted)]:
                return False
    return True


def check(policy_document: str, caller_account: str, caller_arn: str, external_id: str | None) -> str | None:
    """None when the trust policy lets the caller assume the role, else why not."""
    try:
        doc = json.loads(unquote(policy_document)) if isinstance(policy_document, str) else policy_document
    except ValueError:
        return "the role's trust policy is not JSON"
    arn = principal_arn(caller_arn)
    context = {"sts:externalid": external_id, "aws:principalarn": arn, "aws:principalaccount": caller_account}
    for statement in _list(doc.get("Statement", [])):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        if not {"sts:AssumeRole", "sts:*", "*"} & set(_list(statement.get("Action", []))):
            continue
        if _principal_matches(statement.get("Principal"), caller_account, arn) and _conditions_hold(statement.get("Condition"), context):
            return None
    return f"the trust policy does not allow {arn} (external id {'given' if external_id else 'absent'})"
