//! What keeps a manifest from being deleted because of what is attached to
//! it from outside any index: one rule for every deletion path (the
//! per-push remediation, a sweep's cleanup, retiring kept indexes).
//!
//! A manifest is kept when anything names it: an OCI referrer (a Notation
//! or Sigstore-bundle signature, an SBOM, an attestation with it as
//! `subject`), or a companion tag (cosign's `sha256-<hex>.sig|.att|.sbom`,
//! the referrers tag schema's `sha256-<hex>`). Deleting it would leave them
//! pointing at nothing, and ECR's lifecycle expires a deleted subject's
//! referrers. When the reader did not learn what is attached, it is kept.
//!
//! An attestation that is itself a referrer (its manifest has a `subject`,
//! as BuildKit ≥ 0.32 writes them) is attached to that image: the per-push
//! path never deletes it, so the image keeps its provenance after the index
//! that listed it is gone.

use crate::engine::skip::SkipReason;
use crate::engine::view::RepositoryView;
use crate::oci::digest::Digest;

/// Why `digest` must not be deleted because of what is attached to it.
pub fn attached(view: &RepositoryView, digest: &Digest) -> Option<SkipReason> {
    let Some(found) = view.attachments(digest) else {
        return Some(SkipReason::AttachmentsUnknown);
    };
    if let Some((companion, tag)) = found.companion_tags.first() {
        return Some(SkipReason::HasCompanion {
            companion: *companion,
            tag: tag.clone(),
        });
    }
    if !found.referrers.is_empty() {
        return Some(SkipReason::HasReferrers {
            referrers: found.referrers,
        });
    }
    None
}

/// Why an attestation must be kept as a referrer of its image: it names a
/// `subject` (the image it describes).
pub fn attached_attestation(view: &RepositoryView, digest: &Digest) -> Option<SkipReason> {
    view.subject_of(digest).map(|subject| SkipReason::AttachedReferrer {
        subject: subject.clone(),
    })
}
