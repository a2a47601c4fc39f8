//! `ecr-remediator serve`: the long-running worker on an SQS queue.

use std::process::ExitCode;

use ecr_remediator::aws::sqs::{ServeOptions, SqsJobQueue, serve};
use ecr_remediator::logging::{LogFormat, init};
use ecr_remediator::service::handler::Sweeps;

use crate::flags::PolicyFlags;

/// Works on the queue until SIGTERM or Ctrl-C (or, with `--exit-when-idle`, until it is empty).
pub(crate) async fn run(
    options: ServeOptions,
    flags: PolicyFlags,
    aws: crate::connect::AwsArgs,
) -> anyhow::Result<ExitCode> {
    init(LogFormat::Json);
    let mut config = flags.config()?;
    let (sdk, _) = crate::connect::connect_to_read(&aws, config.max_attempts).await?;
    crate::connect::use_stack(&sdk, &mut config, flags.stack.as_deref()).await?;
    let mut handler = ecr_remediator::aws::handler_with(&sdk, &config);
    ecr_remediator::aws::attach_live_policy(&mut handler, &sdk, &config, Some(flags.overlay())).await?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    // A sweep request on this queue puts its image requests on this queue,
    // unless ECR_REMEDIATOR_QUEUE_URL names another.
    if handler.sweeps.is_none() {
        handler.sweeps = Some(Sweeps {
            queue: std::sync::Arc::new(SqsJobQueue::new(sqs.clone(), options.queue_url.clone())),
            prefixes: config.sweep_prefixes.clone(),
        });
    }
    tracing::info!(queue = %options.queue_url, audit_bus = %config.audit_bus, "worker started");
    let stats = Box::pin(serve(&handler, &sqs, &options, shutdown_signal())).await?;
    tracing::info!(handled = stats.handled, failed = stats.failed, "worker stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
