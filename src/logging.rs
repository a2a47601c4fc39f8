//! Log set-up for the binaries: JSON lines (Lambda, `serve`) or text, to a chosen writer.

use tracing_subscriber::EnvFilter;

/// Where logs go and how they look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, with the current span's fields (the Lambda request id).
    Json,
    /// Human-readable text.
    Text,
}

/// Installs the global subscriber; the level comes from `RUST_LOG` (default `info`).
/// Logs go to stdout for JSON (Lambda collects stdout) and to stderr for text,
/// so a CLI's stdout stays machine-readable.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .try_init(),
        LogFormat::Text => builder.with_writer(std::io::stderr).with_ansi(false).try_init(),
    };
    // A second initialisation (tests) keeps the first subscriber.
    drop(result);
}
