//! A reconciliation sweep: every tagged index of the selected repositories
//! handled through the same handler as a push event (`trigger: sweep`, one
//! audit record per image), with a summary of what it did and left alone.
//!
//! Each repository is listed once; each selected image then costs what a
//! push costs (see [`crate::engine`]); [`SWEEP_CONCURRENCY`] images of a
//! repository are handled at once, all sharing the `PutImage` token bucket. The engine is idempotent, so a sweep
//! run again (or resumed after an interruption) writes nothing already done.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;

use crate::engine::Job;
use crate::engine::audit::{ActionOutcome, AuditRecord, AuditSink, Outcome, Trigger};
use crate::engine::plan::Action;
use crate::engine::registry::{Registry, RegistryError};
use crate::engine::retry::{RetryPolicy, retrying};
use crate::engine::sweep::{Selection, Untouched, select};
use crate::oci::names::RepositoryName;
use crate::service::handler::{Delivery, Handler};

/// Which repositories a sweep covers.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// These repositories (when empty: every repository, or those with a prefix below).
    pub repositories: Vec<RepositoryName>,
    /// Repositories whose name starts with one of these.
    pub prefixes: Vec<String>,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepSummary {
    /// Repositories listed.
    pub repositories_scanned: usize,
    /// Indexes found in them.
    pub indexes_seen: usize,
    /// Images handled (one per tagged index and tag).
    pub images_handled: usize,
    /// Records with outcome `remediated`.
    pub remediated: usize,
    /// Records with outcome `noop`, plus indexes whose only tags are keep tags.
    pub already_fine: usize,
    /// Records with outcome `skipped`, by reason code.
    pub skipped: BTreeMap<String, usize>,
    /// Records with outcome `failed`, plus records that could not be written.
    pub failed: usize,
    /// Manifests deleted.
    pub manifests_deleted: usize,
    /// Their size, as the listing reported it.
    pub bytes_reclaimed: i64,
    /// Images left alone, by reason.
    pub not_touched: BTreeMap<Untouched, usize>,
    /// Repositories that could not be listed, with the error.
    pub repository_errors: BTreeMap<String, String>,
}

impl SweepSummary {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.repository_errors.is_empty()
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

/// The repositories in scope, in name order.
pub async fn repositories<R: Registry>(
    registry: &R,
    scope: &Scope,
    retry: &RetryPolicy,
) -> Result<Vec<RepositoryName>, RegistryError> {
    let mut out: Vec<RepositoryName> = if scope.repositories.is_empty() {
        retrying(retry, None, || registry.list_repositories())
            .await?
            .into_iter()
            .filter(|r| scope.prefixes.is_empty() || scope.prefixes.iter().any(|p| r.as_str().starts_with(p.as_str())))
            .collect()
    } else {
        scope.repositories.clone()
    };
    out.sort();
    out.dedup();
    Ok(out)
}

/// Sweeps `scope`, calling `progress` along the way.
pub async fn sweep<R: Registry, A: AuditSink>(
    handler: &Handler<R, A>,
    scope: &Scope,
    selection: &Selection,
    progress: &mut impl Progress,
) -> Result<SweepSummary, RegistryError> {
    let repos = repositories(&handler.registry, scope, &handler.retry).await?;
    let total = repos.len();
    // Shared by the stream that lists repositories and the loop that tallies
    // records; the stream is polled on this task only, and no borrow is held
    // across an await.
    let summary = RefCell::new(SweepSummary::default());
    let progress = RefCell::new(progress);
    // Repositories are listed one after the other as the handling pulls their
    // images, so the next listing overlaps the last images of the one before
    // and only one listing is in memory at a time.
    let listed = futures_util::stream::iter(repos.iter().enumerate()).then(|(n, repo)| async move {
        let listing = retrying(&handler.retry, None, || handler.registry.list_images(repo)).await;
        (n, repo, listing)
    });
    let jobs = listed.flat_map(|(n, repo, listing)| {
        let mut items = Vec::new();
        match listing {
            Err(e) => {
                tracing::warn!(repository = %repo, error = %e, "cannot list the repository; skipped");
                summary
                    .borrow_mut()
                    .repository_errors
                    .insert(repo.to_string(), e.to_string());
                progress.borrow_mut().repository(n, total, repo, 0);
            }
            Ok(listing) => {
                let plan = select(&listing, handler.policies.select(repo).policy, selection);
                {
                    let mut s = summary.borrow_mut();
                    s.repositories_scanned += 1;
                    s.indexes_seen += plan.indexes_seen;
                    s.already_fine += plan.already_fine;
                    for (kind, count) in &plan.untouched {
                        *s.not_touched.entry(*kind).or_default() += count;
                    }
                }
                progress.borrow_mut().repository(n, total, repo, plan.jobs.len());
                let sizes = Arc::new(plan.sizes);
                for (digest, tag) in plan.jobs {
                    let job = Job {
                        trigger: Trigger::Sweep,
                        event_id: None,
                        account: None,
                        region: None,
                        repository: repo.clone(),
                        digest,
                        tag: Some(tag),
                    };
                    items.push((job, Arc::clone(&sizes)));
                }
            }
        }
        futures_util::stream::iter(items)
    });
    let mut handled = Box::pin(
        jobs.map(|(job, sizes)| async move { (handler.handle_job_record(&job, Delivery::default()).await, sizes) })
            .buffer_unordered(SWEEP_CONCURRENCY),
    );
    while let Some(((record, written), sizes)) = handled.next().await {
        let mut s = summary.borrow_mut();
        s.images_handled += 1;
        match &record.outcome {
            Outcome::Remediated => s.remediated += 1,
            Outcome::Noop => s.already_fine += 1,
            Outcome::Skipped { code, .. } => *s.skipped.entry(code.clone()).or_default() += 1,
            Outcome::Failed(_) | Outcome::InProgress => s.failed += 1,
        }
        if written.is_err() && !matches!(record.outcome, Outcome::Failed(_)) {
            // The work may be done, but its record is not in the trail.
            s.failed += 1;
        }
        for a in &record.actions {
            if let (Action::Delete { digest, .. }, ActionOutcome::Applied) = (&a.action, &a.outcome) {
                s.manifests_deleted += 1;
                s.bytes_reclaimed += sizes.get(digest).copied().unwrap_or(0);
            }
        }
        drop(s);
        progress.borrow_mut().image(&record);
    }
    drop(handled);
    Ok(summary.into_inner())
}

/// Where a scheduled sweep puts its requests: the push queue, so the
/// function's concurrency limit, retries, dead-letter queue and audit trail
/// apply to them as to pushes.
pub trait JobQueue: Sync {
    /// Enqueues message bodies (at most 10 at a time is the adapter's business).
    fn enqueue(&self, bodies: &[String]) -> impl std::future::Future<Output = Result<(), QueueError>> + Send;
}

/// Messages could not be enqueued.
#[derive(Debug, thiserror::Error)]
#[error("could not enqueue sweep requests on {queue}: {message}")]
pub struct QueueError {
    /// The queue.
    pub queue: String,
    /// What happened.
    pub message: String,
}

/// Why a scheduled sweep stopped.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// Listing failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The queue refused.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What a scheduled sweep enqueued.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnqueueSummary {
    /// Repositories listed.
    pub repositories_scanned: usize,
    /// Indexes found in them.
    pub indexes_seen: usize,
    /// Requests enqueued (one per tagged index and tag).
    pub enqueued: usize,
    /// Indexes whose only tags are keep tags.
    pub already_fine: usize,
}

/// The request a sweep enqueues for one image: an event of source
/// [`crate::service::event::REQUEST_SOURCE`] whose detail has the shape of
/// ECR's PUSH detail, so it takes exactly the path a push takes.
pub fn request_event(
    repository: &RepositoryName,
    digest: &crate::oci::digest::Digest,
    tag: &crate::oci::names::ImageTag,
) -> String {
    use crate::service::event::{REQUEST_DETAIL_TYPE, REQUEST_SOURCE};
    let hex = digest.to_string();
    serde_json::json!({
        "version": "0",
        "id": format!("sweep-{}-{}", hex.get(7..19).unwrap_or(&hex), tag),
        "detail-type": REQUEST_DETAIL_TYPE,
        "source": REQUEST_SOURCE,
        "time": crate::engine::audit::rfc3339(std::time::SystemTime::now()),
        "resources": [],
        "detail": {
            "result": "SUCCESS",
            "action-type": "PUSH",
            "repository-name": repository.as_str(),
            "image-digest": hex,
            "image-tag": tag.as_str(),
            "manifest-media-type": "application/vnd.oci.image.index.v1+json",
        }
    })
    .to_string()
}

/// A scheduled sweep: lists the repositories in scope once and enqueues one
/// request per tagged index the per-push path should handle. The work itself
/// happens when the requests are consumed, within the queue's limits.
pub async fn enqueue<R: Registry, Q: JobQueue>(
    registry: &R,
    policies: &crate::policy::PolicySet,
    scope: &Scope,
    selection: &Selection,
    queue: &Q,
) -> Result<EnqueueSummary, EnqueueError> {
    let mut summary = EnqueueSummary::default();
    let retry = RetryPolicy::default();
    for repo in repositories(registry, scope, &retry).await? {
        let listing = retrying(&retry, None, || registry.list_images(&repo)).await?;
        summary.repositories_scanned += 1;
        let plan = select(&listing, policies.select(&repo).policy, selection);
        summary.indexes_seen += plan.indexes_seen;
        summary.already_fine += plan.already_fine;
        let bodies: Vec<String> = plan.jobs.iter().map(|(d, t)| request_event(&repo, d, t)).collect();
        for chunk in bodies.chunks(10) {
            queue.enqueue(chunk).await?;
        }
        summary.enqueued += bodies.len();
    }
    Ok(summary)
}
