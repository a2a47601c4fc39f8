"""Push an image to ECR the way ``docker push`` does, without Docker.

Order, as a registry client pushes: for every image manifest its config and
layer blobs (skipping blobs the repository already has), then every child
manifest untagged (deepest first), then the top manifest with its tag(s).
Works against the emulator and against real ECR (it is plain boto3).

    python -m ecr_emulator.push --repository NAME --tag v7 SOURCE

SOURCE is an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``) or
a directory of manifest files (``*.json``, optional ``blobs/sha256/``). Prints
one JSON line per stored manifest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .oci import INDEX_TYPES, REF_NAME, Layout, read_layout, read_manifest_dir

MANIFEST_TYPES = (*INDEX_TYPES, "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")


class PushError(Exception):
    """The source cannot be pushed as asked."""


@dataclass
class Stored:
    """One manifest the push stored (or found already stored)."""

    digest: str
    media_type: str
    tag: str
    created: bool

    def as_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "mediaType": self.media_type, "tag": self.tag, "created": self.created}


def load(source: Path) -> Layout:
    """Reads SOURCE as an OCI layout or a directory of manifests."""
    if not source.is_dir():
        raise PushError(f"{source} is not a directory")
    try:
        return read_layout(source) if (source / "oci-layout").is_file() else read_manifest_dir(source)
    except (OSError, ValueError) as err:
        raise PushError(str(err)) from err


def choose_top(layout: Layout, ref: str | None) -> dict[str, Any]:
    """The top-level descriptor to push: the only one, or the one named ``ref``."""
    tops = [d for d in layout.top if d.get("mediaType") in MANIFEST_TYPES]
    if ref is not None:
        tops = [d for d in tops if (d.get("annotations") or {}).get(REF_NAME) == ref]
    if len(tops) != 1:
        names = [(d.get("annotations") or {}).get(REF_NAME) for d in layout.top]
        raise PushError(f"expected one top-level manifest{f' named {ref}' if ref else ''}, found {len(tops)} (refs: {names})")
    return tops[0]


def plan_order(layout: Layout, top: dict[str, Any]) -> list[tuple[str, str]]:
    """(digest, media type) of every manifest, children before their index."""
    order: list[tuple[str, str]] = []
    seen: set[str] = set()

    def visit(desc: dict[str, Any], depth: int) -> None:
        digest = desc["digest"]
        if digest in seen:
            return
        if depth > 8:
            raise PushError("indexes nest more than 8 levels deep")
        data = layout.blobs.get(digest)
        if data is None:
            raise PushError(f"manifest {digest} is not in the source")
        seen.add(digest)
        doc = json.loads(data)
        media_type = doc.get("mediaType") or desc.get("mediaType")
        if media_type in INDEX_TYPES:
            for child in doc.get("manifests") or []:
                visit(child, depth + 1)
        order.append((digest, media_type))

    visit(top, 0)
    return order


def push(
    ecr: Any,
    repository: str,
    layout: Layout,
    tags: list[str],
    ref: str | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> list[Stored]:
    """Pushes the layout's top manifest and everything under it; returns what was stored, in order."""
    top = choose_top(layout, ref)
    order = plan_order(layout, top)
    for digest, media_type in order:
        if media_type not in INDEX_TYPES:
            _upload_blobs(ecr, repository, layout, json.loads(layout.blobs[digest]), log)
    stored: list[Stored] = []
    for position, (digest, media_type) in enumerate(order):
        is_top = position == len(order) - 1
        for tag in (tags or [None]) if is_top else [None]:
            stored.append(_put(ecr, repository, layout.blobs[digest], digest, media_type, tag))
    return stored


def _upload_blobs(ecr: Any, repository: str, layout: Layout, manifest: dict[str, Any], log: Callable[[str], None]) -> None:
    wanted = [manifest["config"]] + [d for d in manifest.get("layers") or [] if not d.get("urls")]
    digests = list(dict.fromkeys(d["digest"] for d in wanted))
    have = ecr.batch_check_layer_availability(repositoryName=repository, layerDigests=digests)
    available = {layer["layerDigest"] for layer in have.get("layers", []) if layer.get("layerAvailability") == "AVAILABLE"}
    for digest in digests:
        if digest in available:
            continue
        data = layout.blobs.get(digest)
        if data is None:
            log(f"blob {digest} is not in the source; not uploaded (ECR will refuse the manifest with LayersNotFoundException)")
            continue
        upload = ecr.initiate_layer_upload(repositoryName=repository)
        part = int(upload.get("partSize") or len(data)) or len(data)
        for first in range(0, len(data), part):
            chunk = data[first : first + part]
            ecr.upload_layer_part(
                repositoryName=repository,
                uploadId=upload["uploadId"],
                partFirstByte=first,
                partLastByte=first + len(chunk) - 1,
                layerPartBlob=chunk,
            )
        with contextlib.suppress(ecr.exceptions.LayerAlreadyExistsException):
            ecr.complete_layer_upload(repositoryName=repository, uploadId=upload["uploadId"], layerDigests=[digest])


def _put(ecr: Any, repository: str, data: bytes, digest: str, media_type: str, tag: str | None) -> Stored:
    args: dict[str, Any] = {
        "repositoryName": repository,
        "imageManifest": data.decode("utf-8"),
        "imageManifestMediaType": media_type,
        "imageDigest": digest,
    }
    if tag is not None:
        args["imageTag"] = tag
    try:
        ecr.put_image(**args)
        created = True
    except ecr.exceptions.ImageAlreadyExistsException:
        created = False
    return Stored(digest, media_type, tag or "", created)


def main(argv: list[str] | None = None) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    parser = argparse.ArgumentParser(prog="python -m ecr_emulator.push", description="Push an OCI layout or manifest directory to ECR.")
    parser.add_argument("source", type=Path, help="OCI image layout or directory of manifest files")
    parser.add_argument("--repository", required=True)
    parser.add_argument("--tag", action="append", default=[], help="tag for the top manifest (repeatable; none = untagged)")
    parser.add_argument("--ref", help="which top-level entry of index.json to push (its org.opencontainers.image.ref.name)")
    parser.add_argument("--create-repository", action="store_true", help="create the repository if it does not exist")
    args = parser.parse_args(argv)

    ecr = boto3.client("ecr")
    try:
        layout = load(args.source)
        if args.create_repository:
            with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
                ecr.create_repository(repositoryName=args.repository)
        for item in push(ecr, args.repository, layout, args.tag, args.ref, log=lambda m: print(m, file=sys.stderr)):
            print(json.dumps(item.as_dict()))
    except (PushError, ClientError, BotoCoreError) as err:
        print(f"push failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["PushError", "Stored", "choose_top", "load", "plan_order", "push"]
