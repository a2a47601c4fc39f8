"""OCI image layouts: read one, or build one shaped like ``docker buildx`` output.

``build_buildx_layout`` writes what ``docker buildx build --output type=oci``
produces for a default build (provenance on): an image index with one runnable
image manifest per platform, each followed by its provenance attestation
manifest (platform ``unknown/unknown``), and every blob (layers, configs,
in-toto statements) really present, so the result can be pushed to ECR, which
checks that layers exist. Output is deterministic for the same arguments;
``salt`` changes the layer content, hence every digest.

``python -m ecr_emulator.oci build OUT [--platform linux/arm64 ...]`` runs it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
ATTESTATION_ARTIFACT = "application/vnd.docker.attestation.manifest.v1+json"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
SLSA_V1 = "https://slsa.dev/provenance/v1"
SPDX = "https://spdx.dev/Document"
INDEX_TYPES = (OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json")
REF_NAME = "org.opencontainers.image.ref.name"


def _compact(doc: Any) -> bytes:
    """JSON as Go's encoding/json writes it (what BuildKit stores)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Layout:
    """An OCI layout in memory: blobs by digest, plus the top-level descriptors."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    top: list[dict[str, Any]] = field(default_factory=list)

    def add(self, media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
        """Stores ``data`` and returns its descriptor."""
        digest = sha256(data)
        self.blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def write(self, out: Path) -> None:
        """Writes ``oci-layout``, ``index.json`` and ``blobs/sha256/*`` under ``out``."""
        blob_dir = out / "blobs" / "sha256"
        blob_dir.mkdir(parents=True, exist_ok=True)
        for digest, data in self.blobs.items():
            (blob_dir / digest.split(":", 1)[1]).write_bytes(data)
        (out / "oci-layout").write_bytes(_compact({"imageLayoutVersion": "1.0.0"}))
        (out / "index.json").write_bytes(_compact({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.top}))


def _layer(files: dict[str, bytes]) -> tuple[bytes, bytes]:
    """A gzip'd tar of ``files`` (compressed, uncompressed), byte-for-byte reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, mtime=0), uncompressed


def _platform(text: str) -> dict[str, str]:
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform '{text}' is not os/arch[/variant]")
    out = {"architecture": parts[1], "os": parts[0]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


def build_buildx_layout(
    platforms: list[str] | None = None,
    attestation_format: str = "legacy",
    sbom: bool = False,
    salt: str = "",
    ref_name: str | None = "latest",
    extras: tuple[str, ...] = (),
) -> Layout:
    """A default-buildx OCI layout (see the module docs).

    ``attestation_format`` is ``legacy`` (attestation manifests with an image
    config, BuildKit < 0.32) or ``artifact`` (``artifactType`` + empty config +
    ``subject``, newer BuildKit). ``sbom`` adds an SPDX statement layer.
    ``extras`` adds entries other tools put in an index, each describing the
    first image: ``soci`` (a SOCI index v2), ``signature`` (a Notation
    signature), ``nested`` (a nested index listing the first image).
    """
    unknown = set(extras) - set(EXTRAS)
    if unknown:
        raise ValueError(f"unknown extras {sorted(unknown)}; known: {', '.join(EXTRAS)}")
    if attestation_format not in ("legacy", "artifact"):
        raise ValueError("attestation_format must be 'legacy' or 'artifact'")
    layout = Layout()
    images, attestations = [], []
    for text in platforms or ["linux/arm64"]:
        platform = _platform(text)
        layer, diff = _layer(
            {
                "app/hello": f"#!/bin/sh\necho hello from {text} {salt}\n".encode(),
                "app/VERSION": f"{salt or 'v1'}\n".encode(),
            }
        )
        layer_desc = layout.add(OCI_LAYER_GZIP, layer)
        config = {
            "architecture": platform["architecture"],
            "config": {"Entrypoint": ["/app/hello"], "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "WorkingDir": "/app"},
            "created": "2026-11-01T00:00:00Z",
            "history": [{"created": "2026-11-01T00:00:00Z", "created_by": "COPY app /app # buildkit", "comment": "buildkit.dockerfile.v0"}],
            "os": platform["os"],
            "rootfs": {"type": "layers", "diff_ids": [sha256(diff)]},
        }
        if "variant" in platform:
            config["variant"] = platform["variant"]
        config_desc = layout.add(OCI_CONFIG, _compact(config))
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": [layer_desc]}
        image_desc = layout.add(OCI_MANIFEST, _compact(manifest), platform=platform)
        images.append(image_desc)

        statements = [(SLSA_V02, _provenance(image_desc["digest"], text, salt))]
        if sbom:
            statements.append((SPDX, _sbom(image_desc["digest"], text)))
        layers = []
        for predicate, statement in statements:
            layers.append(layout.add(IN_TOTO, _compact(statement), annotations={"in-toto.io/predicate-type": predicate}))
        if attestation_format == "legacy":
            att_config = {
                "architecture": "unknown",
                "os": "unknown",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layers]},
            }
            att = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": layout.add(OCI_CONFIG, _compact(att_config)), "layers": layers}
        else:
            empty = layout.add(OCI_EMPTY, b"{}")
            att = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": ATTESTATION_ARTIFACT,
                "config": empty,
                "layers": layers,
                "subject": {k: image_desc[k] for k in ("mediaType", "digest", "size")},
            }
        attestations.append(
            layout.add(
                OCI_MANIFEST,
                _compact(att),
                annotations={
                    "vnd.docker.reference.digest": image_desc["digest"],
                    "vnd.docker.reference.type": "attestation-manifest",
                },
                platform={"architecture": "unknown", "os": "unknown"},
            )
        )
    others = [_extra(layout, kind, images[0], salt) for kind in extras]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": images + others + attestations}
    extra = {"annotations": {REF_NAME: ref_name}} if ref_name else {}
    layout.top.append(layout.add(OCI_INDEX, _compact(index), **extra))
    return layout


#: Entries :func:`build_buildx_layout` can add besides images and attestations.
EXTRAS = ("soci", "signature", "nested")
SOCI_V2 = "application/vnd.amazon.soci.index.v2+json"
NOTATION = "application/vnd.cncf.notary.signature"


def _extra(layout: Layout, kind: str, image: dict[str, Any], salt: str) -> dict[str, Any]:
    """One non-image, non-attestation index entry describing ``image``."""
    subject = {k: image[k] for k in ("mediaType", "digest", "size")}
    if kind == "nested":
        nested = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [subject | {"platform": image["platform"]}]}
        return layout.add(OCI_INDEX, _compact(nested))
    empty = layout.add(OCI_EMPTY, b"{}")
    if kind == "soci":
        ztoc = layout.add(
            "application/octet-stream", f"ztoc {salt}".encode(), annotations={"com.amazon.soci.image-layer-digest": image["digest"]}
        )
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SOCI_V2,
            "config": empty,
            "layers": [ztoc],
            "subject": subject,
        }
    else:
        envelope = layout.add("application/jose+json", f"signature {salt}".encode())
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": NOTATION,
            "config": empty,
            "layers": [envelope],
            "subject": subject,
        }
    return layout.add(OCI_MANIFEST, _compact(doc), artifactType=doc["artifactType"])


def _provenance(subject: str, platform: str, salt: str) -> dict[str, Any]:
    return {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": SLSA_V02,
        "subject": [
            {"name": "pkg:docker/example/app@latest?platform=" + platform.replace("/", "%2F"), "digest": {"sha256": subject.split(":")[1]}}
        ],
        "predicate": {
            "builder": {"id": ""},
            "buildType": "https://mobyproject.org/buildkit@v1",
            "materials": [],
            "invocation": {
                "configSource": {"entryPoint": "Dockerfile"},
                "parameters": {"frontend": "dockerfile.v0", "args": {"build-arg:SALT": salt}},
                "environment": {"platform": platform},
            },
            "metadata": {"buildInvocationID": hashlib.sha256((subject + salt).encode()).hexdigest()[:26], "reproducible": False},
        },
    }


def _sbom(subject: str, platform: str) -> dict[str, Any]:
    return {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": SPDX,
        "subject": [
            {"name": "pkg:docker/example/app@latest?platform=" + platform.replace("/", "%2F"), "digest": {"sha256": subject.split(":")[1]}}
        ],
        "predicate": {"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "name": "sbom", "dataLicense": "CC0-1.0", "packages": []},
    }


def read_layout(path: Path) -> Layout:
    """Reads an OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/``)."""
    marker = path / "oci-layout"
    if not marker.is_file():
        raise ValueError(f"{path} is not an OCI image layout (no oci-layout file)")
    index = json.loads((path / "index.json").read_bytes())
    layout = Layout(top=list(index.get("manifests") or []))
    for algo_dir in (path / "blobs").iterdir():
        for blob in algo_dir.iterdir():
            data = blob.read_bytes()
            digest = f"{algo_dir.name}:{blob.name}"
            if algo_dir.name == "sha256" and sha256(data) != digest:
                raise ValueError(f"blob {blob} does not match its digest")
            layout.blobs[digest] = data
    return layout


def read_manifest_dir(path: Path) -> Layout:
    """Reads a directory of manifest files (``*.json``) and optional blobs.

    The top-level manifest is the one no other manifest refers to; there must
    be exactly one. Blobs are taken from ``blobs/sha256/`` when present.
    """
    layout = Layout()
    manifests: dict[str, dict[str, Any]] = {}
    for file in sorted(path.glob("*.json")):
        data = file.read_bytes()
        try:
            doc = json.loads(data)
        except ValueError as err:
            raise ValueError(f"{file} is not JSON: {err}") from None
        if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
            continue
        digest = sha256(data)
        layout.blobs[digest] = data
        manifests[digest] = doc
    blob_dir = path / "blobs" / "sha256"
    if blob_dir.is_dir():
        for blob in blob_dir.iterdir():
            layout.blobs["sha256:" + blob.name] = blob.read_bytes()
    referenced = {d["digest"] for doc in manifests.values() for d in doc.get("manifests") or []}
    tops = [d for d in manifests if d not in referenced]
    if len(tops) != 1:
        raise ValueError(f"{path}: expected exactly one manifest that no other refers to, found {len(tops)}")
    doc = manifests[tops[0]]
    media_type = doc.get("mediaType") or (OCI_INDEX if "manifests" in doc else OCI_MANIFEST)
    layout.top.append({"mediaType": media_type, "digest": tops[0], "size": len(layout.blobs[tops[0]])})
    return layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecr_emulator.oci", description="Build a buildx-shaped OCI layout.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write a default-buildx OCI layout (image + provenance) to OUT")
    build.add_argument("out", type=Path)
    build.add_argument("--platform", action="append", help="os/arch[/variant]; repeat for multi-platform (default linux/arm64)")
    build.add_argument("--attestation-format", choices=("legacy", "artifact"), default="legacy")
    build.add_argument("--sbom", action="store_true", help="add an SPDX SBOM statement to each attestation")
    build.add_argument("--salt", default="", help="changes the layer content and so every digest")
    build.add_argument(
        "--extra", action="append", default=[], choices=EXTRAS, help="add a SOCI index, a signature or a nested index entry (repeatable)"
    )
    args = parser.parse_args(argv)
    layout = build_buildx_layout(args.platform, args.attestation_format, args.sbom, args.salt, extras=tuple(args.extra))
    layout.write(args.out)
    print(json.dumps({"layout": str(args.out), "index": layout.top[0]["digest"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
