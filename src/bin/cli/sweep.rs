//! `ecr-remediator sweep`: reconcile existing registries, with a report.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use ecr_remediator::engine::audit::{ActionOutcome, AuditRecord, Outcome};
use ecr_remediator::engine::sweep::{Selection, TagPattern, parse_duration_s, parse_since};
use ecr_remediator::logging::{LogFormat, init};
use ecr_remediator::oci::names::{AccountId, RepositoryName};
use ecr_remediator::service::scan::Scope;
use ecr_remediator::service::sweep::{Progress, SweepSummary, sweep as run_sweep};
use futures_util::StreamExt;

use crate::flags::{OutputFormat, PolicyFlags};

/// `ecr-remediator sweep`'s arguments.
#[derive(clap::Args)]
pub(crate) struct SweepArgs {
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
    accounts: Vec<AccountId>,
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
fn sweep_accounts(args: &SweepArgs) -> anyhow::Result<Vec<Option<AccountId>>> {
    if args.all_accounts {
        let listed = std::env::var(ecr_remediator::service::config::ENV_MEMBER_ACCOUNTS).unwrap_or_default();
        let members = ecr_remediator::service::config::member_accounts(&listed)?;
        let out: Vec<Option<AccountId>> = std::iter::once(None).chain(members.into_iter().map(Some)).collect();
        anyhow::ensure!(
            out.len() > 1,
            "--all-accounts reads the member accounts from ECR_REMEDIATOR_MEMBER_ACCOUNTS (comma-separated ids), which is empty"
        );
        return Ok(out);
    }
    if args.accounts.is_empty() {
        return Ok(vec![None]);
    }
    Ok(args.accounts.iter().cloned().map(Some).collect())
}

/// Runs the sweep and prints its report; exit status 1 when anything failed.
pub(crate) async fn run(args: SweepArgs) -> anyhow::Result<ExitCode> {
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
        let label = account
            .as_ref()
            .map_or_else(|| "this account".to_owned(), ToString::to_string);
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
                        other => other.kind().to_string(),
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
        format!(
            "{skipped}{}",
            by(&mut s.skipped.iter().map(|(k, v)| (k.to_string(), *v)))
        ),
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
