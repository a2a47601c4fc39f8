//! The long-running worker on an SQS queue (`ecr-remediator serve`).
//!
//! Long polling; every message of a received batch has its visibility
//! extended until it is handled (not only the one being worked on, so no
//! message is handled twice while the worker holds it); a message is deleted
//! only when handled (and its audit record written);
//! on failure it is left to become visible again (the queue's redrive policy
//! moves it to a dead-letter queue after enough attempts). Stops receiving on
//! the shutdown signal and finishes the message in hand.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, MessageSystemAttributeName};

use crate::engine::audit::AuditSink;
use crate::engine::registry::Registry;
use crate::service::enqueue::{JobQueue, QueueError};
use crate::service::handler::{Delivery, Handler};

/// Worker settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The queue.
    pub queue_url: String,
    /// Visibility timeout asked for on receive and kept extended while working.
    pub visibility_timeout: Duration,
    /// Long-poll wait per receive (at most 20 s).
    pub wait: Duration,
    /// Exit after a receive that returns nothing (for batch runs and the demo).
    pub exit_when_idle: bool,
}

/// What the worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Messages handled and deleted.
    pub handled: u64,
    /// Messages left for redelivery.
    pub failed: u64,
}

/// The worker could not go on.
#[derive(Debug, thiserror::Error)]
#[error("SQS {operation} on {queue}: {message}")]
pub struct WorkerError {
    operation: &'static str,
    queue: String,
    message: String,
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// Runs the worker until `shutdown` resolves (or the queue is idle with `exit_when_idle`).
pub async fn serve<R: Registry, A: AuditSink>(
    handler: &Handler<R, A>,
    client: &Client,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<ServeStats, WorkerError> {
    let mut stats = ServeStats::default();
    let mut consecutive_errors = 0u32;
    tokio::pin!(shutdown);
    loop {
        let receive = client
            .receive_message()
            .queue_url(&options.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(secs(options.wait).min(20))
            .visibility_timeout(secs(options.visibility_timeout))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send();
        let reply = tokio::select! {
            () = &mut shutdown => {
                tracing::info!("shutdown requested; stopping");
                return Ok(stats);
            }
            reply = receive => reply,
        };
        let reply = match reply {
            Ok(r) => {
                consecutive_errors = 0;
                r
            }
            Err(e) => {
                let fatal = e.as_service_error().is_some_and(|s| s.is_queue_does_not_exist());
                let message = DisplayErrorContext(&e).to_string();
                consecutive_errors += 1;
                if fatal || consecutive_errors >= 10 {
                    return Err(WorkerError {
                        operation: "ReceiveMessage",
                        queue: options.queue_url.clone(),
                        message,
                    });
                }
                tracing::warn!(error = %message, "receive failed; retrying");
                tokio::time::sleep(Duration::from_secs(u64::from(consecutive_errors))).await;
                continue;
            }
        };
        let messages = reply.messages();
        if messages.is_empty() && options.exit_when_idle {
            return Ok(stats);
        }
        // Every message of the batch stays invisible until it is handled.
        let in_hand: Mutex<Vec<(String, String)>> = Mutex::new(
            messages
                .iter()
                .filter_map(|m| Some((m.message_id()?.to_owned(), m.receipt_handle()?.to_owned())))
                .collect(),
        );
        let work = async {
            for message in messages {
                let (Some(body), Some(receipt)) = (message.body(), message.receipt_handle()) else {
                    continue;
                };
                let id = message.message_id().unwrap_or_default();
                let attempt = message
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok());
                let delivery = Delivery {
                    attempt,
                    deadline: None,
                    request_id: Some(receive_id(receipt)),
                };
                let result = handler
                    .handle_text(body, delivery)
                    .await
                    .map(|r| serde_json::to_string(&r).unwrap_or_default())
                    .map_err(|e| e.to_string());
                release(&in_hand, id);
                match result {
                    Ok(r) => {
                        tracing::info!(message_id = id, result = %r, "message handled");
                        if let Err(e) = client
                            .delete_message()
                            .queue_url(&options.queue_url)
                            .receipt_handle(receipt)
                            .send()
                            .await
                        {
                            tracing::warn!(message_id = id, error = %DisplayErrorContext(&e), "could not delete a handled message; it will be handled again (idempotent)");
                        }
                        stats.handled += 1;
                    }
                    Err(e) => {
                        tracing::warn!(message_id = id, error = %e, "message failed; left for redelivery");
                        stats.failed += 1;
                    }
                }
            }
        };
        let heartbeat = keep_invisible(client, options, &in_hand);
        tokio::pin!(work);
        tokio::pin!(heartbeat);
        tokio::select! {
            () = &mut work => {}
            () = &mut heartbeat => work.await,
        }
    }
}

fn release(in_hand: &Mutex<Vec<(String, String)>>, id: &str) {
    in_hand
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .retain(|(m, _)| m != id);
}

/// Extends the visibility of every message still in hand at half the
/// timeout, forever (raced against the work).
async fn keep_invisible(client: &Client, options: &ServeOptions, in_hand: &Mutex<Vec<(String, String)>>) {
    let period = (options.visibility_timeout / 2).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(period).await;
        let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = in_hand
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .enumerate()
            .filter_map(|(n, (_, receipt))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(format!("m{n}"))
                    .receipt_handle(receipt)
                    .visibility_timeout(secs(options.visibility_timeout))
                    .build()
                    .ok()
            })
            .collect();
        if entries.is_empty() {
            continue;
        }
        match client
            .change_message_visibility_batch()
            .queue_url(&options.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(reply) if !reply.failed().is_empty() => {
                tracing::warn!(
                    failed = reply.failed().len(),
                    "could not extend the visibility of some messages"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %DisplayErrorContext(&e), "could not extend message visibility"),
        }
    }
}

/// The push queue as a `JobQueue` (`SendMessageBatch`, 10 at a time).
#[derive(Debug, Clone)]
pub struct SqsJobQueue {
    client: Client,
    url: String,
}

impl SqsJobQueue {
    /// Requests go to the queue at `url`.
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        SqsJobQueue {
            client,
            url: url.into(),
        }
    }
}

/// `SendMessageBatch` calls a [`SqsJobQueue`] has in flight at once: a
/// fan-out of thousands of requests takes a tenth of the time it takes one
/// batch after the other, well within SQS's limits (no per-queue send quota
/// for standard queues).
pub const ENQUEUE_CONCURRENCY: usize = 16;

impl SqsJobQueue {
    /// Sends one batch of at most 10 messages; entries the queue refused are
    /// sent again, twice at most.
    async fn send_batch(&self, chunk: &[String]) -> Result<(), QueueError> {
        let error = |message: String| QueueError {
            queue: self.url.clone(),
            message,
        };
        let mut pending: Vec<(String, &String)> = chunk.iter().enumerate().map(|(n, b)| (format!("m{n}"), b)).collect();
        for attempt in 0..3 {
            let entries = pending
                .iter()
                .map(|(id, body)| {
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(id)
                        .message_body(*body)
                        .build()
                        .map_err(|e| error(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let reply = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| error(DisplayErrorContext(&e).to_string()))?;
            let failed: Vec<&str> = reply.failed().iter().map(|f| f.id()).collect();
            if failed.is_empty() {
                break;
            }
            if attempt == 2 {
                return Err(error(format!(
                    "{} messages refused: {:?}",
                    failed.len(),
                    reply.failed()
                )));
            }
            pending.retain(|(id, _)| failed.contains(&id.as_str()));
        }
        Ok(())
    }
}

impl JobQueue for SqsJobQueue {
    /// Batches of 10, [`ENQUEUE_CONCURRENCY`] in flight at once.
    fn enqueue<'a>(
        &'a self,
        bodies: &'a [String],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), QueueError>> + Send + 'a>> {
        Box::pin(async move {
            for wave in bodies.chunks(10 * ENQUEUE_CONCURRENCY) {
                let batches: Vec<_> = wave.chunks(10).map(|chunk| self.send_batch(chunk)).collect();
                futures_util::future::try_join_all(batches).await?;
            }
            Ok(())
        })
    }

    fn enqueue_after<'a>(
        &'a self,
        body: &'a str,
        delay_s: u32,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), QueueError>> + Send + 'a>> {
        Box::pin(async move {
            self.client
                .send_message()
                .queue_url(&self.url)
                .message_body(body)
                .delay_seconds(i32::try_from(delay_s.min(crate::service::enqueue::MAX_DELAY_S)).unwrap_or(0))
                .send()
                .await
                .map_err(|e| QueueError {
                    queue: self.url.clone(),
                    message: DisplayErrorContext(&e).to_string(),
                })?;
            Ok(())
        })
    }
}

/// What identifies one receive of a message in its records (`request_id`):
/// its receipt handle, which SQS makes anew on every receive, shortened. A
/// redelivery, or a redrive from the dead-letter queue that starts the
/// receive count again, is then told apart from the receive before it.
fn receive_id(receipt_handle: &str) -> String {
    let digest = crate::oci::digest::Digest::sha256_of(receipt_handle.as_bytes());
    format!("sqs-{}", &digest.hex()[..16])
}
