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
//! [`crate::decide::checkpoint`]). Deletions come after every write landed:
//! the deletion gate runs again on the candidates' tags, pull times,
//! companion tags and referrers read right then ([`crate::decide::gate`]),
//! then the index is deleted in its own call before its attestations. ECR refuses to delete
//! a manifest an index in the repository still lists
//! (`ImageReferencedByManifestList`); that is recorded as kept, not failed.

use std::collections::{BTreeMap, BTreeSet};

use super::{Engine, Job, Known};
use crate::decide::action::{Action, DeleteRole, TagRole};
use crate::decide::gate::{self, Gates};
use crate::decide::planned::Plan;
use crate::decide::skip::{SkipCode, SkipReason};
use crate::decide::view::RepositoryView;
use crate::engine::audit::{ActionOutcome, ActionRecord, AuditRecord, AuditSink, Failure, Outcome, write_with_retries};
use crate::engine::registry::{DeleteOutcome, ImageInfo, ImageRef, PutOutcome, Registry, RegistryError};
use crate::engine::retry::Jitter;
use crate::oci::digest::Digest;
use crate::oci::manifest::{Manifest, RawManifest};
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

// ---- Deletions ----
//
// Applying a plan's deletions: the checkpoint; the deletion gate again on
// evidence read right before the calls ([`crate::decide::gate`]); the
// index before the attestations it frees (see [`super`]). The one place
// that reaches `BatchDeleteImage` (`Registry::delete_images`).

impl<R: Registry, A: AuditSink> Engine<'_, R, A> {
    /// Writes the round's checkpoint: every write and deletion of `plan`,
    /// `pending`, in the trail before the first of them happens (a deletion
    /// with what it is expected to free). An error: nothing may happen.
    pub(super) async fn checkpoint(&self, plan: &Plan, known: &Known, record: &AuditRecord) -> Result<(), Failure> {
        let mut checkpoint = record.clone();
        for a in &plan.actions {
            let mut pending = ActionRecord::new(a.clone(), ActionOutcome::Pending);
            if a.is_delete() {
                pending.bytes = expected_bytes(a, known);
            }
            checkpoint.actions.push(pending);
        }
        checkpoint.outcome = Outcome::InProgress;
        checkpoint.is_final = false;
        write_with_retries(self.audit, &checkpoint, &self.retry, self.deadline)
            .await
            .map_err(|e| {
                // A refusal will refuse again: said as such, not as an outage.
                let refused = e.is_refusal();
                Failure {
                    code: if refused { "AuditRefused" } else { "AuditUnavailable" }.to_owned(),
                    error: format!("not attempted: the checkpoint record listing it could not be written: {e}"),
                    retryable: !refused,
                }
            })
    }

    /// The deletion gate right before the deletion calls, on evidence read
    /// just now: the candidates' tags and pull times (one `DescribeImages`),
    /// their companion tags (one `BatchGetImage`) and referrers of any
    /// status (one `ListImageReferrers` each), all at once, on top of the
    /// slow evidence the plan was made with (the workload scan). `view` is
    /// the state the plan was made on; `landed` says the plan's writes were
    /// made (the real run) or not (the dry run, which sees them as made:
    /// the same gate on the same reads plans the same deletions).
    pub(in crate::engine) async fn gate_deletions(
        &self,
        job: &Job,
        plan: &Plan,
        view: &RepositoryView,
        gates: Gates<'_>,
        landed: bool,
    ) -> Result<Gated, RegistryError> {
        let repo = &job.repository;
        let deletes: Vec<&Action> = plan.actions.iter().filter(|a| a.is_delete()).collect();
        let digests: Vec<Digest> = deletes.iter().map(|a| a.target().clone()).collect();
        let writes = || plan.actions.iter().filter(|a| !a.is_delete());
        let mut fresh = view.clone();
        if landed {
            // What the registry says now goes over what the writes made.
            for a in writes() {
                let _ = fresh.apply(a);
            }
        }
        let (info, ()) = futures_util::future::try_join(
            self.retry(|| self.registry.describe_images(repo, &digests)),
            self.reread_attachments(repo, &mut fresh, &digests),
        )
        .await?;
        let mut verdicts: Vec<Verdict> = Vec::with_capacity(deletes.len());
        let mut unreadable: Vec<Option<SkipReason>> = Vec::with_capacity(deletes.len());
        for a in &deletes {
            let d = a.target();
            match info.get(d) {
                Some(Some(found)) => {
                    let parsed: Result<Vec<ImageTag>, _> = found.tags.iter().map(|t| ImageTag::parse(t)).collect();
                    match parsed {
                        Ok(tags) => {
                            fresh.replace_tags(d, tags);
                            unreadable.push(None);
                        }
                        // ECR reported a tag it would not accept: whatever it
                        // is, something is tagged there.
                        Err(e) => unreadable.push(Some(SkipReason::Conflict {
                            error: format!("tagged ({}), a tag that cannot be read: {e}", found.tags.join(", ")),
                        })),
                    }
                    fresh.set_pull_time(d, found.last_pulled_ms);
                    verdicts.push(Verdict::Delete);
                }
                Some(None) | None => {
                    // Gone already: nothing lists or tags it any more.
                    let _ = fresh.apply(a);
                    unreadable.push(None);
                    verdicts.push(Verdict::Gone);
                }
            }
        }
        if !landed {
            for a in writes() {
                let _ = fresh.apply(a);
            }
        }
        let sifted = gate::sift(&fresh, &deletes, gates, &unreadable);
        for (v, kept) in verdicts.iter_mut().zip(sifted) {
            if let (Verdict::Delete, Some(reason)) = (&*v, kept) {
                *v = Verdict::Keep(reason);
            }
        }
        Ok(Gated { verdicts, info })
    }

    pub(super) async fn delete_all(
        &self,
        job: &Job,
        plan: &Plan,
        view: &RepositoryView,
        gates: Gates<'_>,
        known: &Known,
        record: &mut AuditRecord,
    ) {
        let deletes: Vec<&Action> = plan.actions.iter().filter(|a| a.is_delete()).collect();
        let repo = &job.repository;
        let Gated { verdicts, info } = match self.gate_deletions(job, plan, view, gates, true).await {
            Ok(gated) => gated,
            Err(e) => {
                for a in deletes {
                    push(&mut record.actions, a, ActionOutcome::Failed((&e).into()));
                }
                return;
            }
        };
        let mut go: Vec<&Action> = Vec::new();
        for (a, verdict) in deletes.iter().zip(verdicts) {
            match verdict {
                Verdict::Delete => go.push(a),
                Verdict::Gone => push(&mut record.actions, a, ActionOutcome::Already),
                Verdict::Keep(reason) => push(&mut record.actions, a, kept_outcome(&reason)),
            }
        }
        let (indexes, rest): (Vec<&Action>, Vec<&Action>) = go.into_iter().partition(|a| {
            matches!(
                a,
                Action::Delete {
                    role: DeleteRole::Index | DeleteRole::KeptIndex,
                    ..
                }
            )
        });
        for group in [indexes, rest] {
            if group.is_empty() {
                continue;
            }
            let ds: Vec<Digest> = group.iter().map(|a| a.target().clone()).collect();
            let results: BTreeMap<Digest, DeleteOutcome> =
                match self.retry(|| self.registry.delete_images(repo, &ds)).await {
                    Ok(r) => r.into_iter().collect(),
                    Err(e) => {
                        for a in &group {
                            push(&mut record.actions, a, ActionOutcome::Failed((&e).into()));
                        }
                        return;
                    }
                };
            for a in group {
                let mut freed = None;
                let outcome = match results.get(a.target()) {
                    Some(DeleteOutcome::Deleted) => {
                        let bytes = reclaimed(a, known, &info);
                        record.deleted += 1;
                        record.reclaimed_bytes += bytes;
                        freed = Some(bytes);
                        ActionOutcome::Applied
                    }
                    Some(DeleteOutcome::NotFound) => ActionOutcome::Already,
                    Some(DeleteOutcome::ReferencedByManifestList) => ActionOutcome::Skipped {
                        reason: "kept: still referenced by an index in the repository (ImageReferencedByManifestList)"
                            .to_owned(),
                    },
                    Some(DeleteOutcome::Failed { code, reason }) => ActionOutcome::Failed(Failure {
                        code: code.clone(),
                        error: reason.clone(),
                        retryable: false,
                    }),
                    None => ActionOutcome::Failed(Failure {
                        code: "InvalidResponse".to_owned(),
                        error: "BatchDeleteImage said nothing about this image".to_owned(),
                        retryable: true,
                    }),
                };
                let mut done = ActionRecord::new(a.clone(), outcome);
                done.bytes = freed;
                record.actions.push(done);
            }
        }
    }
}

/// What a deletion is expected to free, from the manifest read at planning
/// (the checkpoint says it, so a later delivery that confirms the deletion
/// can account for it): an index's own length; an image manifest's layers,
/// which is what ECR reports as its `imageSizeInBytes`.
pub(in crate::engine) fn expected_bytes(action: &Action, known: &Known) -> Option<u64> {
    let m = known.get(action.target())?;
    Some(match m.manifest() {
        Manifest::Index(_) => m.bytes().len() as u64,
        Manifest::Image(image) => image.layers.iter().map(|l| l.size).sum(),
    })
}

/// The storage a deletion frees. For an index, ECR's `imageSizeInBytes` is
/// the size of the largest manifest it lists (whose layers stay): deleting
/// the index frees its own document only, whose length is known exactly.
/// For any other manifest, the size `DescribeImages` reported right before.
fn reclaimed(action: &Action, known: &Known, info: &BTreeMap<Digest, Option<ImageInfo>>) -> u64 {
    let d = action.target();
    let index = matches!(
        action,
        Action::Delete {
            role: DeleteRole::Index | DeleteRole::KeptIndex,
            ..
        }
    ) || info
        .get(d)
        .and_then(Option::as_ref)
        .and_then(|i| i.media_type.as_deref())
        .and_then(crate::oci::media_type::ManifestMediaType::parse)
        .is_some_and(crate::oci::media_type::ManifestMediaType::is_index);
    if index {
        return known.get(d).map_or(0, |m| m.bytes().len() as u64);
    }
    info.get(d)
        .and_then(Option::as_ref)
        .and_then(|i| i.size_bytes)
        .and_then(|b| u64::try_from(b).ok())
        .unwrap_or(0)
}

/// What the gate said of one deletion right before the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::engine) enum Verdict {
    /// Nothing keeps it: delete.
    Delete,
    /// Already gone.
    Gone,
    /// Kept, for this reason.
    Keep(SkipReason),
}

/// The gate's verdicts on a plan's deletions (in plan order), with what
/// `DescribeImages` said of them.
#[derive(Debug)]
pub(in crate::engine) struct Gated {
    pub verdicts: Vec<Verdict>,
    pub info: BTreeMap<Digest, Option<ImageInfo>>,
}

/// How a deletion the gate kept is recorded: skipped, with the reason's
/// code and its sentence.
pub(in crate::engine) fn kept_outcome(reason: &SkipReason) -> ActionOutcome {
    ActionOutcome::Skipped {
        reason: format!("{}: {reason}", reason.code()),
    }
}
