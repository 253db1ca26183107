//! Logging: the `tracing` subscriber the program installs, in the format
//! `--log-format` names, on stderr. `text` is for people; `json` is one
//! object per line for log pipelines, with the event's fields flattened
//! beside `timestamp`, `level`, `target` and `message`, and the fields of
//! the spans it happened in (the client's address, for one).
//!
//! The access log (`--access-log`) goes through the same subscriber,
//! under the target [`ACCESS_TARGET`].

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// The target of access-log lines (one per request or stream).
pub const ACCESS_TARGET: &str = "streamgauge::access";

/// How log lines are written.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the process's subscriber: lines in `format`, filtered by
/// `filter` (already validated), on stderr. The access log is on whenever
/// `access_log` is, whatever the filter says of other targets at info.
pub fn init(format: LogFormat, filter: &str, access_log: bool) {
    let mut filter = EnvFilter::new(filter);
    if access_log {
        // A directive that cannot fail to parse.
        if let Ok(access) = format!("{ACCESS_TARGET}=info").parse() {
            filter = filter.add_directive(access);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
