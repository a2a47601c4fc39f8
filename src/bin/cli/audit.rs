//! `ecr-remediator audit`: questions to the audit trail, as flags.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use ecr_remediator::AccountId;
use ecr_remediator::aws::logs::{LogsInsights, stack_audit_log_group};
use ecr_remediator::decide::action::ActionKind;
use ecr_remediator::engine::audit::OutcomeKind;
use ecr_remediator::now_ms;
use ecr_remediator::oci::names::{ImageTag, RepositoryName};
use ecr_remediator::time::{parse_duration_s, parse_since};
use ecr_remediator::trail::QueryStatus;
use ecr_remediator::trail::filter::{DigestQuery, Filter, Order, digests_matching};
use ecr_remediator::trail::query::{QueryProgress, Runner, Take, Window};
use ecr_remediator::trail::{history, render};

use crate::flags::word;

use ecr_remediator::service::config::ENV_AUDIT_LOG_GROUP;

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    #[command(flatten)]
    flags: TrailFlags,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// The full history of one image, oldest first: every record about the
    /// index or a manifest a record tagged or deleted (default window: 90 days).
    Show {
        /// The digest (sha256:…), or a prefix of its hex as the tables print it (at least 6 characters).
        #[arg(id = "image", value_name = "DIGEST")]
        image: DigestQuery,
    },
    /// Records per repository and outcome, deletions and bytes reclaimed over the window.
    Stats,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Table,
    Json,
    Csv,
}

#[derive(clap::Args, Debug)]
struct TrailFlags {
    /// From then: a duration back from now (90m, 12h, 7d) or a UTC date (2026-11-01[T12:00:00Z]). Default 7d (90d for `show`).
    #[arg(long, global = true, value_name = "DURATION|DATE")]
    since: Option<String>,
    /// Until then (same forms); default now.
    #[arg(long, global = true, value_name = "DURATION|DATE")]
    until: Option<String>,
    /// Only this repository.
    #[arg(long, global = true, value_name = "NAME", conflicts_with = "repository_prefix")]
    repository: Option<RepositoryName>,
    /// Only repositories whose name starts with this.
    #[arg(long, global = true, value_name = "PREFIX")]
    repository_prefix: Option<String>,
    /// Only records about this digest (or an unambiguous prefix of it): the index, or a manifest a record tagged or deleted.
    #[arg(long, global = true, value_name = "DIGEST")]
    digest: Option<DigestQuery>,
    /// Only records of this pushed tag.
    #[arg(long, global = true, value_name = "TAG")]
    tag: Option<ImageTag>,
    /// Only records with this outcome.
    #[arg(long, global = true, value_parser = word::<OutcomeKind>())]
    outcome: Option<OutcomeKind>,
    /// Only records with an action of this kind.
    #[arg(long, global = true, value_parser = word::<ActionKind>())]
    action: Option<ActionKind>,
    /// Only records of images in this account.
    #[arg(long, global = true, value_name = "ID")]
    account: Option<AccountId>,
    /// Only records of this event (the EventBridge event id, or a request's id).
    #[arg(long, global = true, value_name = "ID")]
    event_id: Option<String>,
    /// At most this many records, newest first (0: all; the window is split past 10,000).
    #[arg(long, global = true, default_value_t = 100, value_name = "N")]
    limit: usize,
    /// The log group the audit records reach (default: $ECR_REMEDIATOR_AUDIT_LOG_GROUP).
    #[arg(long, global = true, value_name = "NAME", conflicts_with = "stack")]
    log_group: Option<String>,
    /// Read the log group from this stack's AuditLogGroupName output.
    #[arg(long, global = true, value_name = "NAME")]
    stack: Option<String>,
    /// `table`, `json` (the records as written, one per line) or `csv`.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Every record as written: checkpoints their final record restates, and
    /// repeated deliveries that applied nothing, are otherwise left out
    /// (one history per event).
    #[arg(long, global = true)]
    all_records: bool,
    /// Stop a query still running after this long.
    #[arg(long, global = true, default_value = "5m", value_name = "DURATION", value_parser = parse_duration_s)]
    query_timeout: u64,
}

/// Progress of a query on stderr, on a terminal only.
struct Spinner {
    line: indicatif::ProgressBar,
    log_group: String,
}

impl Spinner {
    fn new(log_group: String) -> Self {
        let line = crate::progress::line("{spinner} {msg}", None);
        Spinner { line, log_group }
    }

    fn clear(&self) {
        self.line.finish_and_clear();
    }
}

impl QueryProgress for Spinner {
    fn poll(&mut self, status: &QueryStatus, matched: f64, scanned: f64) {
        let state = match status {
            QueryStatus::Scheduled => "scheduled",
            QueryStatus::Running => "running",
            QueryStatus::Complete => "complete",
            _ => "ending",
        };
        self.line.set_message(format!(
            "querying {}: {state}, {matched:.0} records matched, {:.1} MB scanned",
            self.log_group,
            scanned / 1e6
        ));
        self.line.tick();
    }
}

fn filter(flags: &TrailFlags, digest: Option<DigestQuery>) -> Filter {
    Filter {
        repository: flags.repository.clone(),
        repository_prefix: flags.repository_prefix.clone(),
        digest: digest.or_else(|| flags.digest.clone()),
        tag: flags.tag.clone(),
        outcome: flags.outcome,
        action: flags.action,
        account: flags.account.clone(),
        event_id: flags.event_id.clone(),
    }
}

fn window(flags: &TrailFlags, default_since: &str) -> anyhow::Result<Window> {
    let now = now_ms();
    let since = flags.since.as_deref().unwrap_or(default_since);
    let start_ms = parse_since(since, now).map_err(anyhow::Error::msg)?;
    let end_ms = match &flags.until {
        None => now,
        Some(u) => parse_since(u, now).map_err(|e| anyhow::anyhow!(e.replace("--since", "--until")))?,
    };
    anyhow::ensure!(start_ms <= end_ms, "--since ({since}) is after --until");
    Ok(Window { start_ms, end_ms })
}

async fn log_group(flags: &TrailFlags, sdk: &aws_config::SdkConfig) -> anyhow::Result<String> {
    if let Some(g) = &flags.log_group {
        return Ok(g.clone());
    }
    if let Some(stack) = &flags.stack {
        return Ok(stack_audit_log_group(sdk, stack).await?);
    }
    match std::env::var(ENV_AUDIT_LOG_GROUP) {
        Ok(g) if !g.trim().is_empty() => Ok(g),
        _ => anyhow::bail!(
            "say where the audit records are: --log-group NAME or --stack NAME (or set {ENV_AUDIT_LOG_GROUP})"
        ),
    }
}

/// Runs `ecr-remediator audit …`.
pub async fn run(args: AuditArgs, aws: crate::connect::AwsArgs) -> anyhow::Result<ExitCode> {
    let flags = &args.flags;
    let (digest, default_since) = match &args.command {
        Some(AuditCommand::Show { image }) => (Some(image.clone()), "90d"),
        _ => (None, "7d"),
    };
    let filter = filter(flags, digest);
    let window = window(flags, default_since)?;
    let timeout = flags.query_timeout;
    anyhow::ensure!(timeout > 0, "--query-timeout must be above 0");
    let runner = Runner {
        timeout: Duration::from_secs(timeout),
        ..Runner::default()
    };
    let (sdk, _) = crate::connect::connect(&aws, 3).await?;
    let group = log_group(flags, &sdk).await?;
    let insights = LogsInsights::from_config(&sdk);
    let mut spinner = Spinner::new(group.clone());
    let mut out = std::io::stdout().lock();
    // A digest prefix must name one image in the whole window, whatever the
    // limit and the subcommand: checked on every record it matches first.
    if let Some(q) = filter.digest.as_ref().filter(|q| !q.is_whole()) {
        let all = Take {
            order: Order::NewestFirst,
            limit: 0,
        };
        let matched = runner
            .records(&insights, &group, window, &filter, all, &mut spinner)
            .await;
        spinner.clear();
        let named = digests_matching(matched?.iter().map(|f| &f.record), q);
        anyhow::ensure!(
            named.len() <= 1,
            "{} names more than one image in this window: {}; give more characters",
            q.text(),
            named.join(", ")
        );
    }
    if matches!(args.command, Some(AuditCommand::Stats)) {
        let rows = runner.stats(&insights, &group, window, &filter, &mut spinner).await;
        spinner.clear();
        let rows = rows?;
        match flags.output {
            Format::Table => write!(out, "{}", render::stats_table(&rows))?,
            Format::Csv => write!(out, "{}", render::stats_csv(&rows))?,
            Format::Json => writeln!(
                out,
                "{}",
                serde_json::json!({
                    "log_group": group,
                    "window": {"start_ms": window.start_ms, "end_ms": window.end_ms},
                    "rows": rows,
                    "totals": render::totals(&rows),
                })
            )?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    let take = match args.command {
        Some(AuditCommand::Show { .. }) => Take {
            order: Order::OldestFirst,
            limit: 0,
        },
        _ => Take {
            order: Order::NewestFirst,
            limit: flags.limit,
        },
    };
    let found = runner
        .records(&insights, &group, window, &filter, take, &mut spinner)
        .await;
    spinner.clear();
    let found = if flags.all_records {
        found?
    } else {
        let folded = history::fold(found?);
        if let Some(line) = folded.summary() {
            eprintln!("{line}");
        }
        folded.kept
    };
    match flags.output {
        Format::Table if found.is_empty() => eprintln!("no audit record matches in {group} over that window"),
        Format::Table => write!(out, "{}", render::table(&found, 60))?,
        Format::Json => write!(out, "{}", render::json_lines(&found))?,
        Format::Csv => write!(out, "{}", render::csv(&found))?,
    }
    Ok(ExitCode::SUCCESS)
}
