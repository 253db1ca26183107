//! The live progress line while a scenario runs: phase, elapsed / total,
//! clients, events/s, p99 and errors, redrawn once a second on a terminal
//! (indicatif), or logged every few seconds when stderr is not one.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::metrics::timeline::Row;

/// Every how many rows a line is logged when stderr is not a terminal.
const LOG_EVERY: u32 = 5;

/// Reports a scenario's progress.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    rows: u32,
}

impl Progress {
    /// Progress of `label` over `total`.
    pub fn new(label: &str, total: Duration) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total.as_secs()), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix:.bold} [{bar:24}] {pos}/{len}s {msg}")
                    .expect("a valid progress template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.to_owned());
            bar
        });
        Self {
            bar,
            label: label.to_owned(),
            rows: 0,
        }
    }

    /// Shows one second of the run.
    pub fn update(&mut self, row: &Row, total_errors: u64) {
        self.rows += 1;
        let p99 = row.latency_p99_us.map_or_else(
            || "-".to_owned(),
            |us| format!("{:.2}ms", us as f64 / 1_000.0),
        );
        let message = format!(
            "{} | clients {} | {:.0} ev/s | p99 {} | errors {}",
            row.phase, row.clients, row.events_per_s, p99, total_errors
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(row.t_s as u64);
                bar.set_message(message);
            }
            None if self.rows.is_multiple_of(LOG_EVERY) => {
                eprintln!("{} {:>5.0}s {message}", self.label, row.t_s);
            }
            None => {}
        }
    }

    /// Clears the line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
