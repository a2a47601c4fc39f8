//! `ecr-remediator sweep`: reconcile existing registries, with a report.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use ecr_remediator::AuditRecord;
use ecr_remediator::oci::names::{AccountId, RepositoryName};
use ecr_remediator::policy::glob::Glob;
use ecr_remediator::service::sweep::{Progress, SweepSummary, sweep as run_sweep};
use ecr_remediator::sweep::scan::Scope;
use ecr_remediator::sweep::select::Selection;
use ecr_remediator::time::{parse_duration_s, parse_since};
use ecr_remediator::trail::render;
use futures_util::StreamExt;
use indicatif::ProgressBar;

use crate::flags::{OutputFormat, PolicyFlags};
use crate::progress;

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
    /// Only tags matching this glob (`*` any characters, `?` one, `[0-9]` one of a set).
    #[arg(long, value_name = "GLOB", value_parser = Glob::parse_tag)]
    tag: Option<Glob>,
    /// PutImage calls per second (ECR allows 10 per account and region, shared with every docker push).
    #[arg(long, value_name = "N")]
    put_tps: Option<f64>,
    /// With --delete-orphans: leftovers (orphaned attestations, untagged indexes
    /// a remediation left) pushed more recently than this are not deleted,
    /// as they may belong to a push in progress. A duration (90s, 30m, 1h, 2d).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration_s)]
    min_age: u64,
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
pub(crate) async fn run(args: SweepArgs, aws: crate::connect::AwsArgs) -> anyhow::Result<ExitCode> {
    let flags = args.policy.clone();
    let dry_run = flags.dry_run();
    ecr_remediator::logging::init_text(progress::Logs);
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
    let now_ms = ecr_remediator::now_ms();
    let selection = Selection {
        tag: args.tag.clone(),
        since_ms: args
            .since
            .as_deref()
            .map(|s| parse_since(s, now_ms))
            .transpose()
            .map_err(anyhow::Error::msg)?,
        min_age_s: args.min_age,
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
    let (sdk, account) = crate::connect::connect_to_read(&aws, config.max_attempts).await?;
    config.account_id.get_or_insert(account);
    crate::connect::use_stack(&sdk, &mut config, flags.stack.as_deref()).await?;
    let mut handler = ecr_remediator::aws::handler_with(&sdk, &config);
    ecr_remediator::aws::attach_live_policy(&mut handler, &sdk, &config, Some(flags.overlay())).await?;
    handler.log_records = false;
    let json = args.output == OutputFormat::Json;
    // One account draws its own progress line; several are swept
    // `ACCOUNT_CONCURRENCY` at a time, each report printed, in order, once
    // its account is done, under one line counting accounts. Lines are drawn
    // on stderr only when it is a terminal.
    let several = accounts.len() > 1;
    let counter = if several {
        progress::line("accounts {pos}/{len}", Some(accounts.len() as u64))
    } else {
        ProgressBar::hidden()
    };
    let (handler, scope, selection) = (&handler, &scope, &selection);
    let mut results = futures_util::stream::iter(accounts)
        .map(|account| async move {
            let scope = Scope {
                account: account.clone(),
                ..scope.clone()
            };
            let mut progress = SweepProgress::new(!several, json);
            let result = Box::pin(run_sweep(handler, &scope, selection, &mut progress)).await;
            progress.line.finish_and_clear();
            (account, progress, result)
        })
        .buffered(ACCOUNT_CONCURRENCY);
    let mut ok = true;
    while let Some((account, progress, result)) = results.next().await {
        counter.inc(1);
        let label = account
            .as_ref()
            .map_or_else(|| "this account".to_owned(), ToString::to_string);
        let mut summary = match result {
            Ok(s) => s,
            Err(e) => {
                // One account failing (no role, no permission) never stops the others.
                progress::above(|| eprintln!("error: account {label}: {e}"));
                ok = false;
                continue;
            }
        };
        ok &= summary.ok();
        if let Some(why) = &summary.stopped {
            let whose = summary
                .account
                .as_ref()
                .map_or_else(|| label.clone(), |a| format!("account {a}"));
            progress::above(|| eprintln!("error: {whose}: the sweep stopped: {why}"));
        }
        // A dry run that handled no image is still a dry run.
        summary.dry_run |= dry_run;
        if summary.repositories_scanned == 0
            && summary.repository_errors.is_empty()
            && summary.repositories_left_alone.is_empty()
        {
            // Nothing matched: most often a mistyped prefix, so say so.
            let what = if scope.prefixes.is_empty() {
                String::new()
            } else {
                format!(" whose name starts with {}", scope.prefixes.join(" or "))
            };
            progress::above(|| eprintln!("note: {label} has no repository{what} in this region"));
        }
        let report = if json {
            format!(
                "{}\n",
                serde_json::json!({ "account": summary.account, "summary": summary })
            )
        } else {
            let heading = format!(
                "== account {} · region {}{}\n",
                summary.account.as_ref().map_or("(unknown)", AccountId::as_str),
                summary.region.as_deref().unwrap_or("(unknown)"),
                if summary.dry_run { " · dry run" } else { "" }
            );
            format!("{heading}{}{}", progress.table(), summary_table(&summary))
        };
        progress::above(|| write!(std::io::stdout().lock(), "{report}"))?;
    }
    counter.finish_and_clear();
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Accounts `sweep --all-accounts` (or several `--account`) sweeps at once:
/// each account's `PutImage` calls have their own quota and token bucket, so
/// accounts proceed side by side; the process keeps at most this many
/// accounts' listings in memory.
const ACCOUNT_CONCURRENCY: usize = 8;

/// The progress line while repositories are still being listed (the total
/// of images is not known yet: no time left is shown), and once they all are.
const LISTING: &str = "{msg}  images {pos}/{len} so far (listing)";
const LISTED: &str = "{msg}  images {pos}/{len}  ETA {eta}";

/// The sweep's progress line (stderr, on a terminal only) and its per-image output.
struct SweepProgress {
    line: ProgressBar,
    json: bool,
    rows: Vec<Vec<String>>,
}

impl SweepProgress {
    fn new(draw: bool, json: bool) -> Self {
        let line = if draw {
            progress::line(LISTING, Some(0))
        } else {
            ProgressBar::hidden()
        };
        SweepProgress {
            line,
            json,
            rows: Vec::new(),
        }
    }

    /// The images that changed, were skipped for a reason other than
    /// superseded, or failed, by repository and tag (images are handled
    /// several at a time, so they finish in no fixed order).
    fn table(&self) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        let mut rows = self.rows.clone();
        rows.sort();
        render::aligned(&crate::report::HEADER, rows) + "\n"
    }
}

impl Progress for SweepProgress {
    fn repository(&mut self, n: usize, total: usize, _name: &RepositoryName, images: usize) {
        // Repositories are listed as the handling reaches them: until the
        // last one is, the images count is of those listed so far, and no
        // time left can be told.
        self.line.set_message(format!("repository {}/{total}", n + 1));
        self.line.inc_length(images as u64);
        if n + 1 == total {
            progress::restyle(&self.line, LISTED);
        }
    }

    fn image(&mut self, record: &AuditRecord) {
        self.line.inc(1);
        if self.json {
            progress::above(|| println!("{}", record.to_json()));
        } else {
            let detail = crate::report::detail(record);
            if let Some(detail) = detail {
                let mut row = crate::report::row(record);
                row[4] = detail;
                self.rows.push(row);
            }
        }
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
    if s.dry_run && s.stopped.is_some() {
        out.push_str("dry run: nothing was written; it stopped before the end (below)\n");
    } else if s.dry_run {
        out.push_str("dry run: nothing was written; a real run on this registry now would do what is listed above\n");
    }
    let (remediated, deleted, retired, bytes) = if s.dry_run {
        (
            "would remediate",
            "would delete",
            "  kept indexes",
            "bytes it would free",
        )
    } else {
        (
            "remediated",
            "manifests deleted",
            "  kept indexes retired",
            "bytes reclaimed",
        )
    };
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<22}{v}\n"));
    line("repositories scanned", s.repositories_scanned.to_string());
    line("indexes seen", s.indexes_seen.to_string());
    line("images handled", s.images_handled.to_string());
    line("  of them leftovers", s.leftovers_handled.to_string());
    line(remediated, s.remediated.to_string());
    line(
        "already fine",
        if s.already_fine_by_keep_tag > 0 {
            format!(
                "{}  ({} known by their keep tag alone, not read again)",
                s.already_fine, s.already_fine_by_keep_tag
            )
        } else {
            s.already_fine.to_string()
        },
    );
    line(
        "skipped",
        format!(
            "{skipped}{}",
            by(&mut s.skipped.iter().map(|(k, v)| (k.to_string(), *v)))
        ),
    );
    line("failed", s.failed.to_string());
    let not_made: usize = s.changes_not_made.values().sum();
    if not_made > 0 {
        line(
            "changes not made",
            format!(
                "{not_made}{}",
                by(&mut s.changes_not_made.iter().map(|(k, v)| (k.to_string(), *v)))
            ),
        );
    }
    line(deleted, s.manifests_deleted.to_string());
    if s.kept_indexes_retired > 0 {
        line(retired, s.kept_indexes_retired.to_string());
    }
    line(bytes, s.bytes_reclaimed.to_string());
    line(
        "Lambda would refuse",
        if s.lambda_unknown > 0 {
            format!("{}  (unknown {})", s.lambda_would_refuse, s.lambda_unknown)
        } else {
            s.lambda_would_refuse.to_string()
        },
    );
    line(
        "not touched",
        format!(
            "{untouched}{}",
            by(&mut s.not_touched.iter().map(|(k, v)| (k.describe().to_owned(), *v)))
        ),
    );
    for gap in &s.signature_gaps {
        line("signed index only", gap.advice());
    }
    for r in &s.replication_drift {
        let to = format!(
            "{} -> {} in {}",
            r.repository, r.destination.account, r.destination.region
        );
        match (&r.drift, &r.unreadable) {
            (Some(d), _) => {
                let mut parts = Vec::new();
                if d.tags_differ > 0 {
                    let shown: Vec<&str> = d.tag_examples.iter().map(|t| t.tag.as_str()).collect();
                    parts.push(format!("{} tag(s) differ ({})", d.tags_differ, shown.join(", ")));
                }
                if d.only_in_destination > 0 {
                    parts.push(format!(
                        "{} manifest(s), {} bytes, only in the replica (deleted here? ECR does not replicate deletions)",
                        d.only_in_destination, d.only_in_destination_bytes
                    ));
                }
                line("replica drift", format!("{to}: {}", parts.join("; ")));
            }
            (None, Some(why)) => line("replica unchecked", format!("{to}: {why}")),
            (None, None) => {}
        }
    }
    if let Some(why) = &s.replication_unchecked {
        line("replicas", format!("not compared: {why}"));
    }
    for (repo, reason) in &s.repositories_left_alone {
        line("left alone", format!("{repo}: {reason}"));
    }
    for (repo, error) in &s.repository_errors {
        line("repository error", format!("{repo}: {error}"));
    }
    if let Some(why) = &s.stopped {
        line("stopped", format!("before the end: {why}"));
    }
    out
}
