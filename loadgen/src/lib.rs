//! The streamgauge load generator: virtual SSE and WebSocket clients that
//! measure a server speaking `PROTOCOL.md`, and say whether it held.
//!
//! ```text
//! scenario ──▶ runner (virtual clients per phase) ──▶ metrics ──▶ report / verdict
//! ```
//!
//! # Layout
//!
//! - [`cli`]: the command line; [`scenario`]: validated scenarios from
//!   presets, TOML files and flags, with their thresholds; [`suite`]: the
//!   standard matrix.
//! - [`runner`]: phases to clients; [`client`]: the virtual client, its
//!   SSE and WebSocket connections, the SSE parser and the HTTP reader;
//!   [`publisher`]: open-model topic publishers; [`check`]: `seq` gaps and
//!   duplicates.
//! - [`metrics`]: HDR histograms and counters, sharded; [`monitor`]: the
//!   server's CPU and memory; [`local_server`]: a server to measure when no
//!   `--url` is given.
//! - [`report`]: the summary (`summary.json`), the table, the progress line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

pub mod check;
pub mod cli;
pub mod client;
pub mod local_server;
pub mod metrics;
pub mod monitor;
pub mod publisher;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod suite;

use crate::cli::{Command, TargetArgs};
use crate::client::Target;
use crate::local_server::{LocalServer, ServerProgram};
use crate::monitor::Monitor;
use crate::report::Summary;
use crate::runner::Run;
use crate::scenario::{Scenario, Transport, preset};

/// How a run ended, for the exit code: 0 if it passed, 1 if not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Every threshold of every scenario held.
    pub passed: bool,
}

/// Runs `command` until it is done or `cancel`.
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
                #[allow(clippy::print_stdout)]
                {
                    println!("{:<12} {}", preset.name, preset.about);
                }
            }
            Ok(Outcome { passed: true })
        }
        Command::Run(args) => {
            let scenario = args.scenario()?;
            measure(&[scenario], &args.target, &cancel).await
        }
        Command::Suite(args) => {
            let transports = match args.transport {
                Some(transport) => vec![transport],
                None => Transport::ALL.to_vec(),
            };
            let plan = suite::plan(args.full, &transports, args.target.time_scale);
            measure(&plan, &args.target, &cancel).await
        }
    }
}

/// A new run id: the UTC time and a random suffix (`20261123T101500Z-3f2a`).
fn run_id() -> String {
    let time = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let compact: String = time.chars().filter(|c| !matches!(c, '-' | ':')).collect();
    format!("{compact}-{:04x}", fastrand::u16(..))
}

/// The server to measure for one scenario, and the local one if started.
async fn target(
    args: &TargetArgs,
    http: &reqwest::Client,
    dir: &Path,
) -> anyhow::Result<(Target, Option<Monitor>, Option<LocalServer>)> {
    if let Some(url) = &args.url {
        let target = Target::resolve(url).await?;
        let monitor = Monitor::metrics(&target.base_url(), http.clone());
        return Ok((target, Some(monitor), None));
    }
    let program = args
        .server_bin
        .clone()
        .map_or(ServerProgram::Embedded, ServerProgram::Binary);
    let server = LocalServer::start(&program, &args.server_arg, &dir.join("server.log")).await?;
    let target = Target {
        addr: server.addr,
        host: server.addr.to_string(),
    };
    Ok((target, Some(Monitor::process(server.pid)), Some(server)))
}

/// Fails unless `target` answers `GET /healthz` with a success.
async fn ensure_reachable(http: &reqwest::Client, target: &Target) -> anyhow::Result<()> {
    let url = format!("{}/healthz", target.base_url());
    let response = http
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .with_context(|| format!("the server is not reachable at {}", target.base_url()))?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {url} answered {}",
        response.status()
    );
    Ok(())
}

/// Runs each scenario of `plan`, writing a `summary.json` for each, and
/// prints the table.
async fn measure(
    plan: &[Scenario],
    args: &TargetArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<Outcome> {
    raise_file_limit();
    let run_id = run_id();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("streamgauge-results").join(&run_id));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let mut summaries = Vec::new();
    for scenario in plan {
        let dir = match plan.len() {
            1 => out.clone(),
            _ => out.join(format!("{}-{}", scenario.name, scenario.transport.as_str())),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (target, monitor, server) = target(args, &http, &dir).await?;
        let measured = match ensure_reachable(&http, &target).await {
            Ok(()) => {
                let run = Run {
                    scenario,
                    target: Arc::new(target),
                    http: http.clone(),
                    monitor,
                    run_id: run_id.clone(),
                    token: args.token.clone(),
                };
                run.execute(cancel).await
            }
            Err(e) => Err(e),
        };
        if let Some(server) = server {
            match server.stop().await {
                Ok(status) if status.success() => {}
                Ok(status) => {
                    tracing::warn!(%status, "the local server exited badly; see its server.log")
                }
                Err(e) => tracing::warn!("stopping the local server: {e:#}"),
            }
        }
        let summary = Summary::new(scenario, measured?);
        write_json(&dir.join("summary.json"), &summary)?;
        summaries.push(summary);
        if cancel.is_cancelled() {
            break;
        }
    }
    if plan.len() > 1 {
        let index: Vec<serde_json::Value> = summaries
            .iter()
            .map(|s| {
                let dir = format!("{}-{}", s.scenario, s.transport);
                serde_json::json!({ "scenario": s.scenario, "transport": s.transport, "passed": s.passed, "summary": format!("{dir}/summary.json") })
            })
            .collect();
        let suite = serde_json::json!({ "run_id": run_id, "passed": summaries.iter().all(|s| s.passed), "scenarios": index });
        write_json(&out.join("suite.json"), &suite)?;
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{}", report::table::render(&summaries));
        println!("results: {}", out.display());
    }
    anyhow::ensure!(
        !cancel.is_cancelled(),
        "interrupted; partial results in {}",
        out.display()
    );
    Ok(Outcome {
        passed: summaries.iter().all(|s| s.passed),
    })
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(value).expect("reports serialize");
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

/// Raises the soft limit on open files to the hard limit: every client is a
/// socket.
fn raise_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}
