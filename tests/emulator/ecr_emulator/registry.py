"""The ECR data model and its rules, independent of HTTP.

Everything here follows Amazon ECR's documented behaviour (see ECR-FACTS.md in
the project's shared notes) rather than moto's ECR backend, which this
emulator replaces:

* a manifest's digest is SHA-256 over the exact bytes sent, and those bytes
  come back unchanged;
* an index can only be stored when every manifest it refers to is in the
  repository, and a manifest an index refers to cannot be deleted;
* tags move on mutable repositories and are refused on immutable ones
  (with ECR's wildcard exclusion filters);
* image manifests need their config and layer blobs uploaded first;
* a pull (``BatchGetImage`` of an active image) records ``lastRecordedPullTime``
  unless the caller is on the account's pull-time update exclusion list
  (``RegisterPullTimeUpdateExclusion``). ECR refreshes the field at most once
  a day; the emulator records every pull at once.

Every mutating call returns the ECR events it caused; the HTTP layer hands
them to EventBridge. All calls run under one lock held by the caller.
"""

from __future__ import annotations

import base64
import datetime as _dt
import fnmatch
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from .resource_policy import iam_principal

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"

INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
MANIFEST_TYPES = INDEX_TYPES + IMAGE_TYPES

#: What ECR serves when a caller sends no ``acceptedMediaTypes``: the values
#: its API reference lists for the parameter. Index types are not among them,
#: so a client that forgets the parameter cannot read an index here. Real ECR
#: may convert instead; either way the client is wrong, and this makes it show.
DEFAULT_ACCEPTED = (DOCKER_MANIFEST_V1, DOCKER_MANIFEST, OCI_MANIFEST)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_IMAGE_IDS = 100
REPOSITORY_NAME = re.compile(r"^(?=.{2,256}$)(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
MUTABILITY = ("MUTABLE", "IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION")
UPLOAD_PART_SIZE = 10 * 1024 * 1024
#: ``arn:<partition>:ecr:<region>:<account>:repository/<name>``
REPOSITORY_ARN = re.compile(r"^arn:aws[a-z-]*:ecr:([a-z0-9-]+):(\d{12}):repository/(.+)$")
#: The ``BatchGetImage`` failure code for an image that is archived (or being
#: restored) and so cannot be pulled. ECR's ``ImageFailure`` lists
#: ``ImageInaccessible`` among its codes since archiving was introduced; which
#: code ECR gives an archived image is not documented, so the service treats
#: any failure other than ``ImageNotFound`` as "something holds this tag".
ARCHIVED_FAILURE = "ImageInaccessible"
#: AWS's limit of resource tags per resource.
MAX_RESOURCE_TAGS = 50
#: Principals one registry may exclude from pull-time updates.
MAX_PULL_TIME_EXCLUSIONS = 100
#: moto's identity for credentials it did not issue: every local client with
#: the static test credentials. It stands for the service's roles, which the
#: templates put on the exclusion list, so it starts on every account's list.
#: The principal moto answers for credentials it did not issue (the tests' ``testing`` keys).
LOCAL_PRINCIPAL = "arn:aws:iam::{account}:user/moto"
PRINCIPAL_ARN = re.compile(r"^arn:aws[a-z-]*:(?:iam|sts)::(\d{12}):(?:user|role|assumed-role)/.+$")


class EcrError(Exception):
    """An ECR API error: its code (``__type``), message and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def invalid(message: str) -> EcrError:
    """ECR's catch-all for a bad request parameter."""
    return EcrError("InvalidParameterException", message)


def now() -> _dt.datetime:
    """Current UTC time."""
    return _dt.datetime.now(_dt.UTC)


@dataclass
class Image:
    """One stored manifest."""

    digest: str
    manifest: bytes
    media_type: str
    pushed_at: _dt.datetime
    size: int
    artifact_media_type: str | None
    subject: str | None
    children: list[str]
    #: ``ACTIVE``, ``ARCHIVED`` or ``ACTIVATING`` (archive storage class).
    status: str = "ACTIVE"
    #: ``lastRecordedPullTime``: the last pull by a principal not excluded.
    last_pulled: _dt.datetime | None = None


@dataclass
class Upload:
    """A blob upload in progress."""

    data: bytearray = field(default_factory=bytearray)


@dataclass
class Repository:
    """One ECR repository and its content."""

    name: str
    account: str
    region: str
    created_at: _dt.datetime
    mutability: str = "MUTABLE"
    exclusion_filters: list[dict[str, str]] = field(default_factory=list)
    images: dict[str, Image] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    blobs: dict[str, int] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)
    resource_tags: dict[str, str] = field(default_factory=dict)

    @property
    def arn(self) -> str:
        return f"arn:aws:ecr:{self.region}:{self.account}:repository/{self.name}"

    @property
    def uri(self) -> str:
        return f"{self.account}.dkr.ecr.{self.region}.amazonaws.com/{self.name}"

    def tags_of(self, digest: str) -> list[str]:
        return sorted(t for t, d in self.tags.items() if d == digest)

    def referencing_indexes(self, digest: str) -> list[str]:
        return [i.digest for i in self.images.values() if digest in i.children]

    def tag_is_immutable(self, tag: str) -> bool:
        matched = any(fnmatch.fnmatchcase(tag, f["filter"]) for f in self.exclusion_filters)
        if self.mutability == "IMMUTABLE":
            return True
        if self.mutability == "IMMUTABLE_WITH_EXCLUSION":
            return not matched
        if self.mutability == "MUTABLE_WITH_EXCLUSION":
            return matched
        return False

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "repositoryArn": self.arn,
            "registryId": self.account,
            "repositoryName": self.name,
            "repositoryUri": self.uri,
            "createdAt": self.created_at.timestamp(),
            "imageTagMutability": self.mutability,
            "imageScanningConfiguration": {"scanOnPush": False},
            "encryptionConfiguration": {"encryptionType": "AES256"},
        }
        if self.exclusion_filters:
            out["imageTagMutabilityExclusionFilters"] = list(self.exclusion_filters)
        return out


def ecr_event(repo: Repository, action: str, digest: str, tag: str, image: Image | None) -> dict[str, Any]:
    """The ``detail`` of an ``ECR Image Action`` event, with ECR's field set and order."""
    detail: dict[str, Any] = {
        "result": "SUCCESS",
        "repository-name": repo.name,
        "image-digest": digest,
        "action-type": action,
        "image-tag": tag,
    }
    if image is not None and action == "PUSH":
        detail["manifest-media-type"] = image.media_type
        if image.artifact_media_type:
            detail["artifact-media-type"] = image.artifact_media_type
    return detail


def _parse_manifest(body: bytes, declared: str | None) -> tuple[str, dict[str, Any]]:
    """The manifest's media type and parsed document, or ECR's error."""
    if len(body) > MAX_MANIFEST_BYTES:
        raise invalid(
            "Invalid parameter at 'imageManifest' failed to satisfy constraint: 'Member must have length less than or equal to 4194304'"
        )
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise invalid("Invalid parameter at 'ImageManifest' failed to satisfy constraint: 'Invalid JSON syntax'") from None
    if not isinstance(doc, dict):
        raise invalid("Invalid parameter at 'ImageManifest' failed to satisfy constraint: 'Invalid JSON syntax'")
    inner = doc.get("mediaType")
    if declared and inner and declared != inner:
        raise invalid(f"Invalid parameter at 'imageManifestMediaType': '{declared}' does not match the manifest's mediaType '{inner}'")
    media_type = declared or inner
    if not media_type:
        # ECR does not guess: a manifest without a mediaType field needs imageManifestMediaType.
        raise invalid("Invalid parameter at 'imageManifestMediaType': the manifest has no mediaType and none was given")
    if media_type not in MANIFEST_TYPES:
        raise EcrError("UnsupportedImageTypeException", f"The manifest media type {media_type} is not supported")
    if doc.get("schemaVersion") != 2:
        raise invalid("Invalid parameter at 'ImageManifest' failed to satisfy constraint: 'schemaVersion must be 2'")
    key = "manifests" if media_type in INDEX_TYPES else "layers"
    if not isinstance(doc.get(key), list):
        raise invalid(f"Invalid parameter at 'ImageManifest': a {media_type} needs a '{key}' list")
    for d in doc[key]:
        if not isinstance(d, dict) or not isinstance(d.get("digest"), str) or not DIGEST.match(d["digest"]):
            raise invalid("Invalid parameter at 'ImageManifest': every descriptor needs a sha256 digest")
    if media_type in IMAGE_TYPES:
        cfg = doc.get("config")
        if not isinstance(cfg, dict) or not isinstance(cfg.get("digest"), str) or not DIGEST.match(cfg["digest"]):
            raise invalid("Invalid parameter at 'ImageManifest': an image manifest needs a config descriptor")
    subject = doc.get("subject")
    if subject is not None and (
        not isinstance(subject, dict)
        or not isinstance(subject.get("digest"), str)
        or not DIGEST.match(subject["digest"])
        or not isinstance(subject.get("mediaType"), str)
        or not isinstance(subject.get("size"), int)
    ):
        # OCI 1.1: a subject is a descriptor (mediaType, digest, size). Its
        # target need not exist yet: a referrer may be pushed before its subject.
        raise invalid("Invalid parameter at 'ImageManifest': 'subject' must be a descriptor with mediaType, a sha256 digest and size")
    return media_type, doc


@dataclass
class Routed:
    """An event for another registry than the caller's (a replication's)."""

    account: str
    region: str
    detail_type: str
    detail: dict[str, Any]


class Registry:
    """Every repository of every account and region the emulator has seen."""

    def __init__(self, check_layers: bool = True):
        self.repositories: dict[tuple[str, str, str], Repository] = {}
        #: Per registry (account, region): its replication rules, as PutReplicationConfiguration took them.
        self.replication: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.check_layers = check_layers
        #: Per account: principal ARN → when it was excluded from pull-time updates.
        self.pull_time_exclusions: dict[str, dict[str, _dt.datetime]] = {}
        #: The caller of the request being handled (an IAM principal ARN), set by the HTTP layer.
        self.principal: str | None = None

    # -- pull times -------------------------------------------------------------

    def _exclusions(self, account: str) -> dict[str, _dt.datetime]:
        # Empty until principals are registered, as in ECR: a harness that wants
        # the test user's reads not to count registers it (``--pull-time-exclusion``),
        # as the stack registers the function's role.
        return self.pull_time_exclusions.setdefault(account, {})

    def records_pulls_of(self, account: str, principal: str | None) -> bool:
        """Whether a pull by ``principal`` updates ``lastRecordedPullTime`` in ``account``."""
        return principal is None or iam_principal(principal) not in self._exclusions(account)

    def record_pull(self, account: str, region: str, name: str, digest: str, at: _dt.datetime | None = None) -> None:
        """A pull of ``digest`` as a workload makes it (ECS, Kubernetes, Lambda): test support."""
        self.repo(account, region, name).images[digest].last_pulled = at or now()

    def register_pull_time_update_exclusion(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        arn = req.get("principalArn")
        if not isinstance(arn, str) or not PRINCIPAL_ARN.match(arn):
            raise invalid(f"Invalid parameter at 'principalArn': {arn!r} is not an IAM principal ARN")
        listed = self._exclusions(account)
        if arn in listed:
            raise EcrError("ExclusionAlreadyExistsException", f"The principal {arn} is already excluded")
        if len(listed) >= MAX_PULL_TIME_EXCLUSIONS:
            raise EcrError("LimitExceededException", f"At most {MAX_PULL_TIME_EXCLUSIONS} principals can be excluded")
        listed[arn] = now()
        return {"principalArn": arn, "createdAt": listed[arn].timestamp()}

    def deregister_pull_time_update_exclusion(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        arn = req.get("principalArn")
        if self._exclusions(account).pop(arn, None) is None:
            raise EcrError("ExclusionNotFoundException", f"The principal {arn} is not excluded")
        return {"principalArn": arn}

    def list_pull_time_update_exclusions(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        return _page("pullTimeUpdateExclusions", sorted(self._exclusions(account)), req, key=f"exclusions:{account}")

    # -- test support ---------------------------------------------------------

    def seed(self, account: str, region: str, name: str, count: int, tag_prefix: str = "seed", leftover: bool = False) -> int:
        """Stores ``count`` buildx-shaped pushes (image manifest, attestation,
        index tagged ``{tag_prefix}-{n}``) directly, without blobs or events:
        a large repository for benchmarks in seconds. With ``leftover`` the tag
        is on the image and the index is untagged, as a promotion with no keep
        tag leaves them. Returns images stored."""
        repo = self.repo(account, region, name)
        stored = 0
        for n in range(count):
            salt = f"{tag_prefix}-{n}"
            config = {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(salt.encode()).hexdigest(),
                "size": 2,
            }
            layer = {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": "sha256:" + hashlib.sha256(b"l" + salt.encode()).hexdigest(),
                "size": 1,
            }
            image = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}
            statement = {
                "mediaType": "application/vnd.in-toto+json",
                "digest": "sha256:" + hashlib.sha256(b"s" + salt.encode()).hexdigest(),
                "size": 1,
                "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
            }
            att = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [statement]}
            docs = []
            for doc in (image, att):
                body = json.dumps(doc, separators=(",", ":")).encode()
                docs.append((body, "sha256:" + hashlib.sha256(body).hexdigest()))
            (image_body, image_digest), (att_body, att_digest) = docs
            index = {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": image_digest,
                        "size": len(image_body),
                        "platform": {"architecture": "arm64", "os": "linux"},
                    },
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": att_digest,
                        "size": len(att_body),
                        "annotations": {"vnd.docker.reference.digest": image_digest, "vnd.docker.reference.type": "attestation-manifest"},
                        "platform": {"architecture": "unknown", "os": "unknown"},
                    },
                ],
            }
            index_body = json.dumps(index, separators=(",", ":")).encode()
            index_digest = "sha256:" + hashlib.sha256(index_body).hexdigest()
            for body, digest, media_type, children in (
                (image_body, image_digest, OCI_MANIFEST, []),
                (att_body, att_digest, OCI_MANIFEST, []),
                (index_body, index_digest, OCI_INDEX, [image_digest, att_digest]),
            ):
                if digest not in repo.images:
                    repo.images[digest] = Image(digest, body, media_type, now(), len(body), None, None, children)
                    stored += 1
            repo.tags[salt] = image_digest if leftover else index_digest
        return stored

    def set_status(self, account: str, region: str, name: str, digest: str, status: str) -> None:
        """Moves an image to another storage status (as archiving does)."""
        if status not in ("ACTIVE", "ARCHIVED", "ACTIVATING"):
            raise invalid(f"unknown image status {status!r}")
        repo = self.repo(account, region, name)
        if digest not in repo.images:
            raise EcrError("ImageNotFoundException", f"no image {digest} in {name}")
        repo.images[digest].status = status

    # -- repositories -------------------------------------------------------

    def repo(self, account: str, region: str, name: Any) -> Repository:
        if not isinstance(name, str) or not name:
            raise invalid("repositoryName is required")
        found = self.repositories.get((account, region, name))
        if found is None:
            raise EcrError(
                "RepositoryNotFoundException",
                f"The repository with name '{name}' does not exist in the registry with id '{account}'",
            )
        return found

    def create_repository(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        name = req.get("repositoryName")
        if not isinstance(name, str) or not REPOSITORY_NAME.match(name):
            raise invalid(f"Invalid parameter at 'repositoryName' failed to satisfy constraint: '{name}' is not a valid repository name")
        if (account, region, name) in self.repositories:
            raise EcrError(
                "RepositoryAlreadyExistsException",
                f"The repository with name '{name}' already exists in the registry with id '{account}'",
            )
        mutability, filters = _mutability(req)
        tags = _resource_tags(req.get("tags") or [])
        repo = Repository(name, account, region, now(), mutability, filters)
        repo.resource_tags = tags
        self.repositories[(account, region, name)] = repo
        return {"repository": repo.describe()}

    # -- resource tags --------------------------------------------------------

    def _by_arn(self, account: str, region: str, arn: Any) -> Repository:
        match = REPOSITORY_ARN.match(arn) if isinstance(arn, str) else None
        if match is None:
            raise invalid(f"Invalid parameter at 'resourceArn' failed to satisfy constraint: '{arn}' is not a repository ARN")
        arn_region, arn_account, name = match.groups()
        if arn_account != account or arn_region != region:
            # ECR's resource APIs act in the caller's own registry and region.
            raise invalid(f"Invalid parameter at 'resourceArn': '{arn}' is not in registry {account} in {region}")
        return self.repo(account, region, name)

    def tag_resource(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        repo = self._by_arn(account, region, req.get("resourceArn"))
        merged = {**repo.resource_tags, **_resource_tags(req.get("tags") or [])}
        if len(merged) > MAX_RESOURCE_TAGS:
            raise EcrError("TooManyTagsException", f"a repository can have at most {MAX_RESOURCE_TAGS} tags")
        repo.resource_tags = merged
        return {}

    def untag_resource(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        repo = self._by_arn(account, region, req.get("resourceArn"))
        for key in req.get("tagKeys") or []:
            repo.resource_tags.pop(key, None)
        return {}

    def list_tags_for_resource(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        repo = self._by_arn(account, region, req.get("resourceArn"))
        return {"tags": [{"Key": k, "Value": v} for k, v in sorted(repo.resource_tags.items())]}

    def describe_repositories(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        names = req.get("repositoryNames")
        if names:
            repos = [self.repo(account, region, n) for n in names]
            return {"repositories": [r.describe() for r in repos]}
        repos = [r for (a, g, _), r in sorted(self.repositories.items()) if a == account and g == region]
        return _page("repositories", [r.describe() for r in repos], req, key="repositories")

    def delete_repository(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        repo = self.repo(account, region, req.get("repositoryName"))
        if repo.images and not req.get("force"):
            raise EcrError(
                "RepositoryNotEmptyException",
                f"The repository with name '{repo.name}' in registry with id '{account}' cannot be deleted because it still contains images",
            )
        del self.repositories[(account, region, repo.name)]
        return {"repository": repo.describe()}

    def put_image_tag_mutability(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        repo = self.repo(account, region, req.get("repositoryName"))
        repo.mutability, repo.exclusion_filters = _mutability(req)
        out: dict[str, Any] = {
            "registryId": account,
            "repositoryName": repo.name,
            "imageTagMutability": repo.mutability,
        }
        if repo.exclusion_filters:
            out["imageTagMutabilityExclusionFilters"] = list(repo.exclusion_filters)
        return out

    # -- blobs --------------------------------------------------------------

    def initiate_layer_upload(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        repo = self.repo(account, region, req.get("repositoryName"))
        upload_id = str(uuid.uuid4())
        repo.uploads[upload_id] = Upload()
        return {"uploadId": upload_id, "partSize": UPLOAD_PART_SIZE}

    def upload_layer_part(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        repo = self.repo(account, region, req.get("repositoryName"))
        upload_id, upload = _upload(repo, req)
        first, last = req.get("partFirstByte"), req.get("partLastByte")
        try:
            blob = base64.b64decode(req.get("layerPartBlob") or "", validate=True)
        except ValueError:
            raise invalid("layerPartBlob is not valid base64") from None
        if first != len(upload.data) or last != first + len(blob) - 1:
            raise EcrError(
                "InvalidLayerPartException",
                f"Part bytes {first}-{last} do not continue the upload at byte {len(upload.data)}",
            )
        upload.data.extend(blob)
        return {"registryId": account, "repositoryName": repo.name, "uploadId": upload_id, "lastByteReceived": last}

    def complete_layer_upload(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        repo = self.repo(account, region, req.get("repositoryName"))
        upload_id, upload = _upload(repo, req)
        digests = req.get("layerDigests") or []
        if len(digests) != 1:
            raise invalid("layerDigests must hold exactly one digest")
        actual = "sha256:" + hashlib.sha256(upload.data).hexdigest()
        if digests[0] != actual:
            raise EcrError("InvalidLayerException", f"The layer digest {digests[0]} does not match the uploaded content ({actual})")
        if not upload.data:
            raise EcrError("EmptyUploadException", "The upload has no data")
        del repo.uploads[upload_id]
        if actual in repo.blobs:
            raise EcrError("LayerAlreadyExistsException", f"The layer {actual} already exists in the repository")
        repo.blobs[actual] = len(upload.data)
        return {"registryId": account, "repositoryName": repo.name, "uploadId": upload_id, "layerDigest": actual}

    def batch_check_layer_availability(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        repo = self.repo(account, region, req.get("repositoryName"))
        layers, failures = [], []
        for d in req.get("layerDigests") or []:
            if not isinstance(d, str) or not DIGEST.match(d):
                failures.append({"layerDigest": d, "failureCode": "InvalidLayerDigest", "failureReason": "Invalid layer digest"})
            elif d in repo.blobs:
                layers.append({"layerDigest": d, "layerAvailability": "AVAILABLE", "layerSize": repo.blobs[d]})
            else:
                failures.append({"layerDigest": d, "failureCode": "MissingLayerDigest", "failureReason": "Requested layer not found"})
        return {"layers": layers, "failures": failures}

    # -- images -------------------------------------------------------------

    # -- replication ----------------------------------------------------------

    def put_replication_configuration(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        config = req.get("replicationConfiguration")
        rules = config.get("rules") if isinstance(config, dict) else None
        if not isinstance(rules, list) or len(rules) > 10:
            raise invalid("replicationConfiguration.rules must be a list of at most 10 rules")
        for rule in rules:
            destinations = rule.get("destinations") if isinstance(rule, dict) else None
            if not isinstance(destinations, list) or not 1 <= len(destinations) <= 25:
                raise invalid("each replication rule needs 1 to 25 destinations")
            for d in destinations:
                if not isinstance(d, dict) or not d.get("region") or not d.get("registryId"):
                    raise invalid("each destination needs a region and a registryId")
                if d["region"] == region and d["registryId"] == account:
                    raise invalid("a registry cannot replicate to itself")
        self.replication[(account, region)] = rules
        return {"replicationConfiguration": {"rules": rules}}

    def describe_registry(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        return {"registryId": account, "replicationConfiguration": {"rules": self.replication.get((account, region), [])}}

    def _replicate(self, account: str, region: str, repo: Repository, image: Image, tag: str | None) -> list[Routed]:
        """What ECR's replication does after a push: the manifest (its layers and, for an index,
        its children, replicated before it) copied into each destination registry whose rule
        selects the repository, under the same tag, the repository created there when missing;
        each copy announced by an ``ECR Replication Action`` event in the destination. Deletions
        are not replicated, and a replica is not replicated again."""
        out: list[Routed] = []
        for rule in self.replication.get((account, region), []):
            filters = rule.get("repositoryFilters") or []
            if filters and not any(repo.name.startswith(f.get("filter", "")) for f in filters):
                continue
            for d in rule["destinations"]:
                key = (d["registryId"], d["region"], repo.name)
                dest = self.repositories.get(key)
                if dest is None:
                    dest = Repository(repo.name, d["registryId"], d["region"], now(), repo.mutability, list(repo.exclusion_filters))
                    self.repositories[key] = dest
                result = "SUCCESS" if _copy_into(dest, repo, image, tag) else "FAILURE"
                detail = {
                    "result": result,
                    "repository-name": repo.name,
                    "image-digest": image.digest,
                    "source-account": account,
                    "action-type": "REPLICATE",
                    "source-region": region,
                    "image-tag": tag or "",
                }
                out.append(Routed(d["registryId"], d["region"], "ECR Replication Action", detail))
        return out

    def put_image(self, account: str, region: str, req: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any] | Routed]]:
        repo = self.repo(account, region, req.get("repositoryName"))
        text = req.get("imageManifest")
        if not isinstance(text, str) or not text:
            raise invalid("imageManifest is required")
        body = text.encode("utf-8")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        claimed = req.get("imageDigest")
        if claimed is not None and claimed != digest:
            raise EcrError(
                "ImageDigestDoesNotMatchException",
                f"Invalid parameter at 'imageDigest': the digest {claimed} does not match the manifest's digest {digest}",
            )
        media_type, doc = _parse_manifest(body, req.get("imageManifestMediaType"))
        tag = req.get("imageTag")
        if tag is not None and (not isinstance(tag, str) or not 1 <= len(tag) <= 300):
            raise invalid("Invalid parameter at 'imageTag' failed to satisfy constraint: 'Member must have length between 1 and 300'")

        existing = repo.images.get(digest)
        restoring = existing is not None and existing.status != "ACTIVE"
        if existing is not None and not restoring and (tag is None or repo.tags.get(tag) == digest):
            raise EcrError(
                "ImageAlreadyExistsException",
                f"Image with digest '{digest}'" + (f" and tag '{tag}'" if tag else "") + " already exists in the repository with name "
                f"'{repo.name}' in registry with id '{account}'",
            )
        if tag is not None and tag in repo.tags and repo.tags[tag] != digest and repo.tag_is_immutable(tag):
            raise EcrError(
                "ImageTagAlreadyExistsException",
                f"The image tag '{tag}' already exists in the '{repo.name}' repository and cannot be overwritten because the tag is immutable.",
            )

        image = existing
        if image is not None and restoring:
            # Re-pushing an archived image restores it (ECR user guide, archiving).
            image.status = "ACTIVE"
        if image is None:
            children: list[str] = []
            artifact = None
            size = len(body)
            if media_type in INDEX_TYPES:
                children = [d["digest"] for d in doc["manifests"]]
                missing = [c for c in children if c not in repo.images]
                if missing:
                    raise EcrError(
                        "ReferencedImagesNotFoundException",
                        f"Manifest references images that are not in the repository '{repo.name}': {', '.join(missing)}",
                    )
                # ECR reports an index's imageSizeInBytes as the size of the
                # largest manifest it lists, not the index document's length.
                size = max((repo.images[c].size for c in children), default=0)
            else:
                artifact = doc["config"].get("mediaType")
                blobs = [doc["config"]] + [d for d in doc["layers"] if not d.get("urls")]
                if self.check_layers:
                    missing = [b["digest"] for b in blobs if b["digest"] not in repo.blobs]
                    if missing:
                        raise EcrError(
                            "LayersNotFoundException",
                            f"The following layers were not found in the repository '{repo.name}': {', '.join(missing)}",
                        )
                size = sum(int(d.get("size") or 0) for d in doc["layers"])
            subject = doc.get("subject")
            image = Image(
                digest=digest,
                manifest=body,
                media_type=media_type,
                pushed_at=now(),
                size=size,
                artifact_media_type=artifact,
                subject=subject.get("digest") if isinstance(subject, dict) else None,
                children=children,
            )
            repo.images[digest] = image
        if tag is not None:
            repo.tags[tag] = digest
        image_id: dict[str, Any] = {"imageDigest": digest}
        if tag is not None:
            image_id["imageTag"] = tag
        out = {
            "image": {
                "registryId": account,
                "repositoryName": repo.name,
                "imageId": image_id,
                "imageManifest": text,
                "imageManifestMediaType": media_type,
            }
        }
        return out, [ecr_event(repo, "PUSH", digest, tag or "", image), *self._replicate(account, region, repo, image, tag)]

    def _resolve(self, repo: Repository, image_id: Any) -> tuple[str | None, dict[str, str] | None]:
        """The digest an image id names, or a BatchGetImage/BatchDeleteImage failure."""
        if not isinstance(image_id, dict):
            return None, _failure(image_id, "MissingDigestAndTag", "Missing image digest and tag")
        digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
        if digest is None and tag is None:
            return None, _failure(image_id, "MissingDigestAndTag", "Missing image digest and tag")
        if digest is not None and not DIGEST.match(str(digest)):
            return None, _failure(image_id, "InvalidImageDigest", "Invalid image digest")
        if tag is not None:
            target = repo.tags.get(tag)
            if target is None:
                return None, _failure(image_id, "ImageNotFound", "Requested image not found")
            if digest is not None and digest != target:
                return None, _failure(image_id, "ImageTagDoesNotMatchDigest", "Invalid image tag for the digest")
            return target, None
        if digest not in repo.images:
            return None, _failure(image_id, "ImageNotFound", "Requested image not found")
        return digest, None

    def batch_get_image(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        repo = self.repo(account, region, req.get("repositoryName"))
        ids = req.get("imageIds") or []
        _check_id_count(ids)
        accepted = req.get("acceptedMediaTypes") or list(DEFAULT_ACCEPTED)
        images, failures, seen = [], [], set()
        for image_id in ids:
            digest, failure = self._resolve(repo, image_id)
            if failure is not None:
                failures.append(failure)
                continue
            assert digest is not None
            image = repo.images[digest]
            if image.status != "ACTIVE":
                # "Archived images cannot be pulled" (ECR user guide).
                failures.append(
                    _failure(
                        image_id,
                        ARCHIVED_FAILURE,
                        f"The image is {image.status.lower()} and cannot be pulled; restore it first",
                    )
                )
                continue
            if image.media_type not in accepted:
                failures.append(
                    _failure(
                        image_id,
                        "ImageNotFound",
                        f"The image is stored as {image.media_type}, which is not among the acceptedMediaTypes",
                    )
                )
                continue
            key = (digest, image_id.get("imageTag"))
            if key in seen:
                continue
            seen.add(key)
            if self.records_pulls_of(account, self.principal):
                image.last_pulled = now()
            out_id = {"imageDigest": digest}
            if image_id.get("imageTag") is not None:
                out_id["imageTag"] = image_id["imageTag"]
            images.append(
                {
                    "registryId": account,
                    "repositoryName": repo.name,
                    "imageId": out_id,
                    "imageManifest": image.manifest.decode("utf-8"),
                    "imageManifestMediaType": image.media_type,
                }
            )
        return {"images": images, "failures": failures}

    def batch_delete_image(self, account: str, region: str, req: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        repo = self.repo(account, region, req.get("repositoryName"))
        ids = req.get("imageIds") or []
        _check_id_count(ids)
        deleted, failures, events = [], [], []
        for image_id in ids:
            digest, failure = self._resolve(repo, image_id)
            if failure is not None:
                failures.append(failure)
                continue
            assert digest is not None
            tag = image_id.get("imageTag")
            if tag is not None and image_id.get("imageDigest") is None and len(repo.tags_of(digest)) > 1:
                # Removing one of several tags: the image stays.
                del repo.tags[tag]
                deleted.append({"imageDigest": digest, "imageTag": tag})
                events.append(ecr_event(repo, "DELETE", digest, tag, None))
                continue
            indexes = [i for i in repo.referencing_indexes(digest) if i != digest]
            if indexes:
                failures.append(
                    _failure(
                        image_id,
                        "ImageReferencedByManifestList",
                        f"Requested image is referenced by manifest list: [{', '.join(indexes)}]",
                    )
                )
                continue
            tags = repo.tags_of(digest)
            for t in tags:
                del repo.tags[t]
            del repo.images[digest]
            if tags:
                for t in tags:
                    deleted.append({"imageDigest": digest, "imageTag": t})
                    events.append(ecr_event(repo, "DELETE", digest, t, None))
            else:
                deleted.append({"imageDigest": digest})
                events.append(ecr_event(repo, "DELETE", digest, "", None))
        return {"imageIds": deleted, "failures": failures}, events

    def _details(self, repo: Repository, image: Image) -> dict[str, Any]:
        out: dict[str, Any] = {
            "registryId": repo.account,
            "repositoryName": repo.name,
            "imageDigest": image.digest,
            "imageSizeInBytes": image.size,
            "imagePushedAt": image.pushed_at.timestamp(),
            "imageManifestMediaType": image.media_type,
            "imageStatus": image.status,
        }
        tags = repo.tags_of(image.digest)
        if tags:
            out["imageTags"] = tags
        if image.artifact_media_type:
            out["artifactMediaType"] = image.artifact_media_type
        if image.subject:
            out["subjectManifestDigest"] = image.subject
        if image.last_pulled is not None:
            out["lastRecordedPullTime"] = image.last_pulled.timestamp()
        return out

    def describe_images(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        repo = self.repo(account, region, req.get("repositoryName"))
        ids = req.get("imageIds")
        if ids:
            if req.get("nextToken") or req.get("maxResults"):
                raise invalid("nextToken and maxResults cannot be used with imageIds")
            details = []
            for image_id in ids:
                digest, failure = self._resolve(repo, image_id)
                if failure is not None:
                    raise EcrError(
                        "ImageNotFoundException",
                        f"The image with imageId {json.dumps(image_id, sort_keys=True)} does not exist within the repository with name "
                        f"'{repo.name}' in the registry with id '{account}'",
                    )
                assert digest is not None
                details.append(self._details(repo, repo.images[digest]))
            return {"imageDetails": details}
        status = _tag_status(req)
        wanted_status = _image_status(req)
        chosen = [
            i for i in repo.images.values() if _status_matches(status, bool(repo.tags_of(i.digest))) and wanted_status in ("ANY", i.status)
        ]
        return _page("imageDetails", [self._details(repo, i) for i in chosen], req, key=f"images:{repo.name}")

    def list_image_referrers(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        """``ListImageReferrers``: manifests whose ``subject`` is the given
        digest (stored before or after it), ``ACTIVE`` ones unless the filter
        says otherwise, oldest first, 50 a page."""
        repo = self.repo(account, region, req.get("repositoryName"))
        subject = (req.get("subjectId") or {}).get("imageDigest") if isinstance(req.get("subjectId"), dict) else None
        if not isinstance(subject, str) or not DIGEST.match(subject):
            raise invalid("Invalid parameter at 'subjectId.imageDigest': a sha256 digest is required")
        flt = req.get("filter") or {}
        if not isinstance(flt, dict):
            raise invalid("Invalid parameter at 'filter'")
        status = flt.get("artifactStatus") or "ACTIVE"
        if status not in ("ACTIVE", "ARCHIVED", "ACTIVATING", "ANY"):
            raise invalid(f"Invalid parameter at 'filter.artifactStatus': '{status}' is not one of ACTIVE, ARCHIVED, ACTIVATING, ANY")
        types = flt.get("artifactTypes") or []
        found = []
        for image in sorted(repo.images.values(), key=lambda i: (i.pushed_at, i.digest)):
            if image.subject != subject or (status != "ANY" and image.status != status):
                continue
            doc = json.loads(image.manifest)
            artifact_type = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType") or ""
            if types and artifact_type not in types:
                continue
            entry: dict[str, Any] = {
                "digest": image.digest,
                "mediaType": image.media_type,
                "artifactType": artifact_type,
                "size": len(image.manifest),
                "artifactStatus": image.status,
            }
            if isinstance(doc.get("annotations"), dict):
                entry["annotations"] = doc["annotations"]
            found.append(entry)
        page, token = _paginate(found, req, default=50, limit=50, key=f"referrers:{repo.name}:{subject}")
        out: dict[str, Any] = {"referrers": page}
        if token:
            out["nextToken"] = token
        return out

    def list_images(self, account: str, region: str, req: dict[str, Any]) -> dict[str, Any]:
        repo = self.repo(account, region, req.get("repositoryName"))
        status = _tag_status(req)
        wanted_status = _image_status(req)
        ids: list[dict[str, str]] = []
        for image in repo.images.values():
            tags = repo.tags_of(image.digest)
            if not _status_matches(status, bool(tags)) or wanted_status not in ("ANY", image.status):
                continue
            if tags:
                ids.extend({"imageDigest": image.digest, "imageTag": t} for t in tags)
            else:
                ids.append({"imageDigest": image.digest})
        return _page("imageIds", ids, req, key=f"list:{repo.name}")


def _copy_into(dest: Repository, source: Repository, image: Image, tag: str | None) -> bool:
    """Stores ``image`` (and the blobs it names) in ``dest`` under ``tag``, as a replica; False
    when the destination refuses it (an immutable tag held by another image, a child missing)."""
    moving_immutable = tag is not None and tag in dest.tags and dest.tags[tag] != image.digest and dest.tag_is_immutable(tag)
    if moving_immutable or any(c not in dest.images for c in image.children):
        return False
    for blob in _blobs_of(image):
        if blob in source.blobs:
            dest.blobs.setdefault(blob, source.blobs[blob])
    if image.digest not in dest.images:
        dest.images[image.digest] = Image(
            digest=image.digest,
            manifest=image.manifest,
            media_type=image.media_type,
            pushed_at=now(),
            size=image.size,
            artifact_media_type=image.artifact_media_type,
            subject=image.subject,
            children=list(image.children),
        )
    if tag is not None:
        dest.tags[tag] = image.digest
    return True


def _blobs_of(image: Image) -> list[str]:
    """The config and layer digests an image manifest names (none for an index)."""
    if image.children:
        return []
    try:
        doc = json.loads(image.manifest)
    except ValueError:
        return []
    return [d["digest"] for d in [doc.get("config") or {}, *(doc.get("layers") or [])] if isinstance(d, dict) and d.get("digest")]


def _resource_tags(tags: Any) -> dict[str, str]:
    """ECR's resource tags as given to CreateRepository/TagResource, checked as AWS does."""
    if not isinstance(tags, list):
        raise invalid("tags must be a list of {Key, Value}")
    out: dict[str, str] = {}
    for t in tags:
        key, value = (t.get("Key"), t.get("Value")) if isinstance(t, dict) else (None, None)
        if not isinstance(key, str) or not 1 <= len(key) <= 128 or key.lower().startswith("aws:"):
            raise EcrError("InvalidTagParameterException", f"invalid tag key {key!r}")
        if not isinstance(value, str) or len(value) > 256:
            raise EcrError("InvalidTagParameterException", f"invalid value for tag {key!r}")
        out[key] = value
    if len(out) > MAX_RESOURCE_TAGS:
        raise EcrError("TooManyTagsException", f"a repository can have at most {MAX_RESOURCE_TAGS} tags")
    return out


def _upload(repo: Repository, req: dict[str, Any]) -> tuple[str, Upload]:
    """The upload a layer-upload request names, or ECR's error."""
    upload_id = req.get("uploadId")
    upload = repo.uploads.get(upload_id or "")
    if upload is None or upload_id is None:
        raise EcrError("UploadNotFoundException", f"Upload {upload_id} not found")
    return upload_id, upload


def _failure(image_id: Any, code: str, reason: str) -> dict[str, Any]:
    return {"imageId": image_id if isinstance(image_id, dict) else {}, "failureCode": code, "failureReason": reason}


def _check_id_count(ids: Any) -> None:
    if not isinstance(ids, list) or not ids:
        raise invalid("Invalid parameter at 'imageIds' failed to satisfy constraint: 'Member must have length greater than or equal to 1'")
    if len(ids) > MAX_IMAGE_IDS:
        raise invalid(
            f"Invalid parameter at 'imageIds' failed to satisfy constraint: 'Member must have length less than or equal to {MAX_IMAGE_IDS}'"
        )


def _mutability(req: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    mutability = req.get("imageTagMutability") or "MUTABLE"
    if mutability not in MUTABILITY:
        raise invalid(f"Invalid parameter at 'imageTagMutability': '{mutability}' is not one of {', '.join(MUTABILITY)}")
    filters = req.get("imageTagMutabilityExclusionFilters") or []
    if mutability.endswith("_WITH_EXCLUSION"):
        if not 1 <= len(filters) <= 5:
            raise invalid(f"{mutability} needs between 1 and 5 imageTagMutabilityExclusionFilters")
        for f in filters:
            if not isinstance(f, dict) or f.get("filterType") != "WILDCARD" or not isinstance(f.get("filter"), str):
                raise invalid("Each exclusion filter needs filterType WILDCARD and a filter string")
            if not re.match(r"^[0-9a-zA-Z._*-]{1,128}$", f["filter"]):
                raise invalid(f"Invalid exclusion filter '{f['filter']}'")
    elif filters:
        raise invalid(f"imageTagMutabilityExclusionFilters can only be used with the *_WITH_EXCLUSION modes, not {mutability}")
    return mutability, [{"filterType": f["filterType"], "filter": f["filter"]} for f in filters]


def _tag_status(req: dict[str, Any]) -> str:
    status = (req.get("filter") or {}).get("tagStatus") or "ANY"
    if status not in ("TAGGED", "UNTAGGED", "ANY"):
        raise invalid(f"Invalid parameter at 'filter.tagStatus': '{status}' is not one of TAGGED, UNTAGGED, ANY")
    return status


def _image_status(req: dict[str, Any]) -> str:
    """The ``filter.imageStatus`` of a listing: without one, ECR lists only ACTIVE images."""
    wanted = (req.get("filter") or {}).get("imageStatus") or "ACTIVE"
    if wanted not in ("ACTIVE", "ARCHIVED", "ACTIVATING", "ANY"):
        raise invalid(f"Invalid parameter at 'filter.imageStatus': '{wanted}' is not one of ACTIVE, ARCHIVED, ACTIVATING, ANY")
    return wanted


def _status_matches(status: str, tagged: bool) -> bool:
    return status == "ANY" or (status == "TAGGED") == tagged


def _page(field: str, items: list[Any], req: dict[str, Any], key: str) -> dict[str, Any]:
    """ECR's paginated reply: ``field`` holds one page (default 100, at most 1000), ``nextToken`` the rest."""
    page, token = _paginate(items, req, default=100, limit=1000, key=key)
    out: dict[str, Any] = {field: page}
    if token:
        out["nextToken"] = token
    return out


def _paginate(items: list[Any], req: dict[str, Any], default: int, limit: int, key: str) -> tuple[list[Any], str | None]:
    """A page of ``items`` and the token for the next one (opaque to callers)."""
    size = req.get("maxResults")
    if size is None:
        size = default
    if not isinstance(size, int) or not 1 <= size <= limit:
        raise invalid(f"Invalid parameter at 'maxResults' failed to satisfy constraint: 'Member must have value between 1 and {limit}'")
    start = 0
    token = req.get("nextToken")
    if token:
        try:
            kind, offset = base64.urlsafe_b64decode(token.encode()).decode().rsplit("|", 1)
            start = int(offset)
        except ValueError:
            raise invalid("Invalid parameter at 'nextToken': the token is not valid") from None
        if kind != key or start < 0:
            raise invalid("Invalid parameter at 'nextToken': the token belongs to another request")
    end = start + size
    nxt = base64.urlsafe_b64encode(f"{key}|{end}".encode()).decode() if end < len(items) else None
    return items[start:end], nxt
