//! A redelivery confirms, against the registry, what an earlier delivery's
//! open checkpoint listed (the parsing is [`crate::decide::checkpoint`], pure): one
//! read back of the trail, then at most one `BatchGetImage` (the pending
//! writes' tags, and the stripped indexes they name) and one
//! `DescribeImages` (the pending deletions). Only on a delivery after the
//! first.

use std::collections::BTreeMap;

use super::{Engine, Job, RECONCILE_LOOKBACK_MS};
use crate::decide::action::{Action, ActionKind, TagRole};
use crate::decide::checkpoint::{Claim, Pending, PendingAction, PendingWrite, open_checkpoints};
use crate::decide::skip::SkipCode;
use crate::engine::audit::{self, ActionOutcome, ActionRecord, AuditRecord, AuditSink, Outcome, Trigger};
use crate::engine::registry::{FetchFailure, ImageRef, Registry};
use crate::oci::digest::Digest;
use crate::oci::manifest::RawManifest;
use crate::oci::names::{AccountId, ImageTag};

/// Whether a delivery reads the trail back for an earlier delivery's open
/// checkpoint: any delivery after the first; and a first one whose handling
/// found its work done by someone (its index gone; for anything but a
/// follow-up, whose push did the writes, its pushed or derived tag already
/// in place), because a first delivery is not always the first
/// handling: a redrive from the dead-letter queue starts the receive count
/// again, and EventBridge may deliver an event twice. A first delivery that
/// did the work itself reads nothing back (a push never pays for it). Never
/// after a failure (the next delivery reconciles).
fn reconciles(attempt: Option<u32>, record: &AuditRecord) -> bool {
    if matches!(record.outcome, Outcome::Failed(_)) {
        return false;
    }
    let index_gone = matches!(
        record.outcome,
        Outcome::Skipped {
            code: SkipCode::IndexGone,
            ..
        }
    );
    // The pushed or a derived tag already where this handling would put
    // it: another delivery of this event wrote it (a push never finds its
    // own tag moved already; a re-push of an unchanged index moves it
    // again). Observe mode, a keep tag in place: no sign, no read.
    let done_before = record.trigger != Trigger::FollowUp
        && record.actions.iter().any(|a| {
            a.outcome == ActionOutcome::Already
                && matches!(
                    a.action,
                    Action::MoveTag {
                        role: TagRole::Pushed | TagRole::Derived,
                        ..
                    } | Action::AddTag {
                        role: TagRole::Pushed | TagRole::Derived,
                        ..
                    } | Action::PutIndex { .. }
                )
        });
    attempt.is_some_and(|a| a >= 2) || index_gone || done_before
}

fn delivery(attempt: Option<u32>) -> String {
    attempt.map_or_else(|| "?".to_owned(), |a| a.to_string())
}

impl<R: Registry, A: AuditSink> Engine<'_, R, A> {
    /// On a delivery after the first: records what an earlier delivery's
    /// open checkpoint listed, as the registry shows it now (see
    /// [`crate::decide::checkpoint`]).
    pub(super) async fn reconcile(&self, job: &Job, record: &mut AuditRecord) {
        let Some(event_id) = &job.event_id else {
            return;
        };
        if !reconciles(self.attempt, record) {
            return;
        }
        let since = audit::now_ms().saturating_sub(RECONCILE_LOOKBACK_MS);
        let earlier = match self.audit.earlier_records(event_id, &job.digest, since).await {
            Ok(Some(earlier)) => earlier,
            Ok(None) => {
                record.notes.push(
                    "a redelivery: the audit trail cannot be read back here (no audit log group configured), so \
                     what an earlier delivery may have done is not reconciled"
                        .to_owned(),
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the trail back to reconcile an earlier delivery");
                record.notes.push(format!(
                    "a redelivery: what an earlier delivery may have done is not reconciled ({e})"
                ));
                return;
            }
        };
        let mut writes = Vec::new();
        let mut deletions = Vec::new();
        let claim = Claim {
            event_id,
            index: &job.digest,
            account: job.account.as_ref().map(AccountId::as_str),
            region: job.region.as_deref(),
            repository: job.repository.as_str(),
            current: (self.attempt, self.request_id.as_deref()),
        };
        for p in open_checkpoints(&earlier, &claim) {
            match &p.pending {
                Pending::Write(_) => writes.push(p),
                Pending::Deletion { .. } => deletions.push(p),
            }
        }
        self.confirm_writes(job, record, writes).await;
        self.confirm_deletions(job, record, deletions).await;
    }

    /// Pending writes: found in place (`already`, attributed), or a tag that
    /// moved on since (`unconfirmed`: the registry cannot tell).
    async fn confirm_writes(&self, job: &Job, record: &mut AuditRecord, writes: Vec<PendingAction>) {
        let mut rest: Vec<(PendingWrite, Option<u32>)> = Vec::new();
        for p in writes {
            // This delivery found it in place, or wrote it itself.
            if let Some(found) = record.actions.iter_mut().find(|a| p.is(&a.action)) {
                if found.outcome == ActionOutcome::Already && found.earlier_attempt.is_none() {
                    found.earlier_attempt = p.attempt;
                }
                continue;
            }
            if let Pending::Write(w) = p.pending {
                rest.push((w, p.attempt));
            }
        }
        if rest.is_empty() {
            return;
        }
        let mut ids: Vec<ImageRef> = Vec::new();
        for (w, _) in &rest {
            let by_digest = (w.kind == ActionKind::PutIndex).then(|| ImageRef::Digest(w.target.clone()));
            for id in std::iter::once(ImageRef::Tag(w.tag.clone())).chain(by_digest) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let fetched = match self.retry(|| self.registry.get_images(&job.repository, &ids)).await {
            Ok(f) => f,
            Err(e) => {
                record.notes.push(format!(
                    "a redelivery: {} write(s) pending in an earlier delivery's checkpoint could not be checked ({e})",
                    rest.len()
                ));
                return;
            }
        };
        let mut by_tag: BTreeMap<ImageTag, Option<Digest>> = BTreeMap::new();
        let mut manifests: BTreeMap<Digest, RawManifest> = BTreeMap::new();
        for (id, got) in fetched {
            let target = match got {
                Ok(m) => {
                    let d = m.digest().clone();
                    manifests.entry(d.clone()).or_insert(m);
                    Some(d)
                }
                Err(FetchFailure::NotFound) => None,
                Err(FetchFailure::Invalid { digest, .. }) => digest,
                Err(FetchFailure::Other { .. }) => continue,
            };
            if let ImageRef::Tag(t) = id {
                by_tag.insert(t, target);
            }
        }
        let (mut confirmed, mut unconfirmed) = (0, 0);
        for (w, by) in rest {
            let Some(now) = by_tag.get(&w.tag) else {
                record.notes.push(format!(
                    "delivery {}'s checkpoint lists writing {} to {}; where it points could not be read",
                    delivery(by),
                    w.tag,
                    w.target
                ));
                continue;
            };
            let Some(action) = w.action(manifests.get(&w.target)) else {
                record.notes.push(format!(
                    "delivery {}'s checkpoint lists writing {} to {}, which is no longer in the repository",
                    delivery(by),
                    w.tag,
                    w.target
                ));
                continue;
            };
            let outcome = if now.as_ref() == Some(&w.target) {
                confirmed += 1;
                ActionOutcome::Already
            } else {
                unconfirmed += 1;
                let now = now.as_ref().map_or_else(|| "nothing".to_owned(), ToString::to_string);
                ActionOutcome::Unconfirmed {
                    reason: format!(
                        "pending in the checkpoint of delivery {}, whose final record was never written; {} now \
                         points at {now} (moved on since), so whether it was written cannot be told",
                        delivery(by),
                        w.tag
                    ),
                }
            };
            let mut r = ActionRecord::new(action, outcome);
            r.earlier_attempt = by;
            record.actions.push(r);
        }
        if confirmed > 0 {
            record.notes.push(format!(
                "{confirmed} write(s) an earlier delivery's checkpoint listed are in place: recorded as already"
            ));
        }
        if unconfirmed > 0 {
            record.notes.push(format!(
                "{unconfirmed} write(s) pending in an earlier delivery's checkpoint could not be confirmed: \
                 recorded as unconfirmed"
            ));
        }
    }

    /// Pending deletions whose manifest is gone now: applied by that delivery.
    async fn confirm_deletions(&self, job: &Job, record: &mut AuditRecord, deletions: Vec<PendingAction>) {
        let open: Vec<(Action, Option<u64>, Option<u32>)> = deletions
            .into_iter()
            // What this delivery applied, kept or failed itself says so already.
            .filter(|p| {
                record
                    .actions
                    .iter()
                    .filter(|a| p.is(&a.action))
                    .all(|a| a.outcome == ActionOutcome::Already)
            })
            .filter_map(|p| match p.pending {
                Pending::Deletion { action, bytes } => Some((action, bytes, p.attempt)),
                Pending::Write(_) => None,
            })
            .collect();
        if open.is_empty() {
            return;
        }
        let digests: Vec<Digest> = open.iter().map(|(a, _, _)| a.target().clone()).collect();
        let now = match self
            .retry(|| self.registry.describe_images(&job.repository, &digests))
            .await
        {
            Ok(now) => now,
            Err(e) => {
                record.notes.push(format!(
                    "a redelivery: an earlier delivery's checkpoint lists {} deletion(s); they could not be \
                     confirmed ({e}) and are not counted here",
                    open.len()
                ));
                return;
            }
        };
        let mut confirmed = 0;
        for (action, bytes, by) in open {
            let d = action.target();
            if !matches!(now.get(d), Some(None) | None) {
                record.notes.push(format!(
                    "{d} was pending in the checkpoint of delivery {}, and is still there: not deleted",
                    delivery(by)
                ));
                continue;
            }
            record
                .actions
                .retain(|a| !(a.action.is_delete() && a.action.target() == d && a.outcome == ActionOutcome::Already));
            let mut done = ActionRecord::new(action.clone(), ActionOutcome::Applied);
            done.bytes = bytes;
            done.earlier_attempt = by;
            record.deleted += 1;
            record.reclaimed_bytes += bytes.unwrap_or(0);
            record.actions.push(done);
            confirmed += 1;
        }
        if confirmed > 0 {
            record.notes.push(format!(
                "{confirmed} deletion(s) applied by an earlier delivery of this event whose final record was not \
                 written: listed pending in its checkpoint, confirmed gone now"
            ));
            if matches!(
                record.outcome,
                Outcome::Noop
                    | Outcome::Skipped {
                        code: SkipCode::IndexGone,
                        ..
                    }
            ) {
                record.outcome = Outcome::Remediated;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::engine::audit::Failure;

    fn record(trigger: Trigger, outcome: Outcome, already: bool) -> AuditRecord {
        let mut r = AuditRecord::new(trigger, Some("app"), UNIX_EPOCH);
        r.outcome = outcome;
        if already {
            r.actions.push(ActionRecord::new(
                Action::AddTag {
                    tag: ImageTag::parse("v1").unwrap(),
                    digest: Digest::sha256_of(b"i"),
                    role: TagRole::Pushed,
                },
                ActionOutcome::Already,
            ));
        }
        r
    }

    #[test]
    fn a_first_delivery_reads_the_trail_back_only_when_someone_did_its_work() {
        let gone = Outcome::Skipped {
            code: SkipCode::IndexGone,
            reason: "gone".into(),
        };
        // (trigger, outcome, a write already in place, attempt) → reads back
        let cases = [
            (Trigger::Push, Outcome::Remediated, false, Some(1), false),
            (Trigger::Push, Outcome::Remediated, false, None, false),
            (Trigger::Push, Outcome::Remediated, false, Some(2), true),
            (Trigger::Push, gone.clone(), false, Some(1), true),
            // Observe mode: nothing to do is no sign of an earlier delivery.
            (Trigger::Push, Outcome::Noop, false, Some(1), false),
            (Trigger::Push, Outcome::Remediated, true, Some(1), true),
            // A follow-up finds its push's writes in place: no read.
            (Trigger::FollowUp, Outcome::Remediated, true, Some(1), false),
            (Trigger::FollowUp, gone, false, Some(1), true),
            (Trigger::FollowUp, Outcome::Remediated, true, Some(2), true),
        ];
        for (trigger, outcome, already, attempt, expected) in cases {
            let r = record(trigger, outcome.clone(), already);
            assert_eq!(
                reconciles(attempt, &r),
                expected,
                "{trigger:?} {outcome:?} {already} {attempt:?}"
            );
        }
        // A keep tag already in place (an unchanged index pushed again): no read.
        let mut keep = record(Trigger::Push, Outcome::Remediated, false);
        keep.actions.push(ActionRecord::new(
            Action::AddTag {
                tag: ImageTag::parse("v1-index").unwrap(),
                digest: Digest::sha256_of(b"i"),
                role: TagRole::Keep,
            },
            ActionOutcome::Already,
        ));
        assert!(!reconciles(Some(1), &keep));
        let failed = Outcome::Failed(Failure {
            code: "ServerException".into(),
            error: "x".into(),
            retryable: true,
        });
        assert!(!reconciles(Some(3), &record(Trigger::Push, failed, false)));
    }
}
