//! The cleanup planner: what a sweep deletes that no push will ever revisit.
//!
//! Two kinds of leftovers, each found by the sweep and planned here on
//! fresh state, one image at a time:
//!
//! - an **untagged index whose remediation holds the tag**: under a policy
//!   that moves the tag off the index and keeps no keep tag, the per-push
//!   path deletes the index and its attestations when `delete_orphans` is on.
//!   Runs made before it was on (or cut short) leave the index behind. The
//!   evidence that it is such a leftover is that one of its runnable images
//!   is tagged (promote), or that its stripped copy is (strip: the copy is
//!   serialised deterministically, so its digest is computed, not guessed).
//!   An untagged index with neither is a push a later push superseded:
//!   lifecycle policies deal with those, not us.
//! - an **orphaned attestation**: an untagged attestation manifest that no
//!   index lists and that is not an OCI referrer of an image still in the
//!   repository (its index was deleted by hand, by a lifecycle rule or by a
//!   run cut short between the index and its attestations).
//!
//! Both must be older than a minimum age: a `docker push` stores the
//! manifests an index lists before the index, so a young untagged
//! attestation may belong to a push still in progress.
//!
//! Runnable images are never deleted; every deletion passes the deletion
//! gate (`crate::decide::gate`), as on every other path.

use std::collections::{BTreeMap, BTreeSet};

use crate::decide::action::{Action, DeleteRole};
use crate::decide::deletion::{Gates, deletions, finish};
use crate::decide::gate::{self, Candidate, Role};
use crate::decide::plan::{runnables, stripped};
use crate::decide::planned::Plan;
use crate::decide::provenance::{Coverage, referrer_copies};
use crate::decide::skip::SkipReason;
use crate::decide::view::RepositoryView;
use crate::oci::classify::{Classification, ClassifiedEntry, EntryClass, ManifestKind, classify_manifest};
use crate::oci::digest::Digest;
use crate::oci::manifest::RawManifest;
use crate::policy::{Mode, Policy, Provenance};

/// Default minimum age of a cleanup candidate: far longer than the gap
/// between the manifests of one push and its index.
pub const DEFAULT_MIN_AGE_S: u64 = 3600;

/// Everything the cleanup planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct CleanupInput<'a> {
    /// The candidate, as fetched.
    pub manifest: &'a RawManifest,
    /// Its classification, refined with its children when it is an index.
    pub classification: &'a Classification,
    /// What the registry holds: the candidate, its children and (for an
    /// attestation) its subject, with their tags.
    pub view: &'a RepositoryView,
    /// The repository's policy.
    pub policy: &'a Policy,
    /// When the candidate was pushed (milliseconds since the epoch), if known.
    pub pushed_at_ms: Option<i64>,
    /// Now, in milliseconds since the epoch.
    pub now_ms: i64,
    /// Candidates younger than this are left alone.
    pub min_age_s: u64,
    /// The manifests read (an index's entries), for referrer copies.
    pub manifests: &'a BTreeMap<Digest, RawManifest>,
}

/// Why a candidate pushed at `pushed_at_ms` is too young to delete (an
/// unknown push time counts as too young).
pub(crate) fn too_recent(pushed_at_ms: Option<i64>, now_ms: i64, min_age_s: u64) -> Option<SkipReason> {
    let min_age_ms = i64::try_from(min_age_s).unwrap_or(i64::MAX).saturating_mul(1000);
    match pushed_at_ms {
        Some(at) if now_ms.saturating_sub(at) >= min_age_ms => None,
        other => Some(SkipReason::TooRecent {
            age_s: other.map(|at| now_ms.saturating_sub(at) / 1000),
            min_age_s,
        }),
    }
}

/// When the candidate `d` itself is kept (signed, referred to, tagged), so
/// that nothing of it is deleted: the plan halted with that reason, so the
/// record's outcome says it, not only its skips.
pub(crate) fn halt_if_kept(p: Plan, d: &Digest) -> Plan {
    if p.actions.iter().any(|a| a.is_delete() && a.target() == d) {
        return p;
    }
    match p
        .skipped
        .iter()
        .find(|s| s.digest.as_ref() == Some(d))
        .map(|s| s.reason.clone())
    {
        Some(kept) => p.halt(kept),
        None => p,
    }
}

/// Plans the cleanup of one candidate: deletions, or a halt saying why not.
pub fn plan_cleanup(input: &CleanupInput<'_>) -> Plan {
    let CleanupInput {
        manifest,
        classification,
        view,
        policy,
        pushed_at_ms,
        now_ms,
        min_age_s,
        manifests,
    } = *input;
    let mut p = Plan::new(policy);
    if policy.mode == Mode::Observe || !policy.delete_orphans {
        return p.halt(SkipReason::CleanupNotEnabled);
    }
    let d = manifest.digest();
    if classification.digest != *d {
        return p.halt(SkipReason::Inconsistent);
    }
    let is_index = manifest.media_type().is_index();
    if is_index && (policy.mode == Mode::Tag || policy.keep_tag.is_some()) {
        return p.halt(SkipReason::IndexesKept);
    }
    if !view.contains(d) {
        return p.halt(if is_index {
            SkipReason::IndexGone
        } else {
            SkipReason::NotInView
        });
    }
    if let Some(young) = too_recent(pushed_at_ms, now_ms, min_age_s) {
        return p.halt(young);
    }
    if let Some(tags) = view.tags_of(d).filter(|t| !t.is_empty()) {
        return p.halt(SkipReason::StillTagged {
            tags: tags.iter().cloned().collect(),
        });
    }
    if is_index {
        let tagged = |d: &Digest| view.tags_of(d).is_some_and(|t| !t.is_empty());
        if runnables(classification).iter().any(|e| tagged(e.digest())) {
            p.notes.push(
                "an untagged index one of whose runnable images is tagged: left by an earlier promotion".to_owned(),
            );
        } else if stripped(manifest, classification).is_ok_and(|s| tagged(s.digest())) {
            p.notes.push(
                "an untagged index whose stripped copy (without its attestations) is tagged: left by an earlier strip"
                    .to_owned(),
            );
        } else {
            return p.halt(SkipReason::NotRemediated);
        }
        let coverage = if policy.provenance == Provenance::Referrers {
            // The images the remediation made deployable keep their provenance.
            let kept: BTreeSet<&Digest> = classification
                .entries
                .iter()
                .filter(|e| matches!(e.class, EntryClass::Runnable { .. }))
                .map(ClassifiedEntry::digest)
                .filter(|e| view.tags_of(e).is_some_and(|t| !t.is_empty()) || !view.referrers(e, Some(d)).is_empty())
                .collect();
            referrer_copies(&mut p, classification, manifests, view, &kept)
        } else {
            Coverage::default()
        };
        deletions(
            &mut p,
            classification,
            d,
            view,
            &coverage,
            Gates {
                policy,
                now_ms,
                tag_arrived_ms: None,
            },
        );
        return finish(halt_if_kept(p, d), policy);
    }
    match classify_manifest(manifest.manifest()) {
        ManifestKind::Attestation {
            subject: Some(subject), ..
        } if view.contains(&subject) => p.halt(SkipReason::AttachedReferrer { subject }),
        ManifestKind::Attestation { .. } if policy.provenance == Provenance::Referrers => {
            // Its image cannot be told from the manifest (the index that said
            // so is gone): deleting it would lose the provenance.
            p.halt(SkipReason::ProvenanceUncovered {
                why: "provenance = referrers: an orphaned attestation's image is not known, so it is kept".to_owned(),
            })
        }
        ManifestKind::Attestation { .. } => {
            let orphan = Candidate {
                role: Role::Orphan,
                ..Candidate::of(d)
            };
            if let Some(reason) = gate::keeps(
                view,
                &orphan,
                Gates {
                    policy,
                    now_ms,
                    tag_arrived_ms: None,
                },
            ) {
                return p.halt(reason);
            }
            p.notes
                .push("an untagged attestation no index lists: orphaned".to_owned());
            p.actions.push(Action::Delete {
                digest: d.clone(),
                role: DeleteRole::Attestation,
                removes_tags: Vec::new(),
            });
            finish(p, policy)
        }
        other => p.halt(SkipReason::NotAnAttestation {
            kind: other.name().to_owned(),
        }),
    }
}
