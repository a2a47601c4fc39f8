//! Handling one image: read → plan → apply, then the audit record.
//!
//! A straight line: `read` gathers a constant amount of registry state,
//! [`crate::decide::plan::plan`] decides everything (fallbacks, gates, collisions)
//! without IO, and `apply` only executes the plan and re-checks its
//! preconditions right before writing. When the registry changed between
//! reading and writing, the line runs again on fresh state (a bounded number
//! of rounds). Works against any [`Registry`]; the ECR adapter and the
//! in-memory double behave the same.
//!
//! Registry calls per push, when nothing races: at most 4 reads (the index
//! and its tag; its children and candidate tags; one batched precondition
//! check right before the writes; the tags of the deletion candidates right
//! before deleting), one `PutImage` per tag written, and `BatchDeleteImage`
//! (the index in its own call, then its attestations). Only when the plan
//! would delete, one `ListImageReferrers` per manifest it would delete
//! (concurrently; see `gate`); their companion tags ride in the second read;
//! one `DescribeImages` for their push and pull times; and, only when a
//! deletion is due (after the grace period), the account's workload scan,
//! which the adapter caches (`evidence`). Before them, unless
//! the rule ignores it, the repository's `ecr-remediator:mode` tag is read
//! (`ListTagsForResource`, which the ECR adapter caches per repository).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Instant, SystemTime};

use crate::decide::action::Action;
use crate::decide::plan::{PlanInput, plan};
use crate::decide::skip::SkipCode;
use crate::decide::{cleanup, gate, planned, retire, undo, view};
use crate::engine::audit::{
    ActionOutcome, ActionRecord, AuditRecord, AuditSink, ClassificationSummary, Outcome, PolicySummary, Trigger,
};
use crate::engine::registry::{Registry, RegistryError};
use crate::engine::retry::{Jitter, RetryPolicy};
use crate::oci::classify::classify_manifest;
use crate::oci::digest::Digest;
use crate::oci::manifest::RawManifest;
use crate::oci::names::{AccountId, ImageTag, RepositoryName};
use crate::policy::repository_tag::Resolved;
use crate::policy::{Mode, PolicySet};

mod apply;
pub mod audit;
mod evidence;
mod read;
mod reconcile;
pub mod registry;
pub(crate) mod repository_policy;
pub mod retry;

use apply::Applied;
use read::Read;

/// Manifests read, by digest.
type Known = BTreeMap<Digest, RawManifest>;

/// How far back a redelivery reads the trail for an earlier delivery's
/// checkpoint: a queue redelivers within its visibility timeout times its
/// receive count, hours at most.
pub const RECONCILE_LOOKBACK_MS: i64 = 24 * 3600 * 1000;

/// How many times the line runs when the registry keeps changing under it.
pub const MAX_ROUNDS: u32 = 3;

/// What a job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Purpose {
    /// Remediate a tagged index (pushed, or found by a sweep).
    #[default]
    Remediate,
    /// Delete a leftover a sweep found (an untagged index whose remediation
    /// holds its tag, or an orphaned attestation): see [`cleanup`].
    Cleanup {
        /// Candidates pushed more recently than this are left alone.
        min_age_s: u64,
    },
    /// Delete an index an earlier run kept under a keep tag, on the
    /// operator's explicit request (`sweep --retire-kept-indexes`): see
    /// [`retire`]. Never requested through a queue.
    Retire {
        /// Indexes pushed more recently than this are left alone.
        min_age_s: u64,
    },
    /// Put the job's tag back on the index an earlier promotion kept under
    /// its keep tag, on the operator's explicit request (`undo`): see
    /// `undo`. Never requested through a queue.
    Undo,
}

/// One image to handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// What to do with it.
    pub purpose: Purpose,
    /// What started it.
    pub trigger: Trigger,
    /// The event id, for push-triggered jobs.
    pub event_id: Option<String>,
    /// Account (from the event), when known.
    pub account: Option<AccountId>,
    /// Region (from the event), when known.
    pub region: Option<String>,
    /// For a replicated image (an `ECR Replication Action` event): the
    /// registry it was replicated from.
    pub replicated_from: Option<ReplicaSource>,
    /// Repository.
    pub repository: RepositoryName,
    /// The pushed image's digest.
    pub digest: Digest,
    /// The tag it was pushed with.
    pub tag: Option<ImageTag>,
    /// When that tag arrived (ms since the epoch): the push event's `time`
    /// (ECR does not reset `imagePushedAt` on a re-tag, the event says when
    /// the tag came), or the first handling's time a follow-up carries.
    /// `None`: not known, and the handling's own start is taken (the grace
    /// period then runs from now).
    pub tag_arrived_ms: Option<i64>,
}

/// The registry a replicated image came from (`source-account`,
/// `source-region` of ECR's replication event).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaSource {
    /// The source registry's account.
    pub account: Option<AccountId>,
    /// The source registry's region.
    pub region: Option<String>,
}

impl Job {
    /// A record of this job with its identity filled in (event, account,
    /// region, repository, image, tag), outcome `noop`, started now.
    pub fn record(&self) -> AuditRecord {
        let mut record = AuditRecord::new(self.trigger, Some(self.repository.as_str()), SystemTime::now());
        record.event_id = self.event_id.clone();
        record.account = self.account.clone();
        record.region = self.region.clone();
        record.replicated_from = self.replicated_from.clone();
        record.index_digest = Some(self.digest.to_string());
        record.tag = self.tag.as_ref().map(ToString::to_string);
        record
    }
}

/// What the engine works with.
#[derive(Debug)]
pub struct Engine<'a, R, A> {
    /// The registry.
    pub registry: &'a R,
    /// Where the pre-deletion checkpoint goes (the final record is written by the caller).
    pub audit: &'a A,
    /// The policies.
    pub policies: &'a PolicySet,
    /// Retries of retryable registry failures.
    pub retry: RetryPolicy,
    /// No retry wait may end after this instant (e.g. the Lambda deadline,
    /// less a margin to write the record).
    pub deadline: Option<tokio::time::Instant>,
    /// The Lambda request id, copied into the records (checkpoints included).
    pub request_id: Option<String>,
    /// The delivery attempt (SQS `ApproximateReceiveCount`), copied into the
    /// records, checkpoints included, so a checkpoint and the final record of
    /// one handling say the same attempt.
    pub attempt: Option<u32>,
}

/// The outcome of a handling the registry stopped: failed, except when the
/// repository itself is gone (deleted since the push: there is nothing left
/// to do, and nothing failed).
fn failed_or_gone(e: &RegistryError) -> Outcome {
    match e {
        RegistryError::RepositoryNotFound { .. } => {
            skipped(SkipCode::IndexGone, format!("the repository no longer exists ({e})"))
        }
        _ => Outcome::Failed(e.into()),
    }
}

pub(crate) fn skipped(code: SkipCode, reason: impl Into<String>) -> Outcome {
    Outcome::Skipped {
        code,
        reason: reason.into(),
    }
}

impl<R: Registry, A: AuditSink> Engine<'_, R, A> {
    /// Handles one image and returns its audit record (not yet written).
    pub async fn remediate(&self, job: &Job) -> AuditRecord {
        let started = Instant::now();
        let mut record = job.record();
        let selected = self.policies.select_for(&job.repository, job.account.as_ref());
        record.request_id = self.request_id.clone();
        record.attempt = self.attempt;
        let mut summary = PolicySummary {
            rule: selected.rule.to_owned(),
            source: selected.source(),
            mode: selected.policy.mode,
            requested_mode: selected.policy.mode,
            dry_run: selected.policy.dry_run,
            delete_orphans: selected.policy.delete_orphans,
            repository_tag: None,
        };
        let resolved = repository_policy::resolve(
            self.registry,
            &self.retry,
            self.deadline,
            selected.policy,
            &job.repository,
        )
        .await
        .map(|(resolved, value)| {
            summary.repository_tag = value;
            resolved
        });
        let outcome = match resolved {
            Err(e) => {
                record.policy = Some(summary);
                failed_or_gone(&e)
            }
            Ok(Resolved::Apply { policy, source }) => {
                if let Some(s) = source {
                    summary.source = format!("{}; {s}", summary.source);
                }
                summary.mode = policy.mode;
                summary.requested_mode = policy.mode;
                record.policy = Some(summary);
                match self.run(&policy, job, &mut record).await {
                    Ok(outcome) => outcome,
                    Err(e) => failed_or_gone(&e),
                }
            }
            // An undo is what an opted-out repository needs: the service
            // will not move the tag off the index again.
            Ok(Resolved::OptedOut { .. }) if job.purpose == Purpose::Undo => {
                let mut policy = selected.policy.clone();
                policy.mode = Mode::Observe;
                summary.source = format!("{}; the repository is opted out", summary.source);
                record.policy = Some(summary);
                match self.run(&policy, job, &mut record).await {
                    Ok(outcome) => outcome,
                    Err(e) => Outcome::Failed((&e).into()),
                }
            }
            Ok(left_alone) => {
                let code = match left_alone {
                    Resolved::Invalid { .. } => SkipCode::InvalidRepositoryTag,
                    Resolved::OptedOut { .. } | Resolved::Apply { .. } => SkipCode::OptedOut,
                };
                summary.source = format!("{}; {left_alone}", summary.source);
                record.policy = Some(summary);
                skipped(code, left_alone.to_string())
            }
        };
        record.outcome = outcome;
        self.reconcile(job, &mut record).await;
        record.is_final = !record.needs_retry();
        record.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        record
    }

    async fn run(
        &self,
        policy: &crate::policy::Policy,
        job: &Job,
        record: &mut AuditRecord,
    ) -> Result<Outcome, RegistryError> {
        match job.purpose {
            Purpose::Cleanup { min_age_s } => return self.run_cleanup(policy, job, min_age_s, false, record).await,
            Purpose::Retire { min_age_s } => return self.run_cleanup(policy, job, min_age_s, true, record).await,
            Purpose::Undo => return self.run_undo(policy, job, record).await,
            Purpose::Remediate => {}
        }
        let mut pushed_tag_immutable = false;
        let mut conflicts: Vec<String> = Vec::new();
        let started_ms = audit::now_ms();
        for _round in 0..MAX_ROUNDS {
            let mut snapshot = match self.read(policy, job).await? {
                Read::Skip(outcome) => return Ok(outcome),
                Read::Ready(s) => s,
            };
            record.classification = Some(ClassificationSummary::of(&snapshot.classification, |d| {
                snapshot.known.get(d).map(|m| classify_manifest(m.manifest()))
            }));
            let now_ms = audit::now_ms();
            let tag_arrived_ms = Some(job.tag_arrived_ms.unwrap_or(started_ms));
            let planned = |s: &read::Snapshot| {
                plan(&PlanInput {
                    manifest: &s.index,
                    classification: &s.classification,
                    tag: job.tag.as_ref(),
                    view: &s.view,
                    policy,
                    stale_holder: s.stale_holder.as_ref(),
                    pushed_tag_immutable,
                    manifests: &s.known,
                    now_ms,
                    tag_arrived_ms,
                })
            };
            let the_plan = self
                .plan_with_evidence(&job.repository, policy, &mut snapshot, planned)
                .await?;
            record.deferred_until = the_plan.deferred_until_ms.map(crate::time::rfc3339_ms);
            record.signing = the_plan.signing.clone();
            record.deployability = the_plan.deployability.clone();
            if let Some(p) = record.policy.as_mut() {
                p.mode = the_plan.mode;
                p.requested_mode = the_plan.requested_mode;
            }
            record.skipped = the_plan.skipped.clone();
            record.notes = conflicts
                .iter()
                .cloned()
                .chain(the_plan.notes.iter().cloned())
                .collect();
            found_in_place(record, &the_plan.in_place, self.attempt);
            if let Some(reason) = the_plan.halted() {
                return Ok(skipped(reason.code(), reason.to_string()));
            }
            if the_plan.mode == Mode::Observe || the_plan.actions.is_empty() {
                return Ok(Outcome::Noop);
            }
            let gates = gate::Gates {
                policy,
                now_ms: audit::now_ms(),
                tag_arrived_ms,
            };
            if the_plan.dry_run {
                return self.dry_run(job, record, &the_plan, &snapshot, gates).await;
            }
            match self.apply(job, &the_plan, &snapshot, gates, record).await {
                Applied::Done => return Ok(overall(&record.actions)),
                Applied::Conflict(why) => {
                    tracing::info!(repository = %job.repository, digest = %job.digest, %why, "registry changed before the writes; planning again");
                    conflicts.push(format!("planned again: {why}"));
                }
                Applied::PushedTagImmutable => {
                    pushed_tag_immutable = true;
                    conflicts.push("the pushed tag is immutable: planned again in tag mode".to_owned());
                }
            }
        }
        record.notes = conflicts;
        Ok(skipped(
            SkipCode::Conflict,
            format!("the registry kept changing under {MAX_ROUNDS} attempts; left for the next event or sweep"),
        ))
    }

    /// The cleanup line: read the candidate with its tags, plan, delete.
    /// Deleting needs no precondition round: the applier re-reads the tags
    /// right before deleting, and ECR refuses what an index still lists.
    async fn run_cleanup(
        &self,
        policy: &crate::policy::Policy,
        job: &Job,
        min_age_s: u64,
        retire: bool,
        record: &mut AuditRecord,
    ) -> Result<Outcome, RegistryError> {
        let mut candidate = match self.read_cleanup(job).await? {
            Read::Skip(outcome) => return Ok(outcome),
            Read::Ready(s) => s,
        };
        record.classification = Some(ClassificationSummary::of(&candidate.classification, |d| {
            candidate.known.get(d).map(|m| classify_manifest(m.manifest()))
        }));
        let now_ms = audit::now_ms();
        let planned = |c: &read::Snapshot| {
            let input = cleanup::CleanupInput {
                manifest: &c.index,
                classification: &c.classification,
                view: &c.view,
                policy,
                pushed_at_ms: c.pushed_at_ms,
                now_ms,
                min_age_s,
                manifests: &c.known,
            };
            if retire {
                retire::plan_retire(&input)
            } else {
                cleanup::plan_cleanup(&input)
            }
        };
        let the_plan = self
            .plan_with_evidence(&job.repository, policy, &mut candidate, planned)
            .await?;
        record.deferred_until = the_plan.deferred_until_ms.map(crate::time::rfc3339_ms);
        record.skipped = the_plan.skipped.clone();
        record.notes = the_plan.notes.clone();
        if let Some(reason) = the_plan.halted() {
            return Ok(skipped(reason.code(), reason.to_string()));
        }
        if the_plan.actions.is_empty() {
            return Ok(Outcome::Noop);
        }
        let gates = gate::Gates {
            policy,
            now_ms: audit::now_ms(),
            tag_arrived_ms: None,
        };
        // A plan of deletions has no writes, so no write precondition.
        self.run_once(job, record, &the_plan, &candidate, gates, || {
            "unexpected tag write in a cleanup".to_owned()
        })
        .await
    }

    /// A dry run: every action of the plan, exactly as the real run would
    /// attempt it, recorded as `planned` (a deletion with the bytes it would
    /// free); the deletions first pass the same gate on the same reads the
    /// real run makes right before deleting, so a deletion it would keep is
    /// recorded as skipped with the reason. Nothing is written.
    async fn dry_run(
        &self,
        job: &Job,
        record: &mut AuditRecord,
        plan: &planned::Plan,
        snapshot: &read::Snapshot,
        gates: gate::Gates<'_>,
    ) -> Result<Outcome, RegistryError> {
        let mut verdicts = if plan.actions.iter().any(Action::is_delete) {
            self.gate_deletions(job, plan, &snapshot.view, gates, false)
                .await?
                .verdicts
                .into_iter()
        } else {
            Vec::new().into_iter()
        };
        for a in &plan.actions {
            let outcome = if a.is_delete() {
                match verdicts.next() {
                    Some(apply::Verdict::Keep(reason)) => apply::kept_outcome(&reason),
                    Some(apply::Verdict::Gone) => ActionOutcome::Already,
                    Some(apply::Verdict::Delete) | None => ActionOutcome::Planned,
                }
            } else {
                ActionOutcome::Planned
            };
            let mut r = ActionRecord::new(a.clone(), outcome);
            if a.is_delete() && r.outcome == ActionOutcome::Planned {
                r.bytes = apply::expected_bytes(a, &snapshot.known);
            }
            record.actions.push(r);
        }
        Ok(Outcome::Planned)
    }

    /// The undo line: read the tag and its keep tags (one `BatchGetImage`),
    /// plan, and apply the one move like any write.
    async fn run_undo(
        &self,
        policy: &crate::policy::Policy,
        job: &Job,
        record: &mut AuditRecord,
    ) -> Result<Outcome, RegistryError> {
        let Some(tag) = &job.tag else {
            return Ok(skipped(SkipCode::Untagged, "an undo names the tag to put back"));
        };
        let tried = policy.keep_tags_for(tag);
        let mut ids = vec![registry::ImageRef::Tag(tag.clone())];
        ids.extend(tried.iter().cloned().map(registry::ImageRef::Tag));
        let fetched = self.retry(|| self.registry.get_images(&job.repository, &ids)).await?;
        let mut view = view::RepositoryView::new();
        let mut known = Known::new();
        let mut now = None;
        let mut kept = Vec::new();
        for (id, result) in fetched {
            // A tag whose holder cannot be served (archived) is not usable.
            let (registry::ImageRef::Tag(t), Ok(m)) = (id, result) else {
                continue;
            };
            read::note(&mut view, &mut known, &m, Some(&t));
            if t == *tag {
                now = Some(m.digest().clone());
            } else if m.media_type().is_index() {
                kept.push((t, m));
            }
        }
        let the_plan = undo::plan_undo(&undo::UndoInput {
            tag,
            now: now.as_ref(),
            kept: &kept,
            tried: &tried,
            policy,
        });
        record.skipped = the_plan.skipped.clone();
        record.notes = the_plan.notes.clone();
        if let Some(reason) = the_plan.halted() {
            return Ok(skipped(reason.code(), reason.to_string()));
        }
        let Some(Action::MoveTag { to, .. }) = the_plan.actions.first() else {
            return Ok(Outcome::Noop);
        };
        let Some((_, index)) = kept.iter().find(|(_, m)| m.digest() == to) else {
            return Ok(skipped(SkipCode::Inconsistent, "the planned index was not read"));
        };
        record.index_digest = Some(index.digest().to_string());
        let snapshot = read::Snapshot {
            index: index.clone(),
            classification: crate::oci::classify::classify(index),
            view,
            known,
            stale_holder: None,
            pushed_at_ms: None,
        };
        let gates = gate::Gates {
            policy,
            now_ms: audit::now_ms(),
            tag_arrived_ms: None,
        };
        self.run_once(job, record, &the_plan, &snapshot, gates, || {
            format!("{tag} is immutable in this repository: it cannot be moved back")
        })
        .await
    }

    /// Takes a plan that is not planned again to its end: recorded as
    /// `planned` in a dry run, else applied; a registry that changed before
    /// the write (or refused to move an immutable tag, `immutable` says
    /// how) ends it as skipped (`conflict`).
    async fn run_once(
        &self,
        job: &Job,
        record: &mut AuditRecord,
        the_plan: &planned::Plan,
        snapshot: &read::Snapshot,
        gates: gate::Gates<'_>,
        immutable: impl FnOnce() -> String,
    ) -> Result<Outcome, RegistryError> {
        if the_plan.dry_run {
            return self.dry_run(job, record, the_plan, snapshot, gates).await;
        }
        match self.apply(job, the_plan, snapshot, gates, record).await {
            Applied::Done => Ok(overall(&record.actions)),
            Applied::Conflict(why) => Ok(skipped(SkipCode::Conflict, why)),
            Applied::PushedTagImmutable => Ok(skipped(SkipCode::Conflict, immutable())),
        }
    }

    /// Runs `call` with this engine's retries (see [`retry::retrying`]).
    pub(crate) async fn retry<T, F, Fut>(&self, call: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        retry::retrying(&self.retry, self.deadline, call).await
    }

    /// Waits before attempt `attempt + 1` (see [`retry::wait_before_retry`]).
    pub(crate) async fn wait_before_retry(
        &self,
        attempt: u32,
        jitter: &mut Jitter,
        e: &RegistryError,
    ) -> Result<(), RegistryError> {
        retry::wait_before_retry(&self.retry, self.deadline, attempt, jitter, e).await
    }
}

/// Records the writes the plan found already done as `already` (once,
/// whatever the round), and says who may have made them.
fn found_in_place(record: &mut AuditRecord, in_place: &[Action], attempt: Option<u32>) {
    let mut added = 0;
    for a in in_place {
        if !record.actions.iter().any(|r| r.action == *a) {
            record
                .actions
                .push(ActionRecord::new(a.clone(), ActionOutcome::Already));
            added += 1;
        }
    }
    if added > 0 {
        let by = if attempt.is_some_and(|n| n > 1) {
            "an earlier delivery of this event, whose record may never have been written"
        } else {
            "an earlier handling of this index (or of this event)"
        };
        record.notes.push(format!(
            "{added} write(s) found in place, made before this handling by {by}: recorded as already"
        ));
    }
}

fn overall(actions: &[ActionRecord]) -> Outcome {
    use crate::engine::audit::Failure;
    let failures: Vec<&Failure> = actions
        .iter()
        .filter_map(|a| match &a.outcome {
            ActionOutcome::Failed(f) => Some(f),
            _ => None,
        })
        .collect();
    if let Some(first) = failures.first() {
        return Outcome::Failed(Failure {
            retryable: failures.iter().any(|f| f.retryable),
            ..(*first).clone()
        });
    }
    if actions.iter().any(|a| a.outcome == ActionOutcome::Applied) {
        Outcome::Remediated
    } else {
        Outcome::Noop
    }
}
