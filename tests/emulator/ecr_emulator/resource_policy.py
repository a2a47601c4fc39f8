"""IAM policies as AWS evaluates them, for the subset the emulator enforces:
an SQS queue's ``Policy`` (cross-account EventBridge delivery,
``delivery.py``), an EventBridge event bus's policy (``PutEvents``,
``event_bus.py``) and a role's trust policy (``AssumeRole``, ``trust.py``);
and the principal ARN a policy sees for a caller (:func:`iam_principal`).
One evaluator, so every policy answers alike.

What AWS does (IAM User Guide, "Policy evaluation logic"): an explicit
``Deny`` that applies refuses, whatever allows; within one account an
identity policy *or* the resource policy may allow; across accounts the
resource policy must allow. The emulator models no identity policies, so a
caller in the resource's own account is allowed unless a ``Deny`` applies.

Statements understood: ``Effect``, ``Principal`` (``*``, ``{"AWS": ...}``
naming an account, its root, or the principal's ARN), ``Action`` (exact,
``service:*`` or ``*``), ``Resource`` (with wildcards) and ``Condition`` with
``StringEquals``, ``StringNotEquals``, ``StringLike``, ``StringNotLike``,
``ArnEquals``, ``ArnNotEquals``, ``ArnLike``, ``ArnNotLike`` and ``Null``
(``"true"``: the key is absent; ``"false"``: present) on the keys in
:data:`KNOWN_KEYS`. A negated operator holds when the key is absent from
the request, as in IAM ("...IfExists" aside). A condition the emulator cannot
evaluate, and a statement with ``NotPrincipal``, ``NotAction`` or
``NotResource``, makes an ``Allow`` not apply and a ``Deny`` apply (fail
closed).
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from typing import Any

KNOWN_KEYS = {
    "sts:externalid",
    "aws:principalorgid",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:sourcearn",
    "aws:sourceaccount",
    "events:source",
    "events:detail-type",
}
#: Statement elements the emulator does not evaluate.
NEGATED_ELEMENTS = {"NotPrincipal", "NotAction", "NotResource"}
#: Operator -> (wildcards, negated).
OPERATORS = {
    "StringEquals": (False, False),
    "StringNotEquals": (False, True),
    "StringLike": (True, False),
    "StringNotLike": (True, True),
    "ArnEquals": (False, False),
    "ArnNotEquals": (False, True),
    "ArnLike": (True, False),
    "ArnNotLike": (True, True),
}


def as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def iam_principal(arn: str) -> str:
    """The IAM principal an STS caller ARN stands for: an assumed-role session
    is its role, path included (``arn:aws:sts::A:assumed-role/R/s`` → ``arn:aws:iam::A:role/P/R``);
    a user, as IAM names it."""
    m = re.match(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/.+$", arn)
    if m:
        return f"arn:{m.group(1)}:iam::{m.group(2)}:role{_role_path(m.group(2), m.group(3))}{m.group(3)}"
    m = re.match(r"^arn:(aws[a-z-]*):sts::(\d{12}):(user/.+)$", arn)
    if m:
        return f"arn:{m.group(1)}:iam::{m.group(2)}:{m.group(3)}"
    return arn


def _role_path(account: str, name: str) -> str:
    """The IAM path of role ``name`` in ``account`` (``/`` when moto does not know it): a role's
    principal ARN carries it (``arn:aws:iam::A:role/team/ops``), its session ARN does not."""
    from moto.iam.models import iam_backends

    try:
        return str(iam_backends[account]["global"].get_role(name).path or "/")
    except Exception:  # moto's IAMNotFoundException: a role the tests never created
        return "/"


def document(doc: Any) -> dict[str, Any]:
    """A policy document as a dict (it may come as JSON text); ``{}`` when it is not one."""
    if isinstance(doc, dict):
        return doc
    try:
        parsed = json.loads(doc) if doc else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def conditions(condition: Any, context: dict[str, str | None]) -> bool | None:
    """True/False when the conditions can be evaluated, None when they cannot."""
    if not condition:
        return True
    if not isinstance(condition, dict):
        return None
    for operator, tests in condition.items():
        if (operator not in OPERATORS and operator != "Null") or not isinstance(tests, dict):
            return None
        if operator == "Null":
            for key, wanted in tests.items():
                if key.lower() not in KNOWN_KEYS or str(wanted).lower() not in ("true", "false"):
                    return None
                if (context.get(key.lower()) is None) != (str(wanted).lower() == "true"):
                    return False
            continue
        like, negated = OPERATORS[operator]
        for key, wanted in tests.items():
            if key.lower() not in KNOWN_KEYS:
                return None
            have = context.get(key.lower())
            if have is None:
                if negated:
                    continue
                return False
            values = [str(w) for w in as_list(wanted)]
            matched = any(fnmatch.fnmatchcase(have, w) if like else have == w for w in values)
            if matched == negated:
                return False
    return True


def action_matches(statement: dict[str, Any], action: str) -> bool:
    service = action.split(":")[0]
    return any(str(a).lower() in (action.lower(), f"{service}:*", "*") for a in as_list(statement.get("Action", [])))


def resource_matches(statement: dict[str, Any], resource: str) -> bool:
    if "Resource" not in statement:
        return True
    return any(fnmatch.fnmatchcase(resource, str(r)) for r in as_list(statement["Resource"]))


def principal_matches(principal: Any, account: str, principal_arn: str) -> bool:
    """Whether a statement's ``Principal`` names the caller: ``*``, its account (as an id or
    its root ARN) or its own ARN."""
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    names = [str(p) for p in as_list(principal.get("AWS", []))]
    partition = principal_arn.split(":")[1] if principal_arn.count(":") >= 5 else "aws"
    return any(p in ("*", account, f"arn:{partition}:iam::{account}:root", principal_arn) for p in names)


@dataclass(frozen=True)
class Decision:
    """What a resource policy says of one request."""

    #: The ``Sid`` (or ``""``) of a ``Deny`` that applies, if any.
    denied_by: str | None
    #: Whether an ``Allow`` applies.
    allowed: bool


def evaluate(policy: Any, action: str, resource: str, account: str, principal_arn: str, context: dict[str, str | None]) -> Decision:
    """The statements of ``policy`` that apply to ``principal_arn`` (of ``account``) doing
    ``action`` on ``resource``, with ``context`` for conditions."""
    allowed = False
    for statement in as_list(document(policy).get("Statement", [])):
        if not isinstance(statement, dict):
            continue
        if NEGATED_ELEMENTS & statement.keys():
            # Not evaluated: a Deny applies, an Allow does not (fail closed).
            if statement.get("Effect") == "Deny":
                return Decision(denied_by=str(statement.get("Sid", "")), allowed=False)
            continue
        if not action_matches(statement, action) or not resource_matches(statement, resource):
            continue
        if not principal_matches(statement.get("Principal"), account, principal_arn):
            continue
        holds = conditions(statement.get("Condition"), context)
        if statement.get("Effect") == "Deny" and holds is not False:
            return Decision(denied_by=str(statement.get("Sid", "")), allowed=False)
        if statement.get("Effect") == "Allow" and holds is True:
            allowed = True
    return Decision(denied_by=None, allowed=allowed)
