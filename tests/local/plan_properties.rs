//! Property tests of the planner's invariants over generated indexes,
//! repository states and policies (at least 1 000 cases per run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::{digest_of, tag};
use ecr_remediator::Digest;
use ecr_remediator::RawManifest;
use ecr_remediator::decide::cleanup::{CleanupInput, plan_cleanup};
use ecr_remediator::decide::plan::{Action, DeleteRole, PlanInput, SkipReason, TagRole, plan};
use ecr_remediator::decide::retire::plan_retire;
use ecr_remediator::decide::usage::{InUse, Workload, WorkloadKind};
use ecr_remediator::decide::view::{Attachments, Held, RepositoryView};
use ecr_remediator::oci::classify::{EntryClass, classify};
use ecr_remediator::oci::companion::Companion;
use ecr_remediator::oci::signature::Referrer;
use ecr_remediator::policy::template::TagTemplate;
use ecr_remediator::policy::{Mode, PlatformSelector, Policy};
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
enum Spec {
    /// Runnable with a platform from `PLATFORMS` (None: no platform field).
    Runnable(Option<usize>),
    /// Attestation (legacy or artifact form) describing runnable number `n` (mod count).
    Attestation {
        subject: usize,
        artifact: bool,
    },
    Signature,
    Other,
    Nested,
}

const PLATFORMS: [(&str, &str, Option<&str>); 5] = [
    ("linux", "amd64", None),
    ("linux", "arm64", Some("v8")),
    ("linux", "arm", Some("v7")),
    ("windows", "amd64", None),
    ("linux", "amd64", None), // duplicate platform: derived-tag collision
];

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        4 => prop::option::weighted(0.85, 0..PLATFORMS.len()).prop_map(Spec::Runnable),
        4 => (0usize..4, any::<bool>()).prop_map(|(subject, artifact)| Spec::Attestation { subject, artifact }),
        1 => Just(Spec::Signature),
        1 => Just(Spec::Other),
        1 => Just(Spec::Nested),
    ]
}

/// Where the pushed tag points before planning.
#[derive(Debug, Clone, Copy)]
enum TagState {
    Index,
    Elsewhere,
    Missing,
    FirstEntry,
}

#[derive(Debug, Clone)]
struct Scenario {
    entries: Vec<Spec>,
    duplicate_first: bool,
    tag_state: TagState,
    extra_index_tag: bool,
    tagged: Vec<bool>,
    referenced_elsewhere: Vec<bool>,
    absent: Vec<bool>,
    nested_reference_to_index: bool,
    /// The unrelated image holding stale tags is an index (else a runnable).
    stranger_is_index: bool,
    stale_derived_tag: Option<usize>,
    stale_keep_tag: bool,
    mode: Mode,
    keep: bool,
    delete: bool,
    max_deletes: u32,
    dry_run: bool,
    promote_arm64: bool,
    platform_template: bool,
    /// `provenance = referrers`.
    referrers: bool,
    /// What is attached to the index and to each entry (signatures, companion tags).
    attach_index: Attach,
    attach_entries: Vec<Attach>,
    /// What the reader learnt of each manifest's use (index first, then the entries).
    uses: Vec<Use>,
    /// What the workload scan answered.
    scan: Scan,
    /// How long ago the index was pushed (the grace period is 900 s).
    index_age_s: i64,
}

/// What is known of a manifest's use outside the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Its pull time not read.
    Unread,
    /// Never pulled, nothing runs it.
    Unused,
    /// Pulled an hour ago.
    PulledRecently,
    /// Pulled a year ago.
    PulledLongAgo,
    /// An ECS service runs it.
    Running,
}

/// What the workload scan answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    NotRead,
    Failed,
    Answered,
}

fn usage() -> impl Strategy<Value = Use> {
    prop_oneof![
        1 => Just(Use::Unread),
        12 => Just(Use::Unused),
        1 => Just(Use::PulledRecently),
        2 => Just(Use::PulledLongAgo),
        1 => Just(Use::Running),
    ]
}

/// What the reader learnt is attached to a manifest from outside any index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attach {
    /// Not read.
    Unread,
    /// Read: nothing.
    Nothing,
    /// An OCI referrer (a Notation signature) names it as subject.
    Referrer,
    /// A cosign companion tag (`sha256-<hex>.sig`).
    Companion,
}

fn attach() -> impl Strategy<Value = Attach> {
    prop_oneof![
        1 => Just(Attach::Unread),
        16 => Just(Attach::Nothing),
        1 => Just(Attach::Referrer),
        1 => Just(Attach::Companion),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let flags = |n: usize, p: f64| prop::collection::vec(prop::bool::weighted(p), n);
    (prop::collection::vec(spec(), 0..7), any::<bool>()).prop_flat_map(move |(entries, dup)| {
        let n = entries.len();
        (
            (
                Just(entries),
                Just(dup && n > 1),
                prop_oneof![
                    7 => Just(TagState::Index),
                    1 => Just(TagState::Elsewhere),
                    1 => Just(TagState::Missing),
                    1 => Just(TagState::FirstEntry)
                ],
                prop::bool::weighted(0.2),
                flags(n, 0.15),
                flags(n, 0.15),
                flags(n, 0.05),
                prop::bool::weighted(0.1),
                prop::bool::weighted(0.8),
            ),
            (
                prop::option::weighted(0.3, 0usize..8),
                prop::bool::weighted(0.2),
                prop_oneof![
                    Just(Mode::Observe),
                    Just(Mode::Tag),
                    Just(Mode::Promote),
                    Just(Mode::Strip)
                ],
                prop::bool::weighted(0.4),
                prop::bool::weighted(0.6),
                0u32..12,
                prop::bool::weighted(0.1),
                any::<bool>(),
                any::<bool>(),
                prop::bool::weighted(0.4),
            ),
            (attach(), prop::collection::vec(attach(), n)),
            (
                prop::collection::vec(usage(), n + 1),
                prop_oneof![1 => Just(Scan::NotRead), 1 => Just(Scan::Failed), 10 => Just(Scan::Answered)],
                prop_oneof![1 => Just(60i64), 6 => Just(86_400i64)],
            ),
        )
            .prop_map(
                |(
                    (
                        entries,
                        duplicate_first,
                        tag_state,
                        extra_index_tag,
                        tagged,
                        referenced_elsewhere,
                        absent,
                        nested,
                        complete,
                    ),
                    (
                        stale_derived_tag,
                        stale_keep_tag,
                        mode,
                        keep,
                        delete,
                        max_deletes,
                        dry_run,
                        promote_arm64,
                        platform_template,
                        referrers,
                    ),
                    (attach_index, attach_entries),
                    (uses, scan, index_age_s),
                )| Scenario {
                    entries,
                    duplicate_first,
                    tag_state,
                    extra_index_tag,
                    tagged,
                    referenced_elsewhere,
                    absent,
                    nested_reference_to_index: nested,
                    stranger_is_index: complete,
                    stale_derived_tag,
                    stale_keep_tag,
                    mode,
                    keep,
                    delete,
                    max_deletes,
                    dry_run,
                    promote_arm64,
                    platform_template,
                    referrers,
                    attach_index,
                    attach_entries,
                    uses,
                    scan,
                    index_age_s,
                },
            )
    })
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The manifests of the index's runnable and attestation entries, by position.
fn entry_manifests(s: &Scenario) -> Vec<Option<RawManifest>> {
    let raw = |v: serde_json::Value| RawManifest::parse(serde_json::to_vec(&v).unwrap(), None).unwrap();
    let images: Vec<Option<RawManifest>> = s
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            matches!(e, Spec::Runnable(_)).then(|| {
                raw(json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&format!("cfg-{i}")).to_string(), "size": 10},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest_of(&format!("layer-{i}")).to_string(), "size": 100}]}))
            })
        })
        .collect();
    let runnable: Vec<&RawManifest> = images.iter().flatten().collect();
    s.entries
        .iter()
        .enumerate()
        .map(|(i, e)| match e {
            Spec::Runnable(_) => images[i].clone(),
            Spec::Attestation { subject, artifact } => {
                let mut doc = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&format!("att-cfg-{i}")).to_string(), "size": 10},
                    "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": digest_of(&format!("statement-{i}")).to_string(), "size": 100,
                                "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v1"}}]});
                if *artifact && !runnable.is_empty() {
                    let img = runnable[subject % runnable.len()];
                    doc["artifactType"] = json!("application/vnd.docker.attestation.manifest.v1+json");
                    doc["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": img.digest().to_string(), "size": img.bytes().len()});
                }
                Some(raw(doc))
            }
            _ => None,
        })
        .collect()
}

fn build_index(s: &Scenario) -> RawManifest {
    let manifests = entry_manifests(s);
    let digests: Vec<Digest> = (0..s.entries.len())
        .map(|i| match &manifests[i] {
            Some(m) => m.digest().clone(),
            None => digest_of(&format!("entry-{i}")),
        })
        .collect();
    let runnable_digests: Vec<&Digest> = s
        .entries
        .iter()
        .zip(&digests)
        .filter(|(e, _)| matches!(e, Spec::Runnable(_)))
        .map(|(_, d)| d)
        .collect();
    let stranger = digest_of("stranger");
    let mut manifests: Vec<serde_json::Value> = s
        .entries
        .iter()
        .zip(&digests)
        .map(|(e, d)| {
            let d = d.to_string();
            match e {
                Spec::Runnable(Some(p)) => {
                    let (os, arch, variant) = PLATFORMS[*p];
                    let mut platform = json!({"architecture": arch, "os": os});
                    if let Some(v) = variant {
                        platform["variant"] = json!(v);
                    }
                    json!({"mediaType": OCI_MANIFEST, "digest": d, "size": 500, "platform": platform})
                }
                Spec::Runnable(None) => json!({"mediaType": OCI_MANIFEST, "digest": d, "size": 500}),
                Spec::Attestation { subject, artifact } => {
                    let subject = if runnable_digests.is_empty() {
                        stranger.to_string()
                    } else {
                        runnable_digests[subject % runnable_digests.len()].to_string()
                    };
                    let mut e = json!({"mediaType": OCI_MANIFEST, "digest": d, "size": 300,
                        "platform": {"architecture": "unknown", "os": "unknown"},
                        "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                        "vnd.docker.reference.digest": subject}});
                    if *artifact {
                        e["artifactType"] = json!("application/vnd.docker.attestation.manifest.v1+json");
                    }
                    e
                }
                Spec::Signature => json!({"mediaType": OCI_MANIFEST, "digest": d, "size": 300,
                    "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}),
                Spec::Other => json!({"mediaType": OCI_MANIFEST, "digest": d, "size": 300,
                    "platform": {"architecture": "unknown", "os": "unknown"}}),
                Spec::Nested => {
                    json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": 300})
                }
            }
        })
        .collect();
    if s.duplicate_first {
        // The first entry's digest listed again under another class.
        let mut dup = manifests[manifests.len() - 1].clone();
        dup["digest"] = manifests[0]["digest"].clone();
        manifests.push(dup);
    }
    let doc =
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    RawManifest::parse(serde_json::to_vec(&doc).unwrap(), None).unwrap()
}

fn build_view(s: &Scenario, index: &RawManifest) -> RepositoryView {
    let pushed = tag("v1");
    let mut v = RepositoryView::new();
    let children: Vec<Digest> = index.entries().iter().map(|d| d.digest.clone()).collect();
    let stranger = digest_of("stranger");
    v.insert_image(stranger.clone(), []).unwrap();
    v.set_kind(
        &stranger,
        if s.stranger_is_index {
            Held::Index
        } else {
            Held::Runnable
        },
    );
    let classification = classify(index);
    for (i, d) in children.iter().enumerate() {
        if s.absent.get(i).copied().unwrap_or(false) {
            continue;
        }
        let tags = if s.tagged.get(i).copied().unwrap_or(false) {
            vec![tag(&format!("user-{i}"))]
        } else {
            vec![]
        };
        v.insert_image(d.clone(), tags).unwrap();
        let kind = match &classification.entries[i].class {
            EntryClass::Runnable { .. } => Held::Runnable,
            EntryClass::Index => Held::Index,
            _ => Held::Other,
        };
        v.set_kind(d, kind);
    }
    let mut index_tags = vec![];
    match s.tag_state {
        TagState::Index => index_tags.push(pushed.clone()),
        TagState::Elsewhere => v.insert_image(stranger.clone(), [pushed.clone()]).unwrap(),
        TagState::Missing => {}
        TagState::FirstEntry => match children.first() {
            Some(d) if v.contains(d) => v.insert_image(d.clone(), [pushed.clone()]).unwrap(),
            _ => index_tags.push(pushed.clone()),
        },
    }
    if s.extra_index_tag {
        index_tags.push(tag("latest"));
    }
    v.insert_image(index.digest().clone(), index_tags).unwrap();
    v.insert_index(index.digest().clone(), children.clone());
    let other = digest_of("other-index");
    let mut other_children: Vec<Digest> = children
        .iter()
        .enumerate()
        .filter(|(i, _)| s.referenced_elsewhere.get(*i).copied().unwrap_or(false))
        .map(|(_, d)| d.clone())
        .collect();
    if s.nested_reference_to_index {
        other_children.push(index.digest().clone());
    }
    v.insert_image(other.clone(), [tag("other")]).unwrap();
    v.insert_index(other, other_children);
    if let Some(k) = s.stale_derived_tag {
        let t = [
            "v1-linux-amd64",
            "v1-linux-arm64-v8",
            "v1-linux-arm-v7",
            "v1-windows-amd64",
        ][k % 4];
        let holder = if k >= 4 {
            children.first().unwrap_or(&stranger).clone()
        } else {
            stranger.clone()
        };
        if v.contains(&holder) && v.tag_target(&tag(t)).is_none() {
            v.insert_image(holder, [tag(t)]).unwrap();
        }
    }
    if s.stale_keep_tag {
        v.insert_image(stranger, [tag("v1-index")]).unwrap();
    }
    // What the reader learns of attachments, and the subjects of the
    // entries' manifests that name one (artifact-form attestations).
    let attached = |v: &mut RepositoryView, d: &Digest, a: Attach| {
        let found = match a {
            Attach::Unread => return,
            Attach::Nothing => Attachments::default(),
            Attach::Referrer => Attachments {
                referrers: vec![Referrer::new(
                    digest_of(&format!("signature-of-{d}")),
                    Some(ecr_remediator::oci::media_type::NOTATION_SIGNATURE),
                )],
                companion_tags: vec![],
            },
            Attach::Companion => Attachments {
                referrers: vec![],
                companion_tags: vec![(Companion::Signature, Companion::Signature.tag_for(d).unwrap())],
            },
        };
        v.set_attachments(d, found);
    };
    attached(&mut v, index.digest(), s.attach_index);
    for (i, d) in children.iter().enumerate() {
        attached(&mut v, d, s.attach_entries.get(i).copied().unwrap_or(Attach::Nothing));
    }
    for m in read_manifests(s).values() {
        if let Some(subject) = m.subject() {
            v.set_subject(m.digest(), &subject.digest);
        }
    }
    // What the reader learns of their use: pull and push times, and what
    // the workload scan found.
    let mut in_use = InUse::new(NOW);
    let ids: Vec<&Digest> = std::iter::once(index.digest()).chain(children.iter()).collect();
    for (i, d) in ids.iter().enumerate() {
        match s.uses.get(i).copied().unwrap_or(Use::Unused) {
            Use::Unread => {}
            Use::Unused => v.set_pull_time(d, None),
            Use::PulledRecently => v.set_pull_time(d, Some(NOW - 3_600_000)),
            Use::PulledLongAgo => v.set_pull_time(d, Some(NOW - 365 * 86_400_000)),
            Use::Running => {
                v.set_pull_time(d, None);
                in_use.add(
                    (*d).clone(),
                    Workload {
                        kind: WorkloadKind::EcsService,
                        name: "arn:aws:ecs:us-east-1:123456789012:service/c/s".into(),
                    },
                );
            }
        }
    }
    v.set_pushed_at(index.digest(), NOW - s.index_age_s * 1000);
    match s.scan {
        Scan::NotRead => {}
        Scan::Failed => v.set_in_use(Err("AccessDeniedException".into())),
        Scan::Answered => v.set_in_use(Ok(std::sync::Arc::new(in_use))),
    }
    v
}

/// "Now" for every generated plan (the index's push and pulls are before it).
const NOW: i64 = 10_000_000_000;

/// Deletions never hit a manifest that something may use: its pull time
/// unread or within the window, the scan unread or failed, a workload
/// running it; and none happens within the grace period after the push.
fn usage_invariants(
    view: &RepositoryView,
    p: &ecr_remediator::decide::plan::Plan,
    policy: &Policy,
    index: &Digest,
) -> Result<(), TestCaseError> {
    let now = NOW;
    for a in &p.actions {
        if let Action::Delete { digest, .. } = a {
            let pulled = view.pull_time(digest);
            prop_assert!(pulled.is_some(), "{digest} deleted without reading when it was pulled");
            if let (Some(Some(at)), Some(within)) = (pulled, policy.keep_if_pulled_within_s) {
                prop_assert!(
                    now - at >= within as i64 * 1000,
                    "{digest} deleted although pulled recently"
                );
            }
            match view.in_use() {
                Some(Ok(found)) => prop_assert!(found.users(digest).is_empty(), "{digest} deleted although in use"),
                other => prop_assert!(false, "{digest} deleted with the workload scan {other:?}"),
            }
        }
    }
    if p.actions.iter().any(Action::is_delete) {
        let pushed = view.pushed_at(index);
        prop_assert!(pushed.is_some(), "deleted without reading when the index was pushed");
        let grace = i64::try_from(policy.grace_period_s).unwrap() * 1000;
        prop_assert!(
            pushed.is_some_and(|at| now - at >= grace),
            "deleted within the grace period after the push"
        );
    }
    Ok(())
}

/// The pushed tag never moves off a signed index onto a manifest nothing
/// signs (the policy here never allows it), nor while what signs either is
/// unread.
fn signature_invariants(
    view: &RepositoryView,
    p: &ecr_remediator::decide::plan::Plan,
    index: &Digest,
    pushed: &ecr_remediator::ImageTag,
) -> Result<(), TestCaseError> {
    for a in &p.actions {
        let to = match a {
            Action::MoveTag { tag: t, from, to, .. } if t == pushed && from == index => to,
            Action::PutIndex { tag: t, manifest, .. } if t == pushed => manifest.digest(),
            _ => continue,
        };
        let on_index = view.attachments(index).map(|a| a.signatures());
        prop_assert!(on_index.is_some(), "the tag moved without reading what signs the index");
        if on_index.is_some_and(|s| !s.is_empty()) {
            let on_target = view.attachments(to).map(|a| a.signatures()).unwrap_or_default();
            prop_assert!(
                !on_target.is_empty(),
                "the tag moved off a signed index onto unsigned {to}"
            );
        }
    }
    Ok(())
}

/// Deletions never hit a manifest something is attached to, one whose
/// attachments were not read, or (on the per-push path) an attestation that
/// is itself a referrer of its image.
fn attachment_invariants(
    view: &RepositoryView,
    p: &ecr_remediator::decide::plan::Plan,
    per_push: bool,
) -> Result<(), TestCaseError> {
    for a in &p.actions {
        if let Action::Delete { digest, .. } = a {
            let found = view.attachments(digest);
            prop_assert!(found.is_some(), "{digest} deleted without reading what is attached");
            prop_assert!(
                found.is_some_and(|f| f.is_empty()),
                "{digest} deleted although signed or referred to"
            );
            if per_push {
                prop_assert!(
                    view.subject_of(digest).is_none(),
                    "{digest}, a referrer of its image, deleted"
                );
            }
        }
    }
    Ok(())
}

fn build_policy(s: &Scenario) -> Policy {
    Policy {
        mode: s.mode,
        tag_template: if s.platform_template {
            TagTemplate::parse_derived("{tag}-{platform}").unwrap()
        } else {
            TagTemplate::default_derived()
        },
        keep_tag: s.keep.then(TagTemplate::default_keep),
        promote_platform: s.promote_arm64.then(|| PlatformSelector::parse("linux/arm64").unwrap()),
        delete_orphans: s.delete,
        max_deletes: s.max_deletes,
        dry_run: s.dry_run,
        provenance: if s.referrers {
            ecr_remediator::policy::Provenance::Referrers
        } else {
            ecr_remediator::policy::Provenance::Index
        },
        repository_tag: ecr_remediator::policy::repository_tag::RepositoryTagUse::Ignored,
        ..Policy::default()
    }
}

/// The entries' manifests the reader would have read (absent entries are not).
fn read_manifests(s: &Scenario) -> BTreeMap<Digest, RawManifest> {
    entry_manifests(s)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !s.absent.get(*i).copied().unwrap_or(false))
        .filter_map(|(_, m)| m.map(|m| (m.digest().clone(), m)))
        .collect()
}

fn check(s: &Scenario) -> Result<(), TestCaseError> {
    let index = build_index(s);
    let classification = classify(&index);
    let view = build_view(s, &index);
    let policy = build_policy(s);
    let manifests = read_manifests(s);
    let pushed = tag("v1");
    let input = PlanInput {
        manifest: &index,
        classification: &classification,
        tag: Some(&pushed),
        view: &view,
        policy: &policy,
        stale_holder: None,
        pushed_tag_immutable: false,
        manifests: &manifests,
        now_ms: NOW,
        tag_arrived_ms: None,
    };
    let p = plan(&input);

    // Tags are only ever taken from what this service writes them on: a
    // derived tag from a runnable, a keep tag from an index.
    for a in &p.actions {
        if let Action::MoveTag { from, role, tag: t, .. } = a {
            let expected = match role {
                TagRole::Derived => Held::Runnable,
                TagRole::Keep => Held::Index,
                TagRole::Pushed => continue,
            };
            prop_assert_eq!(view.kind_of(from), Some(expected), "{} taken from {}", t, from);
        }
    }
    // The keep tag is a gate: the pushed tag never moves unless the keep tag
    // (when configured) ends on the index.
    let moves_pushed = p.actions.iter().any(|a| {
        matches!(
            a,
            Action::MoveTag {
                role: TagRole::Pushed,
                ..
            } | Action::PutIndex { .. }
        )
    });
    if moves_pushed && policy.keep_tag.is_some() {
        let after = common::apply(&view, &p);
        prop_assert_eq!(
            after.tag_target(&tag("v1-index")),
            Some(index.digest()),
            "moved without the keep tag"
        );
    }

    // 4. observe plans contain no write; a dry-run plan is the real run's
    //    (the engine records it as planned and applies nothing).
    if policy.mode == Mode::Observe {
        prop_assert!(p.actions.is_empty(), "observe plan wrote: {:?}", p.actions);
    }
    if policy.dry_run {
        let real_policy = Policy {
            dry_run: false,
            ..policy.clone()
        };
        let real = plan(&PlanInput {
            policy: &real_policy,
            ..input
        });
        prop_assert_eq!(&p.actions, &real.actions, "a dry run plans as the real run");
    }

    // 5. signature, index and other entries are never written to or deleted.
    let protected: BTreeSet<&Digest> = classification
        .entries
        .iter()
        .filter(|e| e.class.is_protected())
        .map(|e| e.digest())
        .collect();
    let runnable: BTreeSet<&Digest> = classification
        .entries
        .iter()
        .filter(|e| matches!(e.class, EntryClass::Runnable { .. }))
        .map(|e| e.digest())
        .collect();
    for a in &p.actions {
        prop_assert!(!protected.contains(a.target()), "protected entry touched by {a}");
    }

    // 2. The pushed tag only moves off the index being remediated; a
    //    superseded tag means no write at all.
    let before = view.tag_target(&pushed).cloned();
    let ours: BTreeSet<Digest> = index.entries().iter().map(|d| d.digest.clone()).collect();
    let stripped_digest = index
        .without_entries(&classification.attestation_positions())
        .ok()
        .map(|m| m.digest().clone());
    let recognisable = before
        .as_ref()
        .is_some_and(|b| b == index.digest() || ours.contains(b) || stripped_digest.as_ref() == Some(b));
    if !recognisable {
        prop_assert!(
            p.actions.is_empty(),
            "tag was elsewhere ({before:?}) yet plan wrote {:?}",
            p.actions
        );
    }
    for a in &p.actions {
        match a {
            Action::MoveTag {
                tag,
                from,
                role: TagRole::Pushed,
                ..
            } => {
                prop_assert_eq!(tag, &pushed);
                prop_assert_eq!(from, index.digest());
            }
            Action::PutIndex { replaces, .. } => {
                prop_assert_eq!(before.as_ref(), Some(index.digest()));
                prop_assert_eq!(replaces, index.digest());
            }
            _ => {}
        }
    }

    // 1. Replay with ECR's rules: every write is accepted; a deletion never
    //    hits a runnable or tagged image, and the index goes before its children.
    let mut state = view.clone();
    let mut deleted = Vec::new();
    for a in &p.actions {
        if let Action::Delete { digest, .. } = a {
            prop_assert!(!runnable.contains(digest), "runnable {digest} deleted");
            let tags = state.tags_of(digest).cloned().unwrap_or_default();
            prop_assert!(tags.is_empty(), "{digest} deleted while tagged {tags:?}");
            deleted.push(digest.clone());
        }
        if let Err(e) = state.apply(a) {
            return Err(TestCaseError::fail(format!("ECR would refuse {a}: {e}")));
        }
    }
    for (idx, _) in state.images() {
        if let Some(children) = state.children_of(idx) {
            for d in &deleted {
                prop_assert!(!children.contains(d), "{d} deleted but still referenced by {idx}");
            }
        }
    }

    referrer_invariants(s, &index, &classification, &view, &p)?;
    attachment_invariants(&view, &p, true)?;
    usage_invariants(&view, &p, &policy, index.digest())?;
    signature_invariants(&view, &p, index.digest(), &pushed)?;

    // A tag this service writes (a keep tag, under any policy) or a companion
    // tag (a referrers tag-schema index, cosign's) is never remediated.
    for own in [
        tag("v1-index"),
        ecr_remediator::oci::companion::Companion::ReferrersIndex
            .tag_for(index.digest())
            .unwrap(),
    ] {
        let other = plan(&PlanInput {
            tag: Some(&own),
            ..input
        });
        prop_assert!(other.actions.is_empty(), "{own} remediated: {:?}", other.actions);
    }

    // 3. Idempotence: planning again on the resulting state gives no write.
    let again = plan(&PlanInput { view: &state, ..input });
    prop_assert!(
        again.actions.is_empty(),
        "second plan not empty: {:?}\nfirst: {:?}",
        again.actions,
        p.actions
    );
    Ok(())
}

/// The sweep's cleanup of the same generated index, as an untagged leftover
/// (or, with `TagState::Index`, a tagged one): it deletes only under the
/// policies that leave indexes untagged, never a runnable, tagged or still
/// listed manifest, and ECR accepts every deletion in order.
fn check_cleanup(s: &Scenario, age_s: i64) -> Result<(), TestCaseError> {
    let index = build_index(s);
    let mut classification = classify(&index);
    let view = build_view(s, &index);
    let policy = build_policy(s);
    // The cleanup reader refines entries with their manifests; here the
    // descriptor classification stands for it.
    classification.digest = index.digest().clone();
    let now = 10_000_000_000;
    let p = plan_cleanup(&CleanupInput {
        manifest: &index,
        classification: &classification,
        view: &view,
        policy: &policy,
        pushed_at_ms: Some(now - age_s * 1000),
        now_ms: now,
        min_age_s: 3600,
        manifests: &read_manifests(s),
    });
    let deletes: Vec<&Digest> = p.actions.iter().filter(|a| a.is_delete()).map(Action::target).collect();
    let copies = p
        .actions
        .iter()
        .filter(|a| matches!(a, Action::PutReferrer { .. }))
        .count();
    prop_assert_eq!(
        deletes.len() + copies,
        p.actions.len(),
        "a cleanup only deletes (attaching referrers first): {:?}",
        p.actions
    );
    if let Err(e) = referrer_invariants(s, &index, &classification, &view, &p) {
        if std::env::var_os("DEBUG_PLAN").is_some() {
            eprintln!(
                "ACTIONS {:#?}\nSKIPPED {:#?}\nCLASS {:#?}",
                p.actions.iter().map(ToString::to_string).collect::<Vec<_>>(),
                p.skipped,
                classification
                    .entries
                    .iter()
                    .map(|e| (e.digest().to_string(), format!("{:?}", e.class)))
                    .collect::<Vec<_>>()
            );
        }
        return Err(e);
    }
    attachment_invariants(&view, &p, true)?;
    usage_invariants(&view, &p, &policy, index.digest())?;
    if deletes.is_empty() {
        return Ok(());
    }
    // (A dry run plans as the real run; the engine applies nothing.)
    prop_assert!(policy.delete_orphans);
    prop_assert!(matches!(policy.mode, Mode::Promote | Mode::Strip) && policy.keep_tag.is_none());
    prop_assert!(age_s >= 3600, "younger than the minimum age");
    prop_assert!(deletes.len() <= policy.max_deletes as usize);
    prop_assert!(
        view.tags_of(index.digest()).is_some_and(BTreeSet::is_empty),
        "a tagged index is no leftover"
    );
    prop_assert!(
        classification
            .entries
            .iter()
            .any(|e| matches!(e.class, EntryClass::Runnable { .. })
                && view.tags_of(e.digest()).is_some_and(|t| !t.is_empty())),
        "no tagged image (nor a tagged stripped copy): not a remediation's leftover"
    );
    let mut state = view.clone();
    for a in &p.actions {
        let d = a.target();
        let is_attestation_only = classification
            .entries
            .iter()
            .filter(|e| e.digest() == d)
            .all(|e| matches!(e.class, EntryClass::Attestation { .. }));
        prop_assert!(d == index.digest() || is_attestation_only, "{d} is not an attestation");
        let tags = state.tags_of(d).cloned().unwrap_or_default();
        prop_assert!(tags.is_empty(), "{d} deleted while tagged {tags:?}");
        prop_assert!(state.referrers(d, None).is_empty(), "{d} deleted while listed");
        if let Err(e) = state.apply(a) {
            return Err(TestCaseError::fail(format!("ECR would refuse {a}: {e}")));
        }
    }
    Ok(())
}

/// `provenance = referrers`: a referrer copy is only ever attached to a
/// runnable entry, copies an attestation entry's statements unchanged, and
/// comes before any deletion of that attestation; an attestation of an image
/// the plan leaves deployable (tagged, or listed by an index that stays) is
/// never deleted without its copy.
fn referrer_invariants(
    s: &Scenario,
    index: &RawManifest,
    classification: &ecr_remediator::oci::classify::Classification,
    view: &RepositoryView,
    p: &ecr_remediator::decide::plan::Plan,
) -> Result<(), TestCaseError> {
    use ecr_remediator::oci::manifest::Manifest;
    let runnable: BTreeSet<&Digest> = classification
        .entries
        .iter()
        .filter(|e| matches!(e.class, EntryClass::Runnable { .. }))
        .map(|e| e.digest())
        .collect();
    let manifests = read_manifests(s);
    let mut attached: BTreeSet<(Digest, Digest)> = BTreeSet::new();
    for a in &p.actions {
        match a {
            Action::PutReferrer {
                manifest,
                subject,
                attestation,
                ..
            } => {
                prop_assert!(s.referrers, "a referrer copy without provenance = referrers");
                prop_assert!(
                    runnable.contains(subject),
                    "referrer attached to {subject}, not a runnable entry"
                );
                let is_attestation = classification
                    .entries
                    .iter()
                    .any(|e| e.digest() == attestation && matches!(e.class, EntryClass::Attestation { .. }));
                prop_assert!(is_attestation, "{attestation} is not an attestation entry");
                let (Manifest::Image(copy), Some(Manifest::Image(orig))) = (
                    manifest.manifest(),
                    manifests.get(attestation).map(RawManifest::manifest),
                ) else {
                    return Err(TestCaseError::fail("copy or original is not an image manifest"));
                };
                prop_assert_eq!(&copy.layers, &orig.layers, "statements changed");
                prop_assert_eq!(copy.subject.as_ref().map(|d| &d.digest), Some(subject));
                attached.insert((attestation.clone(), subject.clone()));
            }
            Action::Delete { digest, .. } if s.referrers && digest != index.digest() => {
                let after = common::apply(view, p);
                let kept = |d: &Digest| {
                    after.tags_of(d).is_some_and(|t| !t.is_empty()) || !after.referrers(d, None).is_empty()
                };
                for e in &classification.entries {
                    if let EntryClass::Attestation { subject: Some(subj) } = &e.class
                        && e.digest() == digest
                        && runnable.contains(subj)
                        && kept(subj)
                    {
                        prop_assert!(
                            attached.contains(&(digest.clone(), subj.clone())),
                            "{digest} deleted before a referrer copy onto {subj}"
                        );
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// As an earlier run under the default keep tag leaves it: the pushed tag
/// off the index, `v1-index` on it.
/// What a promotion under the default keep tag leaves: `v1-index` on the
/// index and `v1` on its first runnable image (when the scenario has one in
/// the repository; an index without one was never promoted).
fn kept_view(s: &Scenario, index: &RawManifest) -> RepositoryView {
    let mut view = build_view(s, index);
    view.remove_tag(&tag("v1"));
    let _ = view.insert_image(index.digest().clone(), [tag("v1-index")]);
    if let Some(image) = promoted_image(index, &view) {
        view.remove_tag(&tag("v1"));
        let _ = view.insert_image(image, [tag("v1")]);
    }
    view
}

/// The first runnable entry of `index` the view holds.
fn promoted_image(index: &RawManifest, view: &RepositoryView) -> Option<Digest> {
    classify(index)
        .entries
        .iter()
        .filter(|e| matches!(e.class, EntryClass::Runnable { .. }))
        .map(|e| e.digest().clone())
        .find(|d| view.contains(d))
}

/// Retiring a kept index deletes only that index (with exactly its keep
/// tags, under a rule without a keep tag), and the attestations it alone
/// listed only with `delete_orphans`; never anything signed or referred to.
fn check_retire(s: &Scenario, age_s: i64) -> Result<(), TestCaseError> {
    let index = build_index(s);
    let classification = classify(&index);
    let view = kept_view(s, &index);
    let policy = build_policy(s);
    let now = 10_000_000_000;
    let p = plan_retire(&CleanupInput {
        manifest: &index,
        classification: &classification,
        view: &view,
        policy: &policy,
        pushed_at_ms: Some(now - age_s * 1000),
        now_ms: now,
        min_age_s: 3600,
        manifests: &read_manifests(s),
    });
    attachment_invariants(&view, &p, true)?;
    usage_invariants(&view, &p, &policy, index.digest())?;
    let mut state = view.clone();
    for a in &p.actions {
        if let Action::Delete {
            digest,
            role,
            removes_tags,
        } = a
        {
            // (A dry run plans as the real run; the engine applies nothing.)
            prop_assert!(policy.keep_tag.is_none() && policy.mode != Mode::Observe);
            prop_assert!(age_s >= 3600, "younger than the minimum age");
            let tags: Vec<_> = state.tags_of(digest).cloned().unwrap_or_default().into_iter().collect();
            if *role == DeleteRole::KeptIndex {
                prop_assert_eq!(digest, index.digest());
                // Only on evidence a remediation kept it: v1 names its image.
                let v1 = view.tag_target(&tag("v1"));
                prop_assert!(
                    v1.is_some() && v1.cloned() == promoted_image(&index, &view),
                    "retired without evidence that a promotion kept it"
                );
                prop_assert!(
                    !tags.is_empty() && tags.iter().all(|t| policy.is_keep_tag(t)),
                    "{tags:?}"
                );
                prop_assert_eq!(removes_tags, &tags);
            } else {
                prop_assert_eq!(*role, DeleteRole::Attestation);
                prop_assert!(policy.delete_orphans, "an attestation deleted without delete_orphans");
                prop_assert!(tags.is_empty(), "{digest} deleted while tagged {tags:?}");
                prop_assert!(
                    state.referrers(digest, None).is_empty(),
                    "{digest} deleted while listed"
                );
            }
        }
        if let Err(e) = state.apply(a) {
            return Err(TestCaseError::fail(format!("ECR would refuse {a}: {e}")));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn cleanup_invariants_hold(s in scenario(), age_s in prop_oneof![Just(0i64), Just(3599), Just(3600), Just(86_400)]) {
        check_cleanup(&s, age_s)?;
    }

    #[test]
    fn retire_invariants_hold(s in scenario(), age_s in prop_oneof![Just(0i64), Just(3600), Just(86_400)]) {
        check_retire(&s, age_s)?;
    }

    #[test]
    fn planner_invariants_hold(s in scenario()) {
        check(&s)?;
    }

    #[test]
    fn manifest_parsing_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = RawManifest::parse(bytes, None);
    }

    #[test]
    fn manifest_parsing_never_panics_on_mutated_indexes(s in scenario(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = build_index(&s).bytes().to_vec();
        let i = cut.index(bytes.len());
        bytes[i] = byte;
        if let Ok(m) = RawManifest::parse(bytes, None) {
            let _ = classify(&m);
        }
    }
}

#[test]
fn the_generator_reaches_every_kind_of_plan() {
    // Guard against a generator that silently stops exercising deletions,
    // promotions or strips: sample deterministically and count.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut deletes, mut moves, mut puts, mut superseded, mut cleanups, mut copies) = (0, 0, 0, 0, 0, 0);
    let mut kept_attached = 0;
    let mut retired = 0;
    let (mut kept_in_use, mut deferred, mut index_signed) = (0, 0, 0);
    for _ in 0..2000 {
        let s = scenario().new_tree(&mut runner).unwrap().current();
        let index = build_index(&s);
        let c = classify(&index);
        let view = build_view(&s, &index);
        let policy = build_policy(&s);
        let t = tag("v1");
        let p = plan(&PlanInput {
            manifest: &index,
            classification: &c,
            tag: Some(&t),
            view: &view,
            policy: &policy,
            stale_holder: None,
            pushed_tag_immutable: false,
            manifests: &read_manifests(&s),
            now_ms: NOW,
            tag_arrived_ms: None,
        });
        deletes += p.actions.iter().filter(|a| a.is_delete()).count();
        moves += p
            .actions
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::MoveTag {
                        role: TagRole::Pushed,
                        ..
                    }
                )
            })
            .count();
        puts += p
            .actions
            .iter()
            .filter(|a| matches!(a, Action::PutIndex { .. }))
            .count();
        superseded += usize::from(matches!(p.halted(), Some(SkipReason::Superseded { .. })));
        kept_attached += p
            .skipped
            .iter()
            .filter(|s| {
                matches!(
                    s.reason,
                    SkipReason::HasReferrers { .. }
                        | SkipReason::HasCompanion { .. }
                        | SkipReason::AttachmentsUnknown
                        | SkipReason::AttachedReferrer { .. }
                )
            })
            .count();
        kept_in_use += p
            .skipped
            .iter()
            .filter(|s| {
                matches!(
                    s.reason,
                    SkipReason::InUse { .. }
                        | SkipReason::RecentlyPulled { .. }
                        | SkipReason::InUseUnknown { .. }
                        | SkipReason::UsageUnknown
                )
            })
            .count();
        deferred += usize::from(p.deferred_until_ms.is_some());
        index_signed += usize::from(
            p.skipped
                .iter()
                .any(|s| matches!(s.reason, SkipReason::IndexSigned { .. })),
        );
        copies += p
            .actions
            .iter()
            .filter(|a| matches!(a, Action::PutReferrer { .. }))
            .count();
        let cleanup = plan_cleanup(&CleanupInput {
            manifest: &index,
            classification: &c,
            view: &view,
            policy: &policy,
            pushed_at_ms: Some(0),
            now_ms: 10_000_000_000,
            min_age_s: 3600,
            manifests: &read_manifests(&s),
        });
        cleanups += usize::from(!cleanup.actions.is_empty());
        let kept = kept_view(&s, &index);
        let retire = plan_retire(&CleanupInput {
            manifest: &index,
            classification: &c,
            view: &kept,
            policy: &policy,
            pushed_at_ms: Some(0),
            now_ms: 10_000_000_000,
            min_age_s: 3600,
            manifests: &read_manifests(&s),
        });
        retired += usize::from(retire.actions.iter().any(Action::is_delete));
    }
    assert!(
        deletes > 20
            && moves > 40
            && puts > 50
            && superseded > 20
            && cleanups > 2
            && copies > 50
            && kept_attached > 20
            && retired > 5
            && kept_in_use > 4
            && deferred > 2
            && index_signed > 5,
        "{deletes} {moves} {puts} {superseded} {cleanups} {copies} {kept_attached} {retired} {kept_in_use} {deferred} \
         {index_signed}"
    );
}
