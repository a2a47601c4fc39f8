"""The ECR contract: behaviours 1-8 of the emulator issue, through boto3.

Every assertion here is what Amazon ECR does (ECR-FACTS.md). The suite runs
against the emulator by default and unchanged against real ECR with
``ECR_CONTRACT_TARGET=aws`` (see tests/emulator/README.md). Where AWS's
behaviour is not confirmed, the test accepts every documented possibility and
says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import urllib.error
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import EVENT_TIMEOUT, ON_AWS, EventQueue
from ecr_emulator.oci import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, Layout, build_buildx_layout
from ecr_emulator.push import push
from ecr_emulator.testing import EmulatorProcess, account_session, member_role_trust, wait_for

ALL_TYPES = [
    OCI_INDEX,
    "application/vnd.docker.distribution.manifest.list.v2+json",
    OCI_MANIFEST,
    "application/vnd.docker.distribution.manifest.v2+json",
]


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def error_code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return err.value.response["Error"]["Code"]


def buildx(salt: str, **kwargs: Any) -> tuple[Layout, dict[str, Any]]:
    """A default-buildx layout and its parsed index."""
    layout = build_buildx_layout(salt=salt, **kwargs)
    index = json.loads(layout.blobs[layout.top[0]["digest"]])
    return layout, index


def single_image(salt: str) -> tuple[Layout, str]:
    """A layout whose top is one runnable image manifest (as `--provenance=false` pushes)."""
    layout, index = buildx(salt)
    desc = index["manifests"][0]
    layout.top = [{k: desc[k] for k in ("mediaType", "digest", "size")}]
    return layout, desc["digest"]


def get(ecr: Any, repo: str, **image_id: str) -> dict[str, Any]:
    reply = ecr.batch_get_image(repositoryName=repo, imageIds=[image_id], acceptedMediaTypes=ALL_TYPES)
    assert not reply["failures"], reply["failures"]
    return reply["images"][0]


def describe(ecr: Any, repo: str, **kwargs: Any) -> list[dict[str, Any]]:
    return [d for page in ecr.get_paginator("describe_images").paginate(repositoryName=repo, **kwargs) for d in page["imageDetails"]]


def tag_targets(ecr: Any, repo: str) -> dict[str, str]:
    return {t: d["imageDigest"] for d in describe(ecr, repo) for t in d.get("imageTags", [])}


# -- 1. digests over exact bytes ------------------------------------------------


def test_digest_is_sha256_of_the_exact_bytes_and_they_come_back_unchanged(ecr: Any, repo: str, salt: str) -> None:
    layout, image_digest = single_image(salt)
    push(ecr, repo, layout, [])
    # The same index written three ways: different bytes, so three digests.
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": image_digest, "size": len(layout.blobs[image_digest])}],
        "annotations": {"note": f"caf\u00e9 {salt}"},
    }
    variants = [
        json.dumps(index),
        json.dumps(index, indent=3, ensure_ascii=False) + "\n",
        json.dumps(index, separators=(",", ":"), sort_keys=True),
    ]
    for i, text in enumerate(variants):
        reply = ecr.put_image(repositoryName=repo, imageManifest=text, imageTag=f"v{i}")
        assert reply["image"]["imageId"]["imageDigest"] == sha(text)
        image = get(ecr, repo, imageTag=f"v{i}")
        assert image["imageManifest"] == text
        assert image["imageId"]["imageDigest"] == sha(text)
        assert image["imageManifestMediaType"] == OCI_INDEX
    assert len({sha(v) for v in variants}) == 3


def test_stored_media_type_comes_back_and_accepted_media_types_are_honoured(ecr: Any, repo: str, salt: str) -> None:
    layout, index = buildx(salt)
    push(ecr, repo, layout, ["v1"])
    image = get(ecr, repo, imageTag="v1")
    assert image["imageManifestMediaType"] == OCI_INDEX
    assert image["imageManifest"].encode() == layout.blobs[layout.top[0]["digest"]]
    # Asking only for image manifests must not hand back the index as if it were one.
    # (ECR may refuse or convert; both are allowed, serving the index bytes is not.)
    reply = ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}], acceptedMediaTypes=[OCI_MANIFEST])
    for served in reply["images"]:
        assert served["imageManifestMediaType"] == OCI_MANIFEST
        assert served["imageId"]["imageDigest"] != layout.top[0]["digest"]
    # A child is served as stored.
    child = index["manifests"][0]["digest"]
    assert get(ecr, repo, imageDigest=child)["imageManifest"].encode() == layout.blobs[child]


def test_batch_get_image_reports_unknown_ids_as_failures(ecr: Any, repo: str) -> None:
    missing = "sha256:" + "0" * 64
    reply = ecr.batch_get_image(
        repositoryName=repo, imageIds=[{"imageDigest": missing}, {"imageTag": "nope"}], acceptedMediaTypes=ALL_TYPES
    )
    assert reply["images"] == []
    assert sorted(f["failureCode"] for f in reply["failures"]) == ["ImageNotFound", "ImageNotFound"]


# -- 2. digest mismatch -----------------------------------------------------------


def test_put_image_with_a_digest_that_does_not_match_the_bytes_is_refused(ecr: Any, repo: str, salt: str) -> None:
    layout, image_digest = single_image(salt)
    push(ecr, repo, layout, [])
    text = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": image_digest, "size": len(layout.blobs[image_digest])}],
        }
    )
    with pytest.raises(ClientError) as err:
        ecr.put_image(repositoryName=repo, imageManifest=text, imageDigest="sha256:" + "1" * 64, imageTag="v1")
    assert error_code(err) == "ImageDigestDoesNotMatchException"
    assert "v1" not in tag_targets(ecr, repo)


# -- 3. references must exist -------------------------------------------------------


def test_index_whose_children_are_missing_is_refused(ecr: Any, repo: str, salt: str) -> None:
    layout, _ = buildx(salt)
    index_text = layout.blobs[layout.top[0]["digest"]].decode()
    with pytest.raises(ClientError) as err:
        ecr.put_image(repositoryName=repo, imageManifest=index_text, imageManifestMediaType=OCI_INDEX, imageTag="v1")
    assert error_code(err) == "ReferencedImagesNotFoundException"
    assert describe(ecr, repo) == []


def test_image_manifest_whose_layers_were_never_uploaded_is_refused(ecr: Any, repo: str, salt: str) -> None:
    layout, image_digest = single_image(salt)
    with pytest.raises(ClientError) as err:
        ecr.put_image(repositoryName=repo, imageManifest=layout.blobs[image_digest].decode(), imageManifestMediaType=OCI_MANIFEST)
    assert error_code(err) == "LayersNotFoundException"


# -- 4. tags: already there, immutability ----------------------------------------------


def test_putting_a_tag_the_digest_already_has_is_image_already_exists(ecr: Any, repo: str, salt: str) -> None:
    layout, _ = buildx(salt)
    push(ecr, repo, layout, ["v1"])
    text = layout.blobs[layout.top[0]["digest"]].decode()
    with pytest.raises(ClientError) as err:
        ecr.put_image(repositoryName=repo, imageManifest=text, imageManifestMediaType=OCI_INDEX, imageTag="v1")
    assert error_code(err) == "ImageAlreadyExistsException"
    # A new tag on the same bytes is fine and adds the tag.
    ecr.put_image(repositoryName=repo, imageManifest=text, imageManifestMediaType=OCI_INDEX, imageTag="v1-copy")
    assert tag_targets(ecr, repo)["v1-copy"] == layout.top[0]["digest"]


def test_mutable_repository_moves_a_tag_and_leaves_the_old_image_untagged(ecr: Any, repo: str, salt: str) -> None:
    first, _ = buildx(salt + "a")
    second, _ = buildx(salt + "b")
    push(ecr, repo, first, ["v1"])
    push(ecr, repo, second, ["v1"])
    assert tag_targets(ecr, repo)["v1"] == second.top[0]["digest"]
    old = [d for d in describe(ecr, repo) if d["imageDigest"] == first.top[0]["digest"]]
    assert old and "imageTags" not in old[0]


def test_immutable_repository_refuses_to_move_a_tag(ecr: Any, repo: str, salt: str) -> None:
    first, _ = buildx(salt + "a")
    second, _ = buildx(salt + "b")
    push(ecr, repo, first, ["v1"])
    ecr.put_image_tag_mutability(repositoryName=repo, imageTagMutability="IMMUTABLE")
    with pytest.raises(ClientError) as err:
        push(ecr, repo, second, ["v1"])
    assert error_code(err) == "ImageTagAlreadyExistsException"
    assert tag_targets(ecr, repo)["v1"] == first.top[0]["digest"]
    # New tags are still fine, and re-sending the same digest+tag is ImageAlreadyExists.
    push(ecr, repo, second, ["v2"])
    with pytest.raises(ClientError) as again:
        ecr.put_image(
            repositoryName=repo,
            imageManifest=second.blobs[second.top[0]["digest"]].decode(),
            imageManifestMediaType=OCI_INDEX,
            imageTag="v2",
        )
    assert error_code(again) == "ImageAlreadyExistsException"


@pytest.mark.parametrize(
    ("mode", "movable", "fixed"),
    [("IMMUTABLE_WITH_EXCLUSION", "latest", "v1"), ("MUTABLE_WITH_EXCLUSION", "v1", "release-1")],
)
def test_exclusion_filters_decide_which_tags_move(ecr: Any, repo: str, salt: str, mode: str, movable: str, fixed: str) -> None:
    first, _ = buildx(salt + "a")
    second, _ = buildx(salt + "b")
    push(ecr, repo, first, [movable, fixed])
    pattern = "latest*" if mode == "IMMUTABLE_WITH_EXCLUSION" else "release-*"
    ecr.put_image_tag_mutability(
        repositoryName=repo,
        imageTagMutability=mode,
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": pattern}],
    )
    push(ecr, repo, second, [movable])
    with pytest.raises(ClientError) as err:
        push(ecr, repo, second, [fixed])
    assert error_code(err) == "ImageTagAlreadyExistsException"
    targets = tag_targets(ecr, repo)
    assert targets[movable] == second.top[0]["digest"]
    assert targets[fixed] == first.top[0]["digest"]


# -- 5. deletion ------------------------------------------------------------------------


def test_a_manifest_an_index_refers_to_cannot_be_deleted(ecr: Any, repo: str, salt: str) -> None:
    layout, index = buildx(salt)
    push(ecr, repo, layout, ["v1"])
    runnable, attestation = (m["digest"] for m in index["manifests"])
    reply = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": attestation}, {"imageDigest": runnable}])
    assert reply["imageIds"] == []
    assert sorted(f["failureCode"] for f in reply["failures"]) == ["ImageReferencedByManifestList"] * 2
    assert {d["imageDigest"] for d in describe(ecr, repo)} == {layout.top[0]["digest"], runnable, attestation}
    # Delete the index first, then its children go.
    reply = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": layout.top[0]["digest"]}])
    assert reply["failures"] == []
    reply = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": attestation}, {"imageDigest": runnable}])
    assert reply["failures"] == []
    assert describe(ecr, repo) == []


def test_a_child_shared_by_two_indexes_stays_until_both_are_gone(ecr: Any, repo: str, salt: str) -> None:
    layout, index = buildx(salt)
    push(ecr, repo, layout, ["v1"])
    runnable = index["manifests"][0]
    other = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [runnable]})
    ecr.put_image(repositoryName=repo, imageManifest=other, imageTag="solo")
    ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
    reply = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": runnable["digest"]}])
    assert [f["failureCode"] for f in reply["failures"]] == ["ImageReferencedByManifestList"]


def test_delete_by_tag_removes_the_tag_and_the_image_with_its_last_tag(ecr: Any, repo: str, salt: str) -> None:
    layout, _ = single_image(salt)
    digest = layout.top[0]["digest"]
    push(ecr, repo, layout, ["a", "b"])
    reply = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "a"}])
    assert reply["failures"] == []
    assert [d.get("imageTags") for d in describe(ecr, repo)] == [["b"]]
    reply = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "b"}])
    assert reply["failures"] == []
    assert reply["imageIds"] == [{"imageDigest": digest, "imageTag": "b"}]
    assert describe(ecr, repo) == []


def test_delete_reports_unknown_images_per_id(ecr: Any, repo: str) -> None:
    reply = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": "sha256:" + "2" * 64}, {"imageTag": "ghost"}])
    assert [f["failureCode"] for f in reply["failures"]] == ["ImageNotFound", "ImageNotFound"]


def test_delete_takes_at_most_100_ids(ecr: Any, repo: str) -> None:
    ids = [{"imageDigest": "sha256:" + f"{i:064x}"} for i in range(101)]
    with pytest.raises(ClientError) as err:
        ecr.batch_delete_image(repositoryName=repo, imageIds=ids)
    # AWS's code for a list-length violation is not confirmed; both are documented forms.
    assert error_code(err) in ("InvalidParameterException", "ValidationException")
    reply = ecr.batch_delete_image(repositoryName=repo, imageIds=ids[:100])
    assert len(reply["failures"]) == 100


# -- 6. DescribeImages ------------------------------------------------------------------


def test_describe_images_reports_ecr_fields(ecr: Any, repo: str, salt: str) -> None:
    layout, index = buildx(salt)
    push(ecr, repo, layout, ["v7"])
    details = {d["imageDigest"]: d for d in describe(ecr, repo)}
    top = details[layout.top[0]["digest"]]
    assert top["imageManifestMediaType"] == OCI_INDEX
    assert top["imageTags"] == ["v7"]
    assert "artifactMediaType" not in top
    runnable = details[index["manifests"][0]["digest"]]
    manifest = json.loads(layout.blobs[runnable["imageDigest"]])
    assert runnable["imageManifestMediaType"] == OCI_MANIFEST
    assert runnable["artifactMediaType"] == OCI_CONFIG
    assert runnable["imageSizeInBytes"] >= sum(layer["size"] for layer in manifest["layers"])
    assert "imageTags" not in runnable
    for detail in details.values():
        assert detail["repositoryName"] == repo
        assert detail["imagePushedAt"]


def test_describe_images_tag_status_filter(ecr: Any, repo: str, salt: str) -> None:
    layout, index = buildx(salt)
    push(ecr, repo, layout, ["v7"])
    tagged = {d["imageDigest"] for d in describe(ecr, repo, filter={"tagStatus": "TAGGED"})}
    untagged = {d["imageDigest"] for d in describe(ecr, repo, filter={"tagStatus": "UNTAGGED"})}
    assert tagged == {layout.top[0]["digest"]}
    assert untagged == {m["digest"] for m in index["manifests"]}


def test_describe_images_paginates(ecr: Any, repo: str, salt: str) -> None:
    layout, _ = buildx(salt, platforms=["linux/amd64", "linux/arm64", "linux/arm/v7"])
    push(ecr, repo, layout, ["multi"])
    pages = list(ecr.get_paginator("describe_images").paginate(repositoryName=repo, PaginationConfig={"PageSize": 2}))
    digests = [d["imageDigest"] for p in pages for d in p["imageDetails"]]
    assert len(pages) >= 4
    assert all(len(p["imageDetails"]) <= 2 for p in pages)
    assert len(digests) == len(set(digests)) == 7


def test_describe_images_by_unknown_id_is_image_not_found(ecr: Any, repo: str) -> None:
    with pytest.raises(ClientError) as err:
        ecr.describe_images(repositoryName=repo, imageIds=[{"imageTag": "ghost"}])
    assert error_code(err) == "ImageNotFoundException"


# -- 7. events ----------------------------------------------------------------------------


def test_a_buildx_push_emits_one_push_event_per_manifest(ecr: Any, repo: str, salt: str, event_queue: EventQueue) -> None:
    layout, index = buildx(salt)
    push(ecr, repo, layout, ["v7"])
    events = event_queue.drain(3, EVENT_TIMEOUT)
    assert len(events) == 3
    by_digest = {e["detail"]["image-digest"]: e for e in events}
    for event in events:
        assert event["source"] == "aws.ecr"
        assert event["detail-type"] == "ECR Image Action"
        assert event["detail"]["action-type"] == "PUSH"
        assert event["detail"]["result"] == "SUCCESS"
        assert event["detail"]["repository-name"] == repo
        assert event["account"] and event["region"] and event["time"].endswith("Z")
    top = by_digest[layout.top[0]["digest"]]["detail"]
    assert top["image-tag"] == "v7"
    assert top["manifest-media-type"] == OCI_INDEX
    assert "artifact-media-type" not in top
    for child in index["manifests"]:
        detail = by_digest[child["digest"]]["detail"]
        assert detail["image-tag"] == ""
        assert detail["manifest-media-type"] == OCI_MANIFEST
        assert detail["artifact-media-type"] == OCI_CONFIG


def test_adding_a_tag_and_deleting_emit_events(ecr: Any, repo: str, salt: str, event_queue: EventQueue) -> None:
    layout, image_digest = single_image(salt)
    push(ecr, repo, layout, ["v1"])
    ecr.put_image(
        repositoryName=repo, imageManifest=layout.blobs[image_digest].decode(), imageManifestMediaType=OCI_MANIFEST, imageTag="v1-extra"
    )
    ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": image_digest}])
    events = event_queue.drain(4, EVENT_TIMEOUT)
    pushes = sorted(e["detail"]["image-tag"] for e in events if e["detail"]["action-type"] == "PUSH")
    deletes = [e["detail"] for e in events if e["detail"]["action-type"] == "DELETE"]
    assert pushes == ["v1", "v1-extra"]
    assert deletes and all(d["image-digest"] == image_digest for d in deletes)


# -- the acceptance scenario ---------------------------------------------------------


def test_pushed_buildx_index_exact_digests_protected_attestation_three_events(
    ecr: Any, repo: str, salt: str, event_queue: EventQueue
) -> None:
    layout, index = buildx(salt)
    stored = push(ecr, repo, layout, ["v7"])
    assert [s.tag for s in stored] == ["", "", "v7"]
    for item in stored:
        assert get(ecr, repo, imageDigest=item.digest)["imageManifest"].encode() == layout.blobs[item.digest]
        assert item.digest == "sha256:" + hashlib.sha256(layout.blobs[item.digest]).hexdigest()
    attestation = index["manifests"][1]
    assert attestation["platform"] == {"architecture": "unknown", "os": "unknown"}
    reply = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": attestation["digest"]}])
    assert [f["failureCode"] for f in reply["failures"]] == ["ImageReferencedByManifestList"]
    events = event_queue.drain(3, EVENT_TIMEOUT)
    assert sorted((e["detail"]["image-digest"], e["detail"]["image-tag"]) for e in events) == sorted((s.digest, s.tag) for s in stored)


@pytest.mark.emulator_only  # registry-wide configuration: never set on a real account by a test
def test_replication_copies_each_push_and_announces_it_in_the_destination(
    aws_session: Any, client_factory: Any, ecr: Any, repo: str, salt: str
) -> None:
    account = client_factory("sts").get_caller_identity()["Account"]
    west, sqs, events = (
        aws_session.client(service, region_name="us-west-2", endpoint_url=ecr.meta.endpoint_url) for service in ("ecr", "sqs", "events")
    )
    url = sqs.create_queue(QueueName=f"replicated-{salt}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=f"replicated-{salt}", EventPattern=json.dumps({"source": ["aws.ecr"], "detail-type": ["ECR Replication Action"]}))
    events.put_targets(Rule=f"replicated-{salt}", Targets=[{"Id": "q", "Arn": arn}])
    rules = [
        {
            "destinations": [{"region": "us-west-2", "registryId": account}],
            "repositoryFilters": [{"filter": repo, "filterType": "PREFIX_MATCH"}],
        }
    ]
    ecr.put_replication_configuration(replicationConfiguration={"rules": rules})
    try:
        assert ecr.describe_registry()["replicationConfiguration"]["rules"] == rules
        layout, _ = buildx(salt)
        stored = push(ecr, repo, layout, ["v7"])
        # The destination repository exists now, with every manifest under the same digest and tag.
        copies = {d["imageDigest"]: d.get("imageTags", []) for d in west.describe_images(repositoryName=repo)["imageDetails"]}
        assert copies == {s.digest: [s.tag] if s.tag else [] for s in stored}
        reply = west.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v7"}], acceptedMediaTypes=[OCI_INDEX])
        assert not reply["failures"], reply["failures"]
        got = reply["images"][0]
        assert got["imageManifest"].encode() == layout.blobs[stored[-1].digest]
        # One REPLICATE event per manifest, in the destination, naming the source; no media type.
        bodies = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])]
        assert sorted((b["detail"]["image-digest"], b["detail"]["image-tag"]) for b in bodies) == sorted((s.digest, s.tag) for s in stored)
        for b in bodies:
            assert b["region"] == "us-west-2" and b["account"] == account
            assert b["detail"]["action-type"] == "REPLICATE" and b["detail"]["result"] == "SUCCESS"
            assert (b["detail"]["source-region"], b["detail"]["source-account"]) == ("us-east-1", account)
            assert "manifest-media-type" not in b["detail"]
        # A deletion in the source is not replicated.
        ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "v7"}])
        assert len(west.describe_images(repositoryName=repo)["imageDetails"]) == len(stored)
    finally:
        ecr.put_replication_configuration(replicationConfiguration={"rules": []})
        west.delete_repository(repositoryName=repo, force=True)


# -- 8. fault injection (emulator only) ---------------------------------------------------------


@pytest.mark.emulator_only
def test_scripted_throttling_is_retried_by_the_sdk(client_factory: Any, control: Any, repo: str, salt: str) -> None:
    ecr = client_factory("ecr", retries={"mode": "standard", "max_attempts": 5})
    layout, image_digest = single_image(salt)
    push(ecr, repo, layout, [])
    control.fault("PutImage", sequence=["ThrottlingException", "ThrottlingException"])
    ecr.put_image(
        repositoryName=repo, imageManifest=layout.blobs[image_digest].decode(), imageManifestMediaType=OCI_MANIFEST, imageTag="v1"
    )
    assert control.faults()["injected"] == {"PutImage": {"ThrottlingException": 2}}
    assert tag_targets(ecr, repo) == {"v1": image_digest}


@pytest.mark.emulator_only
def test_server_errors_are_http_500(client_factory: Any, control: Any, repo: str) -> None:
    ecr = client_factory("ecr", retries={"mode": "standard", "total_max_attempts": 1})
    control.fault("ecr:BatchGetImage", sequence=["ServerException", "ok"])
    with pytest.raises(ClientError) as err:
        ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "x"}], acceptedMediaTypes=ALL_TYPES)
    assert error_code(err) == "ServerException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    # The sequence is used up: the next call is served normally.
    assert ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "x"}], acceptedMediaTypes=ALL_TYPES)["failures"]


@pytest.mark.emulator_only
def test_error_rate_and_latency(client_factory: Any, control: Any, repo: str) -> None:
    ecr = client_factory("ecr", retries={"mode": "standard", "total_max_attempts": 1})
    control.fault("DescribeImages", rate=1.0, error="ThrottlingException")
    with pytest.raises(ClientError) as err:
        ecr.describe_images(repositoryName=repo)
    assert error_code(err) == "ThrottlingException"
    control.fault("DescribeImages", rate=0.5, error="ServerException", seed=7)
    outcomes = []
    for _ in range(40):
        try:
            ecr.describe_images(repositoryName=repo)
            outcomes.append("ok")
        except ClientError as e:
            outcomes.append(e.response["Error"]["Code"])
    failed = outcomes.count("ServerException")
    assert 5 < failed < 35 and failed + outcomes.count("ok") == 40
    assert control.faults()["injected"]["DescribeImages"]["ServerException"] == failed
    control.fault("DescribeImages", latency_ms=300)
    started = time.monotonic()
    ecr.describe_images(repositoryName=repo)
    assert time.monotonic() - started >= 0.3


@pytest.mark.emulator_only
def test_error_mixes_random_latency_and_user_agent_scoping(client_factory: Any, control: Any, repo: str) -> None:
    ecr = client_factory("ecr", retries={"mode": "standard", "total_max_attempts": 1})
    control.fault("DescribeImages", errors={"ThrottlingException": 0.3, "ServerException": 0.1}, latency_ms_max=20, seed=3)
    outcomes = []
    for _ in range(200):
        try:
            ecr.describe_images(repositoryName=repo)
            outcomes.append("ok")
        except ClientError as e:
            outcomes.append(e.response["Error"]["Code"])
    assert 35 < outcomes.count("ThrottlingException") < 85, outcomes.count("ThrottlingException")
    assert 5 < outcomes.count("ServerException") < 40, outcomes.count("ServerException")
    # Scoped to another client's User-Agent: boto3's calls are left alone.
    control.fault("DescribeImages", rate=1.0, error="ThrottlingException", user_agent="aws-sdk-rust")
    ecr.describe_images(repositoryName=repo)
    with pytest.raises(urllib.error.HTTPError):
        control.fault("DescribeImages", errors={"ThrottlingException": 0.8, "ServerException": 0.5})


@pytest.mark.emulator_only
def test_faults_and_call_counts_can_be_scoped_to_a_repository(client_factory: Any, control: Any, ecr: Any, repo: str, salt: str) -> None:
    other = f"contract/other-{salt}"
    ecr.create_repository(repositoryName=other)
    try:
        strict = client_factory("ecr", retries={"mode": "standard", "total_max_attempts": 1})
        control.fault("ListImages", repository=repo, rate=1.0, error="ThrottlingException")
        strict.list_images(repositoryName=other)
        with pytest.raises(ClientError):
            strict.list_images(repositoryName=repo)
        assert control.calls(repository=other) == {"ecr:CreateRepository": 1, "ecr:ListImages": 1}
        assert control.calls(repository=repo)["ecr:ListImages"] == 1
    finally:
        ecr.delete_repository(repositoryName=other, force=True)


@pytest.mark.emulator_only
def test_fault_rules_are_validated(control: Any) -> None:
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as err:
        control.fault("PutImage", rate=2)
    assert err.value.code == 400


def referrer_layout(salt: str, subject: dict[str, Any], artifact_type: str) -> tuple[Layout, str]:
    """An OCI 1.1 artifact (an in-toto statement) whose subject is ``subject``."""
    layout = Layout()
    config = layout.add("application/vnd.oci.empty.v1+json", b"{}")
    statement = layout.add(
        "application/vnd.in-toto+json",
        json.dumps(
            {"_type": "https://in-toto.io/Statement/v0.1", "subject": [{"digest": {"sha256": subject["digest"][7:]}}], "salt": salt}
        ).encode(),
        annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config,
        "layers": [statement],
        "subject": {k: subject[k] for k in ("mediaType", "digest", "size")},
        "annotations": {"org.opencontainers.image.created": "2026-11-23T00:00:00Z"},
    }
    desc = layout.add(OCI_MANIFEST, json.dumps(manifest, separators=(",", ":")).encode())
    layout.top = [desc]
    return layout, desc["digest"]


def test_referrers_are_listed_for_their_subject_stored_before_or_after_it(ecr: Any, repo: str, salt: str) -> None:
    image_layout, image = single_image(salt)
    subject = image_layout.top[0]
    # Stored before its subject: accepted, and listed once the subject exists too.
    early_layout, early = referrer_layout(salt + "-early", subject, "application/vnd.in-toto+json")
    push(ecr, repo, early_layout, [])
    push(ecr, repo, image_layout, ["v1"])
    late_layout, late = referrer_layout(salt + "-late", subject, "application/spdx+json")
    push(ecr, repo, late_layout, [])
    reply = ecr.list_image_referrers(repositoryName=repo, subjectId={"imageDigest": image})
    listed = {r["digest"]: r for r in reply["referrers"]}
    assert set(listed) == {early, late}
    assert listed[late]["artifactType"] == "application/spdx+json"
    assert listed[late]["mediaType"] == OCI_MANIFEST
    assert listed[late]["artifactStatus"] == "ACTIVE"
    assert listed[late]["annotations"] == {"org.opencontainers.image.created": "2026-11-23T00:00:00Z"}
    assert listed[late]["size"] == len(late_layout.blobs[late])
    only = ecr.list_image_referrers(
        repositoryName=repo, subjectId={"imageDigest": image}, filter={"artifactTypes": ["application/spdx+json"]}
    )
    assert [r["digest"] for r in only["referrers"]] == [late]
    details = {d["imageDigest"]: d for d in describe(ecr, repo)}
    assert details[late]["subjectManifestDigest"] == image
    assert "subjectManifestDigest" not in details[image]
    # The image itself refers to nothing.
    assert ecr.list_image_referrers(repositoryName=repo, subjectId={"imageDigest": early})["referrers"] == []


def test_a_subject_that_is_not_a_descriptor_is_refused(ecr: Any, repo: str, salt: str) -> None:
    layout, digest = referrer_layout(
        salt, {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 1}, "application/vnd.in-toto+json"
    )
    manifest = json.loads(layout.blobs[digest])
    manifest["subject"] = {"digest": "not-a-digest"}
    layout.blobs.pop(digest)
    bad = layout.add(OCI_MANIFEST, json.dumps(manifest).encode())
    layout.top = [bad]
    with pytest.raises(ClientError) as err:
        push(ecr, repo, layout, [])
    assert error_code(err) == "InvalidParameterException"


def test_assume_role_follows_the_trust_policy_and_acts_in_the_role_account(client_factory: Any, aws_session: Any, emulator: Any) -> None:
    """A member role (as infra/member.yaml makes it): trusted for one principal with an external id."""
    if emulator is None:
        pytest.skip("creates IAM roles in a second account")
    import boto3

    sts = client_factory("sts")
    me = sts.get_caller_identity()
    # As in an account AWS Organizations created, its OrganizationAccountAccessRole trusts the management
    # account (the emulator's default): act there to create the member role, then assume that as the hub.
    member = account_session(emulator.url, "222222222222")
    iam = member.client("iam", endpoint_url=emulator.url)
    trust = member_role_trust(me["Arn"], "hub-secret-0123456789")
    iam.create_role(RoleName="ecr-remediator-member", AssumeRolePolicyDocument=json.dumps(trust))
    role = "arn:aws:iam::222222222222:role/ecr-remediator-member"
    for bad in ({}, {"ExternalId": "wrong-secret-0123456789"}):
        with pytest.raises(ClientError) as err:
            sts.assume_role(RoleArn=role, RoleSessionName="hub", **bad)
        assert error_code(err) == "AccessDenied"
    with pytest.raises(ClientError) as err:
        sts.assume_role(RoleArn="arn:aws:iam::222222222222:role/missing", RoleSessionName="hub", ExternalId="x" * 16)
    assert error_code(err) == "AccessDenied"
    got = sts.assume_role(RoleArn=role, RoleSessionName="hub", ExternalId="hub-secret-0123456789")["Credentials"]
    acting = boto3.Session(
        aws_access_key_id=got["AccessKeyId"],
        aws_secret_access_key=got["SecretAccessKey"],
        aws_session_token=got["SessionToken"],
        region_name="us-east-1",
    )
    assert acting.client("sts", endpoint_url=emulator.url).get_caller_identity()["Account"] == "222222222222"
    name = "member-" + uuid.uuid4().hex[:8]
    acting.client("ecr", endpoint_url=emulator.url).create_repository(repositoryName=name)
    mine = [r["repositoryName"] for r in client_factory("ecr").describe_repositories()["repositories"]]
    assert name not in mine, "the repository is in the member account, not the caller's"


def test_repository_resource_tags_by_arn(ecr: Any, repo: str) -> None:
    """TagResource/ListTagsForResource/UntagResource on a repository ARN, as DescribeRepositories gives it."""
    arn = ecr.describe_repositories(repositoryNames=[repo])["repositories"][0]["repositoryArn"]
    assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == []
    ecr.tag_resource(resourceArn=arn, tags=[{"Key": "ecr-remediator:mode", "Value": "promote"}, {"Key": "team", "Value": "a"}])
    ecr.tag_resource(resourceArn=arn, tags=[{"Key": "ecr-remediator:mode", "Value": "off"}])
    tags = {t["Key"]: t["Value"] for t in ecr.list_tags_for_resource(resourceArn=arn)["tags"]}
    assert tags == {"ecr-remediator:mode": "off", "team": "a"}, "a tag is replaced, the others kept"
    ecr.untag_resource(resourceArn=arn, tagKeys=["ecr-remediator:mode"])
    assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "team", "Value": "a"}]
    with pytest.raises(ClientError) as err:
        ecr.list_tags_for_resource(resourceArn=arn + "-missing")
    assert error_code(err) == "RepositoryNotFoundException"
    with pytest.raises(ClientError) as err:
        ecr.list_tags_for_resource(resourceArn="not-an-arn")
    assert error_code(err) == "InvalidParameterException"
    with pytest.raises(ClientError) as err:
        ecr.tag_resource(resourceArn=arn, tags=[{"Key": "aws:reserved", "Value": "x"}])
    assert error_code(err) == "InvalidTagParameterException"


def test_an_archived_image_cannot_be_pulled_is_not_listed_and_a_repush_restores_it(ecr: Any, control: Any, repo: str, salt: str) -> None:
    layout, _ = buildx(salt)
    push(ecr, repo, layout, ["v7"])
    top = layout.top[0]["digest"]
    control.set_status(repo, top, "ARCHIVED")
    reply = ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v7"}, {"imageDigest": top}], acceptedMediaTypes=ALL_TYPES)
    # "Archived images cannot be pulled": no manifest, a failure for each id
    # (ECR does not document the code; it is not ImageNotFound here).
    assert reply["images"] == []
    assert len(reply["failures"]) == 2
    assert all(f["failureCode"] != "ImageNotFound" for f in reply["failures"])
    # Listings show ACTIVE images unless asked for another status.
    assert top not in {d["imageDigest"] for d in describe(ecr, repo)}
    assert top not in {i["imageDigest"] for i in ecr.list_images(repositoryName=repo)["imageIds"]}
    archived = ecr.describe_images(repositoryName=repo, filter={"imageStatus": "ARCHIVED"})["imageDetails"]
    assert [d["imageDigest"] for d in archived] == [top]
    listed = ecr.list_images(repositoryName=repo, filter={"imageStatus": "ARCHIVED"})["imageIds"]
    assert [i["imageDigest"] for i in listed] == [top]
    # Pushing it again restores it, tag and all.
    push(ecr, repo, layout, ["v7"])
    assert get(ecr, repo, imageTag="v7")["imageId"]["imageDigest"] == top


def test_an_index_reports_the_size_of_its_largest_manifest(ecr: Any, repo: str, salt: str) -> None:
    layout, index = buildx(salt, platforms=["linux/amd64", "linux/arm64"])
    push(ecr, repo, layout, ["v7"])
    details = {d["imageDigest"]: d for d in describe(ecr, repo)}
    children = [details[m["digest"]]["imageSizeInBytes"] for m in index["manifests"]]
    assert details[layout.top[0]["digest"]]["imageSizeInBytes"] == max(children)


def test_put_image_of_a_manifest_with_no_media_type_anywhere_is_refused(ecr: Any, repo: str, salt: str) -> None:
    layout, index = buildx(salt)
    push(ecr, repo, layout, [])
    image_digest = index["manifests"][0]["digest"]
    doc = {"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": image_digest, "size": len(layout.blobs[image_digest])}]}
    with pytest.raises(ClientError) as err:
        ecr.put_image(repositoryName=repo, imageManifest=json.dumps(doc), imageTag="no-type")
    assert error_code(err) == "InvalidParameterException"
    # With imageManifestMediaType it is stored.
    ecr.put_image(repositoryName=repo, imageManifest=json.dumps(doc), imageManifestMediaType=OCI_INDEX, imageTag="typed")


def test_a_retag_keeps_the_first_push_time(ecr: Any, repo: str, salt: str) -> None:
    """PutImage of a stored manifest under a new tag adds the tag and leaves imagePushedAt as the
    first push set it (ECR-FACTS.md §9; aws/containers-roadmap #214 and #2746; ECR API reference,
    ``ImageDetail.imagePushedAt``: "the date and time ... at which the current image was pushed")."""
    layout, image_digest = single_image(salt)
    push(ecr, repo, layout, ["v1"])
    first = describe(ecr, repo, imageIds=[{"imageDigest": image_digest}])[0]["imagePushedAt"]
    time.sleep(1.1)  # AWS reports whole seconds: a reset would show
    ecr.put_image(
        repositoryName=repo, imageManifest=layout.blobs[image_digest].decode(), imageManifestMediaType=OCI_MANIFEST, imageTag="v2"
    )
    after = describe(ecr, repo, imageIds=[{"imageDigest": image_digest}])[0]
    assert sorted(after["imageTags"]) == ["v1", "v2"]
    assert after["imagePushedAt"] == first


@pytest.mark.emulator_only
def test_referrers_are_listed_by_artifact_status(ecr: Any, control: Any, repo: str, salt: str) -> None:
    """ListImageReferrers lists ACTIVE referrers unless ``filter.artifactStatus`` asks for ARCHIVED,
    ACTIVATING or ANY (ECR API reference, ``ListImageReferrers`` and ``ArtifactStatusFilter``;
    ECR-FACTS.md §9). Needs the emulator's status hook to archive a referrer at once."""
    image_layout, image = single_image(salt)
    push(ecr, repo, image_layout, ["v1"])
    kept_layout, kept = referrer_layout(salt + "-kept", image_layout.top[0], "application/vnd.in-toto+json")
    push(ecr, repo, kept_layout, [])
    archived_layout, archived = referrer_layout(salt + "-archived", image_layout.top[0], "application/spdx+json")
    push(ecr, repo, archived_layout, [])
    control.set_status(repo, archived, "ARCHIVED")

    def listed(**flt: str) -> dict[str, str]:
        extra = {"filter": flt} if flt else {}
        reply = ecr.list_image_referrers(repositoryName=repo, subjectId={"imageDigest": image}, **extra)
        return {r["digest"]: r["artifactStatus"] for r in reply["referrers"]}

    assert listed() == {kept: "ACTIVE"}
    assert listed(artifactStatus="ACTIVE") == {kept: "ACTIVE"}
    assert listed(artifactStatus="ARCHIVED") == {archived: "ARCHIVED"}
    assert listed(artifactStatus="ACTIVATING") == {}
    assert listed(artifactStatus="ANY") == {kept: "ACTIVE", archived: "ARCHIVED"}


# -- ECS ListTaskDefinitions ------------------------------------------------------------------


@pytest.fixture()
def task_family(client_factory: Any, salt: str) -> Iterator[tuple[Any, str]]:
    """An ECS client and a task definition family of this test's own; every revision is
    deregistered and deleted afterwards (DeleteTaskDefinitions takes at most 10, INACTIVE ones)."""
    ecs = client_factory("ecs")
    family = f"contract-{salt}"
    yield ecs, family

    def listed(status: str) -> list[str]:
        pages = ecs.get_paginator("list_task_definitions").paginate(familyPrefix=family, status=status)
        return [a for page in pages for a in page["taskDefinitionArns"]]

    for arn in listed("ACTIVE"):
        ecs.deregister_task_definition(taskDefinition=arn)
    arns = listed("INACTIVE")
    for start in range(0, len(arns), 10):
        ecs.delete_task_definitions(taskDefinitions=arns[start : start + 10])


def register(ecs: Any, family: str, count: int) -> list[str]:
    """Registers ``count`` revisions of ``family``; their ARNs, oldest first."""
    container = {"name": "app", "image": "public.ecr.aws/docker/library/busybox:latest", "memory": 64, "essential": True}
    return [
        ecs.register_task_definition(family=family, containerDefinitions=[container])["taskDefinition"]["taskDefinitionArn"]
        for _ in range(count)
    ]


def test_list_task_definitions_pages_more_than_100_revisions(task_family: tuple[Any, str]) -> None:
    """ListTaskDefinitions returns at most 100 ARNs without ``maxResults`` and a ``nextToken`` for
    the rest; ``maxResults`` sets the page; ``sort`` ASC (default) lists revisions oldest first,
    DESC newest first; ``familyPrefix`` is the full family name (ECS API reference,
    ``ListTaskDefinitions``)."""
    ecs, family = task_family
    arns = register(ecs, family, 105)
    first = ecs.list_task_definitions(familyPrefix=family)
    assert first["taskDefinitionArns"] == arns[:100]
    assert first.get("nextToken")
    rest = ecs.list_task_definitions(familyPrefix=family, nextToken=first["nextToken"])
    assert rest["taskDefinitionArns"] == arns[100:]
    assert not rest.get("nextToken")
    pages = list(ecs.get_paginator("list_task_definitions").paginate(familyPrefix=family, PaginationConfig={"PageSize": 40}))
    assert [len(p["taskDefinitionArns"]) for p in pages] == [40, 40, 25]
    assert [a for p in pages for a in p["taskDefinitionArns"]] == arns
    newest = ecs.list_task_definitions(familyPrefix=family, sort="DESC", maxResults=3)
    assert newest["taskDefinitionArns"] == arns[::-1][:3]
    assert ecs.list_task_definitions(familyPrefix=family[:-1])["taskDefinitionArns"] == []


def test_a_deregistered_task_definition_is_listed_only_with_status_inactive(task_family: tuple[Any, str]) -> None:
    """Without ``status`` ListTaskDefinitions lists ACTIVE revisions only; a deregistered (INACTIVE)
    revision is listed with ``status=INACTIVE`` (ECS API reference, ``ListTaskDefinitions`` and
    ``DeregisterTaskDefinition``; ECR-FACTS.md §9)."""
    ecs, family = task_family
    arns = register(ecs, family, 3)
    ecs.deregister_task_definition(taskDefinition=arns[1])
    assert ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"] == [arns[0], arns[2]]
    assert ecs.list_task_definitions(familyPrefix=family, status="ACTIVE")["taskDefinitionArns"] == [arns[0], arns[2]]
    assert ecs.list_task_definitions(familyPrefix=family, status="INACTIVE")["taskDefinitionArns"] == [arns[1]]


@pytest.mark.parametrize("bad", [{"maxResults": 0}, {"maxResults": 101}, {"status": "ALL"}, {"sort": "NEWEST"}])
def test_list_task_definitions_refuses_values_out_of_range(client_factory: Any, bad: dict[str, Any]) -> None:
    """``maxResults`` is 1-100, ``status`` one of ACTIVE, INACTIVE, DELETE_IN_PROGRESS, ``sort`` ASC
    or DESC (ECS API reference, ``ListTaskDefinitions``). Which of its two documented client errors
    ECS answers is not confirmed: both are accepted (the emulator: InvalidParameterException)."""
    with pytest.raises(ClientError) as err:
        client_factory("ecs").list_task_definitions(**bad)
    assert error_code(err) in ("InvalidParameterException", "ClientException")


# -- IAM Identity Center portal ----------------------------------------------------------------


@pytest.mark.emulator_only
def test_sso_role_credentials_need_an_issued_token(client_factory: Any, control: Any, salt: str) -> None:
    """GetRoleCredentials (``GET /federation/credentials``) gives short-term credentials for the
    account and role an access token may reach, and refuses any other token with
    ``UnauthorizedException`` (IAM Identity Center Portal API reference, GetRoleCredentials): what
    the SDK's SSO credential provider calls with the token ``aws sso login`` cached. The emulator
    cannot issue tokens as the portal does, so the test registers one."""
    sso = client_factory("sso")
    token = f"token-{salt}"
    control.sso_token(token, "123456789012", "Deployer")
    reply = sso.get_role_credentials(roleName="Deployer", accountId="123456789012", accessToken=token)
    creds = reply["roleCredentials"]
    assert creds["accessKeyId"] and creds["secretAccessKey"] and creds["sessionToken"]
    assert creds["expiration"] > 0
    with pytest.raises(ClientError) as refused:
        sso.get_role_credentials(roleName="Deployer", accountId="123456789012", accessToken="not-issued")
    assert refused.value.response["Error"]["Code"] == "UnauthorizedException"
    with pytest.raises(ClientError) as other_role:
        sso.get_role_credentials(roleName="Admin", accountId="123456789012", accessToken=token)
    assert other_role.value.response["Error"]["Code"] == "ForbiddenException"


def test_an_iam_user_is_named_by_its_iam_arn(client_factory: Any) -> None:
    """GetCallerIdentity names an IAM user ``arn:aws:iam::ACCOUNT:user/NAME`` (STS API reference,
    GetCallerIdentity): the form the pull-time update exclusion list holds."""
    arn = client_factory("sts").get_caller_identity()["Arn"]
    assert arn.startswith("arn:aws:iam::") or ":assumed-role/" in arn, arn


@pytest.mark.emulator_only
def test_reads_are_pulls_unless_the_reader_is_on_the_exclusion_list(
    client_factory: Any, emulator: Any, ecr: Any, repo: str, salt: str
) -> None:
    """ECR records a read (BatchGetImage) as a pull in ``lastRecordedPullTime`` unless the reading
    principal is on the registry's pull-time update exclusion list, which starts empty (ECR API
    reference, RegisterPullTimeUpdateExclusion, ListPullTimeUpdateExclusions; ImageDetail). This
    suite's emulator registers the test user at start, as the stack registers its function's role."""
    import boto3

    image_layout, image = single_image(salt)
    push(ecr, repo, image_layout, ["v1"])
    listed = ecr.list_pull_time_update_exclusions()["pullTimeUpdateExclusions"]
    assert listed == ["arn:aws:iam::123456789012:user/moto"], listed

    def pulled() -> bool:
        detail = ecr.describe_images(repositoryName=repo, imageIds=[{"imageDigest": image}])["imageDetails"][0]
        return "lastRecordedPullTime" in detail

    ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageDigest": image}])
    assert not pulled(), "the excluded test user's read is not a pull"
    iam = client_factory("iam")
    user = f"reader-{salt}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    other = boto3.client(
        "ecr",
        endpoint_url=emulator.url,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    other.batch_get_image(repositoryName=repo, imageIds=[{"imageDigest": image}])
    assert pulled(), "another user's read is a pull"


# -- EventBridge PutEvents size -----------------------------------------------------------------

#: EventBridge's PutEvents limit since 2026-01-29: 1 MiB (AWS Compute Blog, "More room to build:
#: serverless services now support payloads up to 1 MB"), counted over all the entries of a request.
PUT_EVENTS_LIMIT = 1024 * 1024


def entry_size(entry: dict[str, Any]) -> int:
    """An entry's size as the EventBridge User Guide's "Calculating Amazon EventBridge PutEvents
    event entry size" counts it: 14 bytes for Time, UTF-8 bytes of Source, DetailType, Detail and
    of each Resources item."""
    size = 14 if "Time" in entry else 0
    size += sum(len(entry.get(k, "").encode()) for k in ("Source", "DetailType", "Detail"))
    return size + sum(len(r.encode()) for r in entry.get("Resources", []))


def sized_entry(size: int, source: str, detail_type: str) -> dict[str, Any]:
    """An entry of exactly ``size`` bytes, with every counted field set and a two-byte character in
    its Detail (so a byte count that took characters for bytes would be off)."""
    entry: dict[str, Any] = {
        "Source": source,
        "DetailType": detail_type,
        "Time": time.time(),
        "Resources": ["arn:aws:ecr:us-east-1:123456789012:repository/size-probe"],
        "Detail": json.dumps({"note": "caf\u00e9", "pad": ""}, ensure_ascii=False),
    }
    entry["Detail"] = json.dumps({"note": "caf\u00e9", "pad": "x" * (size - entry_size(entry))}, ensure_ascii=False)
    assert entry_size(entry) == size
    return entry


@pytest.fixture()
def custom_event_queue(client_factory: Any, salt: str) -> Iterator[tuple[str, EventQueue]]:
    """A source of this test's own, and an SQS queue a default-bus rule feeds with its
    ``delivered`` events (the other detail types go nowhere)."""
    sqs, events = client_factory("sqs"), client_factory("events")
    name, source = f"ecr-contract-{salt}", f"ecr-contract.{salt}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule_arn = events.put_rule(Name=name, EventPattern=json.dumps({"source": [source], "detail-type": ["delivered"]}))["RuleArn"]
    allow = {
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
    }
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps({"Version": "2012-10-17", "Statement": [allow]})})
    events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": arn}])
    try:
        yield source, EventQueue(sqs, url)
    finally:
        events.remove_targets(Rule=name, Ids=["queue"])
        events.delete_rule(Name=name)
        sqs.delete_queue(QueueUrl=url)


def test_put_events_takes_entries_up_to_the_size_limit_and_delivers_them(
    client_factory: Any, custom_event_queue: tuple[str, EventQueue]
) -> None:
    """PutEvents accepts a request whose entries add up to the limit, sized as the EventBridge User
    Guide's "Calculating Amazon EventBridge PutEvents event entry size" says (Time 14 bytes, UTF-8
    bytes of Source, DetailType, Detail and each resource); 1,048,576 bytes were measured accepted in
    2026-03. A large entry reaches a rule's SQS target whole (its envelope adds some hundred bytes,
    so it is kept 4 KiB under the limit to fit SQS's 1 MiB message)."""
    events = client_factory("events")
    source, queue = custom_event_queue
    at_limit = events.put_events(Entries=[sized_entry(PUT_EVENTS_LIMIT, source, "at-limit")])
    assert at_limit["FailedEntryCount"] == 0 and at_limit["Entries"][0]["EventId"]
    entry = sized_entry(PUT_EVENTS_LIMIT - 4096, source, "delivered")
    reply = events.put_events(Entries=[entry])
    assert reply["FailedEntryCount"] == 0
    received = queue.drain(1, EVENT_TIMEOUT)
    assert [e["id"] for e in received] == [reply["Entries"][0]["EventId"]]
    assert received[0]["detail"] == json.loads(entry["Detail"])
    assert received[0]["resources"] == entry["Resources"]


def test_put_events_refuses_a_request_over_the_size_limit_as_a_whole(
    client_factory: Any, custom_event_queue: tuple[str, EventQueue]
) -> None:
    """The limit is on the request, its entries added up: one byte over and EventBridge answers
    ``ValidationException`` ("Total size of the entries in the request is over the limit.") and puts
    no entry, a small sibling included; there is no per-entry error code for size (EventBridge API
    reference, ``PutEventsResultEntry``; the error as reported in
    awslabs/aws-service-catalog-puppet#563 and measured with the 1 MiB limit in 2026-03)."""
    events = client_factory("events")
    source, queue = custom_event_queue
    sibling = sized_entry(1024, source, "delivered")
    with pytest.raises(ClientError) as err:
        events.put_events(Entries=[sibling, sized_entry(PUT_EVENTS_LIMIT - 1024 + 1, source, "over")])
    assert error_code(err) == "ValidationException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as alone:
        events.put_events(Entries=[sized_entry(PUT_EVENTS_LIMIT + 1, source, "over")])
    assert error_code(alone) == "ValidationException"
    # The sibling was not put: the next event the queue receives is this marker.
    marker = events.put_events(Entries=[sized_entry(1024, source, "delivered")])["Entries"][0]["EventId"]
    assert [e["id"] for e in queue.drain(1, EVENT_TIMEOUT)] == [marker]


@pytest.mark.emulator_only
def test_the_put_events_limit_can_be_set_to_the_former_256_kb(client_factory: Any, control: Any, salt: str) -> None:
    """The emulator's ``put_events_max_bytes`` setting: 262,144 bytes is EventBridge's limit before
    2026-01-29 (EventBridge User Guide, "Calculating Amazon EventBridge PutEvents event entry size",
    earlier editions), for a client that must keep to it."""
    events = client_factory("events")
    control.config(put_events_max_bytes=262_144)
    try:
        assert events.put_events(Entries=[sized_entry(262_144, f"ecr-contract.{salt}", "x")])["FailedEntryCount"] == 0
        with pytest.raises(ClientError) as err:
            events.put_events(Entries=[sized_entry(262_145, f"ecr-contract.{salt}", "x")])
        assert error_code(err) == "ValidationException"
    finally:
        control.config(put_events_max_bytes=PUT_EVENTS_LIMIT)


# -- EventBridge event bus policies -------------------------------------------------------------


def iam_principal_of(iam: Any, arn: str) -> str:
    """``aws:PrincipalArn`` of an STS caller: an assumed-role session stands for its role, whose
    ARN carries its path (IAM Identity Center's roles are under ``/aws-reserved/...``)."""
    parts = arn.split(":")
    if parts[2] == "sts" and parts[5].startswith("assumed-role/"):
        return iam.get_role(RoleName=parts[5].split("/")[1])["Role"]["Arn"]
    return arn


def only_writers(bus_arn: str, exempt: list[str]) -> str:
    """A bus policy denying ``events:PutEvents`` to every principal with an ARN but ``exempt``
    (the audit bus's policy in infra/template.yaml)."""
    deny = {
        "Sid": "OnlyTheServiceWrites",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "events:PutEvents",
        "Resource": bus_arn,
        "Condition": {"Null": {"aws:PrincipalArn": "false"}, "ArnNotLike": {"aws:PrincipalArn": exempt}},
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [deny]})


@contextlib.contextmanager
def events_writer(
    client_factory: Any, aws_session: Any, emulator: EmulatorProcess | None, role: str, path: str = "/"
) -> Iterator[tuple[str, Any]]:
    """Another principal of the account: a new role (under ``path``) the account trusts, whose own
    policy allows ``events:PutEvents`` on ``*``, assumed. Yields its ARN and its EventBridge
    client; the role is deleted afterwards."""
    iam, sts = client_factory("iam"), client_factory("sts")
    account = sts.get_caller_identity()["Account"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "sts:AssumeRole"}],
    }
    role_arn = iam.create_role(RoleName=role, Path=path, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    allow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "events:PutEvents", "Resource": "*"}]}
    iam.put_role_policy(RoleName=role, PolicyName="put-events", PolicyDocument=json.dumps(allow))
    try:
        creds = wait_for_role(sts, role_arn)
        client = aws_session.__class__(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name=aws_session.region_name,
        ).client("events", **({"endpoint_url": emulator.url} if emulator is not None else {}))
        yield role_arn, client
    finally:
        iam.delete_role_policy(RoleName=role, PolicyName="put-events")
        iam.delete_role(RoleName=role)


@pytest.fixture()
def guarded_bus(client_factory: Any, aws_session: Any, emulator: EmulatorProcess | None, salt: str) -> Iterator[tuple[str, str, Any]]:
    """A custom bus whose policy denies ``events:PutEvents`` to every principal but the test's own,
    and a second principal of the same account (:func:`events_writer`). Yields the bus name, its
    ARN and that principal's events client."""
    events, iam, sts = client_factory("events"), client_factory("iam"), client_factory("sts")
    me = iam_principal_of(iam, sts.get_caller_identity()["Arn"])
    name = f"ecr-contract-{salt}"
    arn = events.create_event_bus(Name=name)["EventBusArn"]
    try:
        events.put_permission(EventBusName=name, Policy=only_writers(arn, [me]))
        with events_writer(client_factory, aws_session, emulator, f"ecr-contract-writer-{salt}") as (_, other):
            yield name, arn, other
    finally:
        events.delete_event_bus(Name=name)


def wait_for_role(sts: Any, role_arn: str) -> dict[str, Any]:
    """Credentials of a new role, once IAM has propagated it (seconds on AWS)."""
    deadline = time.monotonic() + (60 if ON_AWS else 5)
    while True:
        try:
            return sts.assume_role(RoleArn=role_arn, RoleSessionName="contract")["Credentials"]
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def test_a_bus_policy_deny_refuses_the_entries_of_the_principals_it_names(
    client_factory: Any, guarded_bus: tuple[str, str, Any], salt: str
) -> None:
    """An explicit ``Deny`` in an event bus's resource policy refuses ``PutEvents`` even to a
    principal of the bus's own account whose identity policy allows it (IAM User Guide, "Policy
    evaluation logic": an explicit deny overrides any allow; EventBridge User Guide, "Permissions
    for Amazon EventBridge event buses"). The refusal is per entry: ``AccessDeniedException``, a
    non-retryable entry error (EventBridge API Reference, ``PutEventsResultEntry``), and the
    request's other entries are put, in order. The principals the ``Deny`` exempts write as before."""
    name, arn, other = guarded_bus
    entry = {"Source": f"ecr-contract.{salt}", "DetailType": "forged", "Detail": "{}"}
    mine = client_factory("events").put_events(Entries=[{**entry, "EventBusName": name}])
    assert mine["FailedEntryCount"] == 0 and mine["Entries"][0]["EventId"]
    refused = other.put_events(Entries=[{**entry, "EventBusName": name}, {**entry, "EventBusName": "default"}])
    assert refused["FailedEntryCount"] == 1, refused
    first, second = refused["Entries"]
    assert first["ErrorCode"] == "AccessDeniedException" and "EventId" not in first, first
    assert "explicit deny" in first["ErrorMessage"] and arn in first["ErrorMessage"], first
    assert second.get("EventId") and "ErrorCode" not in second, second
    by_arn = other.put_events(Entries=[{**entry, "EventBusName": arn}])
    assert by_arn["Entries"][0]["ErrorCode"] == "AccessDeniedException", by_arn


def test_a_bus_policy_names_a_role_by_its_arn_with_its_path(
    client_factory: Any, aws_session: Any, emulator: EmulatorProcess | None, salt: str
) -> None:
    """``aws:PrincipalArn`` of an assumed-role session is its role's ARN, path included
    (IAM User Guide, "AWS global condition context keys": aws:PrincipalArn), so an exemption
    naming the role without its path does not cover it."""
    events = client_factory("events")
    account = client_factory("sts").get_caller_identity()["Account"]
    name, role = f"ecr-contract-{salt}", f"ecr-contract-pathed-{salt}"
    arn = events.create_event_bus(Name=name)["EventBusArn"]
    try:
        with events_writer(client_factory, aws_session, emulator, role, path="/team/") as (role_arn, writer):
            assert role_arn == f"arn:aws:iam::{account}:role/team/{role}"
            entry = {"Source": f"ecr-contract.{salt}", "DetailType": "pathed", "Detail": "{}", "EventBusName": name}
            for exempt, refused in ((role_arn, False), (f"arn:aws:iam::{account}:role/{role}", True)):
                events.put_permission(EventBusName=name, Policy=only_writers(arn, [exempt]))
                reply = writer.put_events(Entries=[entry])
                assert (reply["FailedEntryCount"] == 1) == refused, (exempt, reply)
    finally:
        events.delete_event_bus(Name=name)


# -- Lambda function states -------------------------------------------------------------------

#: How long a new function may take to turn Active: AWS optimises a container image first.
LAMBDA_TIMEOUT = 300.0 if ON_AWS else 5.0


@pytest.fixture()
def lambda_function(client_factory: Any, salt: str) -> Iterator[tuple[Any, str, str]]:
    """A Lambda client, a function name of this test's own and an execution role: against AWS the
    role ``ECR_CONTRACT_LAMBDA_ROLE`` names (one Lambda can assume; without it the test is
    skipped), in the emulator one made here. The function is deleted afterwards if it exists."""
    lam = client_factory("lambda")
    if ON_AWS:
        role = os.environ.get("ECR_CONTRACT_LAMBDA_ROLE")
        if not role:
            pytest.skip("set ECR_CONTRACT_LAMBDA_ROLE to an execution role to run the Lambda cases against AWS")
    else:
        trust = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
        }
        role = client_factory("iam").create_role(RoleName=f"ecr-contract-{salt}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    name = f"ecr-contract-{salt}"
    yield lam, name, role
    with contextlib.suppress(lam.exceptions.ResourceNotFoundException):
        lam.delete_function(FunctionName=name)


def repository_uri(ecr: Any, repo: str) -> str:
    return ecr.describe_repositories(repositoryNames=[repo])["repositories"][0]["repositoryUri"]


def test_lambda_refuses_an_image_index_with_its_message(ecr: Any, repo: str, salt: str, lambda_function: tuple[Any, str, str]) -> None:
    """CreateFunction from a tag that points at an image index (a default buildx push) fails with
    ``InvalidParameterValueException`` and Lambda's wording (Lambda Developer Guide, "Create a Lambda
    function using a container image": one image manifest, no index; aws/aws-lambda-roadmap#82;
    ECR-FACTS.md §2)."""
    lam, name, role = lambda_function
    layout, _ = buildx(salt)
    push(ecr, repo, layout, ["v1"])
    uri = f"{repository_uri(ecr, repo)}:v1"
    with pytest.raises(ClientError) as err:
        lam.create_function(FunctionName=name, Role=role, PackageType="Image", Code={"ImageUri": uri}, Architectures=["arm64"])
    assert error_code(err) == "InvalidParameterValueException"
    assert err.value.response["Error"]["Message"] == (
        f"The image manifest, config or layer media type for the source image {uri} is not supported."
    )


def test_a_new_function_is_pending_then_active_and_gone_once_deleted(
    ecr: Any, repo: str, salt: str, lambda_function: tuple[Any, str, str]
) -> None:
    """Lambda Developer Guide, "Lambda function states": CreateFunction leaves the function
    ``Pending`` (``StateReasonCode: Creating``, "The function is being created."); it cannot be
    modified until it is ``Active`` (``ResourceConflictException``; Lambda API reference,
    ``FunctionConfiguration.StateReasonCode``), so a client polls GetFunctionConfiguration, with a
    bound, until ``Active`` with ``LastUpdateStatus: Successful`` (set once creation completes).
    ListFunctions leaves the state fields out (Lambda API reference, ``ListFunctions``).
    ``Code.ResolvedImageUri`` names the digest (Lambda API reference, ``FunctionCodeLocation``).
    After DeleteFunction, GetFunction answers ``ResourceNotFoundException`` (``DeleteFunction``)."""
    lam, name, role = lambda_function
    layout, digest = single_image(salt)
    push(ecr, repo, layout, [])
    uri = f"{repository_uri(ecr, repo)}@{digest}"
    created = lam.create_function(FunctionName=name, Role=role, PackageType="Image", Code={"ImageUri": uri}, Architectures=["arm64"])
    assert (created["State"], created["StateReasonCode"]) == ("Pending", "Creating")
    assert created["StateReason"] == "The function is being created."
    with pytest.raises(ClientError) as early:
        lam.update_function_configuration(FunctionName=name, Description="too early")
    assert error_code(early) == "ResourceConflictException"
    listed = [f for page in lam.get_paginator("list_functions").paginate() for f in page["Functions"] if f["FunctionName"] == name]
    assert len(listed) == 1 and "State" not in listed[0] and "LastUpdateStatus" not in listed[0]

    reads: list[str] = []

    def settled() -> bool:
        reads.append(lam.get_function_configuration(FunctionName=name)["State"])
        return reads[-1] != "Pending"

    assert wait_for(settled, LAMBDA_TIMEOUT, interval=0.05 if not ON_AWS else 5.0), reads
    if not ON_AWS:
        assert reads == ["Pending", "Active"], "the emulator's default: one read still Pending"
    got = lam.get_function(FunctionName=name)
    assert (got["Configuration"]["State"], got["Configuration"]["LastUpdateStatus"]) == ("Active", "Successful")
    assert got["Code"]["ResolvedImageUri"] == uri
    lam.update_function_configuration(FunctionName=name, Description="now it may change")

    lam.delete_function(FunctionName=name)
    with pytest.raises(ClientError) as gone:
        lam.get_function(FunctionName=name)
    assert error_code(gone) == "ResourceNotFoundException"
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


@pytest.mark.emulator_only
def test_how_many_reads_a_new_function_stays_pending_is_a_setting(
    control: Any, ecr: Any, repo: str, salt: str, lambda_function: tuple[Any, str, str]
) -> None:
    """The emulator's ``lambda_pending_reads``: how many GetFunction / GetFunctionConfiguration
    reads answer ``Pending`` before ``Active`` (AWS takes seconds to minutes; Lambda Developer
    Guide, "Lambda function states")."""
    lam, name, role = lambda_function
    layout, digest = single_image(salt)
    push(ecr, repo, layout, [])
    control.config(lambda_pending_reads=2)
    try:
        lam.create_function(
            FunctionName=name,
            Role=role,
            PackageType="Image",
            Code={"ImageUri": f"{repository_uri(ecr, repo)}@{digest}"},
            Architectures=["arm64"],
        )
        states = [lam.get_function(FunctionName=name)["Configuration"]["State"] for _ in range(3)]
        assert states == ["Pending", "Pending", "Active"]
    finally:
        control.config(lambda_pending_reads=1)
