//! Retiring kept indexes: what `sweep --retire-kept-indexes` deletes.
//!
//! Under a keep tag (the default `{tag}-index`), each remediation leaves the
//! original index tagged, so its provenance stays reachable. A tag of that
//! shape is never handled as a pushed tag, whatever the policy says today
//! ([`crate::policy::Policy::is_keep_tag`]), so turning the keep tag off
//! never makes the service delete those indexes on its own. Retiring them
//! is a separate request, planned here on fresh state, one index at a time:
//!
//! - only under a rule with no keep tag (otherwise it keeps them on purpose)
//!   and a mode that changes the registry;
//! - only an index every one of whose tags is a keep tag (any other tag, a
//!   companion tag included, keeps it), older than the minimum age, and
//!   only on evidence that a remediation kept it: the pushed tag each keep
//!   tag stands for (`v1` for `v1-index`) points at one of its runnable
//!   images (a promotion) or at its stripped copy (a strip); a tag's shape
//!   alone is not evidence (`not_kept_by_us`);
//! - through the deletion gate (`crate::decide::gate`), as every deletion;
//! - under `provenance = referrers`, the attestations of each of its images
//!   are copied as referrers of the image first (an image may be deployed by
//!   digest); when one cannot be, nothing is deleted;
//! - the index goes with its keep tags; the attestations only it listed go
//!   too only when `delete_orphans` is on (the same rules as every
//!   deletion), else they stay, reported.

use std::collections::BTreeSet;

use crate::decide::action::{Action, DeleteRole};
use crate::decide::cleanup::{CleanupInput, halt_if_kept, too_recent};
use crate::decide::deletion::{Gates, deletions, finish};
use crate::decide::gate::{self, Candidate};
use crate::decide::plan::{runnables, stripped};
use crate::decide::planned::Plan;
use crate::decide::provenance::{Coverage, referrer_copies};
use crate::decide::skip::SkipReason;
use crate::decide::view::RepositoryView;
use crate::oci::classify::{Classification, ClassifiedEntry, EntryClass};
use crate::oci::digest::Digest;
use crate::oci::manifest::RawManifest;
use crate::oci::names::ImageTag;
use crate::policy::{Mode, Provenance};

/// Whether `holder` is what a remediation of `index` makes its pushed tag
/// name: one of its runnable images (a promotion) or its stripped copy (a
/// strip). The evidence that an index was kept by this service (retirement)
/// and that its tag has not moved on since (undo).
pub fn made_by_remediation(index: &RawManifest, classification: &Classification, holder: &Digest) -> bool {
    runnables(classification).iter().any(|e| e.digest() == holder)
        || stripped(index, classification).is_ok_and(|s| s.digest() == holder)
}

/// Plans the retirement of one kept index: its deletion (with its keep
/// tags) and what follows from it, or a halt saying why not.
pub fn plan_retire(input: &CleanupInput<'_>) -> Plan {
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
    if policy.mode == Mode::Observe {
        return p.halt(SkipReason::RetireNotEnabled {
            why: "observe mode changes nothing".to_owned(),
        });
    }
    if policy.keep_tag.is_some() {
        return p.halt(SkipReason::RetireNotEnabled {
            why: "this rule still keeps replaced indexes under a keep tag (set keep_tag = false first)".to_owned(),
        });
    }
    let d = manifest.digest();
    if classification.digest != *d {
        return p.halt(SkipReason::Inconsistent);
    }
    if !manifest.media_type().is_index() {
        return p.halt(SkipReason::NotAnIndex);
    }
    if !view.contains(d) {
        return p.halt(SkipReason::IndexGone);
    }
    if let Some(young) = too_recent(pushed_at_ms, now_ms, min_age_s) {
        return p.halt(young);
    }
    let tags: Vec<ImageTag> = view.tags_of(d).map(|t| t.iter().cloned().collect()).unwrap_or_default();
    let (keep_tags, others): (Vec<ImageTag>, Vec<ImageTag>) = tags.into_iter().partition(|t| policy.is_keep_tag(t));
    if !others.is_empty() {
        return p.halt(SkipReason::StillTagged { tags: others });
    }
    if keep_tags.is_empty() {
        return p.halt(SkipReason::NotKept);
    }
    // The shape of a tag is no evidence: only an index whose pushed tag now
    // names what its remediation made (one of its runnable images, or its
    // stripped copy) was kept by this service.
    // Each keep tag on its own evidence: one the service evidently wrote
    // goes with the index; any other (a user's `release-index`) keeps it.
    let (keep_tags, unproven): (Vec<ImageTag>, Vec<ImageTag>) = keep_tags.into_iter().partition(|k| {
        policy.kept_for(k).iter().any(|pushed| {
            view.tag_target(pushed)
                .is_some_and(|h| made_by_remediation(manifest, classification, h))
        })
    });
    if keep_tags.is_empty() {
        return p.halt(SkipReason::NotKeptByUs { tags: unproven });
    }
    if !unproven.is_empty() {
        return p.halt(SkipReason::StillTagged { tags: unproven });
    }
    let gates = Gates {
        policy,
        now_ms,
        tag_arrived_ms: None,
    };
    let kept_index = Candidate {
        removes_tags: &keep_tags,
        listed_by_except: Some(d),
        ..Candidate::of(d)
    };
    if let Some(reason) = gate::keeps(view, &kept_index, gates) {
        // Whether it is pulled or run is read and the plan made again.
        if !matches!(reason, SkipReason::UsageUnknown) {
            return p.halt(reason);
        }
    }
    p.notes.push(format!(
        "an index kept under {}: retired on request",
        keep_tags.iter().map(ImageTag::as_str).collect::<Vec<_>>().join(", ")
    ));
    let coverage = if policy.provenance == Provenance::Referrers {
        // Every image it lists may be deployed by digest: each keeps its provenance.
        let kept: BTreeSet<&Digest> = classification
            .entries
            .iter()
            .filter(|e| matches!(e.class, EntryClass::Runnable { .. }))
            .map(ClassifiedEntry::digest)
            .filter(|e| view.contains(e))
            .collect();
        referrer_copies(&mut p, classification, manifests, view, &kept)
    } else {
        Coverage::default()
    };
    // The deletion planner, on the state where the keep tags are gone with the index.
    let mut untagged: RepositoryView = view.clone();
    for t in &keep_tags {
        untagged.remove_tag(t);
    }
    deletions(&mut p, classification, d, &untagged, &coverage, gates);
    for a in &mut p.actions {
        if let Action::Delete {
            digest,
            role,
            removes_tags,
        } = a
            && digest == d
        {
            *role = DeleteRole::KeptIndex;
            removes_tags.clone_from(&keep_tags);
        }
    }
    if !policy.delete_orphans {
        let (orphans, rest): (Vec<Action>, Vec<Action>) = std::mem::take(&mut p.actions).into_iter().partition(|a| {
            matches!(
                a,
                Action::Delete {
                    role: DeleteRole::Attestation,
                    ..
                }
            )
        });
        p.actions = rest;
        for a in orphans {
            p.skip_entry(a.target(), SkipReason::OrphansKept);
        }
    }
    finish(halt_if_kept(p, d), policy)
}
