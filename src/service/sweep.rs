//! A reconciliation sweep in process (the CLI's `sweep`): every tagged index of the selected repositories
//! handled through the same handler as a push event (`trigger: sweep`, one
//! audit record per image), with a summary of what it did and left alone.
//!
//! Each repository is listed once; each selected image then costs what a
//! push costs (see [`crate::engine`]); [`SWEEP_CONCURRENCY`] images of a
//! repository are handled at once, all sharing the `PutImage` token bucket. The engine is idempotent, so a sweep
//! run again (or resumed after an interruption) writes nothing already done.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use futures_util::StreamExt;
use serde::Serialize;

use crate::decide::action::{Action, DeleteRole};
use crate::decide::skip::SkipCode;
use crate::engine::audit::{ActionOutcome, AuditRecord, AuditSink, Outcome};
use crate::engine::registry::{Registry, RegistryError};
use crate::engine::retry::retrying;
use crate::engine::{Job, Purpose};
use crate::oci::names::{AccountId, RepositoryName};
use crate::service::handler::{Delivery, Handler, RetryError};
use crate::sweep::replication::DriftReport;
use crate::sweep::scan::{Scope, repositories};
use crate::sweep::select::{Selection, Untouched};
use crate::sweep::signing::SignatureGap;
use crate::sweep::walk::{Found, Replicas, Walk, Walked};

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepSummary {
    /// A dry run: the counts below are what the real run on the same
    /// registry would do (`remediated`: would remediate; `manifests_deleted`:
    /// would delete), and nothing was written.
    pub dry_run: bool,
    /// The account swept (the caller's own, or the member named).
    pub account: Option<AccountId>,
    /// The region swept.
    pub region: Option<String>,
    /// Repositories listed.
    pub repositories_scanned: usize,
    /// Indexes found in them.
    pub indexes_seen: usize,
    /// Images handled (one per tagged index and tag).
    pub images_handled: usize,
    /// Records with outcome `remediated`.
    pub remediated: usize,
    /// Leftovers handled (untagged indexes a remediation left, orphaned
    /// attestations): one record each, counted by outcome like the rest.
    pub leftovers_handled: usize,
    /// Records with outcome `noop`, plus indexes whose only tags are keep tags.
    pub already_fine: usize,
    /// Of `already_fine`, the indexes whose only tags are keep tags: known
    /// fine from the listing alone, not read again (so not in
    /// `images_handled`).
    pub already_fine_by_keep_tag: usize,
    /// Records with outcome `skipped`, by reason code.
    pub skipped: BTreeMap<SkipCode, usize>,
    /// Changes the handled images' plans left out (a deletion deferred or
    /// kept, a tag not taken), by reason code: each is also in its record's
    /// `skipped` and on its row of the table.
    pub changes_not_made: BTreeMap<SkipCode, usize>,
    /// Records with outcome `failed`, plus records that could not be written.
    pub failed: usize,
    /// Manifests deleted.
    pub manifests_deleted: usize,
    /// Of those, indexes earlier runs kept under a keep tag, retired on
    /// request (`--retire-kept-indexes`).
    pub kept_indexes_retired: usize,
    /// Their size, as `DescribeImages` reported it right before deleting.
    pub bytes_reclaimed: u64,
    /// Images handled that the handling makes deployable by a tag (or
    /// that already were) which Lambda would refuse (`deployability` in
    /// their records: verdict `no`).
    pub lambda_would_refuse: usize,
    /// The same, with verdict `unknown` (something could not be checked).
    pub lambda_unknown: usize,
    /// Images left alone, by reason.
    pub not_touched: BTreeMap<Untouched, usize>,
    /// Promoted tags whose index is signed and whose image is not (a
    /// signature pushed after the promotion): verification by tag fails
    /// until the image is signed. Reported, never changed.
    pub signature_gaps: Vec<SignatureGap>,
    /// Replication destinations (ECR replication rules of this registry)
    /// that differ from their source, per repository: tags pointing
    /// elsewhere, manifests the source deleted (deletions are not
    /// replicated); or that could not be read.
    pub replication_drift: Vec<DriftReport>,
    /// Why the replication rules could not be read, when they could not
    /// (nothing about replicas is then known).
    pub replication_unchecked: Option<String>,
    /// Repositories that could not be listed, with the error.
    pub repository_errors: BTreeMap<String, String>,
    /// Repositories not listed because their `ecr-remediator:mode` tag (or
    /// its absence, where the rule requires an opt-in) leaves them alone,
    /// with the reason.
    pub repositories_left_alone: BTreeMap<String, String>,
    /// Why the sweep stopped before its end: the audit trail refused the
    /// caller (it may not write to the stack's audit bus), so every further
    /// image would be refused too, before acting. The images under way
    /// then were finished; none was started after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl SweepSummary {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.repository_errors.is_empty() && self.stopped.is_none()
    }
}

/// Told about a sweep's progress (the CLI draws a progress line from it).
pub trait Progress {
    /// Starting repository `n` (0-based) of `total`, with `images` selected in it.
    fn repository(&mut self, n: usize, total: usize, name: &RepositoryName, images: usize);
    /// One more image handled.
    fn image(&mut self, record: &AuditRecord);
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Progress for Quiet {
    fn repository(&mut self, _: usize, _: usize, _: &RepositoryName, _: usize) {}
    fn image(&mut self, _: &AuditRecord) {}
}

/// Images of one repository a sweep handles at once: enough to keep the
/// `PutImage` token bucket the bottleneck while other images wait on reads
/// or backoff.
pub const SWEEP_CONCURRENCY: usize = 4;

/// Sweeps `scope`, calling `progress` along the way.
pub async fn sweep<R: Registry, A: AuditSink>(
    handler: &Handler<R, A>,
    scope: &Scope,
    selection: &Selection,
    progress: &mut impl Progress,
) -> Result<SweepSummary, RegistryError> {
    let mut summary_unchecked = None;
    let member = handler.sweep_registry(scope.account.as_ref()).await?;
    let registry: &R = member.as_deref().unwrap_or(&handler.registry);
    let repos = repositories(registry, scope, &handler.retry).await?;
    let total = repos.len();
    let rules = match retrying(&handler.retry, None, || registry.replication_rules()).await {
        Ok(rules) => rules,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the registry's replication rules; replicas not compared");
            summary_unchecked = Some(e.to_string());
            Vec::new()
        }
    };
    let own_account = scope.account.as_ref().or(handler.own_account.as_ref());
    let policies = handler.policies_now().await;
    let walk = Walk {
        registry,
        retry: &handler.retry,
        policies: &policies,
        scope,
        selection,
        replicas: Some(Replicas {
            rules: &rules,
            account: own_account,
            region: handler.own_region.as_deref(),
        }),
    };
    let walk = &walk;
    // Shared by the stream that walks repositories and the loop that tallies
    // records; the stream is polled on this task only, and no borrow is held
    // across an await.
    let summary = RefCell::new(SweepSummary {
        account: own_account.cloned(),
        region: handler.own_region.clone(),
        replication_unchecked: summary_unchecked,
        ..SweepSummary::default()
    });
    let progress = RefCell::new(progress);
    // Set when the trail refuses the caller: no image is started after it
    // (each would be refused before acting), those under way finish.
    let stop = Cell::new(false);
    // Repositories are walked one after the other as the handling pulls their
    // images, so the next listing overlaps the last images of the one before
    // and only one listing is in memory at a time.
    let walked = futures_util::stream::iter(repos.iter().enumerate())
        .take_while(|_| std::future::ready(!stop.get()))
        .then(|(n, repo)| async move { (n, repo, walk.repository(repo).await) });
    let jobs = walked.flat_map(|(n, repo, walked)| {
        let jobs = tally_repository(&mut summary.borrow_mut(), repo, walked);
        progress.borrow_mut().repository(n, total, repo, jobs.len());
        futures_util::stream::iter(jobs)
    });
    let mut handled = Box::pin(
        jobs.take_while(|_| std::future::ready(!stop.get()))
            .map(|job| async move {
                let leftover = matches!(job.purpose, Purpose::Cleanup { .. } | Purpose::Retire { .. });
                (handler.handle_job_record(&job, Delivery::default()).await, leftover)
            })
            .buffer_unordered(SWEEP_CONCURRENCY),
    );
    while let Some(((record, written), leftover)) = handled.next().await {
        tally_record(&mut summary.borrow_mut(), &record, written.is_ok(), leftover);
        progress.borrow_mut().image(&record);
        if let Err(RetryError::Audit(refused)) = &written
            && refused.refuses_the_caller()
            && !stop.replace(true)
        {
            summary.borrow_mut().stopped = Some(refused.to_string());
        }
    }
    drop(handled);
    let summary = summary.into_inner();
    if summary.stopped.is_none() {
        for gap in &summary.signature_gaps {
            handler.record_signature_gap(scope.account.as_ref(), gap).await;
        }
    }
    Ok(summary)
}

/// Adds what the walk found in `repo` to the summary; returns the jobs to
/// handle (none when the repository failed or is left alone).
fn tally_repository(s: &mut SweepSummary, repo: &RepositoryName, walked: Walked) -> Vec<Job> {
    match walked {
        Walked::Failed(e) => {
            tracing::warn!(repository = %repo, error = %e, "cannot list the repository; skipped");
            s.repository_errors.insert(repo.to_string(), e.to_string());
            Vec::new()
        }
        Walked::LeftAlone(reason) => {
            tracing::info!(repository = %repo, %reason, "repository left alone");
            s.repositories_left_alone.insert(repo.to_string(), reason);
            Vec::new()
        }
        Walked::Listed(found) => {
            if let Some(problems) = found.problems() {
                s.repository_errors.insert(repo.to_string(), problems);
            }
            let Found {
                indexes_seen,
                already_fine,
                untouched,
                mut jobs,
                retire,
                gaps,
                drift,
                ..
            } = *found;
            s.replication_drift.extend(drift);
            s.signature_gaps.extend(gaps);
            s.repositories_scanned += 1;
            s.indexes_seen += indexes_seen;
            s.already_fine += already_fine;
            s.already_fine_by_keep_tag += already_fine;
            for (kind, count) in untouched {
                *s.not_touched.entry(kind).or_default() += count;
            }
            jobs.extend(retire);
            jobs
        }
    }
}

/// Adds one handled image's record to the summary.
fn tally_record(s: &mut SweepSummary, record: &AuditRecord, written: bool, leftover: bool) {
    s.images_handled += 1;
    s.leftovers_handled += usize::from(leftover);
    s.dry_run |= record.policy.as_ref().is_some_and(|p| p.dry_run);
    // A dry run counts what the real run would do, in the same fields.
    match &record.outcome {
        Outcome::Remediated | Outcome::Planned => s.remediated += 1,
        Outcome::Noop => s.already_fine += 1,
        Outcome::Skipped { code, .. } => *s.skipped.entry(*code).or_default() += 1,
        Outcome::Failed(_) | Outcome::InProgress => s.failed += 1,
    }
    for left_out in record
        .skipped
        .iter()
        .filter(|k| k.action.is_some() || k.digest.is_some())
    {
        *s.changes_not_made.entry(left_out.reason.code()).or_default() += 1;
    }
    if !written && !matches!(record.outcome, Outcome::Failed(_)) {
        // The work may be done, but its record is not in the trail.
        s.failed += 1;
    }
    let planned_deletes = || {
        record
            .actions
            .iter()
            .filter(|a| a.outcome == ActionOutcome::Planned && a.action.is_delete())
    };
    s.manifests_deleted += record.deleted as usize + planned_deletes().count();
    s.lambda_would_refuse += record.deployability.iter().filter(|d| d.verdict.is_no()).count();
    s.lambda_unknown += record.deployability.iter().filter(|d| d.verdict.is_unknown()).count();
    s.bytes_reclaimed += planned_deletes().filter_map(|a| a.bytes).sum::<u64>();
    s.kept_indexes_retired += record
        .actions
        .iter()
        .filter(|a| {
            matches!(a.outcome, ActionOutcome::Applied | ActionOutcome::Planned)
                && matches!(
                    a.action,
                    Action::Delete {
                        role: DeleteRole::KeptIndex,
                        ..
                    }
                )
        })
        .count();
    s.bytes_reclaimed += record.reclaimed_bytes;
}
