//! The Lambda function: `ECR Image Action` events, direct or in SQS batches.
//!
//! Configuration is read and validated once at init; an invalid setting
//! fails init with a message naming it.
#![forbid(unsafe_code)]

use std::sync::Arc;

use ecr_remediator::config::ServiceConfig;
use ecr_remediator::logging::{LogFormat, init};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init(LogFormat::Json);
    let config = ServiceConfig::from_env().inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    tracing::info!(audit_bus = %config.audit_bus, put_tps = config.put_tps, "ecr-remediator function ready");
    let handler = Arc::new(ecr_remediator::aws::handler(&config).await);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let handler = Arc::clone(&handler);
        Box::pin(async move { handler.handle_payload(&event.payload).await.map_err(Error::from) })
    }))
    .await
}
