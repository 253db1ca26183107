//! The streamgauge load generator: virtual SSE and WebSocket clients that
//! measure a server speaking this project's protocol (docs/protocol.md), or
//! any other streaming server described as a foreign target (a pub/sub
//! hub, a chat, an OpenAI-compatible API, over TLS or not), and say
//! whether it held.
//!
//! ```text
//! run ──▶ scenario ──▶ runner / client ──▶ metrics ──▶ summary ──▶ analysis ──▶ report
//! ```
//!
//! # Layout
//!
//! The pipeline, in the order a measurement flows through it:
//!
//! - [`mod@run`]: one measurement from a validated scenario to its files: the
//!   server measured (at a URL, or a local one started for each run),
//!   each run (or a capacity search's steps against one server), the
//!   reports, the comparison with a baseline, the history.
//! - [`scenario`]: what to run: presets, TOML files and flags validated
//!   into a [`scenario::Scenario`] (a foreign target's description
//!   included, as data), its thresholds, default budgets and the suite's
//!   plan.
//! - [`runner`]: phases to virtual clients (here or in worker processes),
//!   publishers, misbehaving clients and the live progress line;
//!   [`client`]: one virtual client, its target and connections (SSE,
//!   WebSocket, HTTP, plain or TLS), the SSE parser, the formats a message
//!   is read in, and the `seq` check.
//! - [`metrics`]: HDR histograms and counters, their wire format, the
//!   timeline rows and the server monitor.
//! - [`summary`]: the one report model (`summary.json` and what an
//!   invocation gathers), and the code that builds it from the metrics.
//! - [`analysis`]: thresholds and verdict, memory growth, comparison with
//!   a baseline, capacity, and the statistics they share.
//! - [`report`]: renderers only: Markdown, HTML and its charts, CSV,
//!   JUnit, Bencher Metric Format, the terminal's tables, and the files.
//! - Beside the pipeline: [`live`] (the dashboard and the samples file,
//!   fed row by row while a run goes), [`history`] (every run stored
//!   through sqlx, and baselines found in it), [`ab`] (the merge gate:
//!   two builds, alternately), [`agent`] (a load generator that runs its
//!   share of a coordinator's run), [`local_server`] (a server process to
//!   measure), and [`cli`] (the command line, turned into the plain
//!   arguments above).
//!
//! # Layering
//!
//! Imports point one way, from what consumes to what it consumes, and
//! never back. Each module may import the modules right below it, as this
//! table lists them, and whatever those may import, transitively
//! (`tests/layering.rs` holds the crate to it):
//!
//! | module | right below it |
//! |---|---|
//! | `scenario`, `local_server` | nothing of this crate |
//! | `metrics` | `scenario` |
//! | `client` | `metrics` |
//! | `runner` | `client` |
//! | `summary` | `metrics` |
//! | `analysis` | `summary` |
//! | `report` | `analysis` |
//! | `history` | `report` |
//! | `live` | `summary` |
//! | `run` | `history`, `runner`, `local_server`, `live` |
//! | `ab` | `run` |
//! | `agent` | `runner` |
//! | `cli` | `ab`, `agent` |
//!
//! So the runner and the clients never import the summary, its analyses or
//! the renderers; the summary's types never import an analysis or a
//! renderer; analyses never render; nothing but this dispatch (and `main`)
//! imports `cli`; and there is no import cycle between modules.

use tokio_util::sync::CancellationToken;

pub mod ab;
pub mod agent;
pub mod analysis;
pub mod cli;
pub mod client;
pub mod history;
pub mod live;
pub mod local_server;
pub mod metrics;
pub mod report;
pub mod run;
pub mod runner;
pub mod scenario;
pub mod summary;

use crate::cli::Command;
pub use crate::run::Outcome;
use crate::runner::worker::raise_file_limit;
use crate::scenario::{Transport, preset, suite};

/// Runs `command` until it is done or `cancel`: passed (exit code 0),
/// failed (1), or passed with a comparison that could not decide (3).
///
/// # Errors
///
/// The run could not be made (exit code 2): bad arguments or scenario file,
/// a server that cannot be started or reached, results that cannot be
/// written, or an interruption.
pub async fn run(command: Command, cancel: CancellationToken) -> anyhow::Result<Outcome> {
    match command {
        Command::Presets => {
            for preset in preset::PRESETS {
                print(&format!("{:<12} {}", preset.name, preset.about));
            }
            Ok(Outcome::of(true))
        }
        Command::Run(args) => {
            let scenario = args.scenario.scenario(
                args.target.options.time_scale,
                !args.record.no_default_thresholds,
            )?;
            let record = args.record.record(&args.target.options, &args.live);
            run::measure(&[scenario], &args.target.setup()?, &record, &cancel).await
        }
        Command::Suite(args) => {
            let transports = match args.transport {
                Some(transport) => vec![transport],
                None => Transport::ALL.to_vec(),
            };
            let plan = suite::plan(
                args.full,
                &transports,
                args.target.options.time_scale,
                !args.record.no_default_thresholds,
            );
            let record = args.record.record(&args.target.options, &args.live);
            run::measure(&plan, &args.target.setup()?, &record, &cancel).await
        }
        Command::Capacity(args) => {
            let scenario = args.scenario()?;
            let record = args.record.record(&args.target.options, &args.live);
            run::measure(&[scenario], &args.target.setup()?, &record, &cancel).await
        }
        Command::Compare(args) => {
            run::compare(&args.current, &args.baseline, &args.history.url).await
        }
        Command::Ab(args) => {
            raise_file_limit();
            ab::run(&args.options()?, run::run_id(), &cancel).await
        }
        Command::Agent(args) => {
            agent::serve(args.options()?, &cancel).await?;
            Ok(Outcome::of(true))
        }
        Command::History(args) => {
            let text = history::command(&args.history.url, &args.filter()).await?;
            print(&text);
            Ok(Outcome::of(true))
        }
    }
}

#[allow(clippy::print_stdout)]
fn print(text: &str) {
    println!("{text}");
}
