//! Progress bars and notes on standard error.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `len` items called `unit` (e.g. "cells"), with throughput; hidden when quiet.
pub fn bar(len: u64, what: &str, unit: &str, quiet: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        Some(len),
        if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() },
    );
    let template =
        format!("{{spinner}} {what:<12} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, eta {{eta}})");
    pb.set_style(ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "));
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// A spinner for a step of unknown length; hidden when quiet.
pub fn spinner(msg: &str, quiet: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        None,
        if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() },
    );
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"));
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Prints a note on standard error unless quiet.
pub fn note(quiet: bool, msg: impl AsRef<str>) {
    if !quiet {
        eprintln!("{}", msg.as_ref());
    }
}

/// Prints a reader's warnings (skipped elements, conversions, duplicated gene names).
pub fn warn_read(quiet: bool, file: &std::path::Path, report: &sclm_io::ReadReport) {
    for w in report.warnings() {
        note(quiet, format!("warning: {}: {w}", file.display()));
    }
}
