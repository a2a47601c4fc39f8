//! From an incoming payload to handled images and written audit records.
//!
//! Shared by the Lambda function (direct EventBridge events and SQS batches)
//! and the `serve` worker (one SQS message at a time). Irrelevant events are
//! skipped with a logged reason and cost no registry call; malformed ones get
//! an audit record saying why; a failure that a retry may fix (throttling,
//! 5xx, or the audit record not written) is reported so the message is
//! delivered again, which the engine's idempotence makes safe.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use crate::audit::{AuditRecord, AuditSink, Outcome, Trigger, log_line};
use crate::event::{Triage, parse_envelope, triage};
use crate::policy::PolicySet;
use crate::registry::Registry;
use crate::service::{Job, remediate};

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
    Audit(#[from] crate::audit::AuditError),
}

/// SQS's partial batch response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct BatchResponse {
    /// Messages to deliver again.
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// One failed SQS message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchItemFailure {
    /// The message id.
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// The kinds of payload the function accepts.
#[derive(Debug)]
pub enum Payload<'a> {
    /// An EventBridge event (direct rule target).
    Event(&'a Value),
    /// An SQS batch: (message id, body) pairs.
    SqsBatch(Vec<(String, String)>),
}

/// Recognises an SQS batch (`Records` with `eventSource: aws:sqs`); anything else is an event.
pub fn payload(value: &Value) -> Payload<'_> {
    match value.get("Records").and_then(Value::as_array) {
        Some(records)
            if records
                .iter()
                .all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs")) =>
        {
            Payload::SqsBatch(
                records
                    .iter()
                    .map(|r| {
                        let id = r
                            .get("messageId")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        let body = r.get("body").and_then(Value::as_str).unwrap_or_default().to_owned();
                        (id, body)
                    })
                    .collect(),
            )
        }
        _ => Payload::Event(value),
    }
}

impl<R: Registry, A: AuditSink> Handler<R, A> {
    /// Handles one event given as JSON text.
    pub async fn handle_text(&self, text: &str, trigger: Trigger) -> Result<EventResult, RetryError> {
        let envelope = match parse_envelope(text) {
            Ok(e) => e,
            Err(e) => return self.malformed(&e.to_string(), None).await,
        };
        let triaged = triage(&envelope, |repo| self.policies.select(repo).policy.keep_tag.as_ref());
        let pushed = match triaged {
            Ok(Triage::Handle(p)) => p,
            Ok(Triage::Ignore(reason)) => {
                tracing::info!(event_id = envelope.id.as_deref().unwrap_or(""), %reason, "event skipped");
                return Ok(EventResult::Ignored {
                    reason: reason.to_string(),
                });
            }
            Err(e) => return self.malformed(&e.to_string(), envelope.id.clone()).await,
        };
        let job = Job {
            trigger,
            event_id: pushed.event_id,
            account: pushed.account,
            region: pushed.region,
            repository: pushed.repository,
            digest: pushed.digest,
            tag: Some(pushed.tag),
        };
        self.handle_job(&job).await
    }

    /// Handles one job (a parsed event, or a manual request) and writes its record.
    pub async fn handle_job(&self, job: &Job) -> Result<EventResult, RetryError> {
        self.handle_job_record(job).await.1
    }

    /// Like [`Self::handle_job`], also returning the record.
    pub async fn handle_job_record(&self, job: &Job) -> (AuditRecord, Result<EventResult, RetryError>) {
        let record = remediate(&self.registry, &self.policies, job).await;
        let result = self.finish(record.clone()).await;
        (record, result)
    }

    /// Handles one event value.
    pub async fn handle_event(&self, event: &Value, trigger: Trigger) -> Result<EventResult, RetryError> {
        self.handle_text(&event.to_string(), trigger).await
    }

    /// Handles a Lambda payload: a direct event (an error means "retry"), or an
    /// SQS batch (failed messages listed in the response).
    pub async fn handle_payload(&self, value: &Value) -> Result<Value, RetryError> {
        match payload(value) {
            Payload::Event(event) => {
                let result = self.handle_event(event, Trigger::Push).await?;
                Ok(serde_json::to_value(result).unwrap_or(Value::Null))
            }
            Payload::SqsBatch(messages) => {
                let mut response = BatchResponse::default();
                for (id, body) in messages {
                    if let Err(e) = self.handle_text(&body, Trigger::Push).await {
                        tracing::warn!(message_id = %id, error = %e, "message failed; it will be delivered again");
                        response
                            .batch_item_failures
                            .push(BatchItemFailure { item_identifier: id });
                    }
                }
                Ok(serde_json::to_value(response).unwrap_or(Value::Null))
            }
        }
    }

    async fn malformed(&self, problem: &str, event_id: Option<String>) -> Result<EventResult, RetryError> {
        tracing::warn!(event_id = event_id.as_deref().unwrap_or(""), problem, "malformed event");
        let mut record = AuditRecord::new(Trigger::Push, None, SystemTime::now());
        record.event_id = event_id;
        record.outcome = Outcome::Skipped {
            code: "malformed_event".to_owned(),
            reason: problem.to_owned(),
        };
        self.finish(record).await
    }

    async fn finish(&self, record: AuditRecord) -> Result<EventResult, RetryError> {
        if self.log_records {
            println!("{}", log_line(&record));
        }
        let write = self.audit.write(&record).await;
        let result = EventResult::Handled {
            outcome: match &record.outcome {
                Outcome::Remediated => "remediated",
                Outcome::Noop => "noop",
                Outcome::Skipped { .. } => "skipped",
                Outcome::Failed(_) => "failed",
            }
            .to_owned(),
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
