//! `ecr-remediator remediate`: one image, now, as if its push event had arrived.

use std::process::ExitCode;

use anyhow::Context as _;
use ecr_remediator::Delivery;
use ecr_remediator::Digest;
use ecr_remediator::Job;
use ecr_remediator::decide::skip::SkipCode;
use ecr_remediator::engine::audit::{Outcome, Trigger};
use ecr_remediator::oci::names::{ImageTag, RepositoryName};
use ecr_remediator::service::manual::{Named, Resolved, resolve};
use ecr_remediator::trail::render;

use crate::flags::{OutputFormat, PolicyFlags};

/// `ecr-remediator remediate`'s arguments.
#[derive(clap::Args)]
pub(crate) struct RemediateArgs {
    /// The repository.
    #[arg(long, value_name = "NAME")]
    repository: RepositoryName,
    /// The tag it was pushed with (alone: its index is looked up).
    #[arg(long, value_name = "TAG", required_unless_present = "image_digest")]
    image_tag: Option<ImageTag>,
    /// The image (index) digest (alone: each of its tags is handled).
    #[arg(long, value_name = "DIGEST")]
    image_digest: Option<Digest>,
    /// `table` (what changed, one line per tag) or `json` (the audit records, one per line).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    #[command(flatten)]
    policy: PolicyFlags,
}

/// Handles the image and prints what happened; exit status 1 when it failed
/// or when what was named does not exist (any more).
pub(crate) async fn run(args: RemediateArgs, aws: crate::connect::AwsArgs) -> anyhow::Result<ExitCode> {
    ecr_remediator::logging::init_text(crate::progress::Logs);
    let named = match (args.image_digest, args.image_tag) {
        (Some(d), Some(t)) => Named::Both(d, t),
        (Some(d), None) => Named::Digest(d),
        (None, Some(t)) => Named::Tag(t),
        (None, None) => anyhow::bail!("give --image-tag, --image-digest or both"),
    };
    let mut config = args.policy.config()?;
    let (sdk, account) = crate::connect::connect_to_read(&aws, config.max_attempts).await?;
    // Records name the account and region the image is in.
    config.account_id.get_or_insert(account);
    crate::connect::use_stack(&sdk, &mut config, args.policy.stack.as_deref()).await?;
    let region = sdk.region().map(ToString::to_string);
    let mut handler = ecr_remediator::aws::handler_with(&sdk, &config);
    ecr_remediator::aws::attach_live_policy(&mut handler, &sdk, &config, Some(args.policy.overlay())).await?;
    handler.log_records = false;
    let repository = args.repository;
    let images = match resolve(&handler.registry, &handler.retry, &repository, named)
        .await
        .context("cannot remediate")?
    {
        Resolved::Images(images) => images,
        Resolved::AlreadyAnImage { tag, digest } => {
            println!(
                "{repository}:{tag} points at an image manifest ({}): deployable as it is, nothing to remediate",
                render::short_digest(&digest.to_string())
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut ok = true;
    let mut rows = Vec::new();
    for (digest, tag) in images {
        let job = Job {
            purpose: ecr_remediator::Purpose::Remediate,
            trigger: Trigger::Manual,
            event_id: None,
            account: config.account_id.clone(),
            region: region.clone(),
            replicated_from: None,
            repository: repository.clone(),
            digest,
            tag,
            tag_arrived_ms: None,
        };
        let (record, result) = Box::pin(handler.handle_job_record(&job, Delivery::default())).await;
        if let Err(e) = &result {
            eprintln!("error: {}", e.cause());
            ok = false;
        }
        match &record.outcome {
            Outcome::Failed(_) => ok = false,
            // The operator named something that is not (any more) what they think.
            Outcome::Skipped {
                code: SkipCode::IndexGone | SkipCode::Superseded,
                reason,
            } => {
                eprintln!("error: {repository}@{}: {reason}", job.digest);
                ok = false;
            }
            _ => {}
        }
        match args.output {
            OutputFormat::Json => println!("{}", record.to_json()),
            OutputFormat::Table => rows.push(crate::report::row(&record)),
        }
    }
    if !rows.is_empty() {
        print!("{}", render::aligned(&crate::report::HEADER, rows));
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
