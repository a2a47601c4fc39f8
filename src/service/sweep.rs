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

use futures_util::StreamExt;
use serde::Serialize;

use std::collections::BTreeSet;

use crate::engine::audit::{AuditRecord, AuditSink, Outcome, Trigger, now_ms};
use crate::engine::registry::{FetchFailure, ImageInfo, ImageRef, Registry, RegistryError};
use crate::engine::retry::{RetryPolicy, retrying};
use crate::engine::sweep::{
    CleanupSelection, References, Selection, Untouched, cleanup_enabled, indexes, select, select_cleanup, unlisted,
};
use crate::engine::{Job, Purpose, repository_policy};
use crate::oci::classify::{classify, classify_manifest};
use crate::oci::digest::Digest;
use crate::oci::names::RepositoryName;
use crate::policy::Policy;
use crate::policy::repository_tag::Resolved;
use crate::service::handler::{Delivery, Handler};

/// Which repositories a sweep covers.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// These repositories (when empty: every repository, or those with a prefix below).
    pub repositories: Vec<RepositoryName>,
    /// Repositories whose name starts with one of these.
    pub prefixes: Vec<String>,
    /// The account to sweep (a member account, through the handler's member
    /// role); `None`: the handler's own.
    pub account: Option<String>,
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
    /// Leftovers handled (untagged indexes a remediation left, orphaned
    /// attestations): one record each, counted by outcome like the rest.
    pub leftovers_handled: usize,
    /// Records with outcome `noop`, plus indexes whose only tags are keep tags.
    pub already_fine: usize,
    /// Records with outcome `skipped`, by reason code.
    pub skipped: BTreeMap<String, usize>,
    /// Records with outcome `failed`, plus records that could not be written.
    pub failed: usize,
    /// Manifests deleted.
    pub manifests_deleted: usize,
    /// Of those, indexes earlier runs kept under a keep tag, retired on
    /// request (`--retire-kept-indexes`).
    pub kept_indexes_retired: usize,
    /// Their size, as `DescribeImages` reported it right before deleting.
    pub bytes_reclaimed: u64,
    /// Images left alone, by reason.
    pub not_touched: BTreeMap<Untouched, usize>,
    /// Repositories that could not be listed, with the error.
    pub repository_errors: BTreeMap<String, String>,
    /// Repositories not listed because their `ecr-remediator:mode` tag (or
    /// its absence, where the rule requires an opt-in) leaves them alone,
    /// with the reason.
    pub repositories_left_alone: BTreeMap<String, String>,
}

/// What a sweep found in one repository.
enum Scan {
    /// Its tag could not be read, or it could not be listed.
    Failed(RegistryError),
    /// Its tag leaves it alone.
    LeftAlone(String),
    /// Listed, under this policy, with the leftovers found (when sought).
    Listed(Box<Listed>),
}

/// A repository a sweep listed.
struct Listed {
    listing: Vec<(Digest, ImageInfo)>,
    policy: Policy,
    found: Option<Result<CleanupSelection, RegistryError>>,
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

/// Image ids per `BatchGetImage` call (ECR's limit).
const BATCH: usize = 100;

/// Finds one repository's leftovers (see [`crate::engine::cleanup`]): reads
/// every index once and every untagged manifest no index lists, `BATCH` at a
/// time, then selects. Costs O(repository / 100) reads, once per sweep.
pub async fn leftovers<R: Registry>(
    registry: &R,
    retry: &RetryPolicy,
    repository: &RepositoryName,
    listing: &[(Digest, ImageInfo)],
    policy: &Policy,
    selection: &Selection,
    now_ms: i64,
) -> Result<CleanupSelection, RegistryError> {
    let tagged: BTreeSet<&Digest> = listing
        .iter()
        .filter(|(_, i)| !i.tags.is_empty())
        .map(|(d, _)| d)
        .collect();
    let mut refs = References::default();
    for chunk in indexes(listing).chunks(BATCH) {
        let ids: Vec<ImageRef> = chunk.iter().cloned().map(ImageRef::Digest).collect();
        for (id, result) in retrying(retry, None, || registry.get_images(repository, &ids)).await? {
            match (id, result) {
                (ImageRef::Digest(d), Ok(m)) if m.digest() == &d => refs.add(&m, &classify(&m), tagged.contains(&d)),
                // Deleted since the listing: it lists nothing any more.
                (_, Err(FetchFailure::NotFound)) => {}
                _ => refs.add_unreadable(),
            }
        }
    }
    let mut kinds = BTreeMap::new();
    for chunk in unlisted(listing, &refs).chunks(BATCH) {
        let ids: Vec<ImageRef> = chunk.iter().cloned().map(ImageRef::Digest).collect();
        for (id, result) in retrying(retry, None, || registry.get_images(repository, &ids)).await? {
            if let (ImageRef::Digest(d), Ok(m)) = (id, result)
                && m.digest() == &d
            {
                kinds.insert(d, classify_manifest(m.manifest()));
            }
        }
    }
    Ok(select_cleanup(listing, &refs, &kinds, policy, selection, now_ms))
}

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
    let member = handler.sweep_registry(scope.account.as_deref()).await?;
    let registry: &R = member.as_deref().unwrap_or(&handler.registry);
    let repos = repositories(registry, scope, &handler.retry).await?;
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
        let rule = handler.policies.select_for(repo, scope.account.as_deref()).policy;
        let scan = match repository_policy::resolve(registry, &handler.retry, None, rule, repo).await {
            Err(e) => Scan::Failed(e),
            Ok((Resolved::Apply { policy, .. }, _)) => {
                match retrying(&handler.retry, None, || registry.list_images(repo)).await {
                    Err(e) => Scan::Failed(e),
                    Ok(listing) => {
                        let found = if cleanup_enabled(&policy, selection) {
                            Some(
                                leftovers(registry, &handler.retry, repo, &listing, &policy, selection, now_ms()).await,
                            )
                        } else {
                            None
                        };
                        Scan::Listed(Box::new(Listed {
                            listing,
                            policy: *policy,
                            found,
                        }))
                    }
                }
            }
            Ok((left_alone, _)) => Scan::LeftAlone(left_alone.to_string()),
        };
        (n, repo, scan)
    });
    let jobs = listed.flat_map(|(n, repo, scan)| {
        let mut items = Vec::new();
        match scan {
            Scan::Failed(e) => {
                tracing::warn!(repository = %repo, error = %e, "cannot list the repository; skipped");
                summary
                    .borrow_mut()
                    .repository_errors
                    .insert(repo.to_string(), e.to_string());
                progress.borrow_mut().repository(n, total, repo, 0);
            }
            Scan::LeftAlone(reason) => {
                tracing::info!(repository = %repo, %reason, "repository left alone");
                summary
                    .borrow_mut()
                    .repositories_left_alone
                    .insert(repo.to_string(), reason);
                progress.borrow_mut().repository(n, total, repo, 0);
            }
            Scan::Listed(listed) => {
                let Listed { listing, policy, found } = *listed;
                let plan = select(&listing, &policy, selection);
                {
                    let mut s = summary.borrow_mut();
                    s.repositories_scanned += 1;
                    s.indexes_seen += plan.indexes_seen;
                    s.already_fine += plan.already_fine;
                    for (kind, count) in &plan.untouched {
                        *s.not_touched.entry(*kind).or_default() += count;
                    }
                }
                let cleanup = match found {
                    Some(Ok(found)) => found,
                    Some(Err(e)) => {
                        tracing::warn!(repository = %repo, error = %e, "cannot read the repository's indexes; no leftovers sought");
                        summary
                            .borrow_mut()
                            .repository_errors
                            .insert(repo.to_string(), format!("leftovers not sought: {e}"));
                        CleanupSelection::default()
                    }
                    None => CleanupSelection::default(),
                };
                {
                    let mut s = summary.borrow_mut();
                    for (kind, count) in &cleanup.untouched {
                        *s.not_touched.entry(*kind).or_default() += count;
                    }
                }
                progress
                    .borrow_mut()
                    .repository(n, total, repo, plan.jobs.len() + cleanup.jobs.len() + plan.retire.len());
                let retire = plan.retire.clone();
                items.extend(jobs_of(repo, scope.account.as_ref(), plan.jobs, cleanup.jobs, selection));
                items.extend(retire.into_iter().map(|digest| Job {
                    purpose: Purpose::Retire {
                        min_age_s: selection.min_age_s,
                    },
                    trigger: Trigger::Sweep,
                    event_id: None,
                    account: scope.account.clone(),
                    region: None,
                    repository: repo.clone(),
                    digest,
                    tag: None,
                }));
            }
        }
        futures_util::stream::iter(items)
    });
    let mut handled = Box::pin(
        jobs.map(|job| async move {
            let leftover = matches!(job.purpose, Purpose::Cleanup { .. } | Purpose::Retire { .. });
            (handler.handle_job_record(&job, Delivery::default()).await, leftover)
        })
        .buffer_unordered(SWEEP_CONCURRENCY),
    );
    while let Some(((record, written), leftover)) = handled.next().await {
        let mut s = summary.borrow_mut();
        s.images_handled += 1;
        s.leftovers_handled += usize::from(leftover);
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
        s.manifests_deleted += record.deleted as usize;
        s.kept_indexes_retired += record
            .actions
            .iter()
            .filter(|a| {
                a.outcome == crate::engine::audit::ActionOutcome::Applied
                    && matches!(
                        a.action,
                        crate::engine::plan::Action::Delete {
                            role: crate::engine::plan::DeleteRole::KeptIndex,
                            ..
                        }
                    )
            })
            .count();
        s.bytes_reclaimed += record.reclaimed_bytes;
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
    /// Enqueues message bodies, as many as given (batching them, 10 at a
    /// time, and sending batches concurrently is the adapter's business).
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
    /// Requests enqueued (one per tagged index and tag, and one per leftover).
    pub enqueued: usize,
    /// Of those, leftovers to clean up.
    pub leftovers: usize,
    /// Indexes whose only tags are keep tags.
    pub already_fine: usize,
    /// Repositories whose `ecr-remediator:mode` tag leaves them alone.
    pub left_alone: usize,
    /// Repositories that could not be read, with the error (the others were swept).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub repository_errors: BTreeMap<String, String>,
    /// The account, when the request named one this deployment does not list
    /// (refused and recorded; nothing enqueued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// One account's scheduled sweep: [`enqueue`] in that account's registry
/// (`None`: the deployment's own; a member's through its role). A hub's
/// schedule sends one request per account through the queue, so each
/// account is swept, and retried, on its own.
pub async fn enqueue_account<R: Registry, A: AuditSink, Q: JobQueue>(
    handler: &Handler<R, A>,
    account: Option<&str>,
    prefixes: &[String],
    selection: &Selection,
    queue: &Q,
) -> Result<EnqueueSummary, EnqueueError> {
    if !handler.lists_account(account) {
        // Refused and recorded, never retried: nothing to enqueue.
        let a = account.unwrap_or_default();
        handler
            .refuse_sweep(a, crate::service::handler::Delivery::default())
            .await
            .map_err(|e| {
                EnqueueError::Queue(QueueError {
                    queue: String::new(),
                    message: format!("the refusal of account {a}'s sweep could not be recorded: {e}"),
                })
            })?;
        return Ok(EnqueueSummary {
            refused: Some(a.to_owned()),
            ..EnqueueSummary::default()
        });
    }
    let member = handler.sweep_registry(account).await?;
    let registry: &R = member.as_deref().unwrap_or(&handler.registry);
    let scope = Scope {
        repositories: Vec::new(),
        prefixes: prefixes.to_vec(),
        account: account.map(str::to_owned),
    };
    enqueue(registry, &handler.policies, &scope, selection, queue).await
}

/// The request a sweep enqueues for one job: an event of source
/// [`crate::service::event::REQUEST_SOURCE`] whose detail has the shape of
/// ECR's PUSH detail, so it takes exactly the path a push takes, and
/// [`crate::service::event::triage`] gives `job` back.
pub fn request_event(job: &Job) -> String {
    use crate::service::event::{REQUEST_DETAIL_TYPE, REQUEST_SOURCE};
    let hex = job.digest.to_string();
    let short = hex.get(7..19).unwrap_or(&hex);
    let mut detail = serde_json::json!({
        "result": "SUCCESS",
        "action-type": "PUSH",
        "repository-name": job.repository.as_str(),
        "image-digest": hex,
    });
    let id = match (job.purpose, &job.tag) {
        // Retiring kept indexes is never requested through a queue (whoever
        // may send there must not be able to ask for it): such a job travels
        // as a cleanup, whose planner keeps every tagged index.
        (Purpose::Cleanup { min_age_s } | Purpose::Retire { min_age_s }, _) => {
            detail["cleanup-min-age-s"] = min_age_s.into();
            format!("sweep-{short}-cleanup")
        }
        (Purpose::Remediate, tag) => {
            detail["manifest-media-type"] = "application/vnd.oci.image.index.v1+json".into();
            if let Some(tag) = tag {
                detail["image-tag"] = tag.as_str().into();
            }
            format!("sweep-{short}-{}", tag.as_ref().map_or("", |t| t.as_str()))
        }
    };
    serde_json::json!({
        "version": "0",
        "id": id,
        "account": job.account,
        "detail-type": REQUEST_DETAIL_TYPE,
        "source": REQUEST_SOURCE,
        "time": crate::engine::audit::rfc3339(std::time::SystemTime::now()),
        "resources": [],
        "detail": detail,
    })
    .to_string()
}

/// The jobs a sweep makes of one repository's selection.
fn jobs_of(
    repository: &RepositoryName,
    account: Option<&String>,
    remediate: Vec<(Digest, crate::oci::names::ImageTag)>,
    cleanup: Vec<Digest>,
    selection: &Selection,
) -> Vec<Job> {
    let job = |purpose, digest, tag| Job {
        purpose,
        trigger: Trigger::Sweep,
        event_id: None,
        account: account.cloned(),
        region: None,
        repository: repository.clone(),
        digest,
        tag,
    };
    let purpose = Purpose::Cleanup {
        min_age_s: selection.min_age_s,
    };
    remediate
        .into_iter()
        .map(|(d, t)| job(Purpose::Remediate, d, Some(t)))
        .chain(cleanup.into_iter().map(|d| job(purpose, d, None)))
        .collect()
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
        // A repository that cannot be read (its tag, its listing) is reported
        // and the others are swept, as the CLI's sweep does; only the queue
        // refusing fails the request (it is delivered again).
        let rule = policies.select_for(&repo, scope.account.as_deref()).policy;
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
            .map(request_event)
            .collect();
        queue.enqueue(&bodies).await?;
        summary.enqueued += bodies.len();
    }
    Ok(summary)
}
