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
//! Outside the registry, a manifest is kept while anything may use it
//! ([`in_use`]): a workload running it by digest, a recent pull, or evidence
//! that could not be read; and the per-push path deletes nothing before the
//! grace period after the push is over ([`grace`]).
//!
//! An attestation that is itself a referrer (its manifest has a `subject`,
//! as BuildKit ≥ 0.32 writes them) is attached to that image: the per-push
//! path never deletes it, so the image keeps its provenance after the index
//! that listed it is gone.

use crate::engine::skip::SkipReason;
use crate::engine::usage::NAMED_PER_DIGEST;
use crate::engine::view::RepositoryView;
use crate::oci::digest::Digest;
use crate::policy::Policy;

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
            referrers: found.referrer_digests(),
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

/// Why `digest` must not be deleted because something outside the registry
/// may use it: a workload in its account runs it by digest (`in_use`), the
/// scan of those workloads failed (`in_use_unknown`: fail closed), or the
/// registry recorded a pull within the policy's window (`recently_pulled`).
/// Evidence not read yet keeps it too (`usage_unknown`): the engine reads it
/// and plans again.
pub fn in_use(view: &RepositoryView, digest: &Digest, policy: &Policy, now_ms: i64) -> Option<SkipReason> {
    if policy.keep_if_in_use {
        match view.in_use() {
            None => return Some(SkipReason::UsageUnknown),
            Some(Err(why)) => return Some(SkipReason::InUseUnknown { why: why.clone() }),
            Some(Ok(scan)) => {
                let users = scan.users(digest);
                if !users.is_empty() {
                    return Some(SkipReason::InUse {
                        by: users.iter().take(NAMED_PER_DIGEST).cloned().collect(),
                        count: users.len(),
                    });
                }
            }
        }
    }
    if let Some(within_s) = policy.keep_if_pulled_within_s {
        match view.pull_time(digest) {
            None => return Some(SkipReason::UsageUnknown),
            Some(Some(at)) if now_ms.saturating_sub(at) < seconds_ms(within_s) => {
                return Some(SkipReason::RecentlyPulled {
                    pulled_at: crate::time::rfc3339_ms(at),
                    within_s,
                });
            }
            Some(_) => {}
        }
    }
    None
}

/// Whether deletions caused by the index `idx` must wait: until
/// `grace_period_s` after its push (`Err(grace_period)` with the instant),
/// or until its push time is read (`Err(usage_unknown)`).
pub fn grace(view: &RepositoryView, idx: &Digest, policy: &Policy, now_ms: i64) -> Result<(), (SkipReason, i64)> {
    if policy.grace_period_s == 0 {
        return Ok(());
    }
    let Some(pushed) = view.pushed_at(idx) else {
        return Err((SkipReason::UsageUnknown, now_ms));
    };
    let until = pushed.saturating_add(seconds_ms(policy.grace_period_s));
    if now_ms >= until {
        return Ok(());
    }
    Err((
        SkipReason::GracePeriod {
            until: crate::time::rfc3339_ms(until),
            grace_period_s: policy.grace_period_s,
        },
        until,
    ))
}

fn seconds_ms(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / 1000).saturating_mul(1000)
}
