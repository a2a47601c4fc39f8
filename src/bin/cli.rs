//! The `ecr-remediator` command-line tool.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use ecr_remediator::aws::sqs::{ServeOptions, serve};
use ecr_remediator::engine::Job;
use ecr_remediator::engine::audit::{Outcome, Trigger};
use ecr_remediator::logging::{LogFormat, init};
use ecr_remediator::oci::classify::classify;
use ecr_remediator::oci::digest::Digest;
use ecr_remediator::oci::inspect::InspectReport;
use ecr_remediator::oci::manifest::RawManifest;
use ecr_remediator::oci::names::{ImageTag, RepositoryName};
use ecr_remediator::policy::{Mode, Policy, PolicySet};
use ecr_remediator::service::config::ServiceConfig;
use ecr_remediator::service::handler::Delivery;

/// Repairs what a default `docker buildx build --push` leaves in Amazon ECR.
#[derive(Parser)]
#[command(name = "ecr-remediator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify a manifest file and print the result as JSON.
    ///
    /// Exit status 2 with a one-line error on stderr when the file is not a
    /// manifest this tool understands.
    Inspect {
        /// The manifest file (exact bytes as the registry served them).
        file: PathBuf,
        /// The media type the registry reported, when the document has no
        /// `mediaType` field (or to check it).
        #[arg(long, value_name = "MT")]
        media_type: Option<String>,
    },
    /// Handle one image now, as if its push event had arrived, and print the audit record.
    ///
    /// Uses the standard AWS configuration (AWS_REGION, credentials,
    /// AWS_ENDPOINT_URL) and the ECR_REMEDIATOR_* policy variables; the
    /// flags override the policy for this run. Exit status 1 when the
    /// handling failed.
    Remediate {
        /// The repository.
        #[arg(long)]
        repository: String,
        /// The image (index) digest.
        #[arg(long, value_name = "DIGEST")]
        image_digest: String,
        /// The tag it was pushed with.
        #[arg(long, value_name = "TAG")]
        image_tag: Option<String>,
        #[command(flatten)]
        policy: PolicyFlags,
    },
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

/// Policy overrides on the command line.
#[derive(clap::Args, Debug, Clone)]
struct PolicyFlags {
    /// Policy file (TOML); instead of the ECR_REMEDIATOR_* policy variables.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override the mode.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Delete orphaned attestation manifests (promote and strip modes).
    #[arg(long)]
    delete_orphans: bool,
    /// Plan and record, write nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum ModeArg {
    Observe,
    Tag,
    Promote,
    Strip,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Observe => Mode::Observe,
            ModeArg::Tag => Mode::Tag,
            ModeArg::Promote => Mode::Promote,
            ModeArg::Strip => Mode::Strip,
        }
    }
}

impl PolicyFlags {
    fn config(&self) -> anyhow::Result<ServiceConfig> {
        let mut config = ServiceConfig::from_env().context("invalid configuration")?;
        if let Some(file) = &self.config {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            config.policies =
                PolicySet::from_toml(&text).with_context(|| format!("invalid policy file {}", file.display()))?;
        }
        let apply = |p: &mut Policy| {
            if let Some(m) = self.mode {
                p.mode = m.into();
            }
            p.delete_orphans |= self.delete_orphans;
            p.dry_run |= self.dry_run;
        };
        apply(&mut config.policies.default);
        config.policies.rules.iter_mut().for_each(|r| apply(&mut r.policy));
        Ok(config)
    }
}

/// Exit status for invalid input.
const EXIT_INVALID_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Remediate {
            repository,
            image_digest,
            image_tag,
            policy,
        } => run_async(remediate(repository, image_digest, image_tag, policy)),
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
            run_async(serve_queue(options, policy))
        }
        Command::Inspect { file, media_type } => match inspect(&file, media_type.as_deref()) {
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

async fn remediate(
    repository: String,
    image_digest: String,
    image_tag: Option<String>,
    flags: PolicyFlags,
) -> anyhow::Result<ExitCode> {
    init(LogFormat::Text);
    let job = Job {
        trigger: Trigger::Manual,
        event_id: None,
        account: None,
        region: std::env::var("AWS_REGION").ok(),
        repository: RepositoryName::parse(&repository).context("--repository")?,
        digest: Digest::parse(&image_digest).context("--image-digest")?,
        tag: image_tag
            .as_deref()
            .map(ImageTag::parse)
            .transpose()
            .context("--image-tag")?,
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

async fn serve_queue(options: ServeOptions, flags: PolicyFlags) -> anyhow::Result<ExitCode> {
    init(LogFormat::Json);
    let config = flags.config()?;
    let handler = ecr_remediator::aws::handler(&config).await;
    let sdk = ecr_remediator::aws::load_config(config.max_attempts).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
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

fn inspect(file: &std::path::Path, media_type: Option<&str>) -> anyhow::Result<String> {
    // Never more than one byte past ECR's manifest limit, whatever the file
    // is (`/dev/zero`, a pipe, a huge file): the parser then reports the size.
    let limit = u64::try_from(ecr_remediator::oci::manifest::MAX_MANIFEST_BYTES).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, limit + 1), &mut bytes))
        .with_context(|| format!("cannot read {}", file.display()))?;
    let manifest = RawManifest::parse(bytes, media_type)
        .with_context(|| format!("{} is not a usable manifest", file.display()))?;
    let report = InspectReport::from(&classify(&manifest));
    Ok(serde_json::to_string(&report)?)
}

/// The error chain on one line: `context: cause: cause`.
fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string().replace('\n', " "))
        .collect::<Vec<_>>()
        .join(": ")
}
