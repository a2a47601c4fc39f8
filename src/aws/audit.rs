//! [`AuditSink`] on Amazon EventBridge (`PutEvents`).

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::engine::audit::{AUDIT_DETAIL_TYPE, AUDIT_SOURCE, AuditError, AuditRecord, AuditSink, MAX_DETAIL_BYTES};

/// Sends audit records to an EventBridge bus.
#[derive(Debug, Clone)]
pub struct EventBridgeAudit {
    client: Client,
    bus: String,
}

impl EventBridgeAudit {
    /// A sink writing to `bus` (a name or ARN; `default` for the default bus).
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        EventBridgeAudit {
            client,
            bus: bus.into(),
        }
    }

    /// The bus records go to.
    pub fn bus(&self) -> &str {
        &self.bus
    }
}

impl AuditSink for EventBridgeAudit {
    async fn write(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let destination = format!("event bus {}", self.bus);
        let entry = PutEventsRequestEntry::builder()
            .source(AUDIT_SOURCE)
            .detail_type(AUDIT_DETAIL_TYPE)
            .detail(record.to_bounded_json(MAX_DETAIL_BYTES))
            .event_bus_name(&self.bus);
        let reply = self
            .client
            .put_events()
            .entries(entry.build())
            .send()
            .await
            .map_err(|e| AuditError::Unavailable {
                destination: destination.clone(),
                message: aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string(),
            })?;
        if reply.failed_entry_count() > 0 {
            let failed = reply.entries().iter().find(|e| e.error_code().is_some());
            return Err(AuditError::Rejected {
                destination,
                code: failed.and_then(|e| e.error_code()).unwrap_or("Unknown").to_owned(),
                message: failed.and_then(|e| e.error_message()).unwrap_or_default().to_owned(),
            });
        }
        Ok(())
    }
}
