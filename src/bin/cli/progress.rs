//! Progress lines on stderr, drawn only when stderr is a terminal, and the
//! CLI's log lines written above them rather than through them.

use std::io::Write;
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Every progress line of the process.
fn lines() -> &'static MultiProgress {
    static LINES: OnceLock<MultiProgress> = OnceLock::new();
    LINES.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// A progress line of `len` steps in `template` (indicatif's keys).
pub(crate) fn line(template: &str, len: Option<u64>) -> ProgressBar {
    let bar = lines().add(ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden()));
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Gives `bar` another template (the same one [`line`] takes).
pub(crate) fn restyle(bar: &ProgressBar, template: &str) {
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
}

/// Runs `f` with the progress lines cleared, then draws them again (for
/// output that must not be cut by them).
pub(crate) fn above<T>(f: impl FnOnce() -> T) -> T {
    lines().suspend(f)
}

/// Text logs through [`above`]: `init_text(progress::Logs)`.
pub(crate) struct Logs;

/// One log line, written when the formatter is done with it.
pub(crate) struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let text = std::mem::take(&mut self.0);
        above(|| {
            let _ = std::io::stderr().lock().write_all(&text);
        });
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Logs {
    type Writer = LogLine;

    fn make_writer(&'w self) -> Self::Writer {
        LogLine(Vec::new())
    }
}
