"""Cross-account EventBridge delivery to an SQS queue, as AWS decides it.

moto 5.2.5 delivers an SQS target in the *rule's* account, whatever account
the target ARN names, and evaluates no policy. A member account's forwarding
rule (``infra/member.yaml``) targets the hub's queue in another account
through an execution role, so the emulator takes over exactly those targets
(an SQS ARN in another account) and delivers them as AWS does:

1. the queue must be in the rule's region (EventBridge does not deliver to an
   SQS queue in another region);
2. the target needs a ``RoleArn``: a role of the rule's account that trusts
   ``events.amazonaws.com`` and whose inline or managed policies allow
   ``sqs:SendMessage`` on the queue;
3. the queue must exist, and its resource policy (``Policy`` attribute) must
   allow that role: ``Allow`` statements for ``sqs:SendMessage`` whose
   ``Principal`` is ``*`` or names the role or its account, and whose
   conditions hold; any matching ``Deny`` refuses.

The queue policy is evaluated as every resource policy here is
(``resource_policy.py``: conditions it cannot evaluate fail closed).
Organisation membership is the emulator's setting (:data:`ORGANIZATIONS`),
not moto's Organizations API, whose accounts get random ids.

A refused delivery is dropped, as AWS drops it (the rule's
``FailedInvocations``), and recorded in :data:`FAILED` with the reason, which
the control API serves at ``/_emulator/deliveries``.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections import deque
from typing import Any

from moto.core.common_models import CloudFormationModel
from moto.core.utils import iso_8601_datetime_without_milliseconds, utcfromtimestamp
from moto.events import models as moto_events_models
from moto.events.utils import EventTemplateParser

from . import resource_policy
from .resource_policy import as_list

log = logging.getLogger("ecr_emulator.delivery")

#: Organisation id -> member accounts (the management account included).
DEFAULT_ORGANIZATIONS: dict[str, list[str]] = {"o-emulator01": ["123456789012", "222222222222", "333333333333"]}
ORGANIZATIONS: dict[str, list[str]] = {k: list(v) for k, v in DEFAULT_ORGANIZATIONS.items()}
#: Refused deliveries, newest last.
FAILED: deque[dict[str, Any]] = deque(maxlen=1000)
#: Deliveries made across accounts.
DELIVERED: deque[dict[str, Any]] = deque(maxlen=1000)
_LOCK = threading.Lock()


def reset() -> None:
    """Back to the default organisation, no recorded deliveries."""
    with _LOCK:
        ORGANIZATIONS.clear()
        ORGANIZATIONS.update({k: list(v) for k, v in DEFAULT_ORGANIZATIONS.items()})
        FAILED.clear()
        DELIVERED.clear()


def organization_of(account: str) -> str | None:
    with _LOCK:
        return next((org for org, accounts in ORGANIZATIONS.items() if account in accounts), None)


def _parse_sqs_arn(arn: str) -> tuple[str, str, str] | None:
    parts = arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs":
        return None
    return parts[3], parts[4], parts[5]


def resource_policy_allows(
    policy: Any, action: str, resource: str, account: str, role_arn: str, context: dict[str, str | None]
) -> str | None:
    """None when the queue's resource policy lets the principal do ``action``, else why not."""
    decision = resource_policy.evaluate(policy, action, resource, account, role_arn, context)
    if decision.denied_by is not None:
        return f"denied by the queue policy's statement {decision.denied_by!r}".replace(" ''", "")
    if decision.allowed:
        return None
    return "no statement of the queue policy allows the principal (organisation, account and role checked)"


def identity_allows(role: Any, action: str, resource: str) -> bool:
    documents = [resource_policy.document(d) for d in getattr(role, "policies", {}).values()]
    documents += [resource_policy.document(getattr(p, "document", None)) for p in getattr(role, "managed_policies", {}).values()]
    allowed = False
    for doc in documents:
        for statement in as_list(doc.get("Statement", [])):
            if (
                not isinstance(statement, dict)
                or not resource_policy.action_matches(statement, action)
                or not resource_policy.resource_matches(statement, resource)
            ):
                continue
            if statement.get("Condition"):
                continue  # not evaluated: never taken as allowing
            if statement.get("Effect") == "Deny":
                return False
            if statement.get("Effect") == "Allow":
                allowed = True
    return allowed


def _trusts_eventbridge(role: Any, rule: Any) -> bool:
    """Whether the role lets EventBridge assume it for ``rule`` (``aws:SourceAccount``/``aws:SourceArn`` conditions evaluated)."""
    context: dict[str, str | None] = {"aws:sourceaccount": rule.account_id, "aws:sourcearn": rule.arn}
    for statement in as_list(resource_policy.document(role.assume_role_policy_document).get("Statement", [])):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        if resource_policy.conditions(statement.get("Condition"), context) is not True:
            continue
        principal = statement.get("Principal")
        services = as_list(principal.get("Service", [])) if isinstance(principal, dict) else []
        if "events.amazonaws.com" in services and resource_policy.action_matches(statement, "sts:AssumeRole"):
            return True
    return False


def refusal(rule: Any, target: dict[str, Any], queue_arn: str) -> str | None:
    """None when EventBridge may deliver ``rule``'s event to ``queue_arn`` in another account, else why not."""
    from moto.iam.models import iam_backends
    from moto.sqs.models import sqs_backends

    region, account, name = _parse_sqs_arn(queue_arn) or ("", "", "")
    if region != rule.region_name:
        return f"the queue is in {region}, not in the rule's region {rule.region_name}"
    role_arn = target.get("RoleArn")
    if not role_arn:
        return "a target in another account needs a RoleArn"
    if f":{rule.account_id}:" not in role_arn:
        return f"the role {role_arn} is not in the rule's account {rule.account_id}"
    try:
        role = iam_backends[rule.account_id]["aws"].get_role_by_arn(role_arn)
    except Exception:  # moto's IAMNotFoundException
        return f"the role {role_arn} does not exist"
    if not _trusts_eventbridge(role, rule):
        return f"the role {role_arn} does not trust events.amazonaws.com"
    if not identity_allows(role, "sqs:SendMessage", queue_arn):
        return f"the role {role_arn} is not allowed sqs:SendMessage on {queue_arn}"
    try:
        queue = sqs_backends[account][region].get_queue(name)
    except Exception:  # moto's QueueDoesNotExist
        return f"the queue {queue_arn} does not exist"
    context: dict[str, str | None] = {
        "aws:principalorgid": organization_of(rule.account_id),
        "aws:principalaccount": rule.account_id,
        "aws:principalarn": role_arn,
        "aws:sourcearn": rule.arn,
        "aws:sourceaccount": rule.account_id,
    }
    return resource_policy_allows(queue.policy, "sqs:SendMessage", queue_arn, rule.account_id, role_arn, context)


def _deliver(rule: Any, target: dict[str, Any], original_event: dict[str, Any]) -> None:
    from moto.sqs.models import sqs_backends

    queue_arn = target["Arn"]
    why = refusal(rule, target, queue_arn)
    record = {"rule": rule.arn, "target": queue_arn, "role": target.get("RoleArn"), "event_id": original_event.get("id")}
    if why is not None:
        log.info("EventBridge delivery from %s to %s refused: %s", rule.arn, queue_arn, why)
        with _LOCK:
            FAILED.append({**record, "reason": why})
        return
    transformer = target.get("InputTransformer", {})
    event = EventTemplateParser.parse(
        input_template=transformer.get("InputTemplate"),
        input_paths_map=transformer.get("InputPathsMap", {}),
        event=original_event,
    )
    if isinstance(event, dict) and "time" in event:
        event["time"] = iso_8601_datetime_without_milliseconds(utcfromtimestamp(float(event["time"])))
    region, account, name = _parse_sqs_arn(queue_arn) or ("", "", "")
    sqs_backends[account][region].send_message(queue_name=name, message_body=json.dumps(event))
    with _LOCK:
        DELIVERED.append(record)


def _is_foreign_queue(rule: Any, target: dict[str, Any]) -> bool:
    parsed = _parse_sqs_arn(str(target.get("Arn", "")))
    return parsed is not None and parsed[1] != rule.account_id


_moto_send_to_targets = moto_events_models.Rule.send_to_targets


def _send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
    foreign = [t for t in self.targets if _is_foreign_queue(self, t)]
    if not foreign:
        _moto_send_to_targets(self, original_event, transform_input)
        return
    if not self.event_pattern.matches_event(original_event):
        return
    # A shallow copy with the other targets, so concurrent deliveries of this rule see it whole.
    local = copy.copy(self)
    local.targets = [t for t in self.targets if t not in foreign]
    _moto_send_to_targets(local, original_event, transform_input)
    for target in foreign:
        _deliver(self, target, original_event)


moto_events_models.Rule.send_to_targets = _send_to_targets  # type: ignore[method-assign]


class QueuePolicy(CloudFormationModel):
    """Fidelity fix for moto's CloudFormation: ``AWS::SQS::QueuePolicy`` sets
    each listed queue's ``Policy`` (moto 5.2.5 skips the resource, so a
    deployed hub's queue would accept nothing from other accounts here)."""

    def __init__(self, name: str, account_id: str, region: str, queues: list[str]):
        self.name = name
        self.account_id = account_id
        self.region = region
        self.queues = queues

    @property
    def physical_resource_id(self) -> str:
        return self.name

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SQS::QueuePolicy"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Id"

    @staticmethod
    def _set(account_id: str, region: str, queues: list[str], document: Any) -> None:
        from moto.sqs.models import sqs_backends

        for url in queues:
            name = str(url).rstrip("/").rsplit("/", 1)[-1]
            sqs_backends[account_id][region].get_queue(name).policy = json.dumps(document) if document else None

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[misc]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> QueuePolicy:
        props = cloudformation_json.get("Properties", {})
        queues = [str(q) for q in as_list(props.get("Queues", []))]
        cls._set(account_id, region_name, queues, props.get("PolicyDocument"))
        return cls(resource_name, account_id, region_name, queues)

    @classmethod
    def update_from_cloudformation_json(  # type: ignore[misc]
        cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> QueuePolicy:
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[misc]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        props = cloudformation_json.get("Properties", {})
        try:
            cls._set(account_id, region_name, [str(q) for q in as_list(props.get("Queues", []))], None)
        except Exception:  # the queue may be gone already
            log.debug("queue policy of a deleted queue not cleared")
