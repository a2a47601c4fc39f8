"""``sts:AssumeRole`` as IAM decides it: moto 5.2.5 hands out credentials for
any role ARN, even one that does not exist or does not trust the caller.

:func:`check` evaluates the role's trust policy for the caller with the
evaluator every resource policy here uses (``resource_policy.py``): an
``Allow`` for ``sts:AssumeRole`` whose ``Principal`` names the caller, its
account or ``*``, conditions holding (``sts:ExternalId``,
``aws:PrincipalArn``, ``aws:PrincipalAccount``, ...), and no ``Deny``. A
condition it cannot evaluate makes an ``Allow`` not apply (fail closed).
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from . import delivery, resource_policy


def check(policy_document: str, caller_account: str, caller_arn: str, external_id: str | None) -> str | None:
    """None when the trust policy lets the caller assume the role, else why not."""
    try:
        doc = json.loads(unquote(policy_document)) if isinstance(policy_document, str) else policy_document
    except ValueError:
        return "the role's trust policy is not JSON"
    arn = resource_policy.iam_principal(caller_arn)
    context: dict[str, str | None] = {
        "sts:externalid": external_id,
        "aws:principalarn": arn,
        "aws:principalaccount": caller_account,
        "aws:principalorgid": delivery.organization_of(caller_account),
    }
    decision = resource_policy.evaluate(doc, "sts:AssumeRole", "*", caller_account, arn, context)
    if decision.allowed and decision.denied_by is None:
        return None
    return f"the trust policy does not allow {arn} (external id {'given' if external_id else 'absent'})"
