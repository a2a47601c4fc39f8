//! [`AuditSink`] on Amazon EventBridge (`PutEvents`), read back from the
//! log group the bus's audit rule feeds (CloudWatch Logs Insights), when
//! that log group is known.

use std::time::Duration;

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::error::ProvideErrorMetadata;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::aws::logs::LogsInsights;
use crate::engine::audit::{
    AUDIT_DETAIL_TYPE, AUDIT_SOURCE, AuditError, AuditRecord, AuditSink, MAX_DETAIL_BYTES, Refusal,
};
use crate::oci::digest::Digest;
use crate::trail::filter::{Filter, Order};
use crate::trail::query::{Runner, Silent, Take, Window};

/// Sends audit records to an EventBridge bus.
#[derive(Debug, Clone)]
pub struct EventBridgeAudit {
    client: Client,
    bus: String,
    trail: Option<(LogsInsights, String)>,
}

/// How a redelivery's query of the trail runs: short, it holds up one event.
const READ_BACK: Runner = Runner {
    timeout: Duration::from_secs(30),
    poll: Duration::from_millis(250),
    attempts: 4,
};

impl EventBridgeAudit {
    /// A sink writing to `bus` (a name or ARN; `default` for the default bus).
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        EventBridgeAudit {
            client,
            bus: bus.into(),
            trail: None,
        }
    }

    /// Reads records back from `log_group`, where the bus's audit rule
    /// delivers them (for a redelivery's reconciliation).
    #[must_use]
    pub fn reading_from(mut self, insights: LogsInsights, log_group: impl Into<String>) -> Self {
        self.trail = Some((insights, log_group.into()));
        self
    }

    /// The bus records go to.
    pub fn bus(&self) -> &str {
        &self.bus
    }
}

/// The refusal EventBridge's error `code` (for the call or an entry) means,
/// from the non-retryable codes of `PutEventsResultEntry` (EventBridge API
/// Reference), with what to change; `None` when another try may succeed
/// (throttling, an internal failure, a code this list does not know).
fn refused(destination: &str, code: &str, message: String) -> Option<AuditError> {
    let (of, hint) = match code {
        "AccessDeniedException" => (
            Refusal::Caller,
            "; only the function's role and the principals in the stack's AuditWriterArns parameter may write \
             audit records: add this caller's IAM role ARN there (arn:aws:iam::ACCOUNT:role/PATH/NAME, not the \
             assumed-role session ARN)",
        ),
        "NotAuthorizedForSourceException" | "NotAuthorizedForDetailTypeException" => (
            Refusal::Caller,
            "; the caller's own IAM policy limits the sources or detail-types it may put (events:source, \
             events:detail-type): allow source ecr-remediator, detail-type ECR Remediation Record",
        ),
        "InvalidAccountIdException"
        | "InvalidArgument"
        | "MalformedDetail"
        | "RedactionFailure"
        | "ValidationException" => (Refusal::Record, ""),
        _ => return None,
    };
    Some(AuditError::Refused {
        of,
        destination: destination.to_owned(),
        code: code.to_owned(),
        message,
        hint,
    })
}

impl AuditSink for EventBridgeAudit {
    async fn write(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let destination = format!("event bus {}", self.bus);
        let entry = PutEventsRequestEntry::builder()
            .source(AUDIT_SOURCE)
            .detail_type(AUDIT_DETAIL_TYPE)
            .detail(record.to_bounded_json(MAX_DETAIL_BYTES))
            .event_bus_name(&self.bus);
        let reply = match self.client.put_events().entries(entry.build()).send().await {
            Ok(reply) => reply,
            Err(e) => {
                let message = aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string();
                return Err(match e.code() {
                    Some(code) => refused(&destination, code, message.clone()),
                    None => None,
                }
                .unwrap_or(AuditError::Unavailable { destination, message }));
            }
        };
        if reply.failed_entry_count() > 0 {
            let failed = reply.entries().iter().find(|e| e.error_code().is_some());
            let code = failed.and_then(|e| e.error_code()).unwrap_or("Unknown").to_owned();
            let message = failed.and_then(|e| e.error_message()).unwrap_or_default().to_owned();
            return Err(
                refused(&destination, &code, message.clone()).unwrap_or(AuditError::Rejected {
                    destination,
                    code,
                    message,
                }),
            );
        }
        Ok(())
    }

    async fn earlier_records(
        &self,
        event_id: &str,
        index: &Digest,
        since_ms: i64,
    ) -> Result<Option<Vec<serde_json::Value>>, AuditError> {
        let Some((insights, group)) = &self.trail else {
            return Ok(None);
        };
        let filter = Filter {
            event_id: Some(event_id.to_owned()),
            digest: Some(crate::trail::filter::DigestQuery::whole(index)),
            ..Filter::default()
        };
        let window = Window {
            start_ms: since_ms,
            end_ms: crate::time::now_ms(),
        };
        let take = Take {
            order: Order::OldestFirst,
            limit: 0,
        };
        let found = READ_BACK
            .records(insights, group, window, &filter, take, &mut Silent)
            .await
            .map_err(|e| AuditError::Unreadable {
                source_name: group.clone(),
                message: e.to_string(),
            })?;
        Ok(Some(found.into_iter().map(|f| f.record).collect()))
    }
}
