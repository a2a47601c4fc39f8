"""Attach things to a stored manifest the way signing and attestation tools do.

``python -m ecr_emulator.sign --repository R --digest D --as KIND`` stores,
next to the manifest ``D``:

* ``notation``: a Notation signature, an OCI artifact whose ``subject`` is D
  (listed by ``ListImageReferrers(D)``), untagged;
* ``cosign``: a legacy cosign signature, an image manifest with a
  simple-signing layer, tagged ``sha256-<hex of D>.sig``;
* ``referrers-index``: the OCI referrers tag schema's fallback, an index
  tagged ``sha256-<hex of D>`` listing a Sigstore bundle and an in-toto
  attestation, each an artifact with ``subject`` D.

Prints one JSON line: the digests stored and the tag used (if any).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .oci import ATTESTATION_ARTIFACT, IN_TOTO, NOTATION, OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, Layout, _compact
from .push import push

SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
KINDS = ("notation", "cosign", "referrers-index")


def _subject(ecr: Any, repository: str, digest: str) -> dict[str, Any]:
    image = ecr.batch_get_image(
        repositoryName=repository,
        imageIds=[{"imageDigest": digest}],
        acceptedMediaTypes=[OCI_INDEX, OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"],
    )["images"][0]
    body = image["imageManifest"].encode()
    return {"mediaType": image["imageManifestMediaType"], "digest": digest, "size": len(body)}


def _artifact(layout: Layout, artifact_type: str, layer_type: str, payload: bytes, subject: dict[str, Any]) -> dict[str, Any]:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": layout.add(OCI_EMPTY, b"{}"),
        "layers": [layout.add(layer_type, payload)],
        "subject": subject,
    }
    return layout.add(OCI_MANIFEST, _compact(doc), artifactType=artifact_type)


def attach(ecr: Any, repository: str, digest: str, kind: str, salt: str = "") -> dict[str, Any]:
    """Stores a ``kind`` attachment of ``digest``; returns what was stored."""
    subject = _subject(ecr, repository, digest)
    layout = Layout()
    tag: str | None = None
    if kind == "notation":
        top = _artifact(layout, NOTATION, "application/jose+json", f"notation {digest} {salt}".encode(), subject)
    elif kind == "cosign":
        payload = json.dumps(
            {"critical": {"image": {"docker-manifest-digest": digest}, "type": "cosign container image signature"}}
        ).encode()
        config = layout.add(
            OCI_CONFIG, _compact({"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}})
        )
        layer = layout.add(SIMPLE_SIGNING, payload, annotations={"dev.cosignproject.cosign/signature": f"MEUC{salt}"})
        top = layout.add(OCI_MANIFEST, _compact({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}))
        tag = "sha256-" + digest.split(":", 1)[1] + ".sig"
    elif kind == "referrers-index":
        bundle = _artifact(layout, SIGSTORE_BUNDLE, SIGSTORE_BUNDLE, f"bundle {digest} {salt}".encode(), subject)
        statement = json.dumps({"_type": "https://in-toto.io/Statement/v1", "subject": [{"digest": {"sha256": digest[7:]}}]}).encode()
        attestation = _artifact(layout, ATTESTATION_ARTIFACT, IN_TOTO, statement, subject)
        entries = [
            {k: bundle[k] for k in ("mediaType", "digest", "size")} | {"artifactType": SIGSTORE_BUNDLE},
            {k: attestation[k] for k in ("mediaType", "digest", "size")} | {"artifactType": ATTESTATION_ARTIFACT},
        ]
        top = layout.add(OCI_INDEX, _compact({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}))
        tag = "sha256-" + digest.split(":", 1)[1]
    else:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    layout.top.append(top)
    stored = push(ecr, repository, layout, [tag] if tag else [])
    return {"digest": top["digest"], "stored": [s.digest for s in stored], "tag": tag}


def main(argv: list[str] | None = None) -> int:
    import boto3

    parser = argparse.ArgumentParser(prog="python -m ecr_emulator.sign", description=__doc__.splitlines()[0])
    parser.add_argument("--repository", required=True)
    parser.add_argument("--digest", required=True, help="the manifest to attach to")
    parser.add_argument("--as", dest="kind", choices=KINDS, required=True)
    parser.add_argument("--salt", default="")
    args = parser.parse_args(argv)
    print(json.dumps(attach(boto3.client("ecr"), args.repository, args.digest, args.kind, args.salt)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
