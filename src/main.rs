//! The `ecr-remediator` command-line tool.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ecr_remediator::classify::classify;
use ecr_remediator::inspect::InspectReport;
use ecr_remediator::manifest::RawManifest;

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
}

/// Exit status for invalid input.
const EXIT_INVALID_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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

fn inspect(file: &std::path::Path, media_type: Option<&str>) -> anyhow::Result<String> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
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
