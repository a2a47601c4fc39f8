//! `ecr-remediator remediate`: one image, now, as if its push event had arrived.

use std::process::ExitCode;

use ecr_remediator::engine::Job;
use ecr_remediator::engine::audit::{Outcome, Trigger};
use ecr_remediator::oci::digest::Digest;
use ecr_remediator::oci::names::{ImageTag, RepositoryName};
use ecr_remediator::service::handler::Delivery;

use crate::flags::PolicyFlags;

/// Handles the image and prints its record; exit status 1 when it failed.
pub(crate) async fn run(
    repository: RepositoryName,
    image_digest: Digest,
    image_tag: Option<ImageTag>,
    flags: PolicyFlags,
) -> anyhow::Result<ExitCode> {
    ecr_remediator::logging::init_text(crate::progress::Logs);
    let job = Job {
        purpose: ecr_remediator::engine::Purpose::Remediate,
        trigger: Trigger::Manual,
        event_id: None,
        account: None,
        region: std::env::var("AWS_REGION").ok(),
        repository,
        digest: image_digest,
        tag: image_tag,
    };
    let config = flags.config()?;
    let mut handler = ecr_remediator::aws::handler(&config).await;
    handler.log_records = false;
    let (record, result) = Box::pin(handler.handle_job_record(&job, Delivery::default())).await;
    println!("{}", serde_json::to_string_pretty(&record)?);
    if let Err(e) = result {
        eprintln!("error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(match record.outcome {
        Outcome::Failed(_) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}
