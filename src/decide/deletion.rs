//! Planning deletions: the remediated index, then the attestations it alone
//! listed, each through the deletion gate ([`crate::decide::gate`]); then
//! the deletion cap. Pure.

use std::collections::BTreeSet;

use crate::decide::action::{Action, DeleteRole};
use crate::decide::gate::{self, Candidate, Role};
use crate::decide::planned::Plan;
use crate::decide::provenance::Coverage;
use crate::decide::skip::{SkipReason, Skipped};
use crate::decide::view::RepositoryView;
use crate::oci::classify::{Classification, ClassifiedEntry, EntryClass};
use crate::oci::digest::Digest;
use crate::policy::Policy;

pub use crate::decide::gate::Gates;

/// Plans the deletion of `idx` (the remediated index) and of the attestation
/// entries of `c` it frees, on the view as `p`'s actions leave it. Every
/// deletion passes the gate ([`gate::keeps`]); all of them wait for the
/// grace period after the tag arrived ([`gate::grace`]), which
/// [`Plan::deferred_until_ms`] then says. Within it, the gate runs on the
/// registry's evidence only (whether anything runs or pulls them is asked
/// when they are attempted, so a push never pays for a scan).
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
    let deferred = match gate::grace(view, idx, gates) {
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
    // Within the grace period, usage is not asked yet: the deletions are
    // deferred whatever it says.
    let unasked = Policy {
        keep_if_in_use: false,
        keep_if_pulled_within_s: None,
        ..gates.policy.clone()
    };
    let gates = if check_use {
        gates
    } else {
        Gates {
            policy: &unasked,
            ..gates
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
    let index = Candidate {
        listed_by_except: Some(idx),
        ..Candidate::of(idx)
    };
    if let Some(reason) = gate::keeps(&after, &index, gates) {
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
        let attestation = Candidate {
            role: Role::Attestation,
            ..Candidate::of(d)
        };
        if let Some(reason) = gate::keeps(&after, &attestation, gates) {
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
