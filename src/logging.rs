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

/// The filter: `RUST_LOG` when set (full `tracing` directives), else Lambda's
/// `AWS_LAMBDA_LOG_LEVEL` (set by the function's `ApplicationLogLevel`),
/// else `info`.
pub fn filter(rust_log: Option<&str>, lambda_level: Option<&str>) -> EnvFilter {
    filter_or(rust_log, lambda_level, "info")
}

fn filter_or(rust_log: Option<&str>, lambda_level: Option<&str>, otherwise: &str) -> EnvFilter {
    if let Some(directives) = rust_log.filter(|s| !s.trim().is_empty())
        && let Ok(f) = EnvFilter::try_new(directives)
    {
        return f;
    }
    let level = match lambda_level.map(|l| l.trim().to_ascii_uppercase()).as_deref() {
        Some("TRACE") => "trace",
        Some("DEBUG") => "debug",
        Some("WARN") => "warn",
        Some("ERROR" | "FATAL") => "error",
        Some("INFO") => "info",
        _ => otherwise,
    };
    EnvFilter::new(level)
}

/// Installs the global subscriber (level: see [`filter`]). Logs go to stdout
/// for JSON (Lambda collects stdout) and to stderr for text, so a CLI's
/// stdout stays machine-readable.
pub fn init(format: LogFormat) {
    if format == LogFormat::Text {
        return init_text(std::io::stderr);
    }
    let rust_log = std::env::var("RUST_LOG").ok();
    let lambda_level = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok();
    let builder = tracing_subscriber::fmt().with_env_filter(filter(rust_log.as_deref(), lambda_level.as_deref()));
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

/// Installs a text subscriber writing through `writer` (the CLI's, which
/// keeps log lines off its progress line). A person at a terminal is told
/// what needs attention: warnings and errors unless `RUST_LOG` asks for more.
pub fn init_text<W>(writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let rust_log = std::env::var("RUST_LOG").ok();
    // The SDK's credential chain warns once per provider it tries: an
    // interactive command reports what is missing in one line instead.
    let result = tracing_subscriber::fmt()
        .with_env_filter(filter_or(
            rust_log.as_deref(),
            None,
            "warn,aws_config=error,aws_runtime=error",
        ))
        .with_writer(writer)
        .with_ansi(false)
        .try_init();
    drop(result);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_log_level_applies_unless_rust_log_is_set() {
        assert_eq!(filter(None, Some("DEBUG")).to_string(), "debug");
        assert_eq!(filter(None, Some("warn")).to_string(), "warn");
        assert_eq!(filter(None, Some("FATAL")).to_string(), "error");
        assert_eq!(filter(None, None).to_string(), "info");
        assert_eq!(filter(None, Some("bogus")).to_string(), "info");
        assert_eq!(
            filter(Some("ecr_remediator=trace"), Some("ERROR")).to_string(),
            "ecr_remediator=trace"
        );
        assert_eq!(filter(Some(" "), Some("ERROR")).to_string(), "error");
    }
}
