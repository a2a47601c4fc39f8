"""An EventBridge event bus's resource policy, as EventBridge applies it.

moto 5.2.5 stores a bus's policy (``PutPermission``) but evaluates it nowhere, and its
CloudFormation ignores ``AWS::Events::EventBus``'s ``Policy`` property. Here:

* :func:`refusal` says whether the bus an entry names refuses it from the caller
  (``server.py`` answers ``PutEvents`` entry by entry with it);
* ``AWS::Events::EventBus`` ``Policy`` is set when CloudFormation creates or updates the bus
  (replacing the whole policy, as the property does), so a deployed template's bus is guarded
  as on AWS.
"""

from __future__ import annotations

import json
from typing import Any

from moto.events import models as moto_events_models
from moto.events.models import events_backends

from . import delivery, resource_policy


def refusal(entry: Any, caller: str, principal: str, caller_account: str, region: str) -> str | None:
    """Why the bus ``entry`` names refuses it from ``principal`` (an IAM principal ARN of
    ``caller_account``), or None. A bus that does not exist is left to moto."""
    if not isinstance(entry, dict):
        return None
    named = str(entry.get("EventBusName") or "default")
    if named.startswith("arn:"):
        parts = named.split(":")
        if len(parts) != 6 or not parts[5].startswith("event-bus/"):
            return None
        bus_region, bus_account, bus_name = parts[3], parts[4], parts[5].split("/", 1)[1]
    else:
        bus_region, bus_account, bus_name = region, caller_account, named
    try:
        bus = events_backends[bus_account][bus_region].describe_event_bus(bus_name)
    except Exception:  # moto's ResourceNotFoundException: moto answers it
        return None
    context: dict[str, str | None] = {
        "aws:principalarn": principal,
        "aws:principalaccount": caller_account,
        "aws:principalorgid": delivery.organization_of(caller_account),
        "events:source": str(entry.get("Source", "")),
        "events:detail-type": str(entry.get("DetailType", "")),
    }
    decision = resource_policy.evaluate(bus.policy, "events:PutEvents", bus.arn, caller_account, principal, context)
    if decision.denied_by is not None:
        return (
            f"User: {caller} is not authorized to perform: events:PutEvents on resource: {bus.arn} "
            "with an explicit deny in a resource-based policy"
        )
    if caller_account != bus_account and not decision.allowed:
        return (
            f"User: {caller} is not authorized to perform: events:PutEvents on resource: {bus.arn} "
            "because no resource-based policy allows the events:PutEvents action"
        )
    return None


def _set_policy(bus: Any, policy: Any) -> None:
    bus.remove_statements()
    document = resource_policy.document(policy)
    if document.get("Statement"):
        bus.add_policy(json.loads(json.dumps(document)))


_moto_create = moto_events_models.EventBus.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
_moto_update = moto_events_models.EventBus.update_from_cloudformation_json.__func__  # type: ignore[attr-defined]


def _create(cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any) -> Any:
    bus = _moto_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
    _set_policy(bus, cloudformation_json.get("Properties", {}).get("Policy"))
    return bus


def _update(cls: Any, original_resource: Any, new_resource_name: str, cloudformation_json: Any, account_id: str, region_name: str) -> Any:
    bus = _moto_update(cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name)
    _set_policy(bus, cloudformation_json.get("Properties", {}).get("Policy"))
    return bus


moto_events_models.EventBus.create_from_cloudformation_json = classmethod(_create)  # type: ignore[method-assign,assignment]
moto_events_models.EventBus.update_from_cloudformation_json = classmethod(_update)  # type: ignore[method-assign,assignment]
