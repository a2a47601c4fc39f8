//! Sweeps: from one listing of a repository, which images the per-push path
//! should handle, and what is left alone and why. Pure; the listing is read
//! once per repository per sweep, never once per image.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::decide::cleanup::DEFAULT_MIN_AGE_S;
use crate::decide::plan::{runnables, stripped};
use crate::engine::registry::ImageInfo;
use crate::oci::classify::{Classification, ManifestKind};
use crate::oci::companion::{Companion, parse_companion};
use crate::oci::digest::Digest;
use crate::oci::manifest::RawManifest;
use crate::oci::media_type::{ArtifactFamily, ManifestMediaType};
use crate::oci::names::ImageTag;
use crate::policy::glob::Glob;
use crate::policy::{Mode, Policy};

/// Which images a sweep considers.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Only tags matching this pattern (and then no cleanup of untagged leftovers).
    pub tag: Option<Glob>,
    /// Only images pushed at or after this instant (milliseconds since the epoch).
    pub since_ms: Option<i64>,
    /// Leftovers pushed more recently than this are not cleaned up (see
    /// [`crate::decide::cleanup`]).
    pub min_age_s: u64,
    /// Also retire the indexes earlier runs kept under a keep tag (see
    /// [`crate::decide::retire`]); never with a tag filter.
    pub retire_kept: bool,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            tag: None,
            since_ms: None,
            min_age_s: DEFAULT_MIN_AGE_S,
            retire_kept: false,
        }
    }
}

/// Why a sweep leaves a listed image alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Untouched {
    /// A tagged signature (cosign tag or signature artifact type).
    Signature,
    /// A tagged Helm chart.
    HelmChart,
    /// A tagged SOCI index.
    SociIndex,
    /// Another tagged OCI artifact (not a runnable image).
    OtherArtifact,
    /// An index without a tag: nothing was pushed under it to remediate
    /// (and the policy does not clean up leftovers).
    UntaggedIndex,
    /// An untagged index another index still lists.
    ReferencedIndex,
    /// An untagged index none of whose images is tagged, and whose stripped
    /// copy is not either: a push a later push superseded (lifecycle
    /// policies expire those).
    SupersededIndex,
    /// A leftover younger than the minimum age: possibly a push in progress.
    RecentLeftover,
    /// An untagged attestation that is an OCI referrer of an image in the repository.
    AttachedReferrer,
    /// An index under a companion tag (the OCI referrers tag schema
    /// `sha256-<hex>`, or cosign's): another manifest's attachments.
    ReferrersIndex,
    /// Leftovers of a repository one of whose indexes could not be read:
    /// what it lists is unknown, so no attestation of it is called an orphan.
    UnreadableIndex,
}

impl Untouched {
    /// A short human description.
    pub fn describe(self) -> &'static str {
        match self {
            Untouched::Signature => "signature",
            Untouched::HelmChart => "Helm chart",
            Untouched::SociIndex => "SOCI index",
            Untouched::OtherArtifact => "other artifact",
            Untouched::UntaggedIndex => "untagged index",
            Untouched::ReferencedIndex => "untagged index still referenced",
            Untouched::SupersededIndex => "untagged index of a superseded push",
            Untouched::RecentLeftover => "leftover younger than the minimum age",
            Untouched::AttachedReferrer => "attestation attached to an image (referrer)",
            Untouched::ReferrersIndex => "referrers index (companion tag)",
            Untouched::UnreadableIndex => "unreadable index (orphans not sought)",
        }
    }
}

/// What a sweep does with one repository's listing.
#[derive(Debug, Clone, Default)]
pub struct SweepPlan {
    /// Tagged indexes to handle as if just pushed, oldest first.
    pub jobs: Vec<(Digest, ImageTag)>,
    /// Indexes in the listing.
    pub indexes_seen: usize,
    /// Tagged indexes whose only tags are this service's keep tags (already remediated).
    pub already_fine: usize,
    /// Of those, the ones to retire (with [`Selection::retire_kept`]), oldest first.
    pub retire: Vec<Digest>,
    /// Images left alone, by reason.
    pub untouched: BTreeMap<Untouched, usize>,
}

fn is_index(info: &ImageInfo) -> bool {
    info.media_type
        .as_deref()
        .and_then(ManifestMediaType::parse)
        .is_some_and(ManifestMediaType::is_index)
}

fn untouched_kind(info: &ImageInfo) -> Option<Untouched> {
    let companion = info.tags.iter().any(|t| {
        ImageTag::parse(t)
            .ok()
            .and_then(|t| parse_companion(&t))
            .is_some_and(|(kind, _)| matches!(kind, Companion::Signature | Companion::Attestation | Companion::Sbom))
    });
    match ArtifactFamily::of(info.artifact_media_type.as_deref().unwrap_or_default()) {
        _ if companion => Some(Untouched::Signature),
        ArtifactFamily::Signature => Some(Untouched::Signature),
        ArtifactFamily::HelmChart => Some(Untouched::HelmChart),
        ArtifactFamily::SociIndex => Some(Untouched::SociIndex),
        ArtifactFamily::Other => Some(Untouched::OtherArtifact),
        ArtifactFamily::Image => None,
    }
}

/// Decides what to do with one repository's listing under its policy.
pub fn select(listing: &[(Digest, ImageInfo)], policy: &Policy, selection: &Selection) -> SweepPlan {
    let mut plan = SweepPlan::default();
    let mut jobs: Vec<(i64, Digest, ImageTag)> = Vec::new();
    let mut retire: Vec<(i64, Digest)> = Vec::new();
    for (digest, info) in listing {
        if !is_index(info) {
            // Tagged artifacts are reported; untagged manifests are an
            // index's entries (the listing cannot tell an attestation from
            // another artifact by its config type) and go with their index.
            if !info.tags.is_empty()
                && let Some(kind) = untouched_kind(info)
            {
                *plan.untouched.entry(kind).or_default() += 1;
            }
            continue;
        }
        plan.indexes_seen += 1;
        if info.tags.is_empty() {
            // With cleanup on, [`select_cleanup`] says what becomes of it.
            if !cleanup_enabled(policy, selection) {
                *plan.untouched.entry(Untouched::UntaggedIndex).or_default() += 1;
            }
            continue;
        }
        let pushed = info.pushed_at_ms.unwrap_or(i64::MAX);
        if selection.since_ms.is_some_and(|since| pushed < since) {
            continue;
        }
        let mut user_tags = 0;
        let mut companion = false;
        for tag in &info.tags {
            let Ok(tag) = ImageTag::parse(tag) else { continue };
            if policy.is_keep_tag(&tag) {
                continue;
            }
            if parse_companion(&tag).is_some() {
                // The referrers tag schema's index of another manifest.
                companion = true;
                continue;
            }
            user_tags += 1;
            if selection.tag.as_ref().is_none_or(|p| p.matches(tag.as_str())) {
                jobs.push((pushed, digest.clone(), tag));
            }
        }
        if companion && user_tags == 0 {
            *plan.untouched.entry(Untouched::ReferrersIndex).or_default() += 1;
        } else if user_tags == 0 && selection.retire_kept && selection.tag.is_none() {
            retire.push((pushed, digest.clone()));
        } else if user_tags == 0 {
            plan.already_fine += 1;
        }
    }
    jobs.sort();
    plan.jobs = jobs.into_iter().map(|(_, d, t)| (d, t)).collect();
    retire.sort();
    plan.retire = retire.into_iter().map(|(_, d)| d).collect();
    plan
}

/// True when the sweep looks for leftovers in a repository with this policy:
/// `delete_orphans` in a mode that changes the registry, and no tag filter
/// (leftovers have no tag).
pub fn cleanup_enabled(policy: &Policy, selection: &Selection) -> bool {
    policy.delete_orphans && policy.mode != Mode::Observe && selection.tag.is_none()
}

/// True when an untagged index can be a remediation's leftover under this
/// policy: the tag moves off the index and no keep tag stays on it.
fn indexes_left_untagged(policy: &Policy) -> bool {
    matches!(policy.mode, Mode::Promote | Mode::Strip) && policy.keep_tag.is_none()
}

/// What the indexes of one repository list, gathered by reading each once.
#[derive(Debug, Clone, Default)]
pub struct References {
    /// Every manifest some index lists.
    listed: BTreeSet<Digest>,
    /// The runnable entries of each untagged index, and its stripped copy's
    /// digest (what a strip of it leaves under the tag).
    untagged: BTreeMap<Digest, (Vec<Digest>, Option<Digest>)>,
    /// Indexes that could not be read or parsed.
    unreadable: usize,
}

impl References {
    /// Records an index as read.
    pub fn add(&mut self, index: &RawManifest, classification: &Classification, tagged: bool) {
        self.listed
            .extend(classification.entries.iter().map(|e| e.digest().clone()));
        if !tagged {
            let run = runnables(classification).iter().map(|e| e.digest().clone()).collect();
            let copy = stripped(index, classification).ok().map(|c| c.digest().clone());
            self.untagged.insert(classification.digest.clone(), (run, copy));
        }
    }

    /// Records an index that could not be read.
    pub fn add_unreadable(&mut self) {
        self.unreadable += 1;
    }
}

/// The indexes of a listing: what a sweep reads to learn [`References`].
pub fn indexes(listing: &[(Digest, ImageInfo)]) -> Vec<Digest> {
    listing
        .iter()
        .filter(|(_, i)| is_index(i))
        .map(|(d, _)| d.clone())
        .collect()
}

/// Untagged single manifests no index lists: what a sweep reads to find
/// orphaned attestations (none when an index could not be read).
pub fn unlisted(listing: &[(Digest, ImageInfo)], refs: &References) -> Vec<Digest> {
    if refs.unreadable > 0 {
        return Vec::new();
    }
    listing
        .iter()
        .filter(|(d, i)| !is_index(i) && i.tags.is_empty() && !refs.listed.contains(d))
        .map(|(d, _)| d.clone())
        .collect()
}

/// Leftovers to clean up in one repository, and what is left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupSelection {
    /// Candidates, each handled as one cleanup job, oldest first.
    pub jobs: Vec<Digest>,
    /// Left alone, by reason (replaces the listing's count of untagged indexes).
    pub untouched: BTreeMap<Untouched, usize>,
}

/// Decides which leftovers of one repository to clean up, from its listing,
/// what its indexes list, and the kinds of its unlisted manifests (read for
/// the digests [`unlisted`] returned). The engine decides again on fresh
/// state before deleting anything; this only picks the candidates.
pub fn select_cleanup(
    listing: &[(Digest, ImageInfo)],
    refs: &References,
    unlisted_kinds: &BTreeMap<Digest, ManifestKind>,
    policy: &Policy,
    selection: &Selection,
    now_ms: i64,
) -> CleanupSelection {
    let mut out = CleanupSelection::default();
    let tagged: BTreeSet<&Digest> = listing
        .iter()
        .filter(|(_, i)| !i.tags.is_empty())
        .map(|(d, _)| d)
        .collect();
    let present: BTreeSet<&Digest> = listing.iter().map(|(d, _)| d).collect();
    let min_age_ms = i64::try_from(selection.min_age_s)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let mut jobs: Vec<(i64, Digest)> = Vec::new();
    let mut leave = |kind: Untouched| *out.untouched.entry(kind).or_default() += 1;
    for (d, info) in listing {
        if !info.tags.is_empty() {
            continue;
        }
        let pushed = info.pushed_at_ms.unwrap_or(i64::MAX);
        if selection.since_ms.is_some_and(|since| pushed < since) {
            continue;
        }
        let old_enough = now_ms.saturating_sub(pushed) >= min_age_ms;
        if is_index(info) {
            if refs.listed.contains(d) {
                leave(Untouched::ReferencedIndex);
            } else if !indexes_left_untagged(policy) {
                leave(Untouched::UntaggedIndex);
            } else if !refs.untagged.get(d).is_some_and(|(run, copy)| {
                run.iter().any(|r| tagged.contains(r)) || copy.as_ref().is_some_and(|c| tagged.contains(c))
            }) {
                leave(Untouched::SupersededIndex);
            } else if !old_enough {
                leave(Untouched::RecentLeftover);
            } else {
                jobs.push((pushed, d.clone()));
            }
            continue;
        }
        match unlisted_kinds.get(d) {
            Some(ManifestKind::Attestation { subject: Some(s), .. }) if present.contains(s) => {
                leave(Untouched::AttachedReferrer);
            }
            Some(ManifestKind::Attestation { .. }) if !old_enough => leave(Untouched::RecentLeftover),
            Some(ManifestKind::Attestation { .. }) => jobs.push((pushed, d.clone())),
            _ => {}
        }
    }
    if refs.unreadable > 0 {
        *out.untouched.entry(Untouched::UnreadableIndex).or_default() += refs.unreadable;
    }
    jobs.sort();
    out.jobs = jobs.into_iter().map(|(_, d)| d).collect();
    out
}

#[cfg(test)]
mod tests;
