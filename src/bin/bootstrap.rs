//! The Lambda function: every payload (an EventBridge event, an SQS batch,
//! the schedule's sweep) goes to the one handler.
//!
//! Configuration is read and validated once at init; an invalid setting
//! fails init with a message naming it.
#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime};

use ecr_remediator::ServiceConfig;
use ecr_remediator::logging::{LogFormat, init};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

/// Time kept free before the invocation's deadline to write the record.
const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// When retries must stop: the invocation's deadline less a margin (at most
/// half the time left), so the audit record is written before the timeout.
/// `None` for a deadline already past when the invocation starts, which
/// Lambda never gives (a local runtime emulator may send a fixed one, such
/// as cargo-lambda's 600000 ms after the epoch): no retry would ever run.
fn retry_deadline(invocation_deadline: SystemTime) -> Option<tokio::time::Instant> {
    let Ok(left) = invocation_deadline.duration_since(SystemTime::now()) else {
        tracing::warn!(
            deadline = ?invocation_deadline,
            "the invocation's deadline is already past: retries are bounded by the attempts only"
        );
        return None;
    };
    Some(tokio::time::Instant::now() + left - DEADLINE_MARGIN.min(left / 2))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    init(LogFormat::Json);
    let config = ServiceConfig::from_env().inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    tracing::info!(audit_bus = %config.audit_bus, put_tps = config.put_tps, put_burst = config.put_burst, "ecr-remediator function ready");
    let handler = &ecr_remediator::aws::handler(&config)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "cannot load the policy"))?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        let deadline = retry_deadline(event.context.deadline());
        Box::pin(handler.handle_lambda(event.payload, deadline, Some(&event.context.request_id)))
            .await
            .map_err(Error::from)
    }))
    .await
}
