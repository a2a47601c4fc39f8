//! Applying a plan's deletions: the checkpoint; the deletion gate again on
//! evidence read right before the calls ([`crate::engine::gate`]); the
//! index before the attestations it frees (see [`super`]). The one place
//! that reaches `BatchDeleteImage` (`Registry::delete_images`).

use std::collections::BTreeMap;

use super::push;
use crate::engine::action::{Action, DeleteRole};
use crate::engine::audit::{ActionOutcome, ActionRecord, AuditRecord, AuditSink, Failure, Outcome, write_with_retries};
use crate::engine::gate::{self, Gates};
use crate::engine::planned::Plan;
use crate::engine::registry::{DeleteOutcome, ImageInfo, Registry, RegistryError};
use crate::engine::skip::SkipReason;
use crate::engine::view::RepositoryView;
use crate::engine::{Engine, Job, Known};
use crate::oci::digest::Digest;
use crate::oci::manifest::Manifest;
use crate::oci::names::ImageTag;

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
            .map_err(|e| Failure {
                code: "AuditUnavailable".to_owned(),
                error: format!("not attempted: the checkpoint record listing it could not be written: {e}"),
                retryable: true,
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
