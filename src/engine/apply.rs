//! Executing a plan: no decision is made here, only re-checks.
//!
//! Writes run as one batch per attempt: reserve the `PutImage` calls under
//! the client-side rate limit, then re-read every tag the plan depends on in
//! one `BatchGetImage`, then write back to back, with nothing (no pacing, no
//! retry) between that check and the writes. If any tag moved since
//! planning, nothing is written and the engine plans again. A throttled or
//! failed write is retried only through a fresh check.
//!
//! Before anything, a checkpoint record listing every write and deletion of
//! the round as `pending` goes to the audit trail (nothing is ever applied
//! without being in the trail; a redelivery reconciles what it lists, see
//! [`crate::engine::reconcile`]). Deletions come after every write landed:
//! the deletion gate runs again on the candidates' tags, pull times,
//! companion tags and referrers read right then ([`crate::engine::gate`]),
//! then the index is deleted in its own call before its attestations. ECR refuses to delete
//! a manifest an index in the repository still lists
//! (`ImageReferencedByManifestList`); that is recorded as kept, not failed.

use std::collections::{BTreeMap, BTreeSet};

mod delete;

pub(super) use delete::{Verdict, expected_bytes, kept_outcome};

use super::{Engine, Job, Known};
use crate::engine::action::{Action, TagRole};
use crate::engine::audit::{ActionOutcome, ActionRecord, AuditRecord, AuditSink};
use crate::engine::gate::Gates;
use crate::engine::planned::Plan;
use crate::engine::registry::{ImageRef, PutOutcome, Registry, RegistryError};
use crate::engine::retry::Jitter;
use crate::engine::skip::SkipCode;
use crate::oci::digest::Digest;
use crate::oci::manifest::RawManifest;
use crate::oci::names::ImageTag;

/// How long after referrer copies failed verification a follow-up retries
/// the deletions they gate (ECR lists a new referrer within seconds).
const VERIFY_RETRY_MS: i64 = 60_000;

/// How applying ended.
#[derive(Debug)]
pub(super) enum Applied {
    /// Every action has a record (applied, already, skipped or failed).
    Done,
    /// A precondition no longer held before this round's writes: plan again.
    Conflict(String),
    /// ECR refused to move the pushed tag (tag immutability): plan again in tag mode.
    PushedTagImmutable,
}

/// One planned tag write, with what it expects to find.
struct Write<'p> {
    action: &'p Action,
    tag: &'p ImageTag,
    to: &'p Digest,
    /// Where the tag must point right before the write (None: absent).
    expect: Option<&'p Digest>,
    role: Option<TagRole>,
}

fn write_of(action: &Action) -> Option<Write<'_>> {
    match action {
        Action::AddTag { tag, digest, role } => Some(Write {
            action,
            tag,
            to: digest,
            expect: None,
            role: Some(*role),
        }),
        Action::MoveTag { tag, from, to, role } => Some(Write {
            action,
            tag,
            to,
            expect: Some(from),
            role: Some(*role),
        }),
        Action::PutIndex {
            tag,
            manifest,
            replaces,
        } => Some(Write {
            action,
            tag,
            to: manifest.digest(),
            expect: Some(replaces),
            role: Some(TagRole::Pushed),
        }),
        Action::Delete { .. } | Action::PutReferrer { .. } => None,
    }
}

fn describe(d: Option<&Digest>) -> String {
    d.map_or_else(|| "nothing".to_owned(), ToString::to_string)
}

fn push(records: &mut Vec<ActionRecord>, action: &Action, outcome: ActionOutcome) {
    records.push(ActionRecord::new(action.clone(), outcome));
}

impl<R: Registry, A: AuditSink> Engine<'_, R, A> {
    /// Applies `plan`, adding one record per action to `record.actions`.
    pub(super) async fn apply(
        &self,
        job: &Job,
        plan: &Plan,
        snapshot: &super::read::Snapshot,
        gates: Gates<'_>,
        record: &mut AuditRecord,
    ) -> Applied {
        let known = &snapshot.known;
        let writes: Vec<Write<'_>> = plan.actions.iter().filter_map(write_of).collect();
        let deletes: Vec<&Action> = plan.actions.iter().filter(|a| a.is_delete()).collect();
        // Write-ahead: whatever dies after this, the trail says what was
        // about to happen, and a redelivery reconciles it.
        if let Err(failure) = self.checkpoint(plan, known, record).await {
            for a in &plan.actions {
                push(&mut record.actions, a, ActionOutcome::Failed(failure.clone()));
            }
            return Applied::Done;
        }
        match self.write_all(job, plan, &writes, known, &mut record.actions).await {
            WriteEnd::AllLanded => {}
            WriteEnd::Conflict(why) => return Applied::Conflict(why),
            WriteEnd::PushedTagImmutable => return Applied::PushedTagImmutable,
            WriteEnd::Stopped(why) => {
                for a in deletes {
                    push(&mut record.actions, a, ActionOutcome::Skipped { reason: why.clone() });
                }
                return Applied::Done;
            }
        }
        let referrers: Vec<&Action> = plan
            .actions
            .iter()
            .filter(|a| matches!(a, Action::PutReferrer { .. }))
            .collect();
        let attached = if referrers.is_empty() {
            Ok(())
        } else {
            self.attach_referrers(job, &referrers, record).await
        };
        if !deletes.is_empty() {
            match attached {
                Ok(()) => {
                    self.delete_all(job, plan, &snapshot.view, gates, known, record).await;
                }
                Err(why) => {
                    for a in deletes {
                        let reason = format!("kept: the referrer copies are not in place ({why})");
                        push(&mut record.actions, a, ActionOutcome::Skipped { reason });
                    }
                    // Incomplete: a follow-up (the handler enqueues it, as for
                    // the grace period) runs the line again and retries.
                    let at = crate::time::now_ms().saturating_add(VERIFY_RETRY_MS);
                    record.incomplete = Some(SkipCode::ReferrersUnverified);
                    record.deferred_until = Some(crate::time::rfc3339_ms(at));
                    record.notes.push(format!(
                        "incomplete: the referrer copies are not listed yet ({why}); the deletions are retried by \
                         a follow-up"
                    ));
                }
            }
        }
        Applied::Done
    }

    /// Stores the referrer copies (untagged; one already stored is not
    /// written again), then checks that ECR lists each for its image. Only
    /// then may the attestations they copy be deleted.
    async fn attach_referrers(&self, job: &Job, actions: &[&Action], record: &mut AuditRecord) -> Result<(), String> {
        let repo = &job.repository;
        let digests: Vec<Digest> = actions.iter().map(|a| a.target().clone()).collect();
        let existing = match self.retry(|| self.registry.describe_images(repo, &digests)).await {
            Ok(info) => info,
            Err(e) => {
                for a in actions {
                    push(&mut record.actions, a, ActionOutcome::Failed((&e).into()));
                }
                return Err(e.to_string());
            }
        };
        let mut to_put = Vec::new();
        for a in actions {
            if matches!(existing.get(a.target()), Some(Some(_))) {
                push(&mut record.actions, a, ActionOutcome::Already);
            } else {
                to_put.push(*a);
            }
        }
        self.registry.reserve_puts(to_put.len()).await;
        let mut failed = None;
        for a in to_put {
            let Action::PutReferrer { manifest, .. } = a else {
                continue;
            };
            let outcome = match self.retry(|| self.registry.put_image(repo, manifest, None)).await {
                Ok(PutOutcome::Stored) => ActionOutcome::Applied,
                Ok(PutOutcome::AlreadyExists) => ActionOutcome::Already,
                Err(e) => {
                    failed = Some(format!("{}: {e}", manifest.digest()));
                    ActionOutcome::Failed((&e).into())
                }
            };
            push(&mut record.actions, a, outcome);
        }
        if let Some(why) = failed {
            return Err(why);
        }
        let mut by_subject: BTreeMap<&Digest, Vec<&Digest>> = BTreeMap::new();
        for a in actions {
            if let Action::PutReferrer { manifest, subject, .. } = a {
                by_subject.entry(subject).or_default().push(manifest.digest());
            }
        }
        for (subject, copies) in by_subject {
            let mut attempt: u32 = 1;
            loop {
                let listed = self
                    .retry(|| self.registry.list_referrers(repo, subject))
                    .await
                    .map_err(|e| e.to_string())?;
                let missing: Vec<&&Digest> = copies
                    .iter()
                    .filter(|c| !listed.iter().any(|r| r.digest == ***c))
                    .collect();
                if missing.is_empty() {
                    break;
                }
                if attempt >= 3 {
                    return Err(format!("ListImageReferrers does not list {} for {subject}", missing[0]));
                }
                tokio::time::sleep(std::time::Duration::from_millis(300 * u64::from(attempt))).await;
                attempt += 1;
            }
        }
        Ok(())
    }

    async fn write_all(
        &self,
        job: &Job,
        plan: &Plan,
        writes: &[Write<'_>],
        known: &Known,
        records: &mut Vec<ActionRecord>,
    ) -> WriteEnd {
        let repo = &job.repository;
        let mut done = vec![false; writes.len()];
        let mut jitter = Jitter::new();
        let mut attempt = 1;
        'attempts: loop {
            let pending: Vec<usize> = (0..writes.len()).filter(|i| !done[*i]).collect();
            if pending.is_empty() && attempt > 1 {
                return WriteEnd::AllLanded;
            }
            // Pacing first: nothing may sit between the check and the writes.
            self.registry.reserve_puts(pending.len()).await;
            let mut tags: BTreeSet<&ImageTag> = plan.guards.iter().map(|(t, _)| t).collect();
            tags.extend(pending.iter().map(|i| writes[*i].tag));
            if tags.is_empty() {
                return WriteEnd::AllLanded;
            }
            let ids: Vec<ImageRef> = tags.iter().map(|t| ImageRef::Tag((*t).clone())).collect();
            let now = match self.registry.get_images(repo, &ids).await {
                Ok(got) => tag_targets(got),
                Err(e) => {
                    // No write was made: the reserved calls go back.
                    self.registry.refund_puts(pending.len()).await;
                    match self
                        .retry_or_fail(attempt, &mut jitter, &e, writes, &pending, records)
                        .await
                    {
                        Some(end) => return end,
                        None => {
                            attempt += 1;
                            continue 'attempts;
                        }
                    }
                }
            };
            let now = match now {
                Ok(now) => now,
                Err(why) => {
                    self.registry.refund_puts(pending.len()).await;
                    return WriteEnd::Conflict(why);
                }
            };
            let checked_at = tokio::time::Instant::now();
            for (tag, expect) in &plan.guards {
                let current = now.get(tag).and_then(Option::as_ref);
                if current != Some(expect) {
                    self.registry.refund_puts(pending.len()).await;
                    return WriteEnd::Conflict(format!("{tag} now points at {}, not {expect}", describe(current)));
                }
            }
            let mut to_write = Vec::new();
            for &i in &pending {
                let w = &writes[i];
                let current = now.get(w.tag).and_then(Option::as_ref);
                if current == Some(w.to) {
                    continue;
                }
                if current != w.expect {
                    self.registry.refund_puts(pending.len()).await;
                    return WriteEnd::Conflict(format!(
                        "{} now points at {}, not {}",
                        w.tag,
                        describe(current),
                        describe(w.expect)
                    ));
                }
                to_write.push(i);
            }
            // Every precondition holds: what is already done needs no call.
            self.registry.refund_puts(pending.len() - to_write.len()).await;
            // Record what is already done, then write.
            for &i in &pending {
                if !to_write.contains(&i) {
                    done[i] = true;
                    push(records, writes[i].action, ActionOutcome::Already);
                }
            }
            for (n, &i) in to_write.iter().enumerate() {
                let w = &writes[i];
                let Some(manifest) = manifest_of(w.action, known) else {
                    let reason = format!("the manifest {} could not be read", w.to);
                    push(records, w.action, ActionOutcome::Skipped { reason: reason.clone() });
                    skip_rest(writes, &to_write[n + 1..], records, &reason);
                    return WriteEnd::Stopped(format!("not attempted: {reason}"));
                };
                // The residual window: from the check to this write's request.
                let window_ms = checked_at.elapsed().as_secs_f64() * 1000.0;
                tracing::debug!(tag = %w.tag, window_ms, "precondition window");
                match self.registry.put_image(repo, manifest, Some(w.tag)).await {
                    Ok(PutOutcome::Stored) => push(records, w.action, ActionOutcome::Applied),
                    Ok(PutOutcome::AlreadyExists) => push(records, w.action, ActionOutcome::Already),
                    Err(RegistryError::TagImmutable { .. }) => match w.role {
                        Some(TagRole::Pushed) => {
                            push(
                                records,
                                w.action,
                                ActionOutcome::Skipped {
                                    reason: format!(
                                        "{} is immutable in this repository (ImageTagAlreadyExists); planned again in tag mode",
                                        w.tag
                                    ),
                                },
                            );
                            return WriteEnd::PushedTagImmutable;
                        }
                        Some(TagRole::Keep) => {
                            let reason = format!(
                                "the keep tag {} is immutable here and held by another image; the pushed tag is not moved",
                                w.tag
                            );
                            push(records, w.action, ActionOutcome::Skipped { reason: reason.clone() });
                            skip_rest(
                                writes,
                                &to_write[n + 1..],
                                records,
                                "not attempted: the keep tag could not be written",
                            );
                            return WriteEnd::Stopped("not attempted: the keep tag could not be written".to_owned());
                        }
                        _ => push(
                            records,
                            w.action,
                            ActionOutcome::Skipped {
                                reason: format!("{} is immutable in this repository; left where it is", w.tag),
                            },
                        ),
                    },
                    Err(e) if e.is_retryable() => {
                        // Retried only through a fresh check of every precondition;
                        // the writes after this one were not made.
                        self.registry.refund_puts(to_write.len() - n - 1).await;
                        let rest: Vec<usize> = to_write[n..].to_vec();
                        match self
                            .retry_or_fail(attempt, &mut jitter, &e, writes, &rest, records)
                            .await
                        {
                            Some(end) => return end,
                            None => {
                                attempt += 1;
                                continue 'attempts;
                            }
                        }
                    }
                    Err(e) => {
                        push(records, w.action, ActionOutcome::Failed((&e).into()));
                        let why = format!("not attempted: an earlier action failed ({})", e.code());
                        skip_rest(writes, &to_write[n + 1..], records, &why);
                        return WriteEnd::Stopped(why);
                    }
                }
                done[i] = true;
                if n + 1 == to_write.len() {
                    tracing::info!(
                        repository = %repo,
                        writes = to_write.len(),
                        window_ms,
                        "writes landed; window = check to last write request"
                    );
                }
            }
            return WriteEnd::AllLanded;
        }
    }

    /// After a retryable failure: waits and returns None (try again), or,
    /// with no attempt or time left, records the failure and returns the end.
    async fn retry_or_fail(
        &self,
        attempt: u32,
        jitter: &mut Jitter,
        e: &RegistryError,
        writes: &[Write<'_>],
        pending: &[usize],
        records: &mut Vec<ActionRecord>,
    ) -> Option<WriteEnd> {
        if self.wait_before_retry(attempt, jitter, e).await.is_ok() {
            return None;
        }
        let why = format!("not attempted: an earlier action failed ({})", e.code());
        if let Some((&first, rest)) = pending.split_first() {
            push(records, writes[first].action, ActionOutcome::Failed(e.into()));
            skip_rest(writes, rest, records, &why);
        }
        Some(WriteEnd::Stopped(why))
    }
}

enum WriteEnd {
    AllLanded,
    Conflict(String),
    PushedTagImmutable,
    Stopped(String),
}

fn skip_rest(writes: &[Write<'_>], rest: &[usize], records: &mut Vec<ActionRecord>, why: &str) {
    for &i in rest {
        push(
            records,
            writes[i].action,
            ActionOutcome::Skipped { reason: why.to_owned() },
        );
    }
}

fn manifest_of<'k>(action: &'k Action, known: &'k Known) -> Option<&'k RawManifest> {
    match action {
        Action::PutIndex { manifest, .. } => Some(manifest),
        other => known.get(other.target()),
    }
}

/// Where each tag read points (None: absent), or why the answer cannot be trusted.
fn tag_targets(got: crate::engine::registry::Fetched) -> Result<BTreeMap<ImageTag, Option<Digest>>, String> {
    let mut out = BTreeMap::new();
    for (id, result) in got {
        let ImageRef::Tag(tag) = id else { continue };
        let target = match result {
            Ok(m) => Some(m.digest().clone()),
            Err(crate::engine::registry::FetchFailure::NotFound) => None,
            Err(crate::engine::registry::FetchFailure::Invalid { digest: Some(d), .. }) => Some(d),
            Err(e) => return Err(format!("cannot tell where {tag} points: {e}")),
        };
        out.insert(tag, target);
    }
    Ok(out)
}
