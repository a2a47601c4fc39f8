//! A scheduled sweep: the repositories in scope listed once, one request per
//! image that needs work put on the push queue, so the function's
//! concurrency limit, retries, dead-letter queue and audit trail apply to
//! them as to pushes. The work happens when the requests are consumed.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use crate::engine::audit::now_ms;
use crate::engine::registry::{Registry, RegistryError};
use crate::engine::repository_policy;
use crate::engine::retry::{RetryPolicy, retrying};
use crate::engine::sweep::{CleanupSelection, Selection, cleanup_enabled, select};
use crate::policy::PolicySet;
use crate::policy::repository_tag::Resolved;
use crate::service::message::Request;
use crate::service::scan::{Scope, jobs_of, leftovers, repositories};

/// Where a scheduled sweep puts its requests: the push queue, so the
/// function's concurrency limit, retries, dead-letter queue and audit trail
/// apply to them as to pushes.
pub trait JobQueue: Send + Sync {
    /// Enqueues message bodies, as many as given (batching them, 10 at a
    /// time, and sending batches concurrently is the adapter's business).
    fn enqueue<'a>(&'a self, bodies: &'a [String])
    -> Pin<Box<dyn Future<Output = Result<(), QueueError>> + Send + 'a>>;

    /// Enqueues one message body, delivered no earlier than `delay_s`
    /// seconds from now (at most the queue's limit, 900 s on SQS): a
    /// follow-up a handling schedules for itself.
    fn enqueue_after<'a>(
        &'a self,
        body: &'a str,
        delay_s: u32,
    ) -> Pin<Box<dyn Future<Output = Result<(), QueueError>> + Send + 'a>>;
}

/// The longest delay a queued message can carry (SQS `DelaySeconds`).
pub const MAX_DELAY_S: u32 = 900;

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
    /// Requests enqueued (one per tagged index and tag, and one per leftover).
    pub enqueued: usize,
    /// Of those, leftovers to clean up.
    pub leftovers: usize,
    /// Indexes whose only tags are keep tags.
    pub already_fine: usize,
    /// Repositories whose `ecr-remediator:mode` tag leaves them alone.
    pub left_alone: usize,
    /// Promoted tags whose index is signed and whose image is not (logged
    /// and recorded with what to do; never changed).
    pub signature_gaps: usize,
    /// Those gaps, for their records.
    #[serde(skip)]
    pub gaps: Vec<crate::engine::signing::SignatureGap>,
    /// Repositories that could not be read, with the error (the others were swept).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub repository_errors: BTreeMap<String, String>,
    /// The account, when the request named one this deployment does not list
    /// (refused and recorded; nothing enqueued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// A scheduled sweep: lists the repositories in scope once and enqueues one
/// request per tagged index the per-push path should handle. The work itself
/// happens when the requests are consumed, within the queue's limits.
pub async fn enqueue<R: Registry>(
    registry: &R,
    policies: &PolicySet,
    scope: &Scope,
    selection: &Selection,
    queue: &dyn JobQueue,
) -> Result<EnqueueSummary, EnqueueError> {
    let mut summary = EnqueueSummary::default();
    let retry = RetryPolicy::default();
    for repo in repositories(registry, scope, &retry).await? {
        // A repository that cannot be read (its tag, its listing) is reported
        // and the others are swept, as the CLI's sweep does; only the queue
        // refusing fails the request (it is delivered again).
        let rule = policies.select_for(&repo, scope.account.as_ref()).policy;
        let read = async {
            let policy = match repository_policy::resolve(registry, &retry, None, rule, &repo).await? {
                (Resolved::Apply { policy, .. }, _) => *policy,
                (left_alone, _) => return Ok(Err(left_alone)),
            };
            let listing = retrying(&retry, None, || registry.list_images(&repo)).await?;
            Ok::<_, RegistryError>(Ok((policy, listing)))
        };
        let (policy, listing) = match read.await {
            Ok(Ok(read)) => read,
            Ok(Err(left_alone)) => {
                tracing::info!(repository = %repo, reason = %left_alone, "repository left alone");
                summary.left_alone += 1;
                continue;
            }
            Err(e) => {
                tracing::error!(repository = %repo, error = %e, "cannot read the repository; the others are swept");
                summary.repository_errors.insert(repo.to_string(), e.to_string());
                continue;
            }
        };
        summary.repositories_scanned += 1;
        let plan = select(&listing, &policy, selection);
        match crate::service::scan::signature_gaps(registry, &retry, &repo, &listing, &policy).await {
            Ok(gaps) => {
                crate::service::scan::report_gaps(&repo, &gaps);
                summary.signature_gaps += gaps.len();
                summary.gaps.extend(gaps);
            }
            Err(e) => {
                tracing::warn!(repository = %repo, error = %e, "cannot read what signs its promoted images");
            }
        }
        summary.indexes_seen += plan.indexes_seen;
        summary.already_fine += plan.already_fine;
        let cleanup = if cleanup_enabled(&policy, selection) {
            match leftovers(registry, &retry, &repo, &listing, &policy, selection, now_ms()).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::error!(repository = %repo, error = %e, "cannot read the repository's indexes; no leftovers sought");
                    summary
                        .repository_errors
                        .insert(repo.to_string(), format!("leftovers not sought: {e}"));
                    CleanupSelection::default()
                }
            }
        } else {
            CleanupSelection::default()
        };
        summary.leftovers += cleanup.jobs.len();
        let bodies: Vec<String> = jobs_of(&repo, scope.account.as_ref(), plan.jobs, cleanup.jobs, selection)
            .iter()
            .map(|job| Request::for_job(job).body())
            .collect();
        queue.enqueue(&bodies).await?;
        summary.enqueued += bodies.len();
    }
    Ok(summary)
}
