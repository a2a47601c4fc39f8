//! The `ecr-remediator` command-line tool.
#![forbid(unsafe_code)]

#[path = "cli/audit.rs"]
mod audit;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use ecr_remediator::aws::sqs::{ServeOptions, serve};
use ecr_remediator::engine::Job;
use ecr_remediator::engine::audit::{ActionOutcome, AuditRecord};
use ecr_remediator::engine::audit::{Outcome, Trigger};
use ecr_remediator::engine::sweep::{Selection, TagPattern, parse_duration_s, parse_since};
use ecr_remediator::logging::{LogFormat, init};
use ecr_remediator::oci::classify::classify;
use ecr_remediator::oci::digest::Digest;
use ecr_remediator::oci::inspect::InspectReport;
use ecr_remediator::oci::manifest::RawManifest;
use ecr_remediator::oci::names::{ImageTag, RepositoryName};
use ecr_remediator::policy::{Mode, Policy, PolicySet};
use ecr_remediator::service::config::ServiceConfig;
use ecr_remediator::service::handler::Delivery;
use ecr_remediator::service::sweep::{Progress, Scope, SweepSummary, sweep as run_sweep};
use futures_util::StreamExt;

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
    /// Reconcile the registry: handle every tagged index the policy would still change.
    ///
    /// Lists each selected repository once, then handles each tagged index
    /// as if it had just been pushed (one audit record each, trigger
    /// `sweep`). Run it with `--dry-run` first: the same report, nothing
    /// written. A sweep run again, or after an interruption, writes nothing
    /// already done. Exit status 1 when anything failed.
    Sweep(SweepArgs),
    /// Ask the audit trail what happened: records by repository, digest, tag,
    /// outcome, action or account over a window (CloudWatch Logs Insights).
    ///
    /// `audit` lists records newest first; `audit show DIGEST` gives the
    /// history of one image; `audit stats` counts per repository and outcome.
    /// The records are read from `--log-group`, or the `AuditLogGroupName`
    /// output of `--stack`. Exit status 1 on any error.
    Audit(audit::AuditArgs),
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

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum OutputFormat {
    Table,
    Json,
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
            let vars: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            let units = ecr_remediator::policy::organizational_units(&vars)?;
            config.policies = PolicySet::from_toml(&text)
                .and_then(|p| p.with_organizational_units(&units))
                .with_context(|| format!("invalid policy file {}", file.display()))?;
        }
        let apply = |p: &mut Policy| {
            if let Some(m) = self.mode {
                p.mode = m.into();
                // The operator's choice for this run: a repository tag does not change it.
                p.mode_pinned = true;
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
        Command::Sweep(args) => run_async(sweep(args)),
        Command::Audit(args) => run_async(audit::run(args)),
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
                sweep_prefixes: Vec::new(),
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
        purpose: ecr_remediator::engine::Purpose::Remediate,
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

async fn serve_queue(mut options: ServeOptions, flags: PolicyFlags) -> anyhow::Result<ExitCode> {
    init(LogFormat::Json);
    let config = flags.config()?;
    options.sweep_prefixes = config.sweep_prefixes.clone();
    let handler = ecr_remediator::aws::handler(&config).await;
    let sdk = ecr_remediator::aws::load_config(config.max_attempts).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    tracing::info!(queue = %options.queue_url, audit_bus = %config.audit_bus, "worker started");
    let stats = Box::pin(serve(&handler, &sqs, &options, shutdown_signal())).await?;
    tracing::info!(handled = stats.handled, failed = stats.failed, "worker stopped");
    Ok(ExitCode::SUCCESS)
}

/// `ecr-remediator sweep`'s arguments.
#[derive(clap::Args)]
struct SweepArgs {
    /// Only this repository (repeatable).
    #[arg(long = "repository", value_name = "NAME")]
    repositories: Vec<String>,
    /// Only repositories whose name starts with this (repeatable).
    #[arg(long = "repository-prefix", value_name = "PREFIX")]
    prefixes: Vec<String>,
    /// Only images pushed since then: a duration (7d, 12h, 30m) or a UTC date (2026-11-01[T12:00:00Z]).
    #[arg(long, value_name = "DURATION|DATE")]
    since: Option<String>,
    /// Only tags matching this pattern (`*` any characters, `?` one).
    #[arg(long, value_name = "GLOB")]
    tag: Option<String>,
    /// PutImage calls per second (ECR allows 10 per account and region, shared with every docker push).
    #[arg(long, value_name = "N")]
    put_tps: Option<f64>,
    /// With --delete-orphans: leftovers (orphaned attestations, untagged indexes
    /// a remediation left) pushed more recently than this are not deleted,
    /// as they may belong to a push in progress. A duration (90s, 30m, 1h, 2d).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    min_age: String,
    /// Also delete the indexes earlier runs kept under a keep tag
    /// (`<tag>-index`), keep tags and all, once the rule no longer keeps
    /// them (keep_tag = false). Signed or referred-to indexes stay; under
    /// provenance = referrers their attestations are first copied to each
    /// image; the attestations only they list go too with --delete-orphans.
    /// Shown by --dry-run like every other action.
    #[arg(long, conflicts_with = "tag")]
    retire_kept_indexes: bool,
    /// Sweep this member account (repeatable), through the member role
    /// (ECR_REMEDIATOR_MEMBER_ROLE, ECR_REMEDIATOR_EXTERNAL_ID, ECR_REMEDIATOR_ACCOUNT_ID).
    #[arg(long = "account", value_name = "ID", conflicts_with = "all_accounts")]
    accounts: Vec<String>,
    /// Sweep this account and every account in ECR_REMEDIATOR_MEMBER_ACCOUNTS (comma-separated ids).
    #[arg(long)]
    all_accounts: bool,
    /// `table` (a readable report), or `json` (records as JSON lines, then the summary).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    #[command(flatten)]
    policy: PolicyFlags,
}

/// The accounts `--account` / `--all-accounts` name (`[None]`: the caller's own).
fn sweep_accounts(args: &SweepArgs) -> anyhow::Result<Vec<Option<String>>> {
    let check = |a: &str| {
        anyhow::ensure!(
            a.len() == 12 && a.chars().all(|c| c.is_ascii_digit()),
            "{a:?} is not a 12-digit AWS account id"
        );
        Ok(a.to_owned())
    };
    if args.all_accounts {
        let listed = std::env::var(ecr_remediator::service::config::ENV_MEMBER_ACCOUNTS).unwrap_or_default();
        let members = ecr_remediator::service::config::member_accounts(&listed)?;
        let out: Vec<Option<String>> = std::iter::once(None).chain(members.into_iter().map(Some)).collect();
        anyhow::ensure!(
            out.len() > 1,
            "--all-accounts reads the member accounts from ECR_REMEDIATOR_MEMBER_ACCOUNTS (comma-separated ids), which is empty"
        );
        return Ok(out);
    }
    if args.accounts.is_empty() {
        return Ok(vec![None]);
    }
    args.accounts
        .iter()
        .map(|a| check(a).context("--account").map(Some))
        .collect()
}

async fn sweep(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let flags = args.policy.clone();
    init(LogFormat::Text);
    let scope = Scope {
        repositories: args
            .repositories
            .iter()
            .map(|r| RepositoryName::parse(r))
            .collect::<Result<_, _>>()
            .context("--repository")?,
        prefixes: args.prefixes.clone(),
        account: None,
    };
    let accounts = sweep_accounts(&args)?;
    let now_ms = ecr_remediator::engine::audit::now_ms();
    let selection = Selection {
        tag: args.tag.as_deref().map(TagPattern::new),
        since_ms: args
            .since
            .as_deref()
            .map(|s| parse_since(s, now_ms))
            .transpose()
            .map_err(anyhow::Error::msg)?,
        min_age_s: parse_duration_s(&args.min_age).map_err(anyhow::Error::msg)?,
        retire_kept: args.retire_kept_indexes,
    };
    let mut config = flags.config()?;
    if let Some(tps) = args.put_tps {
        anyhow::ensure!(
            tps.is_finite() && tps > 0.0 && tps <= 10.0,
            "--put-tps must be above 0 and at most 10 (ECR's PutImage quota)"
        );
        config.put_tps = tps;
    }
    let mut handler = ecr_remediator::aws::handler(&config).await;
    handler.log_records = false;
    let json = args.output == OutputFormat::Json;
    let terminal = std::io::stderr().is_terminal();
    // One account draws its own progress line; several are swept
    // `ACCOUNT_CONCURRENCY` at a time, each report printed, in order, once
    // its account is done, under one line counting accounts.
    let several = accounts.len() > 1;
    let total = accounts.len();
    let (handler, scope, selection) = (&handler, &scope, &selection);
    let mut results = futures_util::stream::iter(accounts)
        .map(|account| async move {
            let scope = Scope {
                account: account.clone(),
                ..scope.clone()
            };
            let mut progress = SweepProgress::new(terminal && !several, json);
            let result = Box::pin(run_sweep(handler, &scope, selection, &mut progress)).await;
            progress.clear();
            (account, progress, result)
        })
        .buffered(ACCOUNT_CONCURRENCY);
    let mut ok = true;
    let mut done = 0;
    while let Some((account, progress, result)) = results.next().await {
        done += 1;
        if several && terminal {
            eprint!("\r\x1b[2Kaccounts {done}/{total}");
        }
        let label = account.clone().unwrap_or_else(|| "this account".to_owned());
        let summary = match result {
            Ok(s) => s,
            Err(e) => {
                // One account failing (no role, no permission) never stops the others.
                if several && terminal {
                    eprint!("\r\x1b[2K");
                }
                eprintln!("error: account {label}: {e}");
                ok = false;
                continue;
            }
        };
        ok &= summary.ok();
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(out, "{}", serde_json::json!({ "account": account, "summary": summary }))?;
        } else {
            if several && terminal {
                eprint!("\r\x1b[2K");
            }
            if account.is_some() {
                writeln!(out, "== account {label}")?;
            }
            write!(out, "{}", progress.table())?;
            write!(out, "{}", summary_table(&summary))?;
        }
    }
    if several && terminal {
        eprint!("\r\x1b[2K");
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Accounts `sweep --all-accounts` (or several `--account`) sweeps at once:
/// each account's `PutImage` calls have their own quota and token bucket, so
/// accounts proceed side by side; the process keeps at most this many
/// accounts' listings in memory.
const ACCOUNT_CONCURRENCY: usize = 8;

/// The sweep's progress line (stderr, on a terminal only) and its per-image output.
struct SweepProgress {
    terminal: bool,
    json: bool,
    started: std::time::Instant,
    repos: (usize, usize),
    images: (usize, usize),
    handled: usize,
    rows: Vec<[String; 5]>,
}

impl SweepProgress {
    fn new(terminal: bool, json: bool) -> Self {
        SweepProgress {
            terminal,
            json,
            started: std::time::Instant::now(),
            repos: (0, 0),
            images: (0, 0),
            handled: 0,
            rows: Vec::new(),
        }
    }

    fn draw(&self) {
        if !self.terminal {
            return;
        }
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.handled as f64 / elapsed;
        let left = self.images.1.saturating_sub(self.images.0);
        let eta = if rate > 0.0 {
            (left as f64 / rate).round() as u64
        } else {
            0
        };
        eprint!(
            "\r\x1b[2Krepository {}/{}  images {}/{}  {:.1}/s  ETA {}:{:02}",
            self.repos.0,
            self.repos.1,
            self.images.0,
            self.images.1,
            rate,
            eta / 60,
            eta % 60
        );
    }

    fn clear(&self) {
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
    }

    /// The images that changed, were skipped for a reason other than superseded, or failed.
    fn table(&self) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        let header = ["REPOSITORY", "TAG", "INDEX", "OUTCOME", "DETAIL"].map(str::to_owned);
        let mut widths = [0usize; 4];
        for row in std::iter::once(&header).chain(&self.rows) {
            for (w, cell) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            for (w, cell) in widths.iter().zip(row.iter()) {
                out.push_str(&format!("{cell:<w$}  "));
            }
            out.push_str(&row[4]);
            out.push('\n');
        }
        out.push('\n');
        out
    }
}

impl Progress for SweepProgress {
    fn repository(&mut self, n: usize, total: usize, _name: &RepositoryName, images: usize) {
        self.repos = (n + 1, total);
        self.images = (0, images);
        self.draw();
    }

    fn image(&mut self, record: &AuditRecord) {
        self.images.0 += 1;
        self.handled += 1;
        if self.json {
            self.clear();
            println!("{}", record.to_json());
        } else {
            let detail = match &record.outcome {
                Outcome::Skipped { reason, .. } => Some(reason.clone()),
                Outcome::Failed(f) => Some(f.error.clone()),
                Outcome::Remediated => Some(
                    record
                        .actions
                        .iter()
                        .filter(|a| a.outcome == ActionOutcome::Applied)
                        .map(|a| a.action.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                Outcome::Noop | Outcome::InProgress => None,
            };
            if let Some(detail) = detail {
                let digest = record.index_digest.as_deref().unwrap_or_default();
                self.rows.push([
                    record.repository.clone().unwrap_or_default(),
                    record.tag.clone().unwrap_or_default(),
                    digest.get(..19).unwrap_or(digest).to_owned(),
                    match &record.outcome {
                        Outcome::Skipped { code, .. } => format!("skipped ({code})"),
                        other => other.name().to_owned(),
                    },
                    detail,
                ]);
            }
        }
        self.draw();
    }
}

fn summary_table(s: &SweepSummary) -> String {
    let by = |m: &mut dyn Iterator<Item = (String, usize)>| {
        let parts: Vec<String> = m.map(|(k, v)| format!("{k} {v}")).collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!("  ({})", parts.join(", "))
        }
    };
    let skipped: usize = s.skipped.values().sum();
    let untouched: usize = s.not_touched.values().sum();
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<22}{v}\n"));
    line("repositories scanned", s.repositories_scanned.to_string());
    line("indexes seen", s.indexes_seen.to_string());
    line("images handled", s.images_handled.to_string());
    line("  of them leftovers", s.leftovers_handled.to_string());
    line("remediated", s.remediated.to_string());
    line("already fine", s.already_fine.to_string());
    line(
        "skipped",
        format!("{skipped}{}", by(&mut s.skipped.iter().map(|(k, v)| (k.clone(), *v)))),
    );
    line("failed", s.failed.to_string());
    line("manifests deleted", s.manifests_deleted.to_string());
    if s.kept_indexes_retired > 0 {
        line("  kept indexes retired", s.kept_indexes_retired.to_string());
    }
    line("bytes reclaimed", s.bytes_reclaimed.to_string());
    line(
        "not touched",
        format!(
            "{untouched}{}",
            by(&mut s.not_touched.iter().map(|(k, v)| (k.describe().to_owned(), *v)))
        ),
    );
    for (repo, reason) in &s.repositories_left_alone {
        line("left alone", format!("{repo}: {reason}"));
    }
    for (repo, error) in &s.repository_errors {
        line("repository error", format!("{repo}: {error}"));
    }
    out
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
