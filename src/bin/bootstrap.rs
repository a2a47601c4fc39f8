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
use ecr_remediator::service::handler::is_sweep_trigger;
use ecr_remediator::service::sweep::enqueue_accounts;
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
            if is_sweep_trigger(&event.payload) {
                // A scheduled sweep: enqueue one request per image needing work.
                let queue = queue.ok_or_else(|| Error::from("a sweep needs ECR_REMEDIATOR_QUEUE_URL"))?;
                let per_account =
                    enqueue_accounts(&handler, &accounts, &prefixes, &Selection::default(), &*queue).await;
                tracing::info!(?per_account, "sweep requests enqueued");
                if per_account.iter().all(|a| a.error.is_some()) {
                    // Nothing was swept: fail the invocation so it shows in the function's errors.
                    let errors: Vec<String> = per_account.into_iter().filter_map(|a| a.error).collect();
                    return Err(Error::from(format!(
                        "the scheduled sweep failed in every account: {}",
                        errors.join("; ")
                    )));
                }
                return Ok(serde_json::json!({ "accounts": per_account }));
            }
            handler
                .handle_payload(event.payload, Some(deadline), Some(event.context.request_id.as_str()))
                .await
                .map_err(Error::from)
        })
    }))
    .await
}
