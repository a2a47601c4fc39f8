//! The `ecr-remediator` command-line tool: one module per subcommand.
#![forbid(unsafe_code)]

mod audit;
mod connect;
mod flags;
mod inspect;
mod progress;
mod remediate;
mod report;
mod selftest;
mod serve;
mod sweep;
mod undo;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ecr_remediator::aws::sqs::ServeOptions;
use ecr_remediator::engine::registry::ImageRef;

use crate::flags::PolicyFlags;

/// Repairs what a default `docker buildx build --push` leaves in Amazon ECR.
#[derive(Parser)]
#[command(name = "ecr-remediator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    aws: connect::AwsArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Classify a manifest file and say whether Lambda would take it, as JSON.
    ///
    /// `lambda` is the verdict: yes, no (with the rules it breaks) or
    /// unknown (with what could not be checked). Exit status 2 with a
    /// one-line error on stderr when the file is not a manifest this tool
    /// understands.
    Inspect {
        /// The manifest file (exact bytes as the registry served them); or
        /// name it in the registry with --repository and --image-tag or
        /// --image-digest.
        #[arg(required_unless_present = "repository", conflicts_with = "repository")]
        file: Option<PathBuf>,
        /// Read the manifest from this repository (with --image-tag or --image-digest).
        #[arg(long, value_name = "NAME")]
        repository: Option<ecr_remediator::RepositoryName>,
        /// The tag to read from --repository.
        #[arg(long, value_name = "TAG", requires = "repository", conflicts_with = "image_digest")]
        image_tag: Option<ecr_remediator::ImageTag>,
        /// The digest to read from --repository.
        #[arg(long, value_name = "DIGEST", requires = "repository")]
        image_digest: Option<ecr_remediator::Digest>,
        /// The media type the registry reported, when the document has no
        /// `mediaType` field (or to check it).
        #[arg(long, value_name = "MT")]
        media_type: Option<String>,
        /// The image's platform, as its index entry names it (an image
        /// manifest does not say; without it the verdict is unknown).
        #[arg(long, value_name = "OS/ARCH", value_parser = inspect::platform_arg)]
        platform: Option<ecr_remediator::oci::manifest::Platform>,
    },
    /// Handle one image now, as if its push event had arrived.
    ///
    /// Name it by tag (its index is looked up), by digest (each of its tags
    /// is handled) or both. Uses the standard AWS configuration (AWS_REGION,
    /// credentials, AWS_ENDPOINT_URL) and the ECR_REMEDIATOR_* policy
    /// variables; the flags override the policy for this run. Exit status 1
    /// when the handling failed, or when the image or tag does not exist or
    /// no longer points where it was named.
    Remediate(remediate::RemediateArgs),
    /// Undo a promotion: put the tag back on the index kept under its keep tag.
    ///
    /// The index goes back under the tag by its exact bytes (same digest, so
    /// signatures made on it still match); the keep tag stays. Refused when
    /// the tag has moved on since (a newer push), when no index is kept, or
    /// when the repository's policy would promote it again (tag the
    /// repository `ecr-remediator:mode=tag` or `off` first). `--dry-run`
    /// shows the move; an audit record says what was done. Exit status 1
    /// when nothing was put back.
    Undo(undo::UndoArgs),
    /// Reconcile the registry: handle every tagged index the policy would still change.
    ///
    /// Lists each selected repository once, then handles each tagged index
    /// as if it had just been pushed (one audit record each, trigger
    /// `sweep`). Run it with `--dry-run` first: the same report, nothing
    /// written. A sweep run again, or after an interruption, writes nothing
    /// already done. Exit status 1 when anything failed.
    Sweep(sweep::SweepArgs),
    /// Ask the audit trail what happened: records by repository, digest, tag,
    /// outcome, action or account over a window (CloudWatch Logs Insights).
    ///
    /// `audit` lists records newest first; `audit show DIGEST` gives the
    /// history of one image; `audit stats` counts per repository and outcome.
    /// The records are read from `--log-group`, or the `AuditLogGroupName`
    /// output of `--stack`. Exit status 1 on any error.
    Audit(audit::AuditArgs),
    /// Prove a deployed stack works, in its own account: push a default
    /// buildx image to a scratch repository, wait for the function's record,
    /// check that Lambda takes the tag and provenance is kept, clean up.
    ///
    /// One line per step and a verdict (or `--output json`); exit status 0
    /// when every check passed, 1 otherwise. What it creates is removed at
    /// the end, after a failure or Ctrl-C too (`--keep` leaves it). The IAM
    /// permissions it needs are in docs/deployment.md.
    Selftest(selftest::SelftestArgs),
    /// Work on an SQS queue of ECR Image Action events until stopped (SIGTERM/Ctrl-C).
    Serve {
        /// The queue URL.
        #[arg(long, value_name = "URL")]
        queue_url: String,
        /// Visibility timeout in seconds, kept extended while a message is worked on.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        visibility_timeout: u64,
        /// Long-poll wait per receive, in seconds (at most 20).
        #[arg(long, default_value_t = 20, value_name = "SECONDS")]
        wait: u64,
        /// Exit once a receive returns no message.
        #[arg(long)]
        exit_when_idle: bool,
        #[command(flatten)]
        policy: PolicyFlags,
    },
}

/// Exit status for invalid input.
const EXIT_INVALID_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Remediate(args) => run_async(remediate::run(args, cli.aws)),
        Command::Undo(args) => run_async(undo::run(args, cli.aws)),
        Command::Sweep(args) => run_async(sweep::run(args, cli.aws)),
        Command::Audit(args) => run_async(audit::run(args, cli.aws)),
        Command::Selftest(args) => run_async(selftest::run_selftest(args, cli.aws)),
        Command::Serve {
            queue_url,
            visibility_timeout,
            wait,
            exit_when_idle,
            policy,
        } => {
            let options = ServeOptions {
                queue_url,
                visibility_timeout: std::time::Duration::from_secs(visibility_timeout.max(1)),
                wait: std::time::Duration::from_secs(wait.min(20)),
                exit_when_idle,
            };
            run_async(serve::run(options, policy, cli.aws))
        }
        Command::Inspect {
            file: None,
            repository: Some(repository),
            image_tag,
            image_digest,
            platform,
            ..
        } => {
            let named = match (image_tag, image_digest) {
                (Some(t), _) => ImageRef::Tag(t),
                (None, Some(d)) => ImageRef::Digest(d),
                (None, None) => {
                    eprintln!("error: with --repository, give --image-tag or --image-digest");
                    return ExitCode::from(EXIT_INVALID_INPUT);
                }
            };
            run_async(async move {
                let json = inspect::run_registry(&repository, named, platform.as_ref(), &cli.aws).await?;
                println!("{json}");
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Inspect {
            file,
            media_type,
            platform,
            ..
        } => match file
            .ok_or_else(|| anyhow::anyhow!("give a manifest file, or --repository with --image-tag or --image-digest"))
            .and_then(|file| inspect::run(&file, media_type.as_deref(), platform.as_ref()))
        {
            Ok(json) => {
                let mut out = std::io::stdout().lock();
                match writeln!(out, "{json}") {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(_) => ExitCode::FAILURE,
                }
            }
            Err(e) => {
                eprintln!("error: {}", one_line(&e));
                ExitCode::from(EXIT_INVALID_INPUT)
            }
        },
    }
}

fn run_async(work: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error chain on one line: `context: cause: cause`.
fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string().replace('\n', " "))
        .collect::<Vec<_>>()
        .join(": ")
}
