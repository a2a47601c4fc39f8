//! Planning deletions: the remediated index once nothing tags, lists or is
//! attached to it, then the attestations it alone listed, each gated by the
//! keep rules ([`crate::engine::keep`]); then the deletion cap and the dry
//! run. Pure.

use std::collections::BTreeSet;

use crate::engine::action::{Action, DeleteRole};
use crate::engine::keep;
use crate::engine::planned::Plan;
use crate::engine::provenance::Coverage;
use crate::engine::skip::{SkipReason, Skipped};
use crate::engine::view::RepositoryView;
use crate::oci::classify::{Classification, ClassifiedEntry, EntryClass};
use crate::oci::digest::Digest;
use crate::policy::Policy;

/// What the deletion gates look at besides the view: the policy and now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gates<'a> {
    pub policy: &'a Policy,
    pub now_ms: i64,
}

/// Plans the deletion of `idx` (the remediated index) and of the attestation
/// entries of `c` it frees, on the view as `p`'s actions leave it. Every
/// deletion needs evidence that nothing uses it ([`keep::in_use`]); all of
/// them wait for the grace period after the index's push ([`keep::grace`]),
/// which [`Plan::deferred_until_ms`] then says.
pub(crate) fn deletions(
    p: &mut Plan,
    c: &Classification,
    idx: &Digest,
    view: &RepositoryView,
    coverage: &Coverage,
    gates: Gates<'_>,
) {
    // Within the grace period, the deletions are planned with the registry's
    // gates only and deferred: whether anything runs or pulls them is
    // asked when they are attempted, so a push never pays for a scan.
    let deferred = match keep::grace(view, idx, gates.policy, gates.now_ms) {
        Ok(()) => None,
        Err((SkipReason::GracePeriod { until, grace_period_s }, at)) => Some((until, grace_period_s, at)),
        Err((reason, _)) => {
            p.skip_entry(idx, reason);
            return;
        }
    };
    let before = p.actions.len();
    planned_deletions(p, c, idx, view, coverage, gates, deferred.is_none());
    if let Some((until, grace_period_s, at)) = deferred
        && p.actions.len() > before
    {
        p.deferred_until_ms = Some(at);
        for a in p.actions.drain(before..).collect::<Vec<_>>() {
            p.skipped.push(Skipped {
                digest: None,
                action: Some(a),
                reason: SkipReason::GracePeriod {
                    until: until.clone(),
                    grace_period_s,
                },
            });
        }
    }
}

fn planned_deletions(
    p: &mut Plan,
    c: &Classification,
    idx: &Digest,
    view: &RepositoryView,
    coverage: &Coverage,
    gates: Gates<'_>,
    check_use: bool,
) {
    let in_use = |view: &RepositoryView, d: &Digest| {
        if check_use {
            keep::in_use(view, d, gates.policy, gates.now_ms)
        } else {
            None
        }
    };
    if let Some(why) = &coverage.blocked {
        p.skip_entry(idx, SkipReason::ProvenanceUncovered { why: why.clone() });
        return;
    }
    let mut after = view.clone();
    for a in &p.actions {
        if let Err(e) = after.apply(a) {
            p.skip_entry(idx, SkipReason::Conflict { error: e.to_string() });
            return;
        }
    }
    let tags = after.tags_of(idx).cloned().unwrap_or_default();
    if !tags.is_empty() {
        p.skip_entry(
            idx,
            SkipReason::StillTagged {
                tags: tags.into_iter().collect(),
            },
        );
        return;
    }
    let by = after.referrers(idx, Some(idx));
    if !by.is_empty() {
        p.skip_entry(idx, SkipReason::StillReferenced { by });
        return;
    }
    if let Some(reason) = keep::attached(&after, idx) {
        p.skip_entry(idx, reason);
        return;
    }
    if let Some(reason) = in_use(&after, idx) {
        p.skip_entry(idx, reason);
        return;
    }
    let delete_index = Action::Delete {
        digest: idx.clone(),
        role: DeleteRole::Index,
        removes_tags: Vec::new(),
    };
    if let Err(e) = after.apply(&delete_index) {
        p.skip_entry(idx, SkipReason::Conflict { error: e.to_string() });
        return;
    }
    p.actions.push(delete_index);

    let protected: BTreeSet<&Digest> = c
        .entries
        .iter()
        .filter(|e| !matches!(e.class, EntryClass::Attestation { .. }))
        .map(ClassifiedEntry::digest)
        .collect();
    let mut seen = BTreeSet::new();
    for e in c
        .entries
        .iter()
        .filter(|e| matches!(e.class, EntryClass::Attestation { .. }))
    {
        let d = e.digest();
        if !seen.insert(d) {
            continue;
        }
        if coverage.attached.contains(d) {
            if let EntryClass::Attestation { subject: Some(subject) } = &e.class {
                p.skip_entry(
                    d,
                    SkipReason::AttachedReferrer {
                        subject: subject.clone(),
                    },
                );
            }
            continue;
        }
        if protected.contains(d) {
            p.skip_entry(d, SkipReason::ProtectedEntry);
            continue;
        }
        if let Some(reason) = keep::attached_attestation(&after, d) {
            p.skip_entry(d, reason);
            continue;
        }
        let Some(tags) = after.tags_of(d) else {
            p.skip_entry(d, SkipReason::NotInView);
            continue;
        };
        if !tags.is_empty() {
            let tags = tags.iter().cloned().collect();
            p.skip_entry(d, SkipReason::StillTagged { tags });
            continue;
        }
        let by = after.referrers(d, None);
        if !by.is_empty() {
            p.skip_entry(d, SkipReason::StillReferenced { by });
            continue;
        }
        if let Some(reason) = keep::attached(&after, d) {
            p.skip_entry(d, reason);
            continue;
        }
        if let Some(reason) = in_use(&after, d) {
            p.skip_entry(d, reason);
            continue;
        }
        let delete = Action::Delete {
            digest: d.clone(),
            role: DeleteRole::Attestation,
            removes_tags: Vec::new(),
        };
        match after.apply(&delete) {
            Ok(()) => p.actions.push(delete),
            Err(err) => p.skip_entry(d, SkipReason::Conflict { error: err.to_string() }),
        }
    }
}

/// Applies the deletion cap. (A dry run plans exactly as the real run; the
/// engine records its actions as `planned` instead of applying them.)
pub(crate) fn finish(mut p: Plan, policy: &Policy) -> Plan {
    let planned = p.actions.iter().filter(|a| a.is_delete()).count();
    if planned > policy.max_deletes as usize {
        let (deletes, keep): (Vec<Action>, Vec<Action>) = p.actions.into_iter().partition(Action::is_delete);
        p.actions = keep;
        for a in deletes {
            p.skipped.push(Skipped {
                digest: None,
                action: Some(a),
                reason: SkipReason::MaxDeletes {
                    planned,
                    max: policy.max_deletes,
                },
            });
        }
    }
    p
}
