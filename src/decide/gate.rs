//! The deletion gate: the one check every deletion passes, on every path
//! (the per-push remediation and its follow-up, a sweep's cleanup, retiring
//! kept indexes), at planning and again right before `BatchDeleteImage`.
//!
//! [`keeps`] takes one candidate and the evidence gathered for it (a
//! [`RepositoryView`], the policy, now) and answers delete (`None`) or keep
//! with the reason. A manifest is kept while any of these holds:
//!
//! - it is not known to be in the repository (`not_in_view`);
//! - it carries a tag other than the ones its deletion removes on purpose
//!   (`still_tagged`);
//! - an index in the repository lists it (`still_referenced`);
//! - it is an attestation that is an OCI referrer of an image (its
//!   `subject`, as BuildKit ≥ 0.32 writes them) still in the repository: it
//!   is that image's provenance (`attached_referrer`);
//! - something is attached to it: an OCI referrer **of any status** (a
//!   Notation or Sigstore-bundle signature, an SBOM, an attestation naming
//!   it as `subject`, archived or active) or a companion tag (cosign's
//!   `sha256-<hex>.sig|.att|.sbom`, the referrers tag schema's
//!   `sha256-<hex>`) (`has_referrers`, `has_companion`);
//! - a workload of its account uses it by digest: an ECS service revision,
//!   a task, any ACTIVE task definition or one a deployment still
//!   references, a Lambda function version (`in_use`);
//! - the registry recorded a pull within `keep_if_pulled_within`
//!   (`recently_pulled`).
//!
//! Evidence that could not be read keeps the manifest and says what was
//! missing (`attachments_unknown`, `usage_unknown`, `in_use_unknown`): the
//! gate fails closed. Separately, [`grace`] defers every deletion a tag's
//! remediation causes until the grace period after the tag **arrived** (the
//! push event's time, or the first handling's when no event says it), never
//! from `imagePushedAt`, which a re-tag does not reset.
//!
//! The slow evidence (the workload scan) is read first; the fast evidence
//! (tags, companion tags, referrers, pull time) again right before the
//! deletion call, and the gate runs again on it (`engine::apply`): the
//! window between the last check and the deletion is one call. The dry run
//! runs the same gate on the same reads.

use crate::decide::action::{Action, DeleteRole};
use crate::decide::skip::SkipReason;
use crate::decide::usage::NAMED_PER_DIGEST;
use crate::decide::view::RepositoryView;
use crate::oci::digest::Digest;
use crate::oci::names::ImageTag;
use crate::policy::Policy;

/// What the gate looks at besides the view: the policy, now, and when the
/// tag whose remediation causes the deletions arrived.
#[derive(Debug, Clone, Copy)]
pub struct Gates<'a> {
    /// The repository's policy.
    pub policy: &'a Policy,
    /// Now, in milliseconds since the epoch.
    pub now_ms: i64,
    /// When the tag arrived (ms since the epoch): the push event's time, or
    /// the first handling's. `None` on paths no tag starts (cleanup,
    /// retirement), which have their own minimum age.
    pub tag_arrived_ms: Option<i64>,
}

/// One manifest a plan would delete, as the gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The manifest.
    pub digest: &'a Digest,
    /// Tags its deletion removes on purpose (a retired index's keep tags);
    /// any other tag keeps it.
    pub removes_tags: &'a [ImageTag],
    /// An index whose listing of it does not count (the index itself, whose
    /// own entries are not references to it).
    pub listed_by_except: Option<&'a Digest>,
    /// What it is.
    pub role: Role,
}

/// What a candidate is, as far as its `subject` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An index, or anything whose `subject` does not matter here.
    Manifest,
    /// An attestation the remediated index listed: when it names a
    /// `subject` (BuildKit ≥ 0.32), it is that image's provenance and stays.
    Attestation,
    /// An attestation no index lists any more (a sweep's leftover): it stays
    /// while its `subject` is in the repository.
    Orphan,
}

impl<'a> Candidate<'a> {
    /// A candidate with no tag to remove and no exception.
    pub fn of(digest: &'a Digest) -> Self {
        Candidate {
            digest,
            removes_tags: &[],
            listed_by_except: None,
            role: Role::Manifest,
        }
    }
}

/// The gate: `None` when `candidate` may be deleted on this evidence, else
/// why it is kept. Pure; the same for every path and for the dry run.
pub fn keeps(view: &RepositoryView, candidate: &Candidate<'_>, gates: Gates<'_>) -> Option<SkipReason> {
    let d = candidate.digest;
    if let Some(subject) = view.subject_of(d) {
        let kept = match candidate.role {
            Role::Manifest => false,
            Role::Attestation => true,
            Role::Orphan => view.contains(subject),
        };
        if kept {
            return Some(SkipReason::AttachedReferrer {
                subject: subject.clone(),
            });
        }
    }
    let Some(tags) = view.tags_of(d) else {
        return Some(SkipReason::NotInView);
    };
    let kept_tags: Vec<ImageTag> = tags
        .iter()
        .filter(|t| !candidate.removes_tags.contains(t))
        .cloned()
        .collect();
    if !kept_tags.is_empty() {
        return Some(SkipReason::StillTagged { tags: kept_tags });
    }
    let by = view.referrers(d, candidate.listed_by_except);
    if !by.is_empty() {
        return Some(SkipReason::StillReferenced { by });
    }
    if let Some(reason) = attached(view, d) {
        return Some(reason);
    }
    in_use(view, d, gates.policy, gates.now_ms)
}

/// The candidate a planned deletion stands for.
pub fn candidate_of(action: &Action) -> Option<Candidate<'_>> {
    let Action::Delete {
        digest,
        role,
        removes_tags,
    } = action
    else {
        return None;
    };
    Some(match role {
        DeleteRole::Index | DeleteRole::KeptIndex => Candidate {
            digest,
            removes_tags,
            listed_by_except: Some(digest),
            role: Role::Manifest,
        },
        // Whatever path planned it, an attestation stays while the image it
        // names as `subject` is in the repository.
        DeleteRole::Attestation => Candidate {
            digest,
            removes_tags,
            listed_by_except: None,
            role: Role::Orphan,
        },
    })
}

/// The gate over a plan's deletions in the order they run (an index before
/// the attestations it frees), on `view` as the evidence read right before
/// deleting leaves it: for each, `None` (delete) or why it is kept. A kept
/// index keeps listing its attestations, so they are kept too.
/// `already_kept` holds, per deletion, a reason found before the gate (a
/// tag the registry reported that cannot be read): it is kept, as is what
/// it lists.
pub fn sift(
    view: &RepositoryView,
    deletes: &[&Action],
    gates: Gates<'_>,
    already_kept: &[Option<SkipReason>],
) -> Vec<Option<SkipReason>> {
    let mut after = view.clone();
    deletes
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if let Some(Some(reason)) = already_kept.get(i) {
                return Some(reason.clone());
            }
            let Some(candidate) = candidate_of(a) else {
                return Some(SkipReason::Conflict {
                    error: format!("not a deletion: {}", a.kind()),
                });
            };
            if let Some(reason) = keeps(&after, &candidate, gates) {
                return Some(reason);
            }
            match after.apply(a) {
                Ok(()) => None,
                Err(e) => Some(SkipReason::Conflict { error: e.to_string() }),
            }
        })
        .collect()
}

/// Why `digest` must not be deleted because of what is attached to it
/// (referrers of any status, companion tags; unknown keeps).
fn attached(view: &RepositoryView, digest: &Digest) -> Option<SkipReason> {
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

/// Why `digest` must not be deleted because something outside the registry
/// may use it: a workload in its account runs it by digest (`in_use`), the
/// scan of those workloads failed (`in_use_unknown`: fail closed), or the
/// registry recorded a pull within the policy's window (`recently_pulled`).
/// Evidence not read yet keeps it too (`usage_unknown`): the engine reads it
/// and plans again.
fn in_use(view: &RepositoryView, digest: &Digest, policy: &Policy, now_ms: i64) -> Option<SkipReason> {
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

/// Whether the deletions the remediation of `idx` causes must wait: until
/// `grace_period_s` after its tag arrived (or after its push, when that is
/// later; `Err(grace_period)` with the instant), or until its push time is
/// read (`Err(usage_unknown)`).
pub fn grace(view: &RepositoryView, idx: &Digest, gates: Gates<'_>) -> Result<(), (SkipReason, i64)> {
    let policy = gates.policy;
    if policy.grace_period_s == 0 {
        return Ok(());
    }
    let Some(pushed) = view.pushed_at(idx) else {
        return Err((SkipReason::UsageUnknown, gates.now_ms));
    };
    let since = gates.tag_arrived_ms.map_or(pushed, |t| t.max(pushed));
    let until = since.saturating_add(seconds_ms(policy.grace_period_s));
    if gates.now_ms >= until {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::signature::Referrer;

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn open_policy() -> Policy {
        Policy {
            keep_if_in_use: false,
            keep_if_pulled_within_s: None,
            grace_period_s: 900,
            ..Policy::default()
        }
    }

    #[test]
    fn unread_attachments_keep_and_an_archived_referrer_keeps_like_an_active_one() {
        let policy = open_policy();
        let gates = Gates {
            policy: &policy,
            now_ms: 0,
            tag_arrived_ms: None,
        };
        let d = digest('a');
        let mut view = RepositoryView::new();
        view.insert_image(d.clone(), []).unwrap();
        assert_eq!(
            keeps(&view, &Candidate::of(&d), gates),
            Some(SkipReason::AttachmentsUnknown)
        );
        view.set_companion_tags(&d, Vec::new());
        view.set_listed_referrers(&d, Vec::new());
        assert_eq!(keeps(&view, &Candidate::of(&d), gates), None);
        // What ListImageReferrers lists under artifactStatus ANY: the
        // adapter makes no difference between an archived and an active one.
        view.set_listed_referrers(
            &d,
            vec![Referrer::new(
                digest('b'),
                Some("application/vnd.cncf.notary.signature"),
            )],
        );
        assert!(matches!(
            keeps(&view, &Candidate::of(&d), gates),
            Some(SkipReason::HasReferrers { .. })
        ));
    }

    #[test]
    fn only_the_tags_a_deletion_removes_on_purpose_do_not_keep() {
        let policy = open_policy();
        let gates = Gates {
            policy: &policy,
            now_ms: 0,
            tag_arrived_ms: None,
        };
        let d = digest('a');
        let keep_tag = ImageTag::parse("v1-index").unwrap();
        let mut view = RepositoryView::new();
        view.insert_image(d.clone(), [keep_tag.clone()]).unwrap();
        view.set_companion_tags(&d, Vec::new());
        view.set_listed_referrers(&d, Vec::new());
        assert!(matches!(
            keeps(&view, &Candidate::of(&d), gates),
            Some(SkipReason::StillTagged { .. })
        ));
        let removes = [keep_tag];
        let retiring = Candidate {
            removes_tags: &removes,
            ..Candidate::of(&d)
        };
        assert_eq!(keeps(&view, &retiring, gates), None);
    }

    #[test]
    fn the_grace_period_runs_from_when_the_tag_arrived_not_from_the_push() {
        let policy = open_policy();
        let idx = digest('a');
        let mut view = RepositoryView::new();
        view.insert_image(idx.clone(), []).unwrap();
        let hour = 3_600_000;
        view.set_pushed_at(&idx, 0);
        let now = 2 * hour;
        let first_push = Gates {
            policy: &policy,
            now_ms: now,
            tag_arrived_ms: Some(0),
        };
        assert_eq!(grace(&view, &idx, first_push), Ok(()));
        // A rollback re-tagged it a second ago: 15 minutes from now.
        let retag = Gates {
            tag_arrived_ms: Some(now - 1000),
            ..first_push
        };
        let Err((SkipReason::GracePeriod { .. }, until)) = grace(&view, &idx, retag) else {
            panic!("a re-tag must wait for the grace period");
        };
        assert_eq!(until, now - 1000 + 900_000);
    }
}
