//! From an incoming payload to handled images and written audit records.
//!
//! Shared by the Lambda function (direct EventBridge events and SQS batches,
//! as `aws_lambda_events` types) and the `serve` worker (one SQS message at a
//! time). Irrelevant events are skipped with a logged reason and cost no
//! registry call; malformed ones get an audit record saying why; a failure
//! that a retry may fix (throttling, 5xx, or the audit record not written)
//! is reported so the message is delivered again, which the engine's
//! idempotence makes safe.

use std::time::SystemTime;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use serde::Serialize;
use serde_json::Value;

use crate::engine::audit::{AuditError, AuditRecord, AuditSink, Outcome, Trigger, log_line, write_with_retries};
use crate::engine::registry::Registry;
use crate::engine::registry::{AccountRegistries, RegistryError};
use crate::engine::retry::RetryPolicy;
use crate::engine::{Engine, Job};
use crate::policy::PolicySet;
use crate::service::event::{Triage, parse_envelope, triage};
use crate::service::metrics::{MetricsConfig, emf};

/// The service: a registry, an audit sink and the policies.
#[derive(Debug)]
pub struct Handler<R, A> {
    /// The registry.
    pub registry: R,
    /// Where audit records go (besides the log).
    pub audit: A,
    /// The policies.
    pub policies: PolicySet,
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
    pub members: Option<std::sync::Arc<dyn AccountRegistries<R>>>,
    /// This deployment's own account (jobs without an account, or of this
    /// one, use [`Self::registry`]).
    pub own_account: Option<String>,
    /// The member accounts this deployment lists (`ECR_REMEDIATOR_MEMBER_ACCOUNTS`):
    /// the only ones a queued sweep request may name besides its own.
    pub member_accounts: std::collections::BTreeSet<String>,
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
        outcome: String,
        /// The image.
        digest: Option<String>,
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
}

/// The kinds of payload the function accepts.
#[derive(Debug)]
pub enum Payload {
    /// An EventBridge event (direct rule target).
    Event(Value),
    /// An SQS batch whose bodies are EventBridge events.
    SqsBatch(SqsEvent),
}

/// The key of the payload a schedule sends to start a sweep:
/// `{"ecr-remediator": "sweep"}`.
pub const SWEEP_TRIGGER_KEY: &str = "ecr-remediator";

/// True for the payload a schedule sends to start a sweep.
pub fn is_sweep_trigger(value: &Value) -> bool {
    value.get(SWEEP_TRIGGER_KEY).and_then(Value::as_str) == Some("sweep")
}

/// What a sweep trigger asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepTrigger {
    /// The schedule: every account this deployment covers.
    Everything,
    /// One account's sweep (`None`: the deployment's own), as the schedule
    /// fans out on the queue, one message per account.
    Account(Option<String>),
}

/// Reads a sweep trigger: `{"ecr-remediator": "sweep"}` (the schedule), or
/// `{"ecr-remediator": "sweep", "account": "…"}` (one account; `"account":
/// null` is the deployment's own). `None` for anything else.
pub fn sweep_trigger(value: &Value) -> Option<SweepTrigger> {
    if !is_sweep_trigger(value) {
        return None;
    }
    match value.get("account") {
        None => Some(SweepTrigger::Everything),
        Some(Value::Null) => Some(SweepTrigger::Account(None)),
        Some(Value::String(a)) if a.len() == 12 && a.chars().all(|c| c.is_ascii_digit()) => {
            Some(SweepTrigger::Account(Some(a.clone())))
        }
        Some(_) => None,
    }
}

/// The message that asks for one account's sweep (see [`sweep_trigger`]).
pub fn account_sweep_message(account: Option<&str>) -> String {
    serde_json::json!({ SWEEP_TRIGGER_KEY: "sweep", "account": account }).to_string()
}

/// Recognises an SQS batch (`Records` with `eventSource: aws:sqs`); anything else is an event.
pub fn payload(value: Value) -> Payload {
    let is_batch = value.get("Records").and_then(Value::as_array).is_some_and(|records| {
        !records.is_empty()
            && records
                .iter()
                .all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"))
    });
    if is_batch {
        match serde_json::from_value::<SqsEvent>(value.clone()) {
            Ok(batch) => return Payload::SqsBatch(batch),
            Err(e) => tracing::warn!(error = %e, "an SQS-shaped payload is not a valid SQS event; handled as an event"),
        }
    }
    Payload::Event(value)
}

impl<R: Registry, A: AuditSink> Handler<R, A> {
    /// A handler with default retries and no known receive limit.
    pub fn new(registry: R, audit: A, policies: PolicySet) -> Self {
        Handler {
            registry,
            audit,
            policies,
            log_records: true,
            metrics: None,
            retry: RetryPolicy::default(),
            max_receive_count: None,
            members: None,
            own_account: None,
            member_accounts: std::collections::BTreeSet::new(),
        }
    }

    fn engine<'a>(&'a self, registry: &'a R, delivery: &Delivery) -> Engine<'a, R, A> {
        Engine {
            registry,
            audit: &self.audit,
            policies: &self.policies,
            retry: self.retry,
            deadline: delivery.deadline,
            request_id: delivery.request_id.clone(),
        }
    }

    /// Handles one event given as JSON text.
    pub async fn handle_text(
        &self,
        text: &str,
        trigger: Trigger,
        delivery: Delivery,
    ) -> Result<EventResult, RetryError> {
        let envelope = match parse_envelope(text) {
            Ok(e) => e,
            Err(e) => return self.malformed(&e.to_string(), None, delivery).await,
        };
        let account = envelope.account.clone();
        let triaged = triage(&envelope, |repo, tag| {
            self.policies
                .select_for(repo, account.as_deref())
                .policy
                .is_keep_tag(tag)
        });
        let pushed = match triaged {
            Ok(Triage::Handle(p)) => p,
            Ok(Triage::Ignore(reason)) => {
                tracing::info!(event_id = envelope.id.as_deref().unwrap_or(""), %reason, "event skipped");
                return Ok(EventResult::Ignored {
                    reason: reason.to_string(),
                });
            }
            Err(e) => return self.malformed(&e.to_string(), envelope.id.clone(), delivery).await,
        };
        // A sweep's request stays a sweep (and a cleanup request a cleanup);
        // a push takes the caller's trigger.
        let job = Job {
            trigger: if pushed.trigger == Trigger::Sweep {
                Trigger::Sweep
            } else {
                trigger
            },
            ..pushed
        };
        self.handle_job_record(&job, delivery).await.1
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
        let member = match self.member_registry(job.account.as_deref()).await.transpose() {
            Ok(member) => member,
            Err(e) => {
                // This account alone: an audited failure, retried only if it may pass.
                tracing::warn!(account = job.account.as_deref().unwrap_or(""), error = %e, "cannot act in the member account");
                let record = self.account_failure(job, &e, &delivery);
                let result = self.finish(record.clone(), delivery).await;
                return (record, result);
            }
        };
        let registry = member.as_deref().unwrap_or(&self.registry);
        let record = self.engine(registry, &delivery).remediate(job).await;
        let result = self.finish(record.clone(), delivery).await;
        (record, result)
    }

    /// The registry of `account` when it is a member's (reached through its
    /// role); `None` for this deployment's own account, an unknown one, or
    /// when no member access is configured.
    async fn member_registry(&self, account: Option<&str>) -> Option<Result<std::sync::Arc<R>, RegistryError>> {
        match (&self.members, account) {
            (Some(members), Some(a)) if Some(a) != self.own_account.as_deref() => Some(members.registry_for(a).await),
            _ => None,
        }
    }

    /// Whether a queued sweep request may name `account`: this deployment's
    /// own, or one it lists. Anyone who may send to the queue (in a hub, any
    /// principal of the organisation) could name any account.
    pub fn lists_account(&self, account: Option<&str>) -> bool {
        match account {
            None => true,
            Some(a) => Some(a) == self.own_account.as_deref() || self.member_accounts.contains(a),
        }
    }

    /// Writes the record of a queued sweep request that was refused (an
    /// account the deployment does not list): skipped, final, never retried.
    pub async fn refuse_sweep(&self, account: &str, delivery: Delivery) -> Result<EventResult, RetryError> {
        let mut record = AuditRecord::new(Trigger::Sweep, None, SystemTime::now());
        record.account = Some(account.to_owned());
        record.outcome = Outcome::Skipped {
            code: "account_not_listed".to_owned(),
            reason: format!(
                "a sweep of account {account} was requested, but this deployment does not list it \
                 (ECR_REMEDIATOR_MEMBER_ACCOUNTS); refused"
            ),
        };
        tracing::warn!(
            account,
            "sweep request for an account this deployment does not list: refused"
        );
        self.finish(record, delivery).await
    }

    /// The member registry to sweep `account` in (`None`: this deployment's
    /// own registry). A foreign account needs the member role configured.
    pub async fn sweep_registry(&self, account: Option<&str>) -> Result<Option<std::sync::Arc<R>>, RegistryError> {
        if let (None, Some(a)) = (&self.members, account)
            && Some(a) != self.own_account.as_deref()
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

    /// Handles a Lambda payload: a direct event (an error means "retry"), or an
    /// SQS batch (failed messages listed in the response).
    ///
    /// `request_id` (the Lambda request id) goes into every record.
    pub async fn handle_payload(
        &self,
        value: Value,
        deadline: Option<tokio::time::Instant>,
        request_id: Option<&str>,
    ) -> Result<Value, RetryError> {
        let no_sweeps = |_: Option<String>| async { Err("this deployment does not sweep (no queue)".to_owned()) };
        self.handle_payload_sweeping(value, deadline, request_id, no_sweeps)
            .await
    }

    /// Like [`Self::handle_payload`]; an SQS message that asks for one
    /// account's sweep ([`account_sweep_message`]) is given to `sweep`, and
    /// delivered again if that fails.
    pub async fn handle_payload_sweeping<F, Fut>(
        &self,
        value: Value,
        deadline: Option<tokio::time::Instant>,
        request_id: Option<&str>,
        sweep: F,
    ) -> Result<Value, RetryError>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let request_id = request_id.map(str::to_owned);
        match payload(value) {
            Payload::Event(event) => {
                let delivery = Delivery {
                    attempt: None,
                    deadline,
                    request_id,
                };
                let result = self.handle_text(&event.to_string(), Trigger::Push, delivery).await?;
                Ok(serde_json::to_value(result).unwrap_or(Value::Null))
            }
            Payload::SqsBatch(batch) => {
                let mut response = SqsBatchResponse::default();
                for message in batch.records {
                    let id = message.message_id.clone().unwrap_or_default();
                    let attempt = message
                        .attributes
                        .get("ApproximateReceiveCount")
                        .and_then(|n| n.parse().ok());
                    let delivery = Delivery {
                        attempt,
                        deadline,
                        request_id: request_id.clone(),
                    };
                    let body = message.body.as_deref().unwrap_or_default();
                    let trigger = serde_json::from_str::<Value>(body).ok().and_then(|v| sweep_trigger(&v));
                    if let Some(SweepTrigger::Account(account)) = trigger {
                        if let Err(e) = sweep(account.clone()).await {
                            tracing::error!(message_id = %id, account = account.as_deref().unwrap_or("own"), error = %e, "account sweep failed; it will be delivered again");
                            let mut failure = BatchItemFailure::default();
                            failure.item_identifier = id;
                            response.batch_item_failures.push(failure);
                        }
                        continue;
                    }
                    if let Err(e) = self.handle_text(body, Trigger::Push, delivery).await {
                        tracing::warn!(message_id = %id, error = %e, "message failed; it will be delivered again");
                        let mut failure = BatchItemFailure::default();
                        failure.item_identifier = id;
                        response.batch_item_failures.push(failure);
                    }
                }
                Ok(serde_json::to_value(response).unwrap_or(Value::Null))
            }
        }
    }

    async fn malformed(
        &self,
        problem: &str,
        event_id: Option<String>,
        delivery: Delivery,
    ) -> Result<EventResult, RetryError> {
        tracing::warn!(event_id = event_id.as_deref().unwrap_or(""), problem, "malformed event");
        let mut record = AuditRecord::new(Trigger::Push, None, SystemTime::now());
        record.event_id = event_id;
        record.outcome = Outcome::Skipped {
            code: "malformed_event".to_owned(),
            reason: problem.to_owned(),
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
        if self.log_records {
            println!("{}", log_line(&record));
            if let Some(doc) = self
                .metrics
                .as_ref()
                .and_then(|m| emf(&record, m, crate::engine::audit::now_ms()))
            {
                println!("{doc}");
            }
        }
        let write = write_with_retries(&self.audit, &record, &self.retry, delivery.deadline).await;
        let result = EventResult::Handled {
            outcome: record.outcome.name().to_owned(),
            digest: record.index_digest.clone(),
        };
        if let Err(e) = write {
            tracing::error!(error = %e, "audit record not written");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_triggers_round_trip_and_nothing_else_is_one() {
        let schedule = serde_json::json!({"ecr-remediator": "sweep"});
        assert_eq!(sweep_trigger(&schedule), Some(SweepTrigger::Everything));
        for account in [None, Some("222222222222")] {
            let message: Value = serde_json::from_str(&account_sweep_message(account)).unwrap();
            assert_eq!(
                sweep_trigger(&message),
                Some(SweepTrigger::Account(account.map(str::to_owned)))
            );
        }
        for not_one in [
            serde_json::json!({"ecr-remediator": "sweep", "account": "12"}),
            serde_json::json!({"ecr-remediator": "sweep", "account": 222222222222_u64}),
            serde_json::json!({"ecr-remediator": "sweeps"}),
            serde_json::json!({"source": "aws.ecr", "account": "222222222222"}),
        ] {
            assert_eq!(sweep_trigger(&not_one), None, "{not_one}");
        }
    }
}
