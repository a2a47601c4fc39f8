"""ECS and Lambda as far as images go: what they resolve a tag to, and pull.

moto serves both services; these fidelity fixes make them resolve image
references against the emulator's ECR (``registry.py``) the way AWS does:

* **ECS** resolves each container's image to a digest when a service
  deployment starts (``CreateService``, ``UpdateService``) and records it in a
  *service revision* (``DescribeServices`` → ``currentServiceRevisions``,
  ``DescribeServiceRevisions`` → ``containerImages[].imageDigest``), unless
  the container says ``versionConsistency: disabled``; a task it starts
  (``RunTask``) reports ``containers[].imageDigest`` and pulls the image.
  moto 5.2.5 has no service revisions and no image digests at all.
  ``ListTaskDefinitions`` pages as ECS does (``maxResults`` 1-100, default
  100, ``nextToken``, ``sort``); moto 5.2.5 returns every ARN in one reply.
* **Lambda** resolves ``ImageUri`` once, at ``CreateFunction`` and
  ``UpdateFunctionCode`` (``Code.ResolvedImageUri``, ``CodeSha256``), pulls
  it, and refuses an image index ("The image manifest, config or layer media
  type for the source image ... is not supported"). moto hashes the URI string,
  and its ``ResolvedImageUri`` of a by-digest ``ImageUri`` is malformed.
* **Lambda function states**: ``CreateFunction`` answers ``State: Pending``
  (``StateReasonCode: Creating``) and the function turns ``Active`` (with
  ``LastUpdateStatus: Successful``) after a set number of ``GetFunction`` /
  ``GetFunctionConfiguration`` reads (``LambdaStates.pending_reads``);
  meanwhile ``UpdateFunctionCode``, ``UpdateFunctionConfiguration``,
  ``PublishVersion`` and ``Invoke`` are refused with
  ``ResourceConflictException``. moto makes every function ``Active`` at once.
  ``ListFunctions`` leaves the state fields out, as Lambda does.

Differences from AWS, kept small on purpose: a deployment's revision is the
service's only current revision at once (no rolling overlap); ECS pulls when
a service with tasks is deployed or a task is run, Lambda when it resolves;
nothing else about tasks runs.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

from .registry import INDEX_TYPES, EcrError, Registry

ECS_TARGET = "AmazonEC2ContainerServiceV20141113."
#: ``<account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag][@digest]``
ECR_URI = re.compile(
    r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"([a-z0-9][a-z0-9._/-]*?)(?::([A-Za-z0-9_][A-Za-z0-9_.-]{0,299}))?(?:@(sha256:[a-f0-9]{64}))?$"
)


def resolve(registry: Registry, image: str, pull: bool) -> tuple[str, str] | None:
    """The digest and media type ``image`` names in the emulator's ECR, or None
    (not an ECR reference, or nothing there); with ``pull``, records a pull."""
    m = ECR_URI.match(image or "")
    if m is None:
        return None
    account, region, name, tag, digest = m.groups()
    try:
        repo = registry.repo(account, region, name)
    except EcrError:
        return None
    if digest is None:
        digest = repo.tags.get(tag or "latest")
    stored = repo.images.get(digest or "")
    if stored is None:
        return None
    if pull:
        stored.last_pulled = _dt.datetime.now(_dt.UTC)
    return stored.digest, stored.media_type


class Ecs:
    """Service revisions and task image digests, on top of moto's ECS."""

    def __init__(self, registry: Callable[[], Registry], lock: threading.RLock):
        self.registry = registry
        self.lock = lock
        #: Service ARN → its current revision ARNs.
        self.current: dict[str, list[str]] = {}
        #: Revision ARN → the revision as DescribeServiceRevisions returns it.
        self.revisions: dict[str, dict[str, Any]] = {}
        #: Task ARN → its containers' images and digests.
        self.tasks: dict[str, list[dict[str, Any]]] = {}

    def reset(self) -> None:
        self.current.clear()
        self.revisions.clear()
        self.tasks.clear()

    def _containers(self, account: str, region: str, task_definition: str, pull: bool) -> list[dict[str, Any]]:
        from moto.ecs.models import ecs_backends

        definition = ecs_backends[account][region].describe_task_definition(task_definition)
        out = []
        with self.lock:
            for c in definition.container_definitions:
                entry: dict[str, Any] = {"containerName": c.get("name"), "image": c.get("image")}
                if c.get("versionConsistency") != "disabled":
                    found = resolve(self.registry(), c.get("image") or "", pull)
                    if found:
                        entry["imageDigest"] = found[0]
                out.append(entry)
        return out

    def answer(self, operation: str, body: dict[str, Any], account: str, region: str) -> dict[str, Any] | None:
        """The reply to an operation moto lacks (or answers unlike AWS), or None to let moto answer."""
        if operation == "ListTaskDefinitions":
            return list_task_definitions(body, account, region)
        if operation != "DescribeServiceRevisions":
            return None
        arns = body.get("serviceRevisionArns") or []
        if not isinstance(arns, list) or not 1 <= len(arns) <= 20:
            raise EcrError("InvalidParameterException", "serviceRevisionArns must list 1 to 20 ARNs")
        found = [self.revisions[a] for a in arns if a in self.revisions]
        failures = [{"arn": a, "reason": "MISSING"} for a in arns if a not in self.revisions]
        return {"serviceRevisions": found, "failures": failures}

    def amend(self, operation: str, body: dict[str, Any], reply: dict[str, Any], account: str, region: str) -> dict[str, Any]:
        """moto's reply to ``operation`` with what AWS adds (see the module's notes)."""
        if operation in ("CreateService", "UpdateService") and isinstance(reply.get("service"), dict):
            service = reply["service"]
            self._deploy(service, account, region)
            self._with_revisions(service)
        elif operation == "DescribeServices":
            for service in reply.get("services") or []:
                self._with_revisions(service)
        elif operation == "RunTask":
            for task in reply.get("tasks") or []:
                containers = self._containers(account, region, task.get("taskDefinitionArn", ""), pull=True)
                self.tasks[task.get("taskArn", "")] = containers
                self._with_digests(task)
        elif operation == "DescribeTasks":
            for task in reply.get("tasks") or []:
                self._with_digests(task)
        return reply

    def _deploy(self, service: dict[str, Any], account: str, region: str) -> None:
        arn = service.get("serviceArn", "")
        containers = self._containers(account, region, service.get("taskDefinition", ""), pull=service.get("desiredCount", 0) > 0)
        cluster = service.get("clusterArn", "")
        name = arn.rsplit("/", 1)[-1]
        cluster_name = cluster.rsplit("/", 1)[-1]
        revision_arn = f"arn:aws:ecs:{region}:{account}:service-revision/{cluster_name}/{name}/{uuid.uuid4().int % 10**19}"
        self.revisions[revision_arn] = {
            "serviceRevisionArn": revision_arn,
            "serviceArn": arn,
            "clusterArn": cluster,
            "taskDefinition": service.get("taskDefinition"),
            "containerImages": containers,
            "createdAt": _dt.datetime.now(_dt.UTC).timestamp(),
        }
        self.current[arn] = [revision_arn]

    def _with_revisions(self, service: dict[str, Any]) -> None:
        revisions = self.current.get(service.get("serviceArn", ""), [])
        if revisions:
            service["currentServiceRevisions"] = [
                {
                    "arn": r,
                    "requestedTaskCount": service.get("desiredCount", 0),
                    "runningTaskCount": service.get("runningCount", 0),
                    "pendingTaskCount": service.get("pendingCount", 0),
                }
                for r in revisions
            ]

    def _with_digests(self, task: dict[str, Any]) -> None:
        recorded = self.tasks.get(task.get("taskArn", ""))
        if recorded is None:
            return
        containers = task.get("containers") or []
        for i, c in enumerate(recorded):
            if i < len(containers):
                containers[i].update({k: v for k, v in c.items() if k != "containerName"})
                containers[i].setdefault("name", c.get("containerName"))
            else:
                containers.append({"name": c.get("containerName"), **{k: v for k, v in c.items() if k != "containerName"}})
        task["containers"] = containers


#: ``ListTaskDefinitions``: the statuses it filters by, and its page size (default and most).
TASK_DEFINITION_STATUSES = ("ACTIVE", "INACTIVE", "DELETE_IN_PROGRESS")
TASK_DEFINITION_PAGE = 100


def list_task_definitions(body: dict[str, Any], account: str, region: str) -> dict[str, Any]:
    """``ListTaskDefinitions`` as the ECS API reference describes it, over moto's
    task definitions (moto 5.2.5 filters but returns one unbounded page):
    ``status`` (ACTIVE unless given; ACTIVE, INACTIVE or DELETE_IN_PROGRESS),
    ``familyPrefix`` (the full family name), ``sort`` (ASC: by family, then
    revision; DESC reverses both), ``maxResults`` 1-100 (100 when absent) and
    ``nextToken``. A token is tied to the filters and sort it was issued for
    and resumes after the last revision listed."""
    from moto.ecs.models import ecs_backends

    status = body.get("status")
    if status is None:
        status = "ACTIVE"
    if status not in TASK_DEFINITION_STATUSES:
        raise EcrError("InvalidParameterException", f"Invalid status {status!r}: it must be one of {', '.join(TASK_DEFINITION_STATUSES)}")
    order = body.get("sort")
    if order is None:
        order = "ASC"
    if order not in ("ASC", "DESC"):
        raise EcrError("InvalidParameterException", f"Invalid sort {order!r}: it must be ASC or DESC")
    family = body.get("familyPrefix")
    if family is not None and not isinstance(family, str):
        raise EcrError("InvalidParameterException", "familyPrefix must be a string")
    size = body.get("maxResults")
    if size is None:
        size = TASK_DEFINITION_PAGE
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= TASK_DEFINITION_PAGE:
        raise EcrError("InvalidParameterException", f"maxResults must be between 1 and {TASK_DEFINITION_PAGE}")
    query = [status, family, order]
    after: tuple[str, int] | None = None
    token = body.get("nextToken")
    if token is not None:
        try:
            state = json.loads(base64.urlsafe_b64decode(str(token).encode()))
            after = (str(state["after"][0]), int(state["after"][1]))
            issued_for = state["query"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise EcrError("InvalidParameterException", "Invalid nextToken") from None
        if issued_for != query:
            raise EcrError("InvalidParameterException", "nextToken was issued for other status, familyPrefix or sort values")
    backend = ecs_backends[account][region]
    listed = sorted(
        (d.family, d.revision, d.arn)
        for revisions in backend.task_definitions.values()
        for d in revisions.values()
        if d.status == status and (family is None or d.family == family)
    )
    if order == "DESC":
        listed.reverse()
    if after is not None:
        listed = [t for t in listed if ((t[0], t[1]) > after if order == "ASC" else (t[0], t[1]) < after)]
    page = listed[:size]
    out: dict[str, Any] = {"taskDefinitionArns": [arn for _, _, arn in page]}
    if len(listed) > size:
        last = page[-1]
        out["nextToken"] = base64.urlsafe_b64encode(json.dumps({"query": query, "after": [last[0], last[1]]}).encode()).decode()
    return out


_PATCHED: list[bool] = []


class LambdaStates:
    """How long a function made by ``CreateFunction`` stays ``Pending`` (Lambda Developer Guide,
    "Lambda function states"): ``pending_reads`` ``GetFunction`` / ``GetFunctionConfiguration``
    reads answer ``Pending``, the next ones ``Active``. One by default, so a client that reads once
    and does not poll is caught; 0 makes the first read ``Active``. Functions created through
    CloudFormation are ``Active`` at once."""

    pending_reads = 1


#: The attribute on a moto function holding how many reads it still answers ``Pending``.
PENDING = "_ecr_emulator_pending_reads"
#: What Lambda reports about a function it is still creating (Lambda API reference,
#: ``FunctionConfiguration``: "When the code is Creating, you can't invoke or modify the function").
PENDING_STATE = {"State": "Pending", "StateReason": "The function is being created.", "StateReasonCode": "Creating"}


#: The configuration fields ``ListFunctions`` does not return (Lambda API reference, ``ListFunctions``).
NOT_LISTED = (
    "State",
    "StateReason",
    "StateReasonCode",
    "LastUpdateStatus",
    "LastUpdateStatusReason",
    "LastUpdateStatusReasonCode",
    "RuntimeVersionConfig",
)


def resolved_image_uri(uri: str, digest_hex: str) -> str:
    """``ResolvedImageUri`` as Lambda reports it: the repository of ``uri`` (tag and digest
    dropped) at the digest the function runs."""
    head, _, last = uri.split("@", 1)[0].rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}@sha256:{digest_hex}"


def patch_lambda(registry: Callable[[], Registry], lock: threading.RLock) -> None:
    """Makes moto's Lambda resolve ``ImageUri`` against the emulator's ECR
    (``registry`` gives the current one) and report function states as Lambda
    does (``LambdaStates``); once per process."""
    if _PATCHED:
        return
    _PATCHED.append(True)
    from urllib.parse import unquote

    from moto.awslambda import models as lambda_models
    from moto.awslambda import responses as lambda_responses
    from moto.awslambda.exceptions import LambdaClientError

    original = lambda_models.LambdaFunction._set_function_code

    def _set_function_code(self: Any, updated_spec: dict[str, Any]) -> None:
        uri = updated_spec.get("ImageUri")
        if not uri or updated_spec.get("DryRun"):
            original(self, updated_spec)
            return
        with lock:
            found = resolve(registry(), uri, pull=True)
        if found is None:
            raise LambdaClientError(
                "InvalidParameterValueException",
                f"Source image {uri} does not exist. Provide a valid source image.",
            )
        digest, media_type = found
        if media_type in INDEX_TYPES:
            raise LambdaClientError(
                "InvalidParameterValueException",
                f"The image manifest, config or layer media type for the source image {uri} is not supported.",
            )
        self.code_sha_256 = digest.removeprefix("sha256:")
        self.code_size = 0
        if updated_spec is not self.code:
            self.code["ImageUri"] = uri

    lambda_models.LambdaFunction._set_function_code = _set_function_code  # type: ignore[method-assign]

    original_get_code = lambda_models.LambdaFunction.get_code

    def get_code(self: Any) -> dict[str, Any]:
        reply = original_get_code(self)
        code = reply.get("Code") or {}
        if code.get("ImageUri"):
            code["ResolvedImageUri"] = resolved_image_uri(code["ImageUri"], self.code_sha_256)
        return reply

    lambda_models.LambdaFunction.get_code = get_code  # type: ignore[method-assign]

    original_configuration = lambda_models.LambdaFunction.get_configuration

    def get_configuration(self: Any, on_create: bool = False) -> dict[str, Any]:
        config = original_configuration(self, on_create)
        if on_create or getattr(self, PENDING, 0) > 0:
            config.update(PENDING_STATE)
            config.pop("LastUpdateStatus", None)
        return config

    lambda_models.LambdaFunction.get_configuration = get_configuration  # type: ignore[method-assign]

    class PendingConflict(LambdaClientError):
        code = 409

    def refuse_while_pending(operation: Callable[..., Any], takes_qualifier: bool) -> Callable[..., Any]:
        """``operation`` (a backend method taking the function name, then the qualifier if
        ``takes_qualifier``), refused while the function is being created, with Lambda's error
        (its wording as reported in aws/serverless-application-model#2356)."""

        def guarded(self: Any, function_name: str, *args: Any, **kwargs: Any) -> Any:
            qualifier = (args[0] if args else kwargs.get("qualifier")) if takes_qualifier else None
            fn = self.get_function(function_name, qualifier)
            if getattr(fn, PENDING, 0) > 0:
                raise PendingConflict(
                    "ResourceConflictException",
                    "The operation cannot be performed at this time. The resource "
                    f"{fn.function_arn} is currently in the following state: 'Pending'. StateReasonCode: 'Creating'",
                )
            return operation(self, function_name, *args, **kwargs)

        return guarded

    backend = lambda_models.LambdaBackend
    for name in ("update_function_code", "update_function_configuration", "publish_version", "invoke"):
        setattr(backend, name, refuse_while_pending(getattr(backend, name), takes_qualifier=name != "publish_version"))

    responses = lambda_responses.LambdaResponse
    original_create = responses.create_function

    def create_function(self: Any) -> Any:
        reply = original_create(self)
        fn = self.backend.get_function(self.json_body["FunctionName"].rsplit(":", 1)[-1], None)
        with lock:
            setattr(fn, PENDING, LambdaStates.pending_reads)
        return reply

    responses.create_function = create_function  # type: ignore[method-assign]

    def counting(read: Callable[[Any], str], name_of: Callable[[str], str]) -> Callable[[Any], str]:
        """A read that answers as moto does, then brings the function one read closer to ``Active``."""

        def counted(self: Any) -> str:
            reply = read(self)
            fn = self.backend.get_function(unquote(name_of(self.path)), self._get_param("Qualifier", None))
            with lock:
                if getattr(fn, PENDING, 0) > 0:
                    setattr(fn, PENDING, getattr(fn, PENDING) - 1)
            return reply

        return counted

    original_list = responses.list_functions

    def list_functions(self: Any) -> str:
        """ListFunctions leaves out the state fields (Lambda API reference, ``ListFunctions``:
        they come from ``GetFunction`` only); moto includes them."""
        reply = json.loads(original_list(self))
        for config in reply.get("Functions") or []:
            for key in NOT_LISTED:
                config.pop(key, None)
        return json.dumps(reply)

    responses.list_functions = list_functions  # type: ignore[method-assign]
    responses.get_function = counting(responses.get_function, lambda path: path.rsplit("/", 1)[-1])  # type: ignore[method-assign]
    responses.get_function_configuration = counting(  # type: ignore[method-assign]
        responses.get_function_configuration, lambda path: path.rsplit("/", 2)[-2]
    )


def as_json(data: bytes) -> dict[str, Any] | None:
    """A JSON object reply body, or None."""
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
