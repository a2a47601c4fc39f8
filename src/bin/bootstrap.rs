//! The Lambda function: `ECR Image Action` events, direct or in SQS batches.
//!
//! Configuration is read and validated once at init; an invalid setting
//! fails init with a message naming it.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ecr_remediator::aws::sqs::SqsJobQueue;
use ecr_remediator::engine::sweep::Selection;
use ecr_remediator::logging::{LogFormat, init};
use ecr_remediator::service::config::ServiceConfig;
use ecr_remediator::service::handler::{SweepTrigger, account_sweep_message, sweep_trigger};
use ecr_remediator::service::sweep::JobQueue;
use ecr_remediator::service::sweep::enqueue_account;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

/// Time kept free before the invocation's deadline to write the record.
const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// When retries must stop: the invocation's deadline less a margin (at most
/// half the time left), so the audit record is written before the timeout.
fn retry_deadline(invocation_deadline: SystemTime) -> tokio::time::Instant {
    let left = invocation_deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::Instant::now() + left - DEADLINE_MARGIN.min(left / 2)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    init(LogFormat::Json);
    let config = ServiceConfig::from_env().inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    tracing::info!(audit_bus = %config.audit_bus, put_tps = config.put_tps, put_burst = config.put_burst, "ecr-remediator function ready");
    let sdk = ecr_remediator::aws::load_config(config.max_attempts).await;
    let handler = Arc::new(ecr_remediator::aws::handler_with(&sdk, &config));
    let queue = config
        .queue_url
        .clone()
        .map(|url| Arc::new(SqsJobQueue::new(aws_sdk_sqs::Client::new(&sdk), url)));
    // A scheduled sweep covers this account and, in a hub, every listed member account.
    let accounts: Arc<Vec<Option<String>>> = Arc::new(
        std::iter::once(None)
            .chain(config.members.iter().flat_map(|m| m.accounts.iter().cloned().map(Some)))
            .collect(),
    );
    let prefixes = Arc::new(config.sweep_prefixes.clone());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (handler, queue, accounts, prefixes) = (
            Arc::clone(&handler),
            queue.clone(),
            Arc::clone(&accounts),
            Arc::clone(&prefixes),
        );
        let deadline = retry_deadline(event.context.deadline());
        Box::pin(async move {
            // One account's sweep: its image requests go on the queue.
            let sweep_one = |account: Option<String>| {
                let (handler, queue, prefixes) = (Arc::clone(&handler), queue.clone(), Arc::clone(&prefixes));
                async move {
                    let queue = queue.ok_or_else(|| "a sweep needs ECR_REMEDIATOR_QUEUE_URL".to_owned())?;
                    enqueue_account(&handler, account.as_deref(), &prefixes, &Selection::default(), &*queue)
                        .await
                        .map_err(|e| e.to_string())
                }
            };
            match sweep_trigger(&event.payload) {
                // The schedule, in a hub with member accounts: one message per account on the
                // queue, so each account is swept in its own invocation, retried on its own.
                Some(SweepTrigger::Everything) if accounts.len() > 1 => {
                    let queue = queue.ok_or_else(|| Error::from("a sweep needs ECR_REMEDIATOR_QUEUE_URL"))?;
                    let bodies: Vec<String> = accounts.iter().map(|a| account_sweep_message(a.as_deref())).collect();
                    // All at once: the adapter sends its batches concurrently.
                    queue.enqueue(&bodies).await?;
                    tracing::info!(accounts = accounts.len(), "sweep fanned out, one request per account");
                    return Ok(serde_json::json!({ "fanned_out": *accounts }));
                }
                Some(trigger) => {
                    let account = match trigger {
                        SweepTrigger::Account(account) => account,
                        SweepTrigger::Everything => None,
                    };
                    let summary = sweep_one(account.clone()).await.map_err(Error::from)?;
                    tracing::info!(?summary, "sweep requests enqueued");
                    return Ok(serde_json::json!({ "accounts": [{ "account": account, "summary": summary }] }));
                }
                None => {}
            }
            let sweep = |account: Option<String>| {
                let done = sweep_one(account);
                async move { done.await.map(|_| ()) }
            };
            handler
                .handle_payload_sweeping(
                    event.payload,
                    Some(deadline),
                    Some(event.context.request_id.as_str()),
                    sweep,
                )
                .await
                .map_err(Error::from)
        })
    }))
    .await
}
