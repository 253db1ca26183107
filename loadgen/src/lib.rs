//! The streamgauge load generator: virtual SSE and WebSocket clients that
//! measure a server speaking `PROTOCOL.md`, and say whether it held.
//!
//! ```text
//! scenario ──▶ runner (virtual clients per phase) ──▶ metrics ──▶ report / history / verdict
//! ```
//!
//! # Layout
//!
//! - [`cli`]: the command line; [`scenario`]: validated scenarios from
//!   presets, TOML files and flags, with their thresholds; [`suite`]: the
//!   standard matrix.
//! - [`runner`]: phases to clients; [`client`]: the virtual client, its
//!   SSE and WebSocket connections, the SSE parser and the HTTP reader;
//!   [`publisher`]: open-model topic publishers; [`abuse`]: misbehaving
//!   clients beside the others; [`check`]: `seq` gaps and duplicates.
//! - [`worker`]: worker processes, each running a share of the clients
//!   when one process's open-file limit is not enough.
//! - [`metrics`]: HDR histograms and counters, sharded; [`monitor`]: the
//!   server's CPU and memory; [`local_server`]: a server to measure when no
//!   `--url` is given.
//! - [`report`]: the summary (`summary.json`) and the invocation's report,
//!   rendered as CSV, Markdown, HTML, JUnit and Bencher Metric Format, the
//!   table and the progress line; [`manifest`]: what makes a figure
//!   reproducible; [`capacity`]: the knee of load steps and ramps.
//! - [`verdict`]: default budgets and thresholds to pass or fail;
//!   [`compare`]: noise-aware comparison with a baseline, found by
//!   [`baseline`]; [`history`]: every run stored through sqlx.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

pub mod ab;
pub mod abuse;
pub mod baseline;
pub mod capacity;
pub mod check;
pub mod cli;
pub mod client;
pub mod compare;
pub mod history;
pub mod local_server;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod monitor;
pub mod publisher;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod stats;
pub mod suite;
pub mod verdict;
pub mod worker;

use crate::cli::{Command, CompareArgs, RecordArgs, TargetArgs};
use crate::client::Target;
use crate::history::History;
use crate::local_server::{LocalServer, ServerProgram};
use crate::manifest::{Environment, ServerUnderTest};
use crate::metrics::Stats;
use crate::monitor::Monitor;
use crate::report::{Context, Group, Report, Summary};
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
            let scenario = args.scenario.scenario(
                args.target.options.time_scale,
                !args.record.no_default_thresholds,
            )?;
            measure(&[scenario], &args.target, &args.record, &cancel).await
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
            measure(&plan, &args.target, &args.record, &cancel).await
        }
        Command::Compare(args) => compare_command(&args).await,
        Command::Ab(args) => {
            raise_file_limit();
            let passed = ab::run(&args, run_id(), &cancel).await?;
            Ok(Outcome { passed })
        }
        Command::History(args) => {
            let text = history::command(&args).await?;
            print(&text);
            Ok(Outcome { passed: true })
        }
    }
}

#[allow(clippy::print_stdout)]
fn print(text: &str) {
    println!("{text}");
}

/// `compare CURRENT BASELINE`: every scenario of the current results beside
/// the baseline's.
async fn compare_command(args: &CompareArgs) -> anyhow::Result<Outcome> {
    let current = baseline::resolve(&args.current, &args.history.url).await?;
    let base = baseline::resolve(&args.baseline, &args.history.url).await?;
    let mut regressed = false;
    let mut compared = 0;
    for (scenario, transport) in current.groups() {
        let before = base.of(&scenario, &transport);
        if before.is_empty() {
            print(&format!(
                "## {scenario} ({transport})\n\nnot in {}\n",
                base.what
            ));
            continue;
        }
        let comparison = compare::compare(&current.of(&scenario, &transport), &before, &base.what);
        regressed |= comparison.regressed;
        compared += 1;
        print(&format!(
            "## {scenario} ({transport})\n\n{}",
            report::markdown::comparison(&comparison)
        ));
    }
    anyhow::ensure!(
        compared > 0,
        "{} and {} have no scenario in common",
        current.what,
        base.what
    );
    print(&format!(
        "{}: {} compared with {}",
        if regressed {
            "REGRESSION"
        } else {
            "no regression"
        },
        current.what,
        base.what,
    ));
    Ok(Outcome { passed: !regressed })
}

/// A new run id: the UTC time and a random suffix (`20261123T101500Z-3f2a`).
fn run_id() -> String {
    let time = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let compact: String = time.chars().filter(|c| !matches!(c, '-' | ':')).collect();
    format!("{compact}-{:04x}", fastrand::u16(..))
}

/// The server to measure for `scenario`, and the local one if started.
async fn target(
    scenario: &Scenario,
    args: &TargetArgs,
    http: &reqwest::Client,
    dir: &Path,
) -> anyhow::Result<(Target, Option<Monitor>, Option<LocalServer>)> {
    if let Some(url) = &args.url {
        if !scenario.server_args.is_empty() {
            tracing::warn!(
                "{} sets the server's flags {:?}: a server at --url keeps its own",
                scenario.name,
                scenario.server_args
            );
        }
        let target = Target::resolve(url).await?;
        let monitor = Monitor::metrics(&target.base_url(), http.clone())
            .with_heap(&target.base_url(), http.clone());
        return Ok((target, Some(monitor), None));
    }
    let program = args
        .server_bin
        .clone()
        .map_or(ServerProgram::Embedded, ServerProgram::Binary);
    let server_args = scenario.server_args_with(&args.server_arg);
    let server = LocalServer::start(&program, &server_args, &dir.join("server.log")).await?;
    let target = Target {
        addr: server.addr,
        host: server.addr.to_string(),
    };
    let monitor = Monitor::process(server.pid).with_heap(&target.base_url(), http.clone());
    Ok((target, Some(monitor), Some(server)))
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

/// A run among an invocation's: scenario, transport, repetition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunKey(String, &'static str, u32);

impl RunKey {
    fn of(summary: &Summary) -> Self {
        Self(summary.scenario.clone(), summary.transport, summary.repeat)
    }
}

/// What one run measured: its summary, and its histograms for the history.
pub(crate) struct Measurement {
    /// The summary.
    pub(crate) summary: Summary,
    /// The histograms.
    pub(crate) stats: Stats,
}

/// Runs `scenario` once against the target `args` name.
pub(crate) async fn run_once(
    scenario: &Scenario,
    args: &TargetArgs,
    http: &reqwest::Client,
    dir: &Path,
    context: Context,
    cancel: &CancellationToken,
) -> anyhow::Result<Measurement> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (target, monitor, server) = target(scenario, args, http, dir).await?;
    let measured = match ensure_reachable(http, &target).await {
        Ok(()) => {
            let run = Run {
                scenario,
                target: Arc::new(target),
                http: http.clone(),
                monitor,
                run_id: format!("{}-{}", context.run_id, context.repeat),
                token: args.options.token.clone(),
                workers: args
                    .workers
                    .resolve(scenario, context.environment.limits.open_files),
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
    let measured = measured?;
    let summary = Summary::new(scenario, &measured, context);
    Ok(Measurement {
        summary,
        stats: measured.totals,
    })
}

/// The server a run measures, as its manifest records it.
fn server_under_test(args: &TargetArgs) -> ServerUnderTest {
    let program = match (&args.url, &args.server_bin) {
        (Some(url), _) => url.clone(),
        (None, Some(path)) => path.display().to_string(),
        (None, None) => "embedded".to_owned(),
    };
    ServerUnderTest {
        program,
        args: args.server_arg.clone(),
    }
}

/// Runs each scenario of `plan`, `--repeat` times round after round,
/// writes every report, compares with the baseline, stores the runs in
/// the history and prints the table.
async fn measure(
    plan: &[Scenario],
    args: &TargetArgs,
    record: &RecordArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<Outcome> {
    raise_file_limit();
    // A baseline that cannot be found is a mistake to report before measuring.
    let baseline = match &record.baseline {
        Some(reference) => Some(baseline::resolve(reference, &record.history.url).await?),
        None => None,
    };
    let run_id = run_id();
    let out = args
        .options
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("streamgauge-results").join(&run_id));
    let here = std::env::current_dir().context("reading the working directory")?;
    let environment = Arc::new(Environment::detect(&here));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut groups: Vec<Group> = Vec::new();
    let mut stats: Vec<(RunKey, Stats)> = Vec::new();
    let mut not_run = NotRun::default();
    'rounds: for repeat in 1..=record.repeat {
        for (i, scenario) in plan.iter().enumerate() {
            let name = &scenario.name;
            let transport = scenario.transport.as_str();
            let dir = out.join(report::run_dir(
                name,
                transport,
                plan.len() == 1,
                record.repeat > 1,
                repeat,
            ));
            let context = Context {
                run_id: run_id.clone(),
                environment: Arc::clone(&environment),
                server: server_under_test(args),
                label: record.label.clone(),
                repeat,
            };
            if repeat == 1 {
                groups.push(Group {
                    scenario: name.clone(),
                    transport,
                    runs: Vec::new(),
                });
            }
            let measurement = match run_once(scenario, args, &http, &dir, context, cancel).await {
                Ok(measurement) => measurement,
                Err(e) => {
                    not_run.note(name, transport, &e);
                    continue;
                }
            };
            report::files::write_run(&dir, &measurement.summary)?;
            stats.push((RunKey::of(&measurement.summary), measurement.stats));
            groups[i].runs.push(measurement.summary);
            if cancel.is_cancelled() {
                break 'rounds;
            }
        }
    }
    groups.retain(|g| !g.runs.is_empty());
    if let Some(baseline) = &baseline {
        judge_against(&mut groups, baseline);
    }
    let summaries: Vec<Summary> = groups.iter().flat_map(|g| g.runs.clone()).collect();
    let report = Report {
        run_id,
        started_at,
        label: record.label.clone(),
        capacity: capacity::estimate(&summaries),
        groups,
        environment,
    };
    report::files::write_report(&out, &report)?;
    if !record.no_history {
        store(&record.history.url, &report, &stats).await;
    }
    print(&report::table::render(&summaries));
    let phases = report::table::render_phases(&summaries);
    if !phases.is_empty() {
        print(&phases);
    }
    for summary in &summaries {
        for bound in &summary.bounded_by {
            print(&format!(
                "bounded by the load generator: {} ({}): {bound}",
                summary.scenario, summary.transport
            ));
        }
    }
    print(&report::markdown::verdict_lines(&report));
    for (what, why) in &not_run.skipped {
        print(&format!("skipped {what}: {why}"));
    }
    print(&format!("results: {}", out.display()));
    anyhow::ensure!(
        !cancel.is_cancelled(),
        "interrupted; partial results in {}",
        out.display()
    );
    anyhow::ensure!(
        not_run.failed.is_empty(),
        "{} of the suite's runs could not be made (the others' results are in {}):\n{}",
        not_run.failed.len(),
        out.display(),
        not_run.failed.join("\n")
    );
    Ok(Outcome {
        passed: report.verdict().passed(),
    })
}

/// The runs of a suite that could not be made: skipped (the server lacks
/// what the scenario needs) or failed (the run could not be made at all).
#[derive(Debug, Default)]
struct NotRun {
    /// `NAME (TRANSPORT)` and why, for scenarios the server cannot run.
    skipped: Vec<(String, String)>,
    /// `NAME (TRANSPORT): the error`.
    failed: Vec<String>,
}

impl NotRun {
    /// Notes that the run of `name` on `transport` ended with `error`, and
    /// says so now.
    fn note(&mut self, name: &str, transport: &str, error: &anyhow::Error) {
        let what = format!("{name} ({transport})");
        if let Some(unsupported) = error.downcast_ref::<runner::Unsupported>() {
            tracing::warn!("skipping {what}: {unsupported}");
            if !self.skipped.iter().any(|(w, _)| *w == what) {
                self.skipped.push((what, unsupported.to_string()));
            }
        } else {
            tracing::error!("{what} could not be run: {error:#}");
            self.failed.push(format!("{what}: {error:#}"));
        }
    }
}

/// Compares each group with the baseline's runs of the same scenario and
/// transport, and judges its runs again.
fn judge_against(groups: &mut [Group], baseline: &baseline::Runs) {
    for group in groups {
        let before = baseline.of(&group.scenario, group.transport);
        if before.is_empty() {
            tracing::warn!(
                scenario = group.scenario,
                transport = group.transport,
                "not in the baseline {}: not compared",
                baseline.what
            );
            continue;
        }
        let now: Vec<serde_json::Value> = group
            .runs
            .iter()
            .map(|s| serde_json::to_value(s).expect("a summary serializes"))
            .collect();
        let comparison = compare::compare(&now, &before, &baseline.what);
        for summary in &mut group.runs {
            summary.comparison = Some(comparison.clone());
            summary.judge();
        }
    }
}

/// Stores every run of `report` in the history at `url`, with its
/// histograms from `stats` (keyed by scenario, transport and repetition). A
/// history that cannot be written does not undo the measurement: it is
/// reported.
async fn store(url: &str, report: &Report, stats: &[(RunKey, Stats)]) {
    let stored = async {
        let history = History::open(url).await?;
        for summary in report.summaries() {
            let key = RunKey::of(summary);
            let (_, stats) = stats
                .iter()
                .find(|(k, _)| *k == key)
                .expect("every run has its histograms");
            history.record(summary, stats).await?;
        }
        anyhow::Ok(())
    };
    if let Err(e) = stored.await {
        tracing::error!("the runs were not stored in the history: {e:#}");
        #[allow(clippy::print_stderr)]
        {
            eprintln!("warning: the runs were not stored in the history at {url}: {e:#}");
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every client is a
/// socket.
pub(crate) fn raise_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suite_skips_what_the_server_cannot_run_and_fails_what_could_not_be_made() {
        let mut not_run = NotRun::default();
        let unsupported = anyhow::Error::new(runner::Unsupported("no seed endpoint".to_owned()));
        not_run.note("replay-5k", "sse", &unsupported);
        not_run.note("replay-5k", "sse", &unsupported);
        not_run.note("clients-10", "ws", &anyhow::anyhow!("server not reachable"));
        assert_eq!(
            not_run.skipped,
            [("replay-5k (sse)".to_owned(), "no seed endpoint".to_owned())]
        );
        assert_eq!(not_run.failed, ["clients-10 (ws): server not reachable"]);
    }
}
