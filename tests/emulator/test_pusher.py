"""The pusher stores images in docker-push order, from an OCI layout or a manifest directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ecr_emulator.oci import build_buildx_layout, read_layout
from ecr_emulator.push import PushError, load, push

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "manifests"


def run_cli(args: list[str], emulator: Any) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent))
    if emulator is not None:
        env.update(
            AWS_ENDPOINT_URL=emulator.url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
        )
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_builds_and_pushes_an_oci_layout(tmp_path: Path, emulator: Any, ecr: Any, repo: str, salt: str) -> None:
    out = tmp_path / "layout"
    built = run_cli(
        ["-m", "ecr_emulator.oci", "build", str(out), "--platform", "linux/amd64", "--platform", "linux/arm64", "--salt", salt], emulator
    )
    assert built.returncode == 0, built.stderr
    index_digest = json.loads(built.stdout)["index"]
    pushed = run_cli(["-m", "ecr_emulator.push", "--repository", repo, "--tag", "v7", str(out)], emulator)
    assert pushed.returncode == 0, pushed.stderr
    lines = [json.loads(line) for line in pushed.stdout.splitlines()]
    assert [item["tag"] for item in lines] == ["", "", "", "", "v7"]
    assert lines[-1]["digest"] == index_digest
    assert all(item["created"] for item in lines)
    layout = read_layout(out)
    served = ecr.batch_get_image(
        repositoryName=repo, imageIds=[{"imageTag": "v7"}], acceptedMediaTypes=["application/vnd.oci.image.index.v1+json"]
    )
    assert served["images"][0]["imageManifest"].encode() == layout.blobs[index_digest]


def test_pushing_again_stores_nothing_new(ecr: Any, repo: str, salt: str) -> None:
    layout = build_buildx_layout(salt=salt, attestation_format="artifact", sbom=True)
    first = push(ecr, repo, layout, ["v1"])
    second = push(ecr, repo, layout, ["v1"])
    assert all(s.created for s in first)
    assert not any(s.created for s in second)
    assert [s.digest for s in first] == [s.digest for s in second]


@pytest.mark.emulator_only
def test_children_are_stored_before_the_tagged_index(control: Any, ecr: Any, repo: str, salt: str) -> None:
    layout = build_buildx_layout(salt=salt, platforms=["linux/amd64", "linux/arm64"])
    stored = push(ecr, repo, layout, ["v2"])
    pushes = [e["detail"] for e in control.events() if e["detail"]["repository-name"] == repo and e["detail"]["action-type"] == "PUSH"]
    assert [(p["image-digest"], p["image-tag"]) for p in pushes] == [(s.digest, s.tag) for s in stored]
    assert pushes[-1]["image-tag"] == "v2" and all(p["image-tag"] == "" for p in pushes[:-1])


@pytest.mark.emulator_only
def test_a_directory_of_bare_manifests_pushes_with_the_layer_check_off(tmp_path: Path, control: Any, ecr: Any, repo: str) -> None:
    for name in ("buildx-single-platform-index.json", "buildx-arm64-image.json", "buildkit-attestation-legacy.json"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    layout = load(tmp_path)
    with pytest.raises(ecr.exceptions.LayersNotFoundException):
        push(ecr, repo, layout, ["v7"])
    control.config(check_layers=False)
    stored = push(ecr, repo, layout, ["v7"])
    assert [s.tag for s in stored] == ["", "", "v7"]
    assert (
        stored[-1].digest
        == "sha256:" + __import__("hashlib").sha256((FIXTURES / "buildx-single-platform-index.json").read_bytes()).hexdigest()
    )


def test_a_source_with_two_top_manifests_is_refused(tmp_path: Path) -> None:
    for name in ("docker-v2-image.json", "cosign-simplesigning-sig.json"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    with pytest.raises(PushError, match="exactly one manifest"):
        load(tmp_path)
