"""The emulator's HTTP front: ECR here, every other service from moto.

One WSGI application on one port. A request whose ``X-Amz-Target`` names the
ECR API is answered by :mod:`ecr_emulator.registry`; ``/_emulator/...`` is the
control API (health, faults, call counts, emitted events, settings, reset);
everything else (EventBridge, SQS, CloudWatch Logs, STS, CloudFormation, ...)
goes to moto's server unchanged. ECR events are published into moto's
EventBridge backend in the same process, so rules and targets created through
the normal EventBridge API receive them.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from moto.cloudformation import parsing as moto_cfn_parsing
from moto.events import models as moto_events_models
from moto.events import utils as moto_events_utils
from moto.events.models import events_backends
from moto.iam.models import get_account_id_from
from moto.moto_api._internal.models import moto_api_backend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.wrappers import Request, Response

from . import __version__, delivery, event_bus
from .faults import MESSAGES, STATUS, FaultError, Faults
from .insights import Insights, QueryError
from .registry import EcrError, Registry, Routed
from .resource_policy import iam_principal
from .trust import check as trust_check
from .workloads import ECS_TARGET, Ecs, LambdaStates, as_json, patch_lambda

log = logging.getLogger("ecr_emulator")

ECR_TARGET = "AmazonEC2ContainerRegistry_V20150921."
SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "123456789012"
#: The role AWS Organizations creates in the accounts it creates, trusting the management account.
ORG_ACCESS_ROLE = "OrganizationAccountAccessRole"
#: The CloudWatch Logs Insights operations the emulator answers itself.
INSIGHTS_TARGETS = {f"Logs_20140328.{op}" for op in ("StartQuery", "GetQueryResults", "StopQuery")}

#: ECR operation name -> Registry method. Methods returning a tuple also
#: return the ECR events the call caused.
ECR_OPERATIONS = {
    "CreateRepository": "create_repository",
    "DescribeRepositories": "describe_repositories",
    "DeleteRepository": "delete_repository",
    "PutImageTagMutability": "put_image_tag_mutability",
    "InitiateLayerUpload": "initiate_layer_upload",
    "UploadLayerPart": "upload_layer_part",
    "CompleteLayerUpload": "complete_layer_upload",
    "BatchCheckLayerAvailability": "batch_check_layer_availability",
    "PutImage": "put_image",
    "BatchGetImage": "batch_get_image",
    "BatchDeleteImage": "batch_delete_image",
    "DescribeImages": "describe_images",
    "ListImages": "list_images",
    "ListImageReferrers": "list_image_referrers",
    "TagResource": "tag_resource",
    "UntagResource": "untag_resource",
    "ListTagsForResource": "list_tags_for_resource",
    "RegisterPullTimeUpdateExclusion": "register_pull_time_update_exclusion",
    "DeregisterPullTimeUpdateExclusion": "deregister_pull_time_update_exclusion",
    "ListPullTimeUpdateExclusions": "list_pull_time_update_exclusions",
    "PutReplicationConfiguration": "put_replication_configuration",
    "DescribeRegistry": "describe_registry",
}

StartResponse = Callable[..., Any]

#: EventBridge's limit on one ``PutEvents`` request: the sizes of its entries added up (see
#: ``put_events_entry_size``). 1 MiB since AWS raised it from 256 KB on 2026-01-29 (AWS Compute
#: Blog, "More room to build: serverless services now support payloads up to 1 MB"); measured on
#: AWS in 2026-03, 1,048,576 bytes are accepted and one byte more is refused. Settable through the
#: control API (``put_events_max_bytes``; 262144 is the limit before the raise).
PUT_EVENTS_MAX_BYTES = 1024 * 1024

#: The fields of an event as EventBridge delivers it to a target.
ENVELOPE = ("version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail")


_moto_parse = moto_events_utils.EventTemplateParser.parse


def _deliver_whole_event(input_template: Any, input_paths_map: Any, event: Any) -> Any:
    """Fidelity fix for moto's EventBridge: without an input transformer, a
    target receives the whole event as AWS sends it (moto 5.2.5's default
    template drops ``account``). ``time`` stays numeric here: moto's SQS and
    Logs targets turn it into ISO-8601 when they deliver."""
    if input_template or input_paths_map:
        return _moto_parse(input_template, input_paths_map, event)
    return {k: event[k] for k in ENVELOPE if k in event}


moto_events_utils.EventTemplateParser.parse = staticmethod(_deliver_whole_event)  # type: ignore[method-assign]

_moto_pattern_load = moto_events_models.EventPattern.load.__func__  # type: ignore[attr-defined]


def _load_pattern(cls: Any, raw_pattern: str | None) -> Any:
    """Fidelity fix for moto's CloudFormation: an ``AWS::Events::Rule`` whose
    ``EventPattern`` is a JSON string (as ``!Sub`` produces) is something
    AWS accepts; moto 5.2.5 JSON-encodes it a second time and then fails. An
    ``AWS::Events::Archive``'s pattern arrives as an object, which moto cannot
    read at all."""
    if isinstance(raw_pattern, dict):
        raw_pattern = json.dumps(raw_pattern)
    if isinstance(raw_pattern, str):
        try:
            inner = json.loads(raw_pattern)
        except ValueError:
            inner = None
        if isinstance(inner, str):
            raw_pattern = inner
    return _moto_pattern_load(cls, raw_pattern)


moto_events_models.EventPattern.load = classmethod(_load_pattern)  # type: ignore[method-assign,assignment]

_moto_load_parameters = moto_cfn_parsing.ResourceMap.load_parameters


def _load_parameters(self: Any) -> None:
    """Fidelity fix for moto's CloudFormation: a list-typed parameter left at
    its default is a list (moto 5.2.5 keeps the default as a string)."""
    _moto_load_parameters(self)
    for name, slot in self._template.get("Parameters", {}).items():
        value = self.resolved_parameters.get(name)
        kind = slot.get("Type", "String")
        if isinstance(value, str) and (kind == "CommaDelimitedList" or kind.startswith("List<")):
            self.resolved_parameters[name] = value.split(",")
            self._parsed_resources[name] = self.resolved_parameters[name]


moto_cfn_parsing.ResourceMap.load_parameters = _load_parameters  # type: ignore[method-assign]

# Fidelity fix for moto's CloudFormation: `Ref` of an AWS::Events::EventBus is its name.
if not hasattr(moto_events_models.EventBus, "physical_resource_id"):
    moto_events_models.EventBus.physical_resource_id = property(lambda self: self.name)  # type: ignore[attr-defined]


def put_events_entry_size(entry: Any) -> int:
    """A ``PutEvents`` entry's size as EventBridge counts it (EventBridge User Guide, "Calculating
    Amazon EventBridge PutEvents event entry size"): 14 bytes for ``Time`` if given, and the UTF-8
    lengths of ``Source``, ``DetailType``, ``Detail`` and each ``Resources`` item. ``EventBusName``
    and ``TraceHeader`` do not count."""
    if not isinstance(entry, dict):
        return 0

    def utf8(value: Any) -> int:
        return len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else 0

    size = 14 if entry.get("Time") is not None else 0
    size += utf8(entry.get("Source")) + utf8(entry.get("DetailType")) + utf8(entry.get("Detail"))
    resources = entry.get("Resources")
    return size + (sum(utf8(r) for r in resources) if isinstance(resources, list) else 0)


def _json_body(request: Request) -> dict[str, Any] | Response:
    """A JSON-protocol request's body as an object, or the error AWS answers for one that is not."""
    try:
        body = json.loads(request.get_data() or b"{}")
        if not isinstance(body, dict):
            raise ValueError("request body is not an object")
    except ValueError as err:
        return _error("SerializationException", f"Cannot parse the request body: {err}", 400)
    return body


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers or {}, content_type="application/x-amz-json-1.1")


def _error(code: str, message: str, status: int) -> Response:
    return _json(status, {"__type": code, "message": message}, {"x-amzn-ErrorType": code})


#: The IAM Identity Center portal's access-token header, and where the request handler keeps it
#: (Werkzeug drops headers whose name has an underscore).
SSO_BEARER_HEADER = "x-amz-sso_bearer_token"
SSO_BEARER_ENVIRON = "ecr_emulator.sso_bearer_token"

LAMBDA_FUNCTIONS = re.compile(r"^/20\d\d-\d\d-\d\d/functions/?(?P<name>[^/]+)?/?(?P<rest>.*)$")


def _lambda_operation(request: Request) -> str | None:
    """The Lambda (REST) operation a request is, for the call counts: the
    function reads the workload scan makes; None for anything else."""
    m = LAMBDA_FUNCTIONS.match(request.path)
    if m is None or "/lambda/" not in request.headers.get("Authorization", ""):
        return None
    if request.method == "GET" and m.group("name") is None:
        return "ListFunctions"
    if request.method == "GET" and not m.group("rest"):
        return "GetFunction"
    return f"{request.method} functions/{m.group('rest') or ''}".rstrip("/")


def patch_sts_caller_identity() -> None:
    """moto names a caller whose credentials it did not issue ``arn:aws:sts::A:user/moto``; AWS
    names an IAM user ``arn:aws:iam::A:user/NAME`` (STS API reference, GetCallerIdentity), and a
    client that compares principals (the pull-time update exclusion list) must see that form."""
    from moto.sts.models import STSBackend

    if getattr(STSBackend.get_caller_identity, "_ecr_emulator", False):
        return
    original = STSBackend.get_caller_identity

    def get_caller_identity(self: Any, access_key_id: str, region: str) -> tuple[str, str, str]:
        user_id, arn, account = original(self, access_key_id, region)
        return user_id, re.sub(r"^arn:(aws[a-z-]*):sts::(\d{12}):user/", r"arn:\1:iam::\2:user/", arn), account

    get_caller_identity._ecr_emulator = True  # type: ignore[attr-defined]
    STSBackend.get_caller_identity = get_caller_identity  # type: ignore[method-assign]


class Emulator:
    """The WSGI application."""

    def __init__(self, check_layers: bool = True, pull_time_exclusions: tuple[str, ...] = ()):
        self.registry = Registry(check_layers=check_layers)
        #: Principals on the pull-time update exclusion list from the start and after
        #: every reset: the standing setup of the deployment under test (the stack
        #: registers its function's role the same way).
        self.standing_exclusions = pull_time_exclusions
        self._register_standing_exclusions()
        self.faults = Faults()
        self.calls: Counter[str] = Counter()
        self.calls_by_repository: dict[str, Counter[str]] = {}
        self.events: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._moto = DomainDispatcherApplication(create_backend_app)
        self.insights = Insights()
        self.put_events_max_bytes = PUT_EVENTS_MAX_BYTES
        self.ecs = Ecs(lambda: self.registry, self._lock)
        #: IAM Identity Center access tokens the portal accepts (as `aws sso
        #: login` caches them), each with the account and role it may reach.
        self.sso_tokens: dict[str, set[tuple[str, str]]] = {}
        patch_lambda(lambda: self.registry, self._lock)
        patch_sts_caller_identity()

    # -- WSGI ---------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        if request.path.startswith("/_emulator/"):
            return self._control(request)(environ, start_response)
        target = request.headers.get("X-Amz-Target", "")
        if target:
            access_key, region, service = self._scope(request)
            operation = target.rsplit(".", 1)[-1]
            repository = self._repository_of(request) if target.startswith(ECR_TARGET) else None
            with self._lock:
                self.calls[f"{service}:{operation}"] += 1
                if repository:
                    self.calls_by_repository.setdefault(repository, Counter())[f"{service}:{operation}"] += 1
            outcome = self.faults.next_for(service, operation, repository, request.headers.get("User-Agent", ""))
            if outcome.latency_ms:
                time.sleep(outcome.latency_ms / 1000)
            if outcome.error:
                log.info("fault injected: %s:%s -> %s", service, operation, outcome.error)
                status = STATUS.get(outcome.error, 400)
                return _error(outcome.error, MESSAGES.get(outcome.error, "Injected fault"), status)(environ, start_response)
            if target.startswith(ECR_TARGET):
                return self._ecr(request, operation, access_key, region)(environ, start_response)
            if target.startswith(ECS_TARGET):
                return self._ecs(request, environ, operation, access_key, region)(environ, start_response)
            if target == "AWSEvents.TestEventPattern":
                return self._test_event_pattern(request)(environ, start_response)
            if target == "AWSEvents.PutEvents":
                refused = self._refuse_oversized_put_events(request, environ)
                if refused is not None:
                    return refused(environ, start_response)
                return self._put_events_as_bus_policies_allow(request, environ, access_key, region)(environ, start_response)
            if target in INSIGHTS_TARGETS:
                return self._insights(request, operation, access_key, region)(environ, start_response)
        if request.path == "/federation/credentials" and request.method == "GET":
            return self._sso_role_credentials(request)(environ, start_response)
        lambda_operation = _lambda_operation(request)
        if lambda_operation is not None:
            with self._lock:
                self.calls[f"lambda:{lambda_operation}"] += 1
        if request.path == "/moto-api/reset":
            self.reset_ecr()
        if request.method == "POST" and "sts" in request.headers.get("Authorization", ""):
            refused = self._refuse_assume_role(request)
            if refused is not None:
                return refused(environ, start_response)
        return self._moto(environ, start_response)

    def _sso_role_credentials(self, request: Request) -> Response:
        """The IAM Identity Center portal's ``GetRoleCredentials`` (``GET
        /federation/credentials?account_id=&role_name=``, the access token in
        ``x-amz-sso_bearer_token``), which the SDK's SSO credential provider
        calls with the token ``aws sso login`` cached. A token must have been
        issued (registered through the control API's ``sso-token``) for that
        account and role: anything else is ``UnauthorizedException``, as the
        portal answers (AWS IAM Identity Center Portal API reference,
        GetRoleCredentials)."""
        with self._lock:
            self.calls["sso:GetRoleCredentials"] += 1
        token = request.environ.get(SSO_BEARER_ENVIRON, "")
        account, role = request.args.get("account_id", ""), request.args.get("role_name", "")
        if not token or not account or not role:
            return _error("InvalidRequestException", "account_id, role_name and x-amz-sso_bearer_token are required", 400)
        with self._lock:
            allowed = self.sso_tokens.get(token)
        if allowed is None:
            return _error("UnauthorizedException", "Session token not found or invalid", 401)
        if (account, role) not in allowed:
            return _error("ForbiddenException", "No access", 403)
        expires = int((time.time() + 3600) * 1000)
        return Response(
            json.dumps(
                {
                    "roleCredentials": {
                        "accessKeyId": f"ASIA{account}SSO",
                        "secretAccessKey": "sso-secret",
                        "sessionToken": f"sso-session-{role}",
                        "expiration": expires,
                    }
                }
            ),
            status=200,
            content_type="application/json",
        )

    def _members(self, body: dict[str, Any]) -> Response:
        """Many member accounts at once, for benchmarks: in each of ``accounts``, the role ``role_name``
        with the ``trust`` policy, the repository ``repository`` and ``count`` seeded pushes
        (see ``Registry.seed``). Returns each account's first index digest. What boto3 would do in
        six calls an account, without the clients."""
        from moto.iam.models import iam_backends

        accounts, role, trust, name = body.get("accounts"), body.get("role_name"), body.get("trust"), body.get("repository")
        count = body.get("count", 1)
        if not (
            isinstance(accounts, list)
            and all(isinstance(a, str) and re.fullmatch(r"\d{12}", a) for a in accounts)
            and isinstance(role, str)
            and isinstance(trust, dict)
            and isinstance(name, str)
            and isinstance(count, int)
            and 1 <= count <= 1000
        ):
            return _json(400, {"error": "give accounts (12-digit ids), role_name, trust (a policy), repository and count (1-1000)"})
        indexes = {}
        try:
            for account in accounts:
                iam = iam_backends[account]["aws"]
                if role not in {r.name for r in iam.roles.values()}:
                    iam.create_role(role, json.dumps(trust), "/", None, "", [], None)
                with self._lock:
                    if (account, DEFAULT_REGION, name) not in self.registry.repositories:
                        self.registry.create_repository(account, DEFAULT_REGION, {"repositoryName": name})
                    self.registry.seed(account, DEFAULT_REGION, name, count)
                    repo = self.registry.repo(account, DEFAULT_REGION, name)
                    indexes[account] = repo.tags["seed-0"]
        except EcrError as err:
            return _json(400, {"error": f"{err.code}: {err.message}"})
        return _json(200, {"indexes": indexes})

    def _refuse_assume_role(self, request: Request) -> Response | None:
        """Counts the STS call; ``AccessDenied`` for an ``AssumeRole`` IAM would refuse (see ``trust.py``); None to let moto answer."""
        access_key, region, service = self._scope(request)
        if service != "sts":
            return None
        data = request.get_data(cache=True)
        # Put the body back for moto, which reads the WSGI input itself.
        request.environ["wsgi.input"] = io.BytesIO(data)
        form = {k: v[0] for k, v in parse_qs(data.decode("utf-8", "replace")).items()}
        if form.get("Action"):
            # Query-protocol calls are counted like JSON ones (`sts:AssumeRole`).
            with self._lock:
                self.calls[f"sts:{form['Action']}"] += 1
        if form.get("Action") != "AssumeRole":
            return None
        from moto.iam.models import iam_backends
        from moto.sts.models import sts_backends

        role_arn = form.get("RoleArn") or ""
        match = re.match(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/(?:.*/)?([^/]+)$", role_arn)
        caller_account = get_account_id_from(access_key) if access_key else DEFAULT_ACCOUNT
        _, caller_arn, caller_account = sts_backends[caller_account]["aws"].get_caller_identity(access_key, region)
        why = None
        if match is None:
            why = f"{role_arn!r} is not a role ARN"
        else:
            try:
                role = iam_backends[match.group(2)]["aws"].get_role_by_arn(role_arn)
            except Exception:  # moto raises its own IAMNotFoundException
                # Like an account AWS Organizations created: its admin role trusts the
                # management account (the emulator's default account).
                if not (match.group(3) == ORG_ACCESS_ROLE and caller_account == DEFAULT_ACCOUNT):
                    why = f"the role {role_arn} does not exist"
            else:
                why = trust_check(role.assume_role_policy_document, caller_account, caller_arn, form.get("ExternalId"))
        if why is None:
            return None
        log.info("STS AssumeRole %s by %s refused: %s", role_arn, caller_arn, why)
        body = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
            f"<Code>AccessDenied</Code><Message>User: {caller_arn} is not authorized to perform: sts:AssumeRole on resource: "
            f"{role_arn} ({why})</Message></Error><RequestId>ecr-emulator</RequestId></ErrorResponse>"
        )
        return Response(body, status=403, content_type="text/xml")

    @staticmethod
    def _repository_of(request: Request) -> str | None:
        try:
            body = json.loads(request.get_data(cache=True) or b"{}")
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        name = body.get("repositoryName")
        arn = body.get("resourceArn")
        names = body.get("repositoryNames")
        if name is None and isinstance(arn, str) and ":repository/" in arn:
            name = arn.split(":repository/", 1)[1]
        if name is None and isinstance(names, list) and len(names) == 1:
            name = names[0]
        return name if isinstance(name, str) else None

    @staticmethod
    def _scope(request: Request) -> tuple[str, str, str]:
        match = SCOPE.search(request.headers.get("Authorization", ""))
        if match is None:
            return "", DEFAULT_REGION, "unknown"
        return match.group(1), match.group(2), match.group(3)

    # -- ECR ----------------------------------------------------------------

    def _ecr(self, request: Request, operation: str, access_key: str, region: str) -> Response:
        body = _json_body(request)
        if isinstance(body, Response):
            return body
        account = get_account_id_from(access_key) if access_key else DEFAULT_ACCOUNT
        registry_id = body.get("registryId")
        if registry_id is not None and registry_id != account:
            # The emulator serves one registry per account: a foreign registry id
            # is a repository it cannot see.
            return _error(
                "RepositoryNotFoundException",
                f"The repository with name '{body.get('repositoryName')}' does not exist in the registry with id '{registry_id}'",
                400,
            )
        if operation == "GetAuthorizationToken":
            return _json(200, _auth_token(account, region))
        method = ECR_OPERATIONS.get(operation)
        if method is None:
            return _error(
                "UnsupportedOperationException",
                f"ecr-emulator does not implement the ECR operation {operation}; it implements "
                + ", ".join([*sorted(ECR_OPERATIONS), "GetAuthorizationToken"]),
                400,
            )
        principal = self._caller(access_key, region)
        with self._lock:
            self.registry.principal = principal
            try:
                result = getattr(self.registry, method)(account, region, body)
            except EcrError as err:
                log.info("ECR %s %s -> %s: %s", operation, body.get("repositoryName"), err.code, err.message)
                return _error(err.code, err.message, err.status)
            events: list[dict[str, Any]] = []
            if isinstance(result, tuple):
                result, events = result
            for item in events:
                if isinstance(item, Routed):
                    self._publish(item.account, item.region, item.detail, item.detail_type)
                else:
                    self._publish(account, region, item)
        log.info("ECR %s %s -> ok", operation, body.get("repositoryName"))
        return _json(200, result)

    def _insights(self, request: Request, operation: str, access_key: str, region: str) -> Response:
        """CloudWatch Logs Insights over moto's log events (see ``insights.py``)."""
        from moto.logs.models import logs_backends

        body = _json_body(request)
        if isinstance(body, Response):
            return body
        account = get_account_id_from(access_key) if access_key else DEFAULT_ACCOUNT
        backend = logs_backends[account][region]
        try:
            with self._lock:
                if operation == "StartQuery":
                    return _json(200, self.insights.start(backend, body))
                if operation == "GetQueryResults":
                    return _json(200, self.insights.results(body))
                return _json(200, self.insights.stop(body))
        except QueryError as err:
            return _error(err.code, err.message, 400)
        except Exception as err:  # an emulator bug: say so, as a 500 with the cause
            log.exception("Insights %s failed", operation)
            return _error("InternalFailure", f"ecr-emulator Insights {operation}: {type(err).__name__}: {err}", 500)

    def _refuse_oversized_put_events(self, request: Request, environ: dict[str, Any]) -> Response | None:
        """Fidelity fix for moto's EventBridge, which accepts entries of any size: a ``PutEvents``
        request whose entries add up to more than ``put_events_max_bytes`` is refused as a whole,
        nothing put, with the ``ValidationException`` EventBridge answers ("Total size of the
        entries in the request is over the limit."; reported from AWS in
        awslabs/aws-service-catalog-puppet#563 and measured in 2026-03 with the 1 MiB limit).
        EventBridge has no per-entry error code for size (``PutEventsResultEntry`` lists none).
        Anything else goes on to moto, body restored."""
        data = request.get_data(cache=True)
        environ["wsgi.input"] = io.BytesIO(data)
        body = as_json(data) or {}
        entries = body.get("Entries")
        if not isinstance(entries, list):
            return None
        if sum(put_events_entry_size(e) for e in entries) > self.put_events_max_bytes:
            return _error("ValidationException", "Total size of the entries in the request is over the limit.", 400)
        return None

    def _put_events_as_bus_policies_allow(self, request: Request, environ: dict[str, Any], access_key: str, region: str) -> Response:
        """Fidelity fix for moto's EventBridge, which evaluates no event bus policy: each entry is
        checked against its bus's resource policy (``resource_policy.py``) and refused, as
        EventBridge refuses it, in its own result entry with ``AccessDeniedException`` (a
        non-retryable entry error, ``PutEventsResultEntry`` in the EventBridge API Reference)
        when an explicit ``Deny`` applies to the caller, or when the caller is in another account
        and no ``Allow`` does ("Permissions for Amazon EventBridge event buses", EventBridge User
        Guide). The other entries go on to moto; the reply lists all, in request order."""
        data = request.get_data(cache=True)
        body = as_json(data) or {}
        entries = body.get("Entries")
        if not isinstance(entries, list) or not access_key:
            environ["wsgi.input"] = io.BytesIO(data)
            return self._moto_response(environ)
        caller_account = get_account_id_from(access_key)
        caller = self._caller(access_key, region) or f"arn:aws:iam::{caller_account}:root"
        principal = iam_principal(caller)
        refusals = [event_bus.refusal(e, caller, principal, caller_account, region) for e in entries]
        if not any(refusals):
            environ["wsgi.input"] = io.BytesIO(data)
            return self._moto_response(environ)
        passed = [e for e, why in zip(entries, refusals, strict=True) if why is None]
        results: list[dict[str, Any]] = []
        if passed:
            forwarded = json.dumps({**body, "Entries": passed}).encode()
            environ["wsgi.input"] = io.BytesIO(forwarded)
            environ["CONTENT_LENGTH"] = str(len(forwarded))
            reply = self._moto_response(environ)
            if reply.status_code != 200:
                return reply
            results = list((as_json(reply.get_data()) or {}).get("Entries", []))
        merged = []
        for why in refusals:
            merged.append({"ErrorCode": "AccessDeniedException", "ErrorMessage": why} if why else results.pop(0))
        failed = sum(1 for m in merged if "ErrorCode" in m)
        return _json(200, {"FailedEntryCount": failed, "Entries": merged})

    def _moto_response(self, environ: dict[str, Any]) -> Response:
        """moto's answer to the request in ``environ``, as a response to amend or pass on."""
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"], captured["headers"] = status, headers
            return lambda _chunk: None

        reply = b"".join(self._moto(environ, capture))
        headers = [(k, v) for k, v in captured.get("headers", []) if k.lower() != "content-length"]
        return Response(reply, status=captured.get("status", "500 Internal Server Error"), headers=headers)

    @staticmethod
    def _test_event_pattern(request: Request) -> Response:
        """EventBridge ``TestEventPattern`` (moto 5.2.5 does not implement it),
        with moto's own matcher, the one its rules use."""
        try:
            body = json.loads(request.get_data() or b"{}")
            pattern = moto_events_models.EventPattern.load(body["EventPattern"])
            event = json.loads(body["Event"])
        except (ValueError, KeyError, TypeError) as err:
            return _error("InvalidEventPatternException", f"Event pattern is not valid: {err}", 400)
        except Exception as err:
            return _error("InvalidEventPatternException", str(err), 400)
        missing = [k for k in ("id", "account", "source", "time", "region", "detail-type") if k not in event]
        if missing or not isinstance(event.get("resources", []), list):
            return _error("InvalidArgument", f"Parameter Event is not valid: missing {', '.join(missing)}", 400)
        return _json(200, {"Result": bool(pattern.matches_event(event))})

    def _publish(self, account: str, region: str, detail: dict[str, Any], detail_type: str = "ECR Image Action") -> None:
        """Sends an ECR event (``ECR Image Action`` unless said) to the default bus of the account and region."""
        stamp = _dt.datetime.now(_dt.UTC).replace(microsecond=0)
        when = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        entry = {
            "Source": "aws.ecr",
            "DetailType": detail_type,
            "Detail": json.dumps(detail),
            "Resources": [],
            "Time": stamp.timestamp(),
        }
        try:
            result = events_backends[account][region].put_events([entry])
            event_id = result[0].get("EventId") if result else None
            error = result[0].get("ErrorMessage") if result else "no result"
        except Exception as err:
            log.exception("could not deliver ECR event %s", detail)
            event_id, error = None, f"{type(err).__name__}: {err}"
        self.events.append(
            {
                "version": "0",
                "id": event_id,
                "detail-type": detail_type,
                "source": "aws.ecr",
                "account": account,
                "time": when,
                "region": region,
                "resources": [],
                "detail": detail,
                **({"delivery_error": error} if error else {}),
            }
        )

    @staticmethod
    def _caller(access_key: str, region: str) -> str | None:
        """The ARN of the caller whose access key signed the request (as STS would answer)."""
        if not access_key:
            return None
        from moto.sts.models import sts_backends

        account = get_account_id_from(access_key)
        try:
            return sts_backends[account]["aws"].get_caller_identity(access_key, region)[1]
        except Exception:  # an access key moto cannot place: no principal known
            return None

    def _ecs(self, request: Request, environ: dict[str, Any], operation: str, access_key: str, region: str) -> Response:
        """ECS through moto, with the image resolution AWS does (``workloads.py``)."""
        data = request.get_data(cache=True)
        environ["wsgi.input"] = io.BytesIO(data)
        body = as_json(data) or {}
        account = get_account_id_from(access_key) if access_key else DEFAULT_ACCOUNT
        try:
            own = self.ecs.answer(operation, body, account, region)
        except EcrError as err:
            return _error(err.code, err.message, err.status)
        if own is not None:
            return _json(200, own)
        answer = self._moto_response(environ)
        reply, status = answer.get_data(), answer.status
        headers = [(k, v) for k, v in answer.headers.items() if k.lower() != "content-length"]
        parsed = as_json(reply) if status.startswith("200") else None
        if parsed is not None:
            try:
                reply = json.dumps(self.ecs.amend(operation, body, parsed, account, region)).encode()
            except Exception as err:  # moto's own state did not have what its reply named
                log.warning("ECS %s: reply left as moto gave it: %s", operation, err)
        return Response(reply, status=status, headers=headers)

    def _register_standing_exclusions(self) -> None:
        for arn in self.standing_exclusions:
            account = arn.split(":")[4]
            self.registry.register_pull_time_update_exclusion(account, DEFAULT_REGION, {"principalArn": arn})

    def reset_ecr(self) -> None:
        """Forgets every repository, fault rule, call count and recorded event."""
        with self._lock:
            self.ecs.reset()
            self.registry = Registry(check_layers=self.registry.check_layers)
            self._register_standing_exclusions()
            self.faults.clear()
            self.calls.clear()
            self.calls_by_repository.clear()
            self.events.clear()
            self.sso_tokens.clear()
            delivery.reset()

    # -- control API ----------------------------------------------------------

    def _control(self, request: Request) -> Response:
        path = request.path[len("/_emulator/") :].rstrip("/")
        method = request.method
        try:
            body = json.loads(request.get_data() or b"{}") if method in ("POST", "PUT") else {}
        except ValueError as err:
            return _json(400, {"error": f"body is not JSON: {err}"})
        if path == "health":
            return _json(200, {"ok": True, "service": "ecr-emulator", "version": __version__})
        if path == "sso-token" and method == "POST":
            token, account, role = body.get("token"), body.get("account_id"), body.get("role_name")
            if not all(isinstance(v, str) and v for v in (token, account, role)):
                return _json(400, {"error": "give token, account_id and role_name"})
            with self._lock:
                self.sso_tokens.setdefault(token, set()).add((account, role))
            return _json(200, {"token": token})
        if path == "reset" and method == "POST":
            self.reset_ecr()
            moto_api_backend.reset()
            return _json(200, {"reset": True})
        if path == "faults":
            if method == "GET":
                return _json(200, self.faults.snapshot())
            if method == "DELETE":
                self.faults.clear()
                return _json(200, self.faults.snapshot())
            if method == "POST":
                try:
                    self.faults.set(body.get("operation"), body)
                except FaultError as err:
                    return _json(400, {"error": str(err)})
                return _json(200, self.faults.snapshot())
        if path == "calls":
            repository = request.args.get("repository")
            with self._lock:
                if method == "DELETE":
                    if repository:
                        self.calls_by_repository.pop(repository, None)
                    else:
                        self.calls.clear()
                        self.calls_by_repository.clear()
                if repository:
                    return _json(200, dict(self.calls_by_repository.get(repository, {})))
                return _json(200, dict(self.calls))
        if path == "events":
            if method == "DELETE":
                with self._lock:
                    self.events.clear()
            with self._lock:
                return _json(200, list(self.events))
        if path == "deliveries":
            if method == "DELETE":
                with delivery._LOCK:
                    delivery.FAILED.clear()
                    delivery.DELIVERED.clear()
            with delivery._LOCK:
                return _json(200, {"failed": list(delivery.FAILED), "delivered": list(delivery.DELIVERED)})
        if path == "members" and method == "POST":
            return self._members(body)
        if path == "age" and method == "POST":
            # Moves an image's push time back by `seconds` (a push made that long ago).
            seconds = body.get("seconds")
            if not isinstance(seconds, int) or seconds < 0:
                return _json(400, {"error": "'seconds' must be a whole number of seconds, 0 or more"})
            try:
                with self._lock:
                    repo = self.registry.repo(
                        body.get("account") or DEFAULT_ACCOUNT, body.get("region") or DEFAULT_REGION, body.get("repository")
                    )
                    image = repo.images.get(body.get("digest") or "")
                    if image is None:
                        return _json(400, {"error": f"no image {body.get('digest')} in {repo.name}"})
                    image.pushed_at -= _dt.timedelta(seconds=seconds)
                    return _json(200, {"pushed_at": image.pushed_at.timestamp()})
            except EcrError as err:
                return _json(400, {"error": f"{err.code}: {err.message}"})
        if path == "pull" and method == "POST":
            # A pull by a workload (ECS agent, kubelet): the image's lastRecordedPullTime is now,
            # or `seconds_ago` before now.
            seconds = body.get("seconds_ago", 0)
            if not isinstance(seconds, int) or seconds < 0:
                return _json(400, {"error": "'seconds_ago' must be a whole number of seconds, 0 or more"})
            try:
                with self._lock:
                    at = _dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=seconds)
                    self.registry.record_pull(
                        body.get("account") or DEFAULT_ACCOUNT,
                        body.get("region") or DEFAULT_REGION,
                        body.get("repository"),
                        body.get("digest"),
                        at,
                    )
                    return _json(200, {"pulled_at": at.timestamp()})
            except (EcrError, KeyError) as err:
                return _json(400, {"error": f"no such image: {err}"})
        if path in ("seed", "status") and method == "POST":
            account = body.get("account") or DEFAULT_ACCOUNT
            region = body.get("region") or DEFAULT_REGION
            try:
                with self._lock:
                    if path == "seed":
                        count = body.get("count")
                        if not isinstance(count, int) or not 0 <= count <= 100_000:
                            return _json(400, {"error": "'count' must be a whole number from 0 to 100000"})
                        stored = self.registry.seed(
                            account, region, body.get("repository"), count, body.get("tag_prefix") or "seed", bool(body.get("leftover"))
                        )
                        return _json(200, {"stored": stored})
                    self.registry.set_status(account, region, body.get("repository"), body.get("digest"), body.get("status"))
                    return _json(200, {"status": body.get("status")})
            except EcrError as err:
                return _json(400, {"error": f"{err.code}: {err.message}"})
        if path == "config":
            if method == "POST":
                check = body.get("check_layers")
                if check is not None:
                    if not isinstance(check, bool):
                        return _json(400, {"error": "'check_layers' must be true or false"})
                    self.registry.check_layers = check
                polls = body.get("insights_running_polls")
                if polls is not None:
                    if not isinstance(polls, int) or isinstance(polls, bool) or not 0 <= polls <= 1_000_000:
                        return _json(400, {"error": "'insights_running_polls' must be a whole number from 0"})
                    self.insights.running_polls = polls
                reads = body.get("lambda_pending_reads")
                if reads is not None:
                    if not isinstance(reads, int) or isinstance(reads, bool) or not 0 <= reads <= 1_000_000:
                        return _json(400, {"error": "'lambda_pending_reads' must be a whole number from 0"})
                    LambdaStates.pending_reads = reads
                limit = body.get("put_events_max_bytes")
                if limit is not None:
                    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                        return _json(400, {"error": "'put_events_max_bytes' must be a whole number from 1"})
                    self.put_events_max_bytes = limit
                orgs = body.get("organizations")
                if orgs is not None:
                    valid = isinstance(orgs, dict) and all(
                        re.fullmatch(r"o-[a-z0-9]{10,32}", str(k))
                        and isinstance(v, list)
                        and all(re.fullmatch(r"\d{12}", str(a)) for a in v)
                        for k, v in orgs.items()
                    )
                    if not valid:
                        return _json(400, {"error": "'organizations' must map o-xxxxxxxxxx ids to lists of 12-digit account ids"})
                    with delivery._LOCK:
                        delivery.ORGANIZATIONS.clear()
                        delivery.ORGANIZATIONS.update({k: [str(a) for a in v] for k, v in orgs.items()})
            with delivery._LOCK:
                organizations = {k: list(v) for k, v in delivery.ORGANIZATIONS.items()}
            return _json(
                200,
                {
                    "check_layers": self.registry.check_layers,
                    "insights_running_polls": self.insights.running_polls,
                    "put_events_max_bytes": self.put_events_max_bytes,
                    "lambda_pending_reads": LambdaStates.pending_reads,
                    "organizations": organizations,
                },
            )
        return _json(404, {"error": f"no control endpoint {method} /_emulator/{path}"})


def _auth_token(account: str, region: str) -> dict[str, Any]:
    expires = _dt.datetime.now(_dt.UTC) + _dt.timedelta(hours=12)
    return {
        "authorizationData": [
            {
                "authorizationToken": base64.b64encode(b"AWS:ecr-emulator").decode(),
                "expiresAt": expires.timestamp(),
                "proxyEndpoint": f"https://{account}.dkr.ecr.{region}.amazonaws.com",
            }
        ]
    }
