//! Progress bars on stderr (hidden when stderr is not a terminal and `TRIAGE_PROGRESS=0`).

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar of `len` steps titled `what`.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    if std::env::var("TRIAGE_PROGRESS").is_ok_and(|v| v == "0") {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{prefix:>14} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_prefix(what.to_string());
    pb
}
