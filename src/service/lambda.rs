//! The Lambda function's payloads: a direct invocation (an EventBridge event
//! or the schedule's payload) or an SQS batch, each message handed to
//! [`Handler::handle`].

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use serde_json::Value;

use crate::engine::audit::AuditSink;
use crate::engine::registry::Registry;
use crate::service::handler::{Delivery, Handler, RetryError};
use crate::service::message::Payload;

impl<R: Registry, A: AuditSink> Handler<R, A> {
    /// Handles a Lambda payload. A direct invocation returns what happened,
    /// or an error that makes Lambda retry it; an SQS batch returns the
    /// partial batch response naming the messages to deliver again
    /// (`ReportBatchItemFailures`).
    ///
    /// `request_id` (the Lambda request id) goes into every record.
    pub async fn handle_lambda(
        &self,
        payload: Value,
        deadline: Option<tokio::time::Instant>,
        request_id: Option<&str>,
    ) -> Result<Value, RetryError> {
        let delivery = |attempt| Delivery {
            attempt,
            deadline,
            request_id: request_id.map(str::to_owned),
        };
        match Payload::parse(payload) {
            Payload::One(message) => {
                let result = Box::pin(self.handle(*message, delivery(None))).await?;
                Ok(serde_json::to_value(result).unwrap_or(Value::Null))
            }
            Payload::Batch(messages) => {
                let mut response = SqsBatchResponse::default();
                for queued in messages {
                    if let Err(e) = Box::pin(self.handle(queued.message, delivery(queued.attempt))).await {
                        tracing::warn!(message_id = %queued.message_id, error = %e, "message failed; it will be delivered again");
                        let mut failure = BatchItemFailure::default();
                        failure.item_identifier = queued.message_id;
                        response.batch_item_failures.push(failure);
                    }
                }
                Ok(serde_json::to_value(response).unwrap_or(Value::Null))
            }
        }
    }
}
