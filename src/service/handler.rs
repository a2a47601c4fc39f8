//! From an incoming payload to handled images and written audit records.
//!
//! One method, [`Handler::handle`], takes every [`Message`]: the Lambda
//! function calls it for a direct invocation and each message of an SQS
//! batch (`crate::service::lambda`), the `serve` worker for each message it
//! receives, the tests for either. Irrelevant events are skipped with a logged reason and cost no
//! registry call; malformed ones get an audit record saying why; a failure
//! that a retry may fix (throttling, 5xx, or the audit record not written)
//! is reported so the message is delivered again, which the engine's
//! idempotence makes safe.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::decide::skip::SkipCode;
use crate::engine::audit::{
    AuditError, AuditRecord, AuditSink, Outcome, OutcomeKind, Trigger, log_line, write_with_retries,
};
use crate::engine::registry::{AccountRegistries, Registry, RegistryError};
use crate::engine::retry::RetryPolicy;
use crate::engine::{Engine, Job};
use crate::oci::names::AccountId;
use crate::oci::signature::Signing;
use crate::policy::PolicySet;
use crate::service::enqueue::{EnqueueSummary, JobQueue, enqueue};
use crate::service::live_policy::LivePolicy;
use crate::service::message::{Message, MessageError, Request};
use crate::service::metrics::{MetricsConfig, emf};
use crate::service::request::{ImageRequest, Work};
use crate::service::triage::{Triage, triage};
use crate::sweep::scan::Scope;
use crate::sweep::select::Selection;
use crate::sweep::signing::SignatureGap;

/// The service: a registry, an audit sink and the policies.
#[derive(Debug)]
pub struct Handler<R, A> {
    /// The registry.
    pub registry: R,
    /// Where audit records go (besides the log).
    pub audit: A,
    /// The policies (when [`Self::live_policy`] is set: unused).
    pub policies: Arc<PolicySet>,
    /// The policy kept in a store and re-read while running (an SSM
    /// parameter), instead of [`Self::policies`].
    pub live_policy: Option<Arc<LivePolicy>>,
    /// Print each audit record as a JSON log line on stdout.
    pub log_records: bool,
    /// With `log_records`: also print each record's metrics (EMF) line.
    pub metrics: Option<MetricsConfig>,
    /// Retries of retryable registry and audit failures.
    pub retry: RetryPolicy,
    /// Deliveries before the queue dead-letters a message (the queue's
    /// `maxReceiveCount`), when known: the record of the last delivery is
    /// marked final even when its failure was retryable.
    pub max_receive_count: Option<u32>,
    /// Other accounts' registries (organisation-wide deployment): a job whose
    /// account is not [`Self::own_account`] is handled there.
    pub members: Option<Arc<dyn AccountRegistries<R>>>,
    /// This deployment's own account (jobs without an account, or of this
    /// one, use [`Self::registry`]).
    pub own_account: Option<AccountId>,
    /// This deployment's region, when known: an event from another
    /// region's registry (forwarded across regions) is never acted on here,
    /// as every registry call would reach the wrong registry.
    pub own_region: Option<String>,
    /// The member accounts this deployment lists (`ECR_REMEDIATOR_MEMBER_ACCOUNTS`):
    /// the only ones a sweep, or a sweep's request, may name besides its own.
    pub member_accounts: BTreeSet<AccountId>,
    /// Where sweep requests go (the push queue), when this deployment sweeps.
    pub sweeps: Option<Sweeps>,
}

/// How a deployment sweeps on request (the schedule, or one account's sweep
/// on the queue).
#[derive(Clone)]
pub struct Sweeps {
    /// The push queue, where the sweep's requests go.
    pub queue: Arc<dyn JobQueue>,
    /// Repository prefixes swept (empty: every repository).
    pub prefixes: Vec<String>,
}

impl std::fmt::Debug for Sweeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeps")
            .field("prefixes", &self.prefixes)
            .finish_non_exhaustive()
    }
}

/// How one event reached the service.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// The delivery attempt (SQS `ApproximateReceiveCount`), when known.
    pub attempt: Option<u32>,
    /// The handling must be over by then (the Lambda deadline less a margin).
    pub deadline: Option<tokio::time::Instant>,
    /// The Lambda request id of the invocation, copied into the records.
    pub request_id: Option<String>,
}

/// What happened to one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum EventResult {
    /// Not work; nothing was called.
    Ignored {
        /// Why.
        reason: String,
    },
    /// Handled; the record was written.
    Handled {
        /// The record's outcome.
        outcome: OutcomeKind,
        /// The image.
        digest: Option<String>,
    },
    /// One account's sweep: its requests were enqueued.
    Swept {
        /// The account (`None`: the deployment's own).
        account: Option<AccountId>,
        /// What was enqueued.
        summary: EnqueueSummary,
    },
    /// The schedule's sweep in a hub: one sweep request per account enqueued.
    FannedOut {
        /// The accounts (`None`: the deployment's own).
        accounts: Vec<Option<AccountId>>,
    },
}

/// An event that must be delivered again.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// The handling failed in a way a retry may fix.
    #[error("{0}; the event will be retried")]
    Remediation(String),
    /// The audit record could not be written.
    #[error("{0}; the event will be retried")]
    Audit(#[from] AuditError),
    /// A sweep could not enqueue its requests (or list what it sweeps).
    #[error("{0}; the sweep will be retried")]
    Sweep(String),
}

impl RetryError {
    /// What failed, without what a queue does next: for a one-off run
    /// (`remediate`, `undo`), where nothing will retry it.
    pub fn cause(&self) -> String {
        match self {
            RetryError::Remediation(m) | RetryError::Sweep(m) => m.clone(),
            RetryError::Audit(e) => e.to_string(),
        }
    }
}

impl<R: Registry, A: AuditSink> Handler<R, A> {
    /// A handler with default retries and no known receive limit.
    pub fn new(registry: R, audit: A, policies: PolicySet) -> Self {
        Handler {
            registry,
            audit,
            policies: Arc::new(policies),
            live_policy: None,
            log_records: true,
            metrics: None,
            retry: RetryPolicy::default(),
            max_receive_count: None,
            members: None,
            own_account: None,
            own_region: None,
            member_accounts: BTreeSet::new(),
            sweeps: None,
        }
    }

    /// The policies to apply now.
    pub async fn policies_now(&self) -> Arc<PolicySet> {
        match &self.live_policy {
            Some(live) => live.current().await,
            None => self.policies.clone(),
        }
    }

    fn engine<'a>(&'a self, registry: &'a R, delivery: &Delivery, policies: &'a PolicySet) -> Engine<'a, R, A> {
        Engine {
            registry,
            audit: &self.audit,
            policies,
            retry: self.retry,
            deadline: delivery.deadline,
            request_id: delivery.request_id.clone(),
            attempt: delivery.attempt,
        }
    }

    /// Handles one message: the one way in for the Lambda function, the SQS
    /// worker and the tests. An error means "deliver it again".
    pub async fn handle(
        &self,
        message: Result<Message, MessageError>,
        delivery: Delivery,
    ) -> Result<EventResult, RetryError> {
        match message {
            Err(e) => self.malformed(&e, delivery).await,
            Ok(Message::Ignored { event_id, reason }) => Ok(self.ignored(event_id.as_deref(), &reason)),
            Ok(Message::ImageAction(event)) => {
                let policies = self.policies_now().await;
                let triaged = triage(&event, |repo, tag| {
                    policies
                        .select_for(repo, event.account.as_ref())
                        .policy
                        .is_keep_tag(tag)
                });
                match triaged {
                    Ok(Triage::Handle(job)) => self.handle_job_record(&job, delivery).await.1,
                    Ok(Triage::Ignore(reason)) => Ok(self.ignored(event.id.as_deref(), &reason)),
                    Err(e) => self.malformed(&e, delivery).await,
                }
            }
            Ok(Message::Request(Request::Image(request))) => {
                // The follow-up of a push is that push's work again, taken
                // from the same queue: accepted for any account a push is
                // (a forged one could as well be a forged push event).
                let as_push = request.follow_up && matches!(request.work, Work::Remediate { .. });
                if !as_push && !self.lists_account(request.account.as_ref()) {
                    return self
                        .refuse(
                            request.account.as_ref(),
                            Some(&request),
                            "work on an image in",
                            delivery,
                        )
                        .await;
                }
                self.handle_job_record(&request.job(), delivery).await.1
            }
            Ok(Message::Request(Request::SweepAll)) => self.sweep_all(delivery).await,
            Ok(Message::Request(Request::SweepAccount(account))) => self.sweep_account(account, delivery).await,
        }
    }

    /// Handles one message given as text (an SQS body).
    pub async fn handle_text(&self, text: &str, delivery: Delivery) -> Result<EventResult, RetryError> {
        self.handle(Message::parse_text(text), delivery).await
    }

    fn ignored(&self, event_id: Option<&str>, reason: &crate::service::message::Ignored) -> EventResult {
        tracing::info!(event_id = event_id.unwrap_or(""), %reason, "event skipped");
        EventResult::Ignored {
            reason: reason.to_string(),
        }
    }

    /// The schedule's sweep: in a hub that lists member accounts, one sweep
    /// request per account on the queue (each account swept, and retried, on
    /// its own); otherwise this account's sweep.
    async fn sweep_all(&self, delivery: Delivery) -> Result<EventResult, RetryError> {
        if self.member_accounts.is_empty() {
            return self.sweep_account(None, delivery).await;
        }
        let Some(sweeps) = &self.sweeps else {
            return self.no_queue(None, delivery).await;
        };
        let accounts: Vec<Option<AccountId>> = std::iter::once(None)
            .chain(self.member_accounts.iter().cloned().map(Some))
            .collect();
        let bodies: Vec<String> = accounts
            .iter()
            .map(|a| Request::SweepAccount(a.clone()).body())
            .collect();
        // All at once: the adapter sends its batches concurrently.
        sweeps
            .queue
            .enqueue(&bodies)
            .await
            .map_err(|e| RetryError::Sweep(e.to_string()))?;
        tracing::info!(accounts = accounts.len(), "sweep fanned out, one request per account");
        Ok(EventResult::FannedOut { accounts })
    }

    /// One account's sweep (`None`: this deployment's own): its requests go
    /// on the queue. An account the deployment does not list is refused and
    /// recorded; a repository that cannot be read is reported and the others
    /// are swept; only the queue refusing fails the sweep (it is delivered again).
    async fn sweep_account(&self, account: Option<AccountId>, delivery: Delivery) -> Result<EventResult, RetryError> {
        if !self.lists_account(account.as_ref()) {
            return self.refuse(account.as_ref(), None, "a sweep of", delivery).await;
        }
        let Some(sweeps) = &self.sweeps else {
            return self.no_queue(account.as_ref(), delivery).await;
        };
        let member = self
            .sweep_registry(account.as_ref())
            .await
            .map_err(|e| RetryError::Sweep(e.to_string()))?;
        let registry: &R = member.as_deref().unwrap_or(&self.registry);
        let scope = Scope {
            repositories: Vec::new(),
            prefixes: sweeps.prefixes.clone(),
            account: account.clone(),
        };
        let policies = self.policies_now().await;
        let summary = enqueue(
            registry,
            &self.retry,
            &policies,
            &scope,
            &Selection::default(),
            &*sweeps.queue,
        )
        .await
        .map_err(|e| RetryError::Sweep(e.to_string()))?;
        tracing::info!(
            account = account.as_ref().map_or("own", AccountId::as_str),
            ?summary,
            "sweep requests enqueued"
        );
        for gap in &summary.gaps {
            self.record_signature_gap(account.as_ref(), gap).await;
        }
        if let Some(m) = &self.metrics {
            println!(
                "{}",
                crate::service::metrics::sweep_emf(summary.signature_gaps, m, crate::engine::audit::now_ms())
            );
        }
        Ok(EventResult::Swept { account, summary })
    }

    /// Writes the record of a signature gap a sweep found (see
    /// `crate::sweep::signing`): skipped (`signed_after_promotion`, with
    /// what to do), final; nothing is changed. A record that cannot be
    /// written is logged: the next sweep finds the gap again.
    pub async fn record_signature_gap(&self, account: Option<&AccountId>, gap: &SignatureGap) {
        let mut record = AuditRecord::new(Trigger::Sweep, Some(gap.repository.as_str()), SystemTime::now());
        record.account = account.cloned().or_else(|| self.own_account.clone());
        record.index_digest = Some(gap.index.to_string());
        record.tag = Some(gap.tag.to_string());
        record.signing = Some(Signing {
            index: gap.index_signatures.clone(),
            image: Vec::new(),
        });
        record.outcome = Outcome::Skipped {
            code: SkipCode::SignedAfterPromotion,
            reason: gap.advice(),
        };
        if let Err(e) = self.finish(record, Delivery::default()).await {
            tracing::warn!(error = %e, repository = %gap.repository, "cannot write the record of a signature gap");
        }
    }

    /// The record of a sweep this deployment cannot run (no queue configured):
    /// skipped, final, never retried (a redelivery cannot fix it).
    async fn no_queue(&self, account: Option<&AccountId>, delivery: Delivery) -> Result<EventResult, RetryError> {
        let mut record = AuditRecord::new(Trigger::Sweep, None, SystemTime::now());
        record.account = account.cloned();
        record.outcome = Outcome::Skipped {
            code: SkipCode::SweepWithoutQueue,
            reason: "a sweep was requested, but this deployment has no queue for its requests \
                     (ECR_REMEDIATOR_QUEUE_URL)"
                .to_owned(),
        };
        tracing::error!("sweep requested without ECR_REMEDIATOR_QUEUE_URL: nothing swept");
        self.finish(record, delivery).await
    }

    /// Handles one job (a parsed event, or a manual request) and writes its record.
    pub async fn handle_job(&self, job: &Job) -> Result<EventResult, RetryError> {
        self.handle_job_record(job, Delivery::default()).await.1
    }

    /// Like [`Self::handle_job`], also returning the record.
    pub async fn handle_job_record(
        &self,
        job: &Job,
        delivery: Delivery,
    ) -> (AuditRecord, Result<EventResult, RetryError>) {
        // Where the job acts, said once: the event's account and region, else
        // this deployment's own. Every record names both.
        let mut job = job.clone();
        if job.account.is_none() {
            job.account.clone_from(&self.own_account);
        }
        if job.region.is_none() {
            job.region.clone_from(&self.own_region);
        }
        // When no event says when the tag arrived, this first handling is
        // when it was first seen: the grace period runs from now, and a
        // follow-up carries that instant instead of starting again.
        job.tag_arrived_ms.get_or_insert_with(crate::time::now_ms);
        let job = &job;
        if let (Some(account), Some(own)) = (&job.account, &self.own_account)
            && account != own
            && self.members.is_none()
        {
            let mut record = job.record();
            record.request_id.clone_from(&delivery.request_id);
            record.outcome = Outcome::Skipped {
                code: SkipCode::OtherAccount,
                reason: format!(
                    "the image is in account {account}'s registry and this deployment acts in {own} only (no member \
                     role configured): nothing was read or written"
                ),
            };
            tracing::warn!(account = %account, own = %own, "image in another account: refused");
            let result = self.finish(record.clone(), delivery).await;
            return (record, result);
        }
        if let (Some(region), Some(own)) = (&job.region, &self.own_region)
            && region != own
        {
            let mut record = job.record();
            record.request_id.clone_from(&delivery.request_id);
            record.outcome = Outcome::Skipped {
                code: SkipCode::OtherRegion,
                reason: format!(
                    "the image is in {region}'s registry and this deployment acts in {own}: deploy the stack \
                     (or the hub) in {region} too; nothing was read or written"
                ),
            };
            tracing::warn!(region, own, "event from another region's registry: refused");
            let result = self.finish(record.clone(), delivery).await;
            return (record, result);
        }
        let member = match self.member_registry(job.account.as_ref()).await.transpose() {
            Ok(member) => member,
            Err(e) => {
                // This account alone: an audited failure, retried only if it may pass.
                tracing::warn!(account = job.account.as_ref().map_or("", AccountId::as_str), error = %e, "cannot act in the member account");
                let record = self.account_failure(job, &e, &delivery);
                let result = self.finish(record.clone(), delivery).await;
                return (record, result);
            }
        };
        let registry = member.as_deref().unwrap_or(&self.registry);
        let policies = self.policies_now().await;
        let mut record = self.engine(registry, &delivery, &policies).remediate(job).await;
        if let Some(live) = &self.live_policy
            && let Some(why) = live.stale().await
        {
            record.notes.push(format!("the policy may be stale: {why}"));
        }
        self.follow_up(job, &mut record).await;
        let result = self.finish(record.clone(), delivery).await;
        (record, result)
    }

    /// When the handling deferred deletions for the grace period, schedules
    /// its follow-up on the queue (delayed until then, at most the queue's
    /// limit: a follow-up that comes early defers again) and says so in the
    /// record. Without a queue, or when the queue refuses, the record says
    /// the next sweep attempts them (its cleanup finds the leftover). A dry
    /// run schedules nothing.
    async fn follow_up(&self, job: &Job, record: &mut AuditRecord) {
        let Some(until) = record.deferred_until.clone() else {
            return;
        };
        if !record.is_final {
            return;
        }
        if record.policy.as_ref().is_some_and(|p| p.dry_run) {
            record.notes.push(format!(
                "dry run: a follow-up would attempt the deferred deletions from {until}"
            ));
            return;
        }
        let Some(sweeps) = &self.sweeps else {
            record.notes.push(format!(
                "no queue (ECR_REMEDIATOR_QUEUE_URL) for a follow-up: the next sweep with delete_orphans \
                 attempts the deferred deletions after {until}"
            ));
            return;
        };
        let now = crate::time::now_ms();
        let due = crate::time::parse_since(&until, now).unwrap_or(now);
        let delay_s = u32::try_from((due.saturating_sub(now) + 999) / 1000)
            .unwrap_or(u32::MAX)
            .clamp(1, crate::service::enqueue::MAX_DELAY_S);
        let body = Request::follow_up(job).body();
        match sweeps.queue.enqueue_after(&body, delay_s).await {
            Ok(()) => record.notes.push(format!(
                "follow-up enqueued: the deferred deletions are attempted from {until}"
            )),
            Err(e) => {
                tracing::warn!(error = %e, "cannot enqueue the follow-up");
                record.notes.push(format!(
                    "the follow-up could not be enqueued ({e}): the next sweep with delete_orphans attempts \
                     the deferred deletions"
                ));
            }
        }
    }

    /// The registry of `account` when it is a member's (reached through its
    /// role); `None` for this deployment's own account, an unknown one, or
    /// when no member access is configured.
    async fn member_registry(&self, account: Option<&AccountId>) -> Option<Result<Arc<R>, RegistryError>> {
        match (&self.members, account) {
            (Some(members), Some(a)) if Some(a) != self.own_account.as_ref() => Some(members.registry_for(a).await),
            _ => None,
        }
    }

    /// Whether a queued sweep request may name `account`: this deployment's
    /// own, or one it lists. Anyone who may send to the queue (in a hub, any
    /// principal of the organisation) could name any account.
    pub fn lists_account(&self, account: Option<&AccountId>) -> bool {
        match account {
            None => true,
            Some(a) => Some(a) == self.own_account.as_ref() || self.member_accounts.contains(a),
        }
    }

    /// Writes the record of a request that was refused (it names an account
    /// the deployment does not list): skipped, final, never retried.
    async fn refuse(
        &self,
        account: Option<&AccountId>,
        image: Option<&ImageRequest>,
        what: &str,
        delivery: Delivery,
    ) -> Result<EventResult, RetryError> {
        let shown = account.map_or("(own)", AccountId::as_str);
        // An image request's record names the image, so `audit` finds it.
        let mut record = AuditRecord::new(Trigger::Sweep, image.map(|r| r.repository.as_str()), SystemTime::now());
        record.account = account.cloned();
        if let Some(r) = image {
            record.index_digest = Some(r.digest.to_string());
            record.event_id.clone_from(&r.id);
        }
        record.outcome = Outcome::Skipped {
            code: SkipCode::AccountNotListed,
            reason: format!(
                "{what} account {shown} was requested, but this deployment does not list it \
                 (ECR_REMEDIATOR_MEMBER_ACCOUNTS); refused"
            ),
        };
        tracing::warn!(
            account = shown,
            what,
            "request for an account this deployment does not list: refused"
        );
        self.finish(record, delivery).await
    }

    /// The member registry to sweep `account` in (`None`: this deployment's
    /// own registry). A foreign account needs the member role configured.
    pub async fn sweep_registry(&self, account: Option<&AccountId>) -> Result<Option<Arc<R>>, RegistryError> {
        if let (None, Some(a)) = (&self.members, account)
            && Some(a) != self.own_account.as_ref()
        {
            return Err(RegistryError::Service {
                operation: "AssumeRole",
                code: "NoMemberRole".to_owned(),
                message: format!(
                    "sweeping account {a} needs the hub's member role (ECR_REMEDIATOR_MEMBER_ROLE, \
                     ECR_REMEDIATOR_EXTERNAL_ID, ECR_REMEDIATOR_ACCOUNT_ID)"
                ),
            });
        }
        self.member_registry(account).await.transpose()
    }

    fn account_failure(&self, job: &Job, e: &RegistryError, delivery: &Delivery) -> AuditRecord {
        let mut record = job.record();
        record.request_id = delivery.request_id.clone();
        record.outcome = Outcome::Failed(e.into());
        record
    }

    async fn malformed(&self, error: &MessageError, delivery: Delivery) -> Result<EventResult, RetryError> {
        let problem = error.to_string();
        tracing::warn!(
            event_id = error.event_id.as_deref().unwrap_or(""),
            problem,
            "malformed event"
        );
        let mut record = AuditRecord::new(Trigger::Push, None, SystemTime::now());
        record.event_id.clone_from(&error.event_id);
        record.outcome = Outcome::Skipped {
            code: SkipCode::MalformedEvent,
            reason: problem,
        };
        self.finish(record, delivery).await
    }

    async fn finish(&self, mut record: AuditRecord, delivery: Delivery) -> Result<EventResult, RetryError> {
        record.attempt = delivery.attempt;
        if record.request_id.is_none() {
            record.request_id = delivery.request_id.clone();
        }
        let last_delivery = matches!((delivery.attempt, self.max_receive_count), (Some(a), Some(m)) if a >= m);
        record.is_final = !record.needs_retry() || last_delivery;
        let write = write_with_retries(&self.audit, &record, &self.retry, delivery.deadline).await;
        if self.log_records {
            // The log line says what reached the trail: a record that was not
            // written is not final (the event is delivered again).
            let mut printed = record.clone();
            if let Err(e) = &write {
                printed.is_final = false;
                printed.notes.push(format!(
                    "not written to the audit trail ({e}): the event is delivered again"
                ));
            }
            println!("{}", log_line(&printed));
            if let Some(doc) = self
                .metrics
                .as_ref()
                .and_then(|m| emf(&printed, m, crate::engine::audit::now_ms()))
            {
                println!("{doc}");
            }
        }
        let result = EventResult::Handled {
            outcome: record.outcome.kind(),
            digest: record.index_digest.clone(),
        };
        if let Err(e) = write {
            // A refusal stops a command, which prints it once as its error;
            // a worker logs every failure.
            if self.log_records || !e.is_refusal() {
                tracing::error!(error = %e, "audit record not written");
            }
            return Err(RetryError::Audit(e));
        }
        if let Outcome::Failed(f) = &record.outcome
            && f.retryable
        {
            return Err(RetryError::Remediation(f.error.clone()));
        }
        Ok(result)
    }
}
