//! `ecr-remediator selftest`: proves a deployed stack works end to end in
//! the caller's account (see `ecr_remediator::selftest`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use ecr_remediator::RepositoryName;
use ecr_remediator::aws::logs::LogsInsights;
use ecr_remediator::aws::selftest::{SdkAccount, stack};
use ecr_remediator::oci::build::AttestationFormat;
use ecr_remediator::selftest::{Plan, Progress, Report, Status, Step, run};

use crate::connect::AwsArgs;
use crate::flags::OutputFormat;

/// The attestation form to push.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// An OCI artifact with `subject` (BuildKit 0.32 and later).
    Subject,
    /// An image-shaped manifest without `subject` (earlier BuildKit).
    Legacy,
}

#[derive(clap::Args, Debug)]
pub(crate) struct SelftestArgs {
    /// The deployed ecr-remediator stack (its audit log group, function and
    /// repository prefixes are read from it).
    #[arg(long, value_name = "NAME")]
    stack: String,
    /// Create this scratch repository (it must not exist; default:
    /// `<first prefix>ecr-remediator-selftest-<run>`).
    #[arg(long, value_name = "NAME")]
    repository: Option<RepositoryName>,
    /// The image's platform.
    #[arg(long, default_value = "linux/arm64", value_name = "OS/ARCH")]
    platform: String,
    /// The provenance attestation's form.
    #[arg(long, value_enum, default_value_t = Form::Subject)]
    attestation_format: Form,
    /// How long to wait for the function's audit record (and for a function to go Active).
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = duration)]
    timeout: Duration,
    /// Also create a throwaway Lambda function from repo:tag, wait until it
    /// is Active, then delete it (needs --role-arn).
    #[arg(long, requires = "role_arn")]
    create_function: bool,
    /// The execution role of that function.
    #[arg(long, value_name = "ARN", requires = "create_function")]
    role_arn: Option<String>,
    /// Leave the repository (and function) for inspection.
    #[arg(long)]
    keep: bool,
    /// `table` (one line per step) or `json` (the report).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

fn duration(text: &str) -> Result<Duration, String> {
    ecr_remediator::time::parse_duration_s(text).map(Duration::from_secs)
}

fn word(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Failed => "FAILED",
        Status::Skipped => "skipped",
    }
}

fn line(step: &Step) -> String {
    format!("  {:<8} {:<14} {}", word(step.status), step.step, step.detail)
}

/// Prints each step as it finishes (table output), and a waiting line on a terminal.
struct Lines {
    table: bool,
    waiting: Option<indicatif::ProgressBar>,
}

impl Progress for Lines {
    fn step(&mut self, step: &Step) {
        if let Some(bar) = self.waiting.take() {
            bar.finish_and_clear();
        }
        if self.table {
            crate::progress::above(|| println!("{}", line(step)));
        }
    }

    fn waiting(&mut self, elapsed: Duration) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = self
            .waiting
            .get_or_insert_with(|| crate::progress::line("  waiting  {msg}", None));
        bar.set_message(format!(
            "for the function's audit record of the push… {} s",
            elapsed.as_secs()
        ));
        bar.tick();
    }
}

pub(crate) async fn run_selftest(args: SelftestArgs, aws: AwsArgs) -> anyhow::Result<ExitCode> {
    ecr_remediator::selftest::lambda_platform(&args.platform).map_err(anyhow::Error::msg)?;
    let (sdk, account) = crate::connect::connect(&aws, 3).await?;
    let region = sdk.region().map(ToString::to_string).unwrap_or_default();
    let stack = stack(&sdk, &args.stack).await?;
    // The time and this process: two runs at once never share a name (a
    // run adopts a repository of its own name that a retried create finds).
    let run_id = format!("{:x}{:04x}", ecr_remediator::now_ms(), std::process::id() & 0xffff);
    let plan = Plan {
        account: account.clone(),
        region: region.clone(),
        stack,
        repository: args.repository,
        platform: args.platform,
        format: match args.attestation_format {
            Form::Subject => AttestationFormat::Subject,
            Form::Legacy => AttestationFormat::Legacy,
        },
        timeout: args.timeout,
        create_function: args.role_arn.filter(|_| args.create_function),
        keep: args.keep,
        run_id,
    };
    let table = args.output == OutputFormat::Table;
    if table {
        println!(
            "selftest of stack {} in account {account}, region {region} (audit log group {})",
            plan.stack.name, plan.stack.audit_log_group
        );
    }
    let account_calls = SdkAccount::new(&sdk);
    let insights = LogsInsights::new(aws_sdk_cloudwatchlogs::Client::new(&sdk));
    let mut lines = Lines { table, waiting: None };
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let report = run(&account_calls, &insights, &plan, &mut lines, interrupt).await;
    if table {
        println!("{}", verdict(&report));
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn verdict(report: &Report) -> String {
    let place = format!("account {}, region {}", report.account, report.region);
    if report.passed {
        return format!(
            "PASSED: stack {} makes a default buildx push deployable to Lambda and keeps its provenance ({place})",
            report.stack
        );
    }
    let failed: Vec<&str> = report
        .steps
        .iter()
        .chain(&report.cleanup)
        .filter(|s| s.status == Status::Failed)
        .map(|s| s.step)
        .collect();
    format!(
        "FAILED: stack {} ({place}); failed: {}",
        report.stack,
        failed.join(", ")
    )
}
