//! A scheduled sweep: the repositories in scope listed once, one request per
//! image that needs work put on the push queue, so the function's
//! concurrency limit, retries, dead-letter queue and audit trail apply to
//! them as to pushes. The work happens when the requests are consumed.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use crate::engine::registry::Registry;
use crate::engine::registry::RegistryError;
use crate::engine::retry::RetryPolicy;
use crate::policy::PolicySet;
use crate::service::message::Request;
use crate::sweep::scan::{Scope, repositories};
use crate::sweep::select::Selection;
use crate::sweep::walk::{Found, Walk, Walked};

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
    pub gaps: Vec<crate::sweep::signing::SignatureGap>,
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
    retry: &RetryPolicy,
    policies: &PolicySet,
    scope: &Scope,
    selection: &Selection,
    queue: &dyn JobQueue,
) -> Result<EnqueueSummary, EnqueueError> {
    let mut summary = EnqueueSummary::default();
    let walk = Walk {
        registry,
        retry,
        policies,
        scope,
        selection,
        replicas: None,
    };
    for repo in repositories(registry, scope, retry).await? {
        // A repository that cannot be read is reported and the others are
        // swept, as the CLI's sweep does; only the queue refusing fails the
        // request (it is delivered again).
        let found = match walk.repository(&repo).await {
            Walked::Listed(found) => found,
            Walked::LeftAlone(reason) => {
                tracing::info!(repository = %repo, %reason, "repository left alone");
                summary.left_alone += 1;
                continue;
            }
            Walked::Failed(e) => {
                tracing::error!(repository = %repo, error = %e, "cannot read the repository; the others are swept");
                summary.repository_errors.insert(repo.to_string(), e.to_string());
                continue;
            }
        };
        if let Some(problems) = found.problems() {
            summary.repository_errors.insert(repo.to_string(), problems);
        }
        let Found {
            indexes_seen,
            already_fine,
            jobs,
            leftovers,
            gaps,
            ..
        } = *found;
        summary.repositories_scanned += 1;
        summary.indexes_seen += indexes_seen;
        summary.already_fine += already_fine;
        summary.signature_gaps += gaps.len();
        summary.gaps.extend(gaps);
        summary.leftovers += leftovers;
        // Kept indexes are retired only on the operator's request, never
        // through a queue: the walk's `retire` is not enqueued.
        let bodies: Vec<String> = jobs.iter().map(|job| Request::for_job(job).body()).collect();
        queue.enqueue(&bodies).await?;
        summary.enqueued += bodies.len();
    }
    Ok(summary)
}
