"""The soak's independent checker: the product's promises, verified on the
final registry and the audit trail with nothing from the service's code.

Input: what the pusher did (every push, in order), the registry at the end
(every image with its tags and manifest), every ECR event the registry
emitted (DELETE events included), every audit record, the dead-letter queue.
Each promise that fails adds a line to the returned violations.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

ATTESTATION = "attestation-manifest"


@dataclass
class Push:
    """One push as the pusher made it."""

    seq: int
    repository: str
    tag: str
    index: str
    #: Every manifest under the index, with what the pusher built it as:
    #: ``runnable`` (an image with a real platform), ``attestation``,
    #: ``index`` (nested) or ``other`` (SOCI, signature).
    children: dict[str, str] = field(default_factory=dict)
    #: The index's own entries, in order, with the same kinds.
    entries: list[tuple[str, str]] = field(default_factory=list)
    #: The runnable the policy promotes; None when promotion falls back to
    #: tag mode (several platforms and none chosen).
    promoted: str | None = None
    #: Each attestation manifest: (the image it describes, its layer digests).
    attestations: dict[str, tuple[str, list[str]]] = field(default_factory=dict)


@dataclass
class Policy:
    """What the checker needs of a repository's policy."""

    mode: str
    keep: bool
    immutable: bool
    #: ``provenance = "referrers"``: a deleted attestation must survive as a referrer of its image.
    referrers: bool = False


@dataclass
class World:
    """Everything collected at the end of the soak."""

    pushes: list[Push]
    policies: dict[str, Policy]
    #: repository -> digest -> (tags, manifest document)
    images: dict[str, dict[str, tuple[list[str], dict[str, Any]]]]
    ecr_events: list[dict[str, Any]]
    records: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]


def check(world: World) -> tuple[list[str], dict[str, Any]]:
    """Returns (violations, figures)."""
    violations: list[str] = []
    protected: dict[tuple[str, str], str] = {}
    for p in world.pushes:
        for digest, kind in p.children.items():
            if kind != "attestation":
                protected[(p.repository, digest)] = kind

    # 1. Nothing runnable, tagged or protected was deleted; what the service
    #    deleted it deleted by digest, so ECR names a tag only if one was on it.
    deletes = [e for e in world.ecr_events if e.get("action-type") == "DELETE"]
    for e in deletes:
        repo, digest, tag = e["repository-name"], e["image-digest"], e.get("image-tag") or ""
        if tag:
            violations.append(f"{repo}: {digest} deleted while tagged {tag}")
        kind = protected.get((repo, digest))
        if kind:
            violations.append(f"{repo}: {kind} manifest {digest} deleted")
    for (repo, digest), kind in protected.items():
        if digest not in world.images.get(repo, {}):
            violations.append(f"{repo}: {kind} manifest {digest} missing at the end")

    # 2. Every index still in the registry has all its children (nothing
    #    referenced was deleted).
    for repo, images in world.images.items():
        for digest, (_, doc) in images.items():
            for child in doc.get("manifests") or []:
                if child["digest"] not in images:
                    violations.append(f"{repo}: index {digest} lists {child['digest']}, which is gone")

    # 3. No tag moved backwards: each pushed tag ends on the newest push of
    #    that tag (its index, or what remediating it made of it), and when the
    #    service moved it, the keep tag holds that newest index.
    newest: dict[tuple[str, str], Push] = {}
    for p in world.pushes:
        key = (p.repository, p.tag)
        if key not in newest or newest[key].seq < p.seq:
            newest[key] = p
    tags: dict[str, dict[str, str]] = defaultdict(dict)
    for repo, images in world.images.items():
        for digest, (image_tags, _) in images.items():
            for t in image_tags:
                tags[repo][t] = digest
    for (repo, tag), p in newest.items():
        target = tags[repo].get(tag)
        policy = world.policies[repo]
        if target is None:
            violations.append(f"{repo}:{tag} no longer exists")
            continue
        if target == p.index:
            continue
        if not _made_from(target, p, policy, world.images[repo]):
            violations.append(f"{repo}:{tag} ends on {target}, not on the newest push {p.index} (push #{p.seq}) or its remediation")
            continue
        if policy.keep and tags[repo].get(f"{tag}-index") != p.index:
            violations.append(f"{repo}:{tag} was moved but {tag}-index is {tags[repo].get(f'{tag}-index')}, not {p.index}")

    # 4. Every push ends with exactly one final audit record, once repeated
    #    deliveries are folded: a delivery cut after its final record and
    #    before its message was deleted comes again and writes a second final
    #    record that applies nothing (at-least-once delivery).
    finals: dict[str, list[dict[str, Any]]] = defaultdict(list)
    repeats = 0
    for r in sorted(world.records, key=lambda r: r.get("attempt") or 0):
        if r.get("final") and r.get("index_digest"):
            if finals[r["index_digest"]] and _applied_nothing(r):
                repeats += 1
                continue
            finals[r["index_digest"]].append(r)
    for p in world.pushes:
        got = finals.get(p.index, [])
        if len(got) != 1:
            outcomes = [(r.get("outcome"), r.get("code"), r.get("attempt")) for r in got]
            violations.append(f"{p.repository}:{p.tag} push #{p.seq} {p.index}: {len(got)} final records {outcomes}")

    # 5. Every deleted manifest has an applied deletion in the audit trail
    #    (a checkpoint's pending one is not enough: the trail must say it happened).
    in_trail = {
        (r.get("repository"), a.get("digest"))
        for r in world.records
        for a in r.get("actions") or []
        if a.get("action") == "delete" and a.get("outcome") == "applied"
    }
    for e in deletes:
        if (e["repository-name"], e["image-digest"]) not in in_trail:
            violations.append(f"{e['repository-name']}: deletion of {e['image-digest']} is not in the audit trail as applied")

    # 8. Every tag the service wrote (each PUSH the registry saw that the pusher
    #    did not make) is in the audit trail as applied or already, or, when a
    #    newer push moved the tag on before a cut delivery's redelivery, as
    #    unconfirmed (listed pending in that delivery's checkpoint).
    pusher_made = {(p.repository, p.tag, p.index) for p in world.pushes}
    written: dict[tuple[str, str, str], str] = {}
    for r in world.records:
        for a in r.get("actions") or []:
            if a.get("action") in ("add_tag", "move_tag", "put_index") and a.get("outcome") in ("applied", "already", "unconfirmed"):
                key = (r.get("repository"), a.get("tag"), a.get("to") or a.get("digest"))
                if written.get(key) != "applied":
                    written[key] = a["outcome"]
    tag_writes = [
        e
        for e in world.ecr_events
        if e.get("action-type") == "PUSH"
        and e.get("image-tag")
        and (e["repository-name"], e["image-tag"], e["image-digest"]) not in pusher_made
    ]
    for e in tag_writes:
        if (e["repository-name"], e["image-tag"], e["image-digest"]) not in written:
            violations.append(f"{e['repository-name']}: the write of {e['image-tag']} -> {e['image-digest']} is not in the audit trail")

    # 6. Under provenance = referrers, no attestation is deleted without a copy
    #    of it (same layers) attached to the image it describes.
    attestations = {(p.repository, d): a for p in world.pushes for d, a in p.attestations.items()}
    for e in deletes:
        repo, digest = e["repository-name"], e["image-digest"]
        if not world.policies[repo].referrers or (repo, digest) not in attestations:
            continue
        subject, layers = attestations[(repo, digest)]
        copies = [
            d
            for d, (_, doc) in world.images.get(repo, {}).items()
            if (doc.get("subject") or {}).get("digest") == subject and [x["digest"] for x in doc.get("layers") or []] == layers
        ]
        if not copies:
            violations.append(f"{repo}: attestation {digest} of {subject} deleted with no referrer copy of it left")

    # 7. Nothing anything refers to was deleted: no manifest left in the
    #    registry names a deleted one as its subject (a signature, an SBOM, an
    #    attestation attached to it), and no companion tag
    #    (sha256-<hex>[.sig|.att|.sbom]) of a deleted one is left.
    deleted = {(e["repository-name"], e["image-digest"]) for e in deletes}
    for repo, images in world.images.items():
        for digest, (image_tags, doc) in images.items():
            subject = (doc.get("subject") or {}).get("digest")
            if subject and (repo, subject) in deleted:
                violations.append(f"{repo}: {subject} deleted, but {digest} still names it as its subject")
            for t in image_tags:
                if t.startswith("sha256-"):
                    named = "sha256:" + t[len("sha256-") :].split(".", 1)[0]
                    if (repo, named) in deleted:
                        violations.append(f"{repo}: {named} deleted, but its companion tag {t} is left")

    figures = _figures(world, deletes, finals)
    figures["repeated_final_records_folded"] = repeats
    figures["service_tag_writes"] = len(tag_writes)
    figures["tag_writes_by_trail_outcome"] = {
        o: sum(1 for e in tag_writes if written.get((e["repository-name"], e["image-tag"], e["image-digest"])) == o)
        for o in ("applied", "already", "unconfirmed")
    }
    figures["deletions_applied_by_an_earlier_delivery"] = sum(
        1 for r in world.records for a in r.get("actions") or [] if a.get("action") == "delete" and a.get("earlier_attempt")
    )
    figures["manifests_with_subject"] = sum(1 for images in world.images.values() for _, doc in images.values() if doc.get("subject"))
    return violations, figures


def _applied_nothing(r: dict[str, Any]) -> bool:
    """A final record that applied nothing (a repeated delivery finding everything done)."""
    applied = any(a.get("outcome") == "applied" for a in r.get("actions") or [])
    return not applied and not r.get("deleted") and r.get("outcome") in ("noop", "skipped")


def _made_from(target: str, p: Push, policy: Policy, images: dict[str, tuple[list[str], dict[str, Any]]]) -> bool:
    """Whether ``target`` is what remediating push ``p`` makes the pushed tag point at."""
    if policy.immutable:
        return False
    if policy.mode == "promote":
        return p.promoted is not None and target == p.promoted
    if policy.mode == "strip":
        doc = images.get(target, ([], {}))[1]
        listed = [m["digest"] for m in doc.get("manifests") or []]
        return bool(listed) and listed == [d for d, kind in p.entries if kind != "attestation"]
    return False


def _figures(world: World, deletes: list[dict[str, Any]], finals: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    outcomes: dict[str, int] = defaultdict(int)
    codes: dict[str, int] = defaultdict(int)
    for p in world.pushes:
        for r in finals.get(p.index, []):
            outcomes[r["outcome"]] += 1
            if r.get("code"):
                codes[r["code"]] += 1
    notes = [n for r in world.records for n in r.get("notes") or []]
    return {
        "pushes": len(world.pushes),
        "final_outcomes": dict(outcomes),
        "skip_and_failure_codes": dict(codes),
        "records": len(world.records),
        "non_final_records": sum(1 for r in world.records if not r.get("final")),
        "checkpoints": sum(1 for r in world.records if r.get("outcome") == "in_progress"),
        "replanned_after_a_change": sum(1 for n in notes if n.startswith("planned again")),
        "stale_writes_taken_over": sum(1 for n in notes if "taken over" in n),
        "deleted_manifests": len(deletes),
        "dead_letters": len(world.dead_letters),
        "same_tag_pushes": len(world.pushes) - len({(p.repository, p.tag) for p in world.pushes}),
    }


def load_json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
