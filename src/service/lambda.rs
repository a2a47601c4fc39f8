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
    /// `request_id` (the Lambda request id) goes into every record; in a
    /// batch, with the message's id after it (`<request id>/<message id>`),
    /// so that each message's delivery is its own (two copies of one event
    /// in one batch never close each other's checkpoint).
    pub async fn handle_lambda(
        &self,
        payload: Value,
        deadline: Option<tokio::time::Instant>,
        request_id: Option<&str>,
    ) -> Result<Value, RetryError> {
        let delivery = |attempt, message_id: Option<&str>| Delivery {
            attempt,
            deadline,
            request_id: match (request_id, message_id) {
                (Some(r), Some(m)) => Some(format!("{r}/{m}")),
                (r, _) => r.map(str::to_owned),
            },
        };
        match Payload::parse(payload) {
            Payload::One(message) => {
                let result = Box::pin(self.handle(*message, delivery(None, None))).await?;
                Ok(serde_json::to_value(result).unwrap_or(Value::Null))
            }
            Payload::Batch(messages) => {
                let mut response = SqsBatchResponse::default();
                for queued in messages {
                    let this = delivery(
                        queued.attempt,
                        Some(queued.message_id.as_str()).filter(|m| !m.is_empty()),
                    );
                    if let Err(e) = Box::pin(self.handle(queued.message, this)).await {
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
