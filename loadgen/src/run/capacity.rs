//! A capacity search against one server (`capacity`, a scenario's
//! `capacity` phase): the server started once (or the one at `--url`),
//! then step after step, each a measured run of its own, a short settle
//! between them, the level of each decided by the search's
//! [`Bisection`] from the steps before; the CPU and open files of the server
//! and of the load generator watched during each. Every step's `summary.json` goes
//! to `steps/` below the run's directory; the run's own summary is the
//! knee's step (or, if none held, the first), with the search's estimate
//! (`analysis::capacity::of_search`) as its `capacity`.

use std::path::Path;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::{Measurement, Server, Setup, ensure_token};
use crate::analysis::capacity::{self, Step};
use crate::live::Live;
use crate::live::Watcher;
use crate::live::event::RunLabel;
use crate::metrics::timeline::Watch;
use crate::metrics::watch::{self, Load};
use crate::report::files;
use crate::scenario::Scenario;
use crate::scenario::search::{Bisection, Search};
use crate::summary::Context;

/// One step as it ran.
#[derive(Debug)]
struct Done {
    /// Its level.
    level: u64,
    /// Its measurement, judged.
    measurement: Measurement,
    /// What the server used during it.
    server: Load,
    /// What the load generator's own process used.
    loadgen: Load,
    /// The whole machine's busy CPU, % of all cores.
    machine_cpu_pct: Option<f64>,
}

impl Done {
    /// The step as the estimate reads it.
    fn step(&self) -> Step<'_> {
        Step {
            level: self.level,
            summary: &self.measurement.summary,
            server: self.server,
            loadgen: self.loadgen,
            machine_cpu_pct: self.machine_cpu_pct,
        }
    }
}

/// Runs the capacity `search` over `scenario` against the server `setup`
/// names, its files in `dir`.
///
/// # Errors
///
/// The server could not be started or reached, a step could not be made,
/// or `cancel` came before the first step ended.
#[allow(clippy::too_many_arguments)] // the run's parts, each passed on as it is
pub async fn search(
    scenario: &Scenario,
    search: &Search,
    setup: &Setup,
    http: &reqwest::Client,
    dir: &Path,
    context: Context,
    shown: &Shown<'_>,
    cancel: &CancellationToken,
) -> anyhow::Result<Measurement> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    ensure_token(scenario, setup)?;
    let server = Server::start(scenario, setup, dir).await?;
    let steps = Steps {
        server: &server,
        scenario,
        search,
        setup,
        http,
        dir,
        context: &context,
        shown,
    };
    let done = steps.run(cancel).await;
    server.stop().await;
    let done = done?;
    anyhow::ensure!(!done.is_empty(), "interrupted before the first step ended");
    Ok(conclude(scenario, search, done, &context))
}

/// Where a search is shown live, and as which run.
pub struct Shown<'a> {
    /// The dashboard and the samples file, if any.
    pub live: &'a Live,
    /// The search's run: each step is shown as a run of its own, named
    /// after it.
    pub label: RunLabel,
}

impl Shown<'_> {
    /// Step number `n` at `level`, of the scenario `step`, as the dashboard
    /// shows it.
    fn watch(&self, n: usize, level: u64, context: &Context, step: &Scenario) -> Option<Watcher> {
        let label = RunLabel {
            run_id: context.run_id.clone(),
            scenario: format!("{} step {n} at {level}", self.label.scenario),
            ..self.label.clone()
        };
        self.live.watch(label, step)
    }
}

/// What every step of one search shares.
struct Steps<'a> {
    server: &'a Server,
    scenario: &'a Scenario,
    search: &'a Search,
    setup: &'a Setup,
    http: &'a reqwest::Client,
    /// The search's results directory.
    dir: &'a Path,
    context: &'a Context,
    shown: &'a Shown<'a>,
}

impl Steps<'_> {
    /// Runs the steps the search asks for, until it is over or `cancel`.
    async fn run(&self, cancel: &CancellationToken) -> anyhow::Result<Vec<Done>> {
        let mut bisection = Bisection::new(self.search);
        let mut done: Vec<Done> = Vec::new();
        while let Some(level) = bisection.next() {
            if !done.is_empty() {
                // Production pacing, not test synchronization: the server
                // drops the last step's connections meanwhile.
                tokio::select! {
                    () = tokio::time::sleep(self.search.settle) => {}
                    () = cancel.cancelled() => {}
                }
            }
            if cancel.is_cancelled() {
                break;
            }
            let step = self.step(done.len() + 1, level, cancel).await?;
            bisection.record(level, step.measurement.summary.passed);
            done.push(step);
        }
        Ok(done)
    }

    /// Runs step number `n` at `level`, watching both processes and the
    /// machine, judges its delivery, writes its summary and says how it
    /// went.
    async fn step(&self, n: usize, level: u64, cancel: &CancellationToken) -> anyhow::Result<Done> {
        let step = self.search.step(self.scenario, level);
        let context = Context {
            run_id: format!("{}-step{n}", self.context.run_id),
            ..self.context.clone()
        };
        let watching = CancellationToken::new();
        let server_watch =
            (self.server.pid()).map(|pid| tokio::spawn(watch::watch(Some(pid), watching.clone())));
        let loadgen_watch = tokio::spawn(watch::watch(None, watching.clone()));
        let machine_watch = tokio::spawn(watch::machine(watching.clone()));
        let watcher = self.shown.watch(n, level, &context, &step);
        let watch = watcher.as_ref().map(|w| w as &dyn Watch);
        let measured = (self.server)
            .measure(&step, self.setup, self.http, context, watch, cancel)
            .await;
        watching.cancel();
        let server = match server_watch {
            Some(watching) => watching.await.unwrap_or_default(),
            None => Load::default(),
        };
        let loadgen = loadgen_watch.await.unwrap_or_default();
        let machine_cpu_pct = machine_watch.await.ok().flatten();
        let mut measurement = measured.with_context(|| format!("capacity step at {level}"))?;
        capacity::judge_delivery(
            &mut measurement.summary,
            step.offered_per_s(step.max_clients()),
        );
        self.write(n, level, &measurement)?;
        Ok(Done {
            level,
            measurement,
            server,
            loadgen,
            machine_cpu_pct,
        })
    }

    /// Writes step `n`'s `summary.json` in `steps/NN-LEVEL/`, and says on
    /// stderr how it went.
    fn write(&self, n: usize, level: u64, measurement: &Measurement) -> anyhow::Result<()> {
        let summary = &measurement.summary;
        let dir = self.dir.join("steps").join(format!("{n:02}-{level}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_vec_pretty(summary).expect("a summary serializes");
        files::write(&dir.join("summary.json"), &json)?;
        say(&format!(
            "capacity step {n}: {level} {}: {} ({:.0} events/s)",
            self.search.vary.unit(),
            if summary.passed { "held" } else { "broke" },
            capacity::delivered(summary)
        ));
        Ok(())
    }
}

/// The search's result: the knee's step (or, if none held, the first),
/// with the estimate of every step as its `capacity`.
fn conclude(
    scenario: &Scenario,
    search: &Search,
    done: Vec<Done>,
    context: &Context,
) -> Measurement {
    let machine = &context.environment.machine;
    let steps: Vec<Step<'_>> = done.iter().map(Done::step).collect();
    let estimate = capacity::of_search(scenario, search, &steps, machine.cores, machine.memory_mb);
    let knee = done
        .iter()
        .enumerate()
        .filter(|(_, d)| d.measurement.summary.passed)
        .max_by_key(|(_, d)| d.level)
        .map_or(0, |(i, _)| i);
    let mut measurement = done
        .into_iter()
        .nth(knee)
        .expect("a search has run a step")
        .measurement;
    measurement.summary.run_id.clone_from(&context.run_id);
    measurement.summary.capacity = Some(estimate);
    measurement
}

/// Says how a step went, on stderr, as the search goes.
#[allow(clippy::print_stderr)]
fn say(line: &str) {
    eprintln!("{line}");
}
