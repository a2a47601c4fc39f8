//! Why something was not done: the reasons a plan gives (with their
//! details) and the one vocabulary of skip codes records carry.
//!
//! Longer than most files because it is the whole list, in one place: every
//! reason, its code and its one line of prose side by side, so a new reason
//! cannot be added without all three.

use std::fmt;

use serde::Serialize;

use crate::decide::action::Action;
use crate::oci::companion::Companion;
use crate::oci::digest::Digest;
use crate::oci::names::ImageTag;

crate::vocabulary::vocabulary! {
    /// The stable code of a skip: the `code` of a skipped record, the
    /// `reason` of a skipped action. Every [`SkipReason`] has its own, and
    /// the handling itself adds a few.
    pub enum SkipCode {
        /// The classification was made for another manifest (a caller bug).
        Inconsistent = "inconsistent",
        /// The pushed manifest is a single image manifest: nothing to remediate.
        NotAnIndex = "not_an_index",
        /// The index has no tag to remediate.
        Untagged = "untagged",
        /// The tag has the shape of a keep tag this policy writes.
        OwnKeepTag = "own_keep_tag",
        /// The index is no longer in the repository.
        IndexGone = "index_gone",
        /// The pushed tag no longer points at the index (a newer push moved it).
        Superseded = "superseded",
        /// The index has no runnable manifest.
        NoRunnable = "no_runnable",
        /// The runnable manifest's platform is unknown, so no tag is derived from it.
        UnknownPlatform = "unknown_platform",
        /// The template gave no valid tag.
        InvalidDerivedTag = "invalid_derived_tag",
        /// A keep tag is configured but cannot be rendered for this tag (e.g. it
        /// would be longer than 128 characters). The keep tag is a gate: without
        /// it the pushed tag is not moved and nothing is deleted.
        KeepTagInvalid = "keep_tag_invalid",
        /// The keep tag is held by something this service could not have
        /// written it on (not an index): it is never taken, so the pushed tag is
        /// not moved and nothing is deleted.
        KeepTagTaken = "keep_tag_taken",
        /// The derived tag is held by something this service could not have
        /// written it on (an index, or a manifest that is not runnable): never taken.
        DerivedTagTaken = "derived_tag_taken",
        /// Two runnable manifests would get the same derived tag.
        DerivedTagCollision = "derived_tag_collision",
        /// The derived tag is the pushed tag or its keep tag.
        DerivedTagClash = "derived_tag_clash",
        /// A manifest the action needs is not in the repository.
        ChildMissing = "child_missing",
        /// No attestation entry to strip.
        NothingToStrip = "nothing_to_strip",
        /// Stripping would leave an empty index.
        StripWouldEmpty = "strip_would_empty",
        /// Building the stripped index failed.
        StripFailed = "strip_failed",
        /// Still tagged after the plan, so not deleted.
        StillTagged = "still_tagged",
        /// Still referenced by an index that remains, so not deleted.
        StillReferenced = "still_referenced",
        /// Also listed in the index as a non-attestation entry.
        ProtectedEntry = "protected_entry",
        /// Not known to be in the repository.
        NotInView = "not_in_view",
        /// More deletions than the policy's cap.
        MaxDeletes = "max_deletes",
        /// Sweep cleanup is not enabled by this policy (it needs `delete_orphans`,
        /// and a mode that changes the registry).
        CleanupNotEnabled = "cleanup_not_enabled",
        /// Under this policy a remediated index keeps a tag (tag mode, or a keep
        /// tag): an untagged index was not left by a remediation, so the sweep
        /// does not delete it.
        IndexesKept = "indexes_kept",
        /// Pushed too recently: it may belong to a push still in progress (its
        /// index not yet stored), so it is not an orphan yet.
        TooRecent = "too_recent",
        /// An untagged index none of whose runnable images is tagged: a push that
        /// a later push superseded, not a remediation's leftover (lifecycle
        /// policies expire those).
        NotRemediated = "not_remediated",
        /// An OCI referrer of an image still in the repository: attached, not orphaned.
        AttachedReferrer = "attached_referrer",
        /// Not an attestation manifest: a sweep deletes nothing else on its own.
        NotAnAttestation = "not_an_attestation",
        /// The referrer copy of an attestation could not be built.
        ReferrerCopyFailed = "referrer_copy_failed",
        /// `provenance = referrers` and an attestation of a kept image has no
        /// referrer copy: nothing is deleted, so the index keeps it reachable.
        ProvenanceUncovered = "provenance_uncovered",
        /// Something is attached to it by a companion tag (a cosign signature,
        /// attestation or SBOM, or a referrers tag-schema index): never deleted.
        HasCompanion = "has_companion",
        /// OCI referrers (signatures, SBOMs, attestations) name it as their
        /// `subject`: never deleted.
        HasReferrers = "has_referrers",
        /// Whether anything is attached to it was not read: kept.
        AttachmentsUnknown = "attachments_unknown",
        /// The registry recorded a pull of it within `keep_if_pulled_within`: kept.
        RecentlyPulled = "recently_pulled",
        /// A workload in its account uses it by digest (ECS, Lambda): kept.
        InUse = "in_use",
        /// The scan of the account's workloads failed or was not permitted:
        /// nothing is deleted (fail closed).
        InUseUnknown = "in_use_unknown",
        /// Whether it is pulled or used (its pull time, the workload scan) was
        /// not read yet: kept.
        UsageUnknown = "usage_unknown",
        /// The deletion waits for the grace period after the push; a follow-up
        /// runs every gate again then.
        GracePeriod = "grace_period",
        /// The pushed index is signed and the image promote would move its tag
        /// to is not: the tag stays, derived tags are added (tag mode).
        IndexSigned = "index_signed",
        /// What signs the index or the image its tag would move to could not
        /// be read: the tag is not moved.
        SignaturesUnknown = "signatures_unknown",
        /// A sweep found the pushed index signed after its tag moved to the
        /// image, which is not: verification by tag fails; nothing changed.
        SignedAfterPromotion = "signed_after_promotion",
        /// The referrer copies were written but ECR did not list them on
        /// every try: their attestations are kept and a follow-up retries
        /// the deletions (the record is `incomplete`).
        ReferrersUnverified = "referrers_unverified",
        /// The tag is a companion tag (a cosign signature, attestation or SBOM
        /// of another manifest, or the referrers tag-schema index): not a pushed
        /// image's tag, so never remediated.
        CompanionTag = "companion_tag",
        /// The tag exists, but what holds it could not be read (an archived
        /// image cannot be pulled): it is never taken.
        TagUnreadable = "tag_unreadable",
        /// Retiring kept indexes is not possible under this policy.
        RetireNotEnabled = "retire_not_enabled",
        /// Not an index kept under a keep tag (it has no tag at all).
        NotKept = "not_kept",
        /// Tagged only with tags shaped like keep tags, but nothing shows this
        /// service kept it (the pushed tag does not point at its image or
        /// stripped copy): a user's own index, never retired.
        NotKeptByUs = "not_kept_by_us",
        /// Undo: the tag no longer names what a remediation of the kept index made.
        MovedOn = "moved_on",
        /// Undo: no index is kept under any keep tag of the tag.
        NoKeptIndex = "no_kept_index",
        /// Undo: several kept indexes list what the tag names: which one to put back is not known.
        SeveralKeptIndexes = "several_kept_indexes",
        /// Undo: the repository's policy would remediate the tag again at once.
        WouldRemediateAgain = "would_remediate_again",
        /// Freed by retiring its index, but `delete_orphans` is off: left in place.
        OrphansKept = "orphans_kept",
        /// The plan's own actions could not be replayed on the view (a bug or a racing change).
        Conflict = "conflict",
        /// The registry could not serve the image, or it has a tag the service cannot read.
        Unreadable = "unreadable",
        /// The registry served a document that is not a manifest the service understands.
        InvalidManifest = "invalid_manifest",
        /// The repository's `ecr-remediator:mode` tag (or its absence, where the rule needs an opt-in) leaves it alone.
        OptedOut = "opted_out",
        /// The repository's `ecr-remediator:mode` tag has a value the service does not know.
        InvalidRepositoryTag = "invalid_repository_tag",
        /// The message could not be understood.
        MalformedEvent = "malformed_event",
        /// A request named an account the deployment does not list.
        AccountNotListed = "account_not_listed",
        /// The event came from another region's registry than the one this
        /// deployment acts in.
        OtherRegion = "other_region",
        /// The image is in another account's registry and this deployment
        /// has no access to it (no member role): nothing read or written.
        OtherAccount = "other_account",
        /// A sweep was requested of a deployment with no queue for its requests.
        SweepWithoutQueue = "sweep_without_queue",
    }
}

/// Why something was not done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipReason {
    /// The classification was made for another manifest (a caller bug).
    Inconsistent,
    /// The pushed manifest is a single image manifest: nothing to remediate.
    NotAnIndex,
    /// The index has no tag to remediate.
    Untagged,
    /// The tag has the shape of a keep tag this policy writes.
    OwnKeepTag {
        /// The tag.
        tag: ImageTag,
    },
    /// The index is no longer in the repository.
    IndexGone,
    /// The pushed tag no longer points at the index (a newer push moved it).
    Superseded {
        /// Where the tag points now (absent: the tag was deleted).
        #[serde(skip_serializing_if = "Option::is_none")]
        now: Option<Digest>,
    },
    /// The index has no runnable manifest.
    NoRunnable,
    /// The runnable manifest's platform is unknown, so no tag is derived from it.
    UnknownPlatform,
    /// The template gave no valid tag.
    InvalidDerivedTag {
        /// Why.
        error: String,
    },
    /// A keep tag is configured but cannot be rendered for this tag (e.g. it
    /// would be longer than 128 characters). The keep tag is a gate: without
    /// it the pushed tag is not moved and nothing is deleted.
    KeepTagInvalid {
        /// Why.
        error: String,
    },
    /// The keep tag is held by something this service could not have
    /// written it on (not an index): it is never taken, so the pushed tag is
    /// not moved and nothing is deleted.
    KeepTagTaken {
        /// The keep tag.
        tag: ImageTag,
        /// What holds it.
        holder: Digest,
    },
    /// The derived tag is held by something this service could not have
    /// written it on (an index, or a manifest that is not runnable): never taken.
    DerivedTagTaken {
        /// The tag.
        tag: ImageTag,
        /// What holds it.
        holder: Digest,
    },
    /// Two runnable manifests would get the same derived tag.
    DerivedTagCollision {
        /// The tag.
        tag: ImageTag,
    },
    /// The derived tag is the pushed tag or its keep tag.
    DerivedTagClash {
        /// The tag.
        tag: ImageTag,
    },
    /// A manifest the action needs is not in the repository.
    ChildMissing,
    /// No attestation entry to strip.
    NothingToStrip,
    /// Stripping would leave an empty index.
    StripWouldEmpty,
    /// Building the stripped index failed.
    StripFailed {
        /// Why.
        error: String,
    },
    /// Still tagged after the plan, so not deleted.
    StillTagged {
        /// Its tags.
        tags: Vec<ImageTag>,
    },
    /// Still referenced by an index that remains, so not deleted.
    StillReferenced {
        /// The indexes.
        by: Vec<Digest>,
    },
    /// Also listed in the index as a non-attestation entry.
    ProtectedEntry,
    /// Not known to be in the repository.
    NotInView,
    /// More deletions than the policy's cap.
    MaxDeletes {
        /// Deletions the plan wanted.
        planned: usize,
        /// The cap.
        max: u32,
    },
    /// Sweep cleanup is not enabled by this policy (it needs `delete_orphans`,
    /// and a mode that changes the registry).
    CleanupNotEnabled,
    /// Under this policy a remediated index keeps a tag (tag mode, or a keep
    /// tag): an untagged index was not left by a remediation, so the sweep
    /// does not delete it.
    IndexesKept,
    /// Pushed too recently: it may belong to a push still in progress (its
    /// index not yet stored), so it is not an orphan yet.
    TooRecent {
        /// Seconds since it was pushed (absent: the registry did not say).
        #[serde(skip_serializing_if = "Option::is_none")]
        age_s: Option<i64>,
        /// The minimum age for a cleanup.
        min_age_s: u64,
    },
    /// An untagged index none of whose runnable images is tagged: a push that
    /// a later push superseded, not a remediation's leftover (lifecycle
    /// policies expire those).
    NotRemediated,
    /// An OCI referrer of an image still in the repository: attached, not orphaned.
    AttachedReferrer {
        /// The image it refers to.
        subject: Digest,
    },
    /// Not an attestation manifest: a sweep deletes nothing else on its own.
    NotAnAttestation {
        /// What it is (`image`, `signature`, `artifact`).
        kind: String,
    },
    /// The referrer copy of an attestation could not be built.
    ReferrerCopyFailed {
        /// Why.
        error: String,
    },
    /// `provenance = referrers` and an attestation of a kept image has no
    /// referrer copy: nothing is deleted, so the index keeps it reachable.
    ProvenanceUncovered {
        /// Which attestation and why.
        why: String,
    },
    /// Something is attached to it by a companion tag (a cosign signature,
    /// attestation or SBOM, or a referrers tag-schema index): never deleted.
    HasCompanion {
        /// What the tag attaches.
        companion: Companion,
        /// The tag.
        tag: ImageTag,
    },
    /// OCI referrers (signatures, SBOMs, attestations) name it as their
    /// `subject`: never deleted.
    HasReferrers {
        /// What `ListImageReferrers` listed.
        referrers: Vec<Digest>,
    },
    /// Whether anything is attached to it was not read: kept.
    AttachmentsUnknown,
    /// The registry recorded a pull of it within `keep_if_pulled_within`: kept.
    RecentlyPulled {
        /// When (RFC 3339), as `lastRecordedPullTime` says.
        pulled_at: String,
        /// The window, in seconds.
        within_s: u64,
    },
    /// A workload in its account uses it by digest: kept.
    InUse {
        /// What uses it (at most [`crate::decide::usage::NAMED_PER_DIGEST`] named).
        by: Vec<crate::decide::usage::Workload>,
        /// How many use it in all.
        count: usize,
    },
    /// The scan of the account's workloads failed or was not permitted:
    /// nothing is deleted (fail closed).
    InUseUnknown {
        /// Why.
        why: String,
    },
    /// Whether it is pulled or used was not read: kept.
    UsageUnknown,
    /// The deletion waits for the grace period after the push.
    GracePeriod {
        /// When the deletion will be attempted (RFC 3339).
        until: String,
        /// The grace period, in seconds.
        grace_period_s: u64,
    },
    /// The pushed index is signed, the image promote would move its tag to
    /// is not: the pushed tag stays on the index.
    IndexSigned {
        /// What signs the index.
        signatures: Vec<String>,
    },
    /// What signs the index or the image was not read yet: nothing moves.
    SignaturesUnknown,
    /// The tag is a companion tag (a cosign signature, attestation or SBOM
    /// of another manifest, or the referrers tag-schema index): not a pushed
    /// image's tag, so never remediated.
    CompanionTag {
        /// The tag.
        tag: ImageTag,
        /// What it is.
        companion: Companion,
        /// The manifest it attaches to.
        subject: Digest,
    },
    /// The tag exists, but what holds it could not be read (an archived
    /// image cannot be pulled): it is never taken.
    TagUnreadable {
        /// The tag.
        tag: ImageTag,
        /// What the registry said.
        why: String,
    },
    /// Retiring kept indexes is not possible under this policy.
    RetireNotEnabled {
        /// Why.
        why: String,
    },
    /// Not an index kept under a keep tag (it has no tag at all).
    NotKept,
    /// Its tags have the shape of keep tags, but no evidence shows a
    /// remediation kept it: the tag each would stand for does not point at
    /// one of its runnable images (a promotion) or its stripped copy (a strip).
    NotKeptByUs {
        /// Its keep-shaped tags.
        tags: Vec<ImageTag>,
    },
    /// Freed by retiring its index, but `delete_orphans` is off: left in place.
    OrphansKept,
    /// Undo: the tag has moved on since the promotion (it names something
    /// no remediation of the kept index made): it is not moved back.
    MovedOn {
        /// The tag.
        tag: ImageTag,
        /// What it names now (`None`: it does not exist).
        now: Option<Digest>,
    },
    /// Undo: none of the keep tags the tag could have been kept under holds an index.
    NoKeptIndex {
        /// The keep tags looked at.
        tried: Vec<ImageTag>,
    },
    /// Undo: more than one kept index lists what the tag names (a rebuild
    /// kept under two templates): which one was the tag's is not known.
    SeveralKeptIndexes {
        /// Their keep tags.
        tags: Vec<ImageTag>,
    },
    /// Undo: the repository's policy (its mode, after its
    /// `ecr-remediator:mode` tag) would move the tag off the index again on
    /// the push event the undo itself causes.
    WouldRemediateAgain {
        /// The mode that would.
        mode: crate::policy::Mode,
    },
    /// The plan's own actions could not be replayed on the view (a bug or a racing change).
    Conflict {
        /// Why.
        error: String,
    },
}

impl SkipReason {
    /// The reason's code (what the record's `reason` field says).
    pub fn code(&self) -> SkipCode {
        match self {
            SkipReason::Inconsistent => SkipCode::Inconsistent,
            SkipReason::NotAnIndex => SkipCode::NotAnIndex,
            SkipReason::Untagged => SkipCode::Untagged,
            SkipReason::OwnKeepTag { .. } => SkipCode::OwnKeepTag,
            SkipReason::IndexGone => SkipCode::IndexGone,
            SkipReason::Superseded { .. } => SkipCode::Superseded,
            SkipReason::NoRunnable => SkipCode::NoRunnable,
            SkipReason::UnknownPlatform => SkipCode::UnknownPlatform,
            SkipReason::InvalidDerivedTag { .. } => SkipCode::InvalidDerivedTag,
            SkipReason::KeepTagInvalid { .. } => SkipCode::KeepTagInvalid,
            SkipReason::KeepTagTaken { .. } => SkipCode::KeepTagTaken,
            SkipReason::DerivedTagTaken { .. } => SkipCode::DerivedTagTaken,
            SkipReason::DerivedTagCollision { .. } => SkipCode::DerivedTagCollision,
            SkipReason::DerivedTagClash { .. } => SkipCode::DerivedTagClash,
            SkipReason::ChildMissing => SkipCode::ChildMissing,
            SkipReason::NothingToStrip => SkipCode::NothingToStrip,
            SkipReason::StripWouldEmpty => SkipCode::StripWouldEmpty,
            SkipReason::StripFailed { .. } => SkipCode::StripFailed,
            SkipReason::StillTagged { .. } => SkipCode::StillTagged,
            SkipReason::StillReferenced { .. } => SkipCode::StillReferenced,
            SkipReason::ProtectedEntry => SkipCode::ProtectedEntry,
            SkipReason::NotInView => SkipCode::NotInView,
            SkipReason::MaxDeletes { .. } => SkipCode::MaxDeletes,
            SkipReason::CleanupNotEnabled => SkipCode::CleanupNotEnabled,
            SkipReason::IndexesKept => SkipCode::IndexesKept,
            SkipReason::TooRecent { .. } => SkipCode::TooRecent,
            SkipReason::NotRemediated => SkipCode::NotRemediated,
            SkipReason::AttachedReferrer { .. } => SkipCode::AttachedReferrer,
            SkipReason::NotAnAttestation { .. } => SkipCode::NotAnAttestation,
            SkipReason::ReferrerCopyFailed { .. } => SkipCode::ReferrerCopyFailed,
            SkipReason::ProvenanceUncovered { .. } => SkipCode::ProvenanceUncovered,
            SkipReason::HasCompanion { .. } => SkipCode::HasCompanion,
            SkipReason::HasReferrers { .. } => SkipCode::HasReferrers,
            SkipReason::AttachmentsUnknown => SkipCode::AttachmentsUnknown,
            SkipReason::RecentlyPulled { .. } => SkipCode::RecentlyPulled,
            SkipReason::InUse { .. } => SkipCode::InUse,
            SkipReason::InUseUnknown { .. } => SkipCode::InUseUnknown,
            SkipReason::UsageUnknown => SkipCode::UsageUnknown,
            SkipReason::GracePeriod { .. } => SkipCode::GracePeriod,
            SkipReason::IndexSigned { .. } => SkipCode::IndexSigned,
            SkipReason::SignaturesUnknown => SkipCode::SignaturesUnknown,
            SkipReason::CompanionTag { .. } => SkipCode::CompanionTag,
            SkipReason::TagUnreadable { .. } => SkipCode::TagUnreadable,
            SkipReason::RetireNotEnabled { .. } => SkipCode::RetireNotEnabled,
            SkipReason::NotKept => SkipCode::NotKept,
            SkipReason::NotKeptByUs { .. } => SkipCode::NotKeptByUs,
            SkipReason::OrphansKept => SkipCode::OrphansKept,
            SkipReason::MovedOn { .. } => SkipCode::MovedOn,
            SkipReason::NoKeptIndex { .. } => SkipCode::NoKeptIndex,
            SkipReason::SeveralKeptIndexes { .. } => SkipCode::SeveralKeptIndexes,
            SkipReason::WouldRemediateAgain { .. } => SkipCode::WouldRemediateAgain,
            SkipReason::Conflict { .. } => SkipCode::Conflict,
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Inconsistent => write!(f, "classification does not belong to this manifest"),
            SkipReason::NotAnIndex => write!(f, "a single image manifest was pushed; nothing to remediate"),
            SkipReason::Untagged => write!(f, "the index has no tag"),
            SkipReason::OwnKeepTag { tag } => write!(f, "{tag} is a keep tag written by ecr-remediator"),
            SkipReason::IndexGone => write!(f, "the index is no longer in the repository"),
            SkipReason::Superseded { now: Some(d) } => write!(f, "superseded: the tag now points to {d}"),
            SkipReason::Superseded { now: None } => write!(f, "superseded: the tag no longer exists"),
            SkipReason::NoRunnable => write!(f, "the index has no runnable manifest"),
            SkipReason::UnknownPlatform => write!(f, "platform unknown; no tag is derived from it"),
            SkipReason::InvalidDerivedTag { error } => write!(f, "no valid derived tag: {error}"),
            SkipReason::KeepTagInvalid { error } => {
                write!(
                    f,
                    "the keep tag cannot be written ({error}); the pushed tag is not moved"
                )
            }
            SkipReason::KeepTagTaken { tag, holder } => write!(
                f,
                "keep tag {tag} is held by {holder}, which is not an index; it is never taken, so the pushed tag is not moved"
            ),
            SkipReason::DerivedTagTaken { tag, holder } => write!(
                f,
                "{tag} is held by {holder}, which is not a runnable image this service could have tagged; never taken"
            ),
            SkipReason::DerivedTagCollision { tag } => {
                write!(f, "several runnable manifests would get the tag {tag}")
            }
            SkipReason::DerivedTagClash { tag } => {
                write!(f, "derived tag {tag} would clash with the pushed or keep tag")
            }
            SkipReason::ChildMissing => write!(f, "manifest not in the repository"),
            SkipReason::NothingToStrip => write!(f, "the index has no attestation to strip"),
            SkipReason::StripWouldEmpty => write!(f, "stripping would leave an empty index"),
            SkipReason::StripFailed { error } => write!(f, "cannot build the stripped index: {error}"),
            SkipReason::CleanupNotEnabled => {
                write!(f, "cleanup needs delete_orphans and a mode other than observe")
            }
            SkipReason::IndexesKept => write!(
                f,
                "this policy keeps remediated indexes tagged (tag mode or a keep tag), so an untagged index is not a leftover"
            ),
            SkipReason::TooRecent { age_s, min_age_s } => match age_s {
                Some(age) => write!(
                    f,
                    "pushed {age} s ago, under the {min_age_s} s minimum age: possibly a push in progress"
                ),
                None => write!(
                    f,
                    "push time unknown: treated as newer than the {min_age_s} s minimum age"
                ),
            },
            SkipReason::NotRemediated => write!(
                f,
                "no runnable image of this untagged index is tagged: a superseded push, left to lifecycle policies"
            ),
            SkipReason::AttachedReferrer { subject } => {
                write!(f, "a referrer of {subject}, which is in the repository: not an orphan")
            }
            SkipReason::NotAnAttestation { kind } => write!(f, "a {kind} manifest, not an attestation; never deleted"),
            SkipReason::StillTagged { tags } => {
                let t: Vec<&str> = tags.iter().map(ImageTag::as_str).collect();
                write!(f, "still tagged ({})", t.join(", "))
            }
            SkipReason::StillReferenced { by } => {
                let b: Vec<String> = by.iter().map(ToString::to_string).collect();
                write!(f, "still referenced by {}", b.join(", "))
            }
            SkipReason::ProtectedEntry => write!(f, "also listed as a non-attestation entry"),
            SkipReason::NotInView => write!(f, "not known to be in the repository"),
            SkipReason::MaxDeletes { planned, max } => {
                write!(f, "{planned} deletions planned, over max_deletes = {max}")
            }
            SkipReason::ReferrerCopyFailed { error } => write!(f, "cannot build the referrer copy: {error}"),
            SkipReason::ProvenanceUncovered { why } => write!(f, "nothing deleted: {why}"),
            SkipReason::HasCompanion { companion, tag } => {
                write!(f, "has a {companion} (tag {tag}); never deleted")
            }
            SkipReason::HasReferrers { referrers } => {
                let r: Vec<String> = referrers.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "the subject of {} referrer(s) ({}); never deleted",
                    r.len(),
                    r.join(", ")
                )
            }
            SkipReason::AttachmentsUnknown => {
                write!(
                    f,
                    "whether anything refers to it (referrers, companion tags) was not read; kept"
                )
            }
            SkipReason::RecentlyPulled { pulled_at, within_s } => {
                write!(
                    f,
                    "pulled at {pulled_at}, within keep_if_pulled_within ({within_s} s): something may still use it; kept"
                )
            }
            SkipReason::InUse { by, count } => {
                let named: Vec<String> = by.iter().map(ToString::to_string).collect();
                let more = count.saturating_sub(by.len());
                let more = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                write!(f, "in use by {}{more}; kept", named.join(", "))
            }
            SkipReason::InUseUnknown { why } => {
                write!(
                    f,
                    "what runs in the account could not be read ({why}); nothing is deleted"
                )
            }
            SkipReason::UsageUnknown => write!(f, "whether anything pulls or runs it was not read; kept"),
            SkipReason::GracePeriod { until, grace_period_s } => {
                write!(
                    f,
                    "deletion deferred until {until} ({grace_period_s} s after the tag arrived), when every check runs again"
                )
            }
            SkipReason::IndexSigned { signatures } => {
                write!(
                    f,
                    "the index is signed ({}) and the image is not: moving the tag would break verification by tag; \
                     fell back to tag mode (sign the image too, e.g. cosign sign --recursive, or set promote_signed_index)",
                    signatures.join(", ")
                )
            }
            SkipReason::SignaturesUnknown => write!(
                f,
                "what signs the index or the image was not read: the tag is not moved"
            ),
            SkipReason::CompanionTag {
                tag,
                companion,
                subject,
            } => {
                write!(
                    f,
                    "{tag} is the {companion} of {subject}, not a pushed image's tag; left alone"
                )
            }
            SkipReason::TagUnreadable { tag, why } => {
                write!(f, "what holds {tag} cannot be read ({why}); the tag is never taken")
            }
            SkipReason::RetireNotEnabled { why } => write!(f, "kept indexes are not retired here: {why}"),
            SkipReason::NotKept => write!(f, "untagged: not an index kept under a keep tag"),
            SkipReason::NotKeptByUs { tags } => {
                let t: Vec<&str> = tags.iter().map(ImageTag::as_str).collect();
                write!(
                    f,
                    "tagged {} like a keep tag, but no remediation kept it (the tag it would stand for does not \
                     point at its image or stripped copy): not retired",
                    t.join(", ")
                )
            }
            SkipReason::OrphansKept => {
                write!(
                    f,
                    "no index lists it any more, but delete_orphans is off: left in place"
                )
            }
            SkipReason::MovedOn { tag, now: Some(d) } => write!(
                f,
                "{tag} has moved on since the promotion: it names {d}, which no remediation of the kept index made; \
                 not moved back"
            ),
            SkipReason::MovedOn { tag, now: None } => write!(f, "{tag} does not exist: nothing to put back"),
            SkipReason::NoKeptIndex { tried } => {
                let t: Vec<&str> = tried.iter().map(ImageTag::as_str).collect();
                write!(f, "no index is kept under {}: nothing to put back", t.join(" or "))
            }
            SkipReason::SeveralKeptIndexes { tags } => {
                let t: Vec<&str> = tags.iter().map(ImageTag::as_str).collect();
                write!(
                    f,
                    "the indexes kept under {} all list what the tag names: which one it was is not known; put the \
                     tag back by hand",
                    t.join(" and ")
                )
            }
            SkipReason::WouldRemediateAgain { mode } => write!(
                f,
                "this repository's policy ({mode} mode) would move the tag off the index again: tag the repository \
                 ecr-remediator:mode=tag (or off) first"
            ),
            SkipReason::Conflict { error } => write!(f, "state conflict: {error}"),
        }
    }
}

/// Something not done, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The action that would have run, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// The manifest concerned, when the skip is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// Why.
    #[serde(flatten)]
    pub reason: SkipReason,
}

/// An error and its causes on one line, for audit reasons.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
