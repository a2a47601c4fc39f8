//! `ecr-remediator undo`: a promotion undone, the tag back on the index kept
//! under its keep tag, by that index's exact bytes.

use std::process::ExitCode;

use ecr_remediator::Delivery;
use ecr_remediator::engine::audit::{Outcome, Trigger};
use ecr_remediator::engine::{Job, Purpose};
use ecr_remediator::oci::names::{ImageTag, RepositoryName};
use ecr_remediator::service::manual::{Named, Resolved, resolve};
use ecr_remediator::trail::render;

use crate::flags::{OutputFormat, PolicyFlags};

/// `ecr-remediator undo`'s arguments.
#[derive(clap::Args)]
pub(crate) struct UndoArgs {
    /// The repository.
    #[arg(long, value_name = "NAME")]
    repository: RepositoryName,
    /// The tag a promotion moved (`v1`); it goes back to the index kept under
    /// its keep tag (`v1-index`).
    #[arg(long, value_name = "TAG")]
    image_tag: ImageTag,
    /// `table` (what changed) or `json` (the audit record).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    #[command(flatten)]
    policy: PolicyFlags,
}

/// Puts the tag back and prints what happened; exit status 1 when nothing
/// could be put back (the tag moved on, no kept index, the policy would
/// promote it again) or the write failed.
pub(crate) async fn run(args: UndoArgs, aws: crate::connect::AwsArgs) -> anyhow::Result<ExitCode> {
    ecr_remediator::logging::init_text(crate::progress::Logs);
    // Whether the service would promote the tag again is the repository's
    // own policy's to say, not this run's.
    anyhow::ensure!(
        !args.policy.mode_given(),
        "undo takes no --mode: the repository's policy decides whether the service would promote the tag again \
         (tag the repository ecr-remediator:mode=tag or off)"
    );
    let mut config = args.policy.config()?;
    let (sdk, account) = crate::connect::connect_to_read(&aws, config.max_attempts).await?;
    config.account_id.get_or_insert(account);
    crate::connect::use_stack(&sdk, &mut config, args.policy.stack.as_deref()).await?;
    let mut handler = ecr_remediator::aws::handler_with(&sdk, &config);
    ecr_remediator::aws::attach_live_policy(&mut handler, &sdk, &config, Some(args.policy.overlay())).await?;
    handler.log_records = false;
    let (repository, tag) = (args.repository, args.image_tag);
    // What the tag names now (an image after a promotion, a stripped index
    // after a strip): the record's subject until the kept index is found.
    let digest = match resolve(&handler.registry, &handler.retry, &repository, Named::Tag(tag.clone())).await {
        Ok(Resolved::AlreadyAnImage { digest, .. }) => digest,
        Ok(Resolved::Images(images)) => match images.into_iter().next() {
            Some((digest, _)) => digest,
            None => anyhow::bail!("{repository}:{tag} names nothing"),
        },
        Err(e) => anyhow::bail!("cannot undo: {e}"),
    };
    let job = Job {
        purpose: Purpose::Undo,
        trigger: Trigger::Manual,
        event_id: None,
        account: config.account_id.clone(),
        region: sdk.region().map(ToString::to_string),
        replicated_from: None,
        repository: repository.clone(),
        digest,
        tag: Some(tag),
        tag_arrived_ms: None,
    };
    let (record, result) = Box::pin(handler.handle_job_record(&job, Delivery::default())).await;
    let mut ok = result.is_ok();
    if let Err(e) = &result {
        eprintln!("error: {}", e.cause());
    }
    match &record.outcome {
        Outcome::Failed(_) => ok = false,
        Outcome::Skipped { reason, .. } => {
            eprintln!("error: {repository}: {reason}");
            ok = false;
        }
        _ => {}
    }
    match args.output {
        OutputFormat::Json => println!("{}", record.to_json()),
        OutputFormat::Table => print!(
            "{}",
            render::aligned(&crate::report::HEADER, vec![crate::report::row(&record)])
        ),
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
