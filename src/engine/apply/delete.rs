//! Applying a plan's deletions: the checkpoint, the re-read of their tags,
//! the index before the attestations it frees (see [`super`]).

use std::collections::BTreeMap;

use super::push;
use crate::engine::action::{Action, DeleteRole};
use crate::engine::audit::{ActionOutcome, ActionRecord, AuditRecord, AuditSink, Failure, Outcome, write_with_retries};
use crate::engine::planned::Plan;
use crate::engine::registry::{DeleteOutcome, ImageInfo, Registry};
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

    pub(super) async fn delete_all(&self, job: &Job, deletes: &[&Action], known: &Known, record: &mut AuditRecord) {
        let repo = &job.repository;
        let digests: Vec<Digest> = deletes.iter().map(|a| a.target().clone()).collect();
        let info = match self.retry(|| self.registry.describe_images(repo, &digests)).await {
            Ok(info) => info,
            Err(e) => {
                for a in deletes {
                    push(&mut record.actions, a, ActionOutcome::Failed((&e).into()));
                }
                return;
            }
        };
        let mut go: Vec<&Action> = Vec::new();
        for a in deletes {
            match info.get(a.target()) {
                Some(Some(i)) if !only_tags_it_removes(a, &i.tags) => push(
                    &mut record.actions,
                    a,
                    ActionOutcome::Skipped {
                        reason: format!("tagged ({}); never deleted", i.tags.join(", ")),
                    },
                ),
                Some(None) | None => push(&mut record.actions, a, ActionOutcome::Already),
                Some(Some(_)) => go.push(a),
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

/// True when every tag found on a deletion's image right before deleting is
/// one the deletion was planned to remove with it (none, for all but a
/// retired kept index): anything else tagged is never deleted.
fn only_tags_it_removes(action: &Action, found: &[String]) -> bool {
    let removes: &[ImageTag] = match action {
        Action::Delete { removes_tags, .. } => removes_tags,
        _ => &[],
    };
    found
        .iter()
        .all(|t| ImageTag::parse(t).is_ok_and(|t| removes.contains(&t)))
}
