//! One measurement from a validated scenario to its files: the server
//! measured (one at a URL, or a local one started and stopped), each run
//! once ([`run_once`]: runner, then summary and analyses), every run of an
//! invocation round after round ([`measure`]: reports, comparison with a
//! baseline, the history, the terminal's table), and `compare` of two
//! stored results ([`compare`]). A scenario with a capacity search runs as
//! its steps against one server instead ([`capacity`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::analysis::{self, compare as comparison, verdict};
use crate::client::Target;
use crate::client::target::CONNECT_TIMEOUT;
use crate::client::tls::Connector;
use crate::history::History;
use crate::history::baseline::{self, Runs};
use crate::live::event::RunLabel;
use crate::live::{self, Live};
use crate::local_server::{LocalServers, ServerProgram};
use crate::metrics::Stats;
use crate::metrics::monitor::Monitor;
use crate::metrics::timeline::Watch;
use crate::report::files::{self, run_dir};
use crate::report::{markdown, table, text};
use crate::runner::abort::Abort;
use crate::runner::agents::AgentsSpec;
use crate::runner::worker::{WorkerCount, raise_file_limit};
use crate::runner::{self, Run};
use crate::scenario::Scenario;
use crate::scenario::target::{Origin, TargetSpec};
use crate::scenario::template::Values;
use crate::summary::comparison::GateVerdict;
use crate::summary::manifest::{Environment, ServerUnderTest};
use crate::summary::{Context, Group, Report, Summary};

pub mod capacity;

/// The server a run measures, and how the load reaches it: everything a
/// run needs beyond its scenario.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The server to measure (`http://HOST:PORT`), one URL per node;
    /// without any, local servers are started for each run (a scenario's
    /// `nodes`), with a fresh database, and stopped after.
    pub url: Vec<String>,
    /// The local server's binary; without it, the server built into this
    /// load generator.
    pub server_bin: Option<PathBuf>,
    /// Extra arguments for the local server.
    pub server_args: Vec<String>,
    /// Processes that run the virtual clients.
    pub workers: WorkerCount,
    /// Bearer token sent with publishes, seeds and subscriptions.
    pub token: Option<String>,
    /// Agents on other machines that run the clients and publishers, if
    /// any (`--agent`).
    pub agents: Option<AgentsSpec>,
}

/// Where an invocation's results go, and how its runs are repeated,
/// labelled, stored and judged.
#[derive(Debug, Clone)]
pub struct Record {
    /// The results directory [default: `streamgauge-results/RUN-ID`].
    pub out: Option<PathBuf>,
    /// The run history's URL.
    pub history: String,
    /// Whether the runs are stored in the history.
    pub store: bool,
    /// The label stored with the runs.
    pub label: Option<String>,
    /// The baseline to compare with (a run id, a label, a results
    /// directory or a `summary.json`).
    pub baseline: Option<String>,
    /// How many times every scenario runs, round after round.
    pub repeat: u32,
    /// What is shown while the runs go: the dashboard, the samples file.
    pub live: live::Options,
}

/// How a run ended, for the exit code: 0 if it passed, 1 if not, 3 if it
/// passed but a comparison could not decide (inconclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Every threshold of every scenario held, and nothing regressed.
    pub passed: bool,
    /// Some comparison with a baseline was inconclusive.
    pub inconclusive: bool,
}

impl Outcome {
    /// An outcome that compared nothing: passed or not.
    pub fn of(passed: bool) -> Outcome {
        Outcome {
            passed,
            inconclusive: false,
        }
    }
}

/// `compare CURRENT BASELINE`: every scenario of the current results beside
/// the baseline's.
///
/// # Errors
///
/// Either reference cannot be resolved, or they have no scenario in common.
pub async fn compare(current: &str, baseline: &str, history: &str) -> anyhow::Result<Outcome> {
    let current = baseline::resolve(current, history).await?;
    let base = baseline::resolve(baseline, history).await?;
    let mut regressed = false;
    let mut inconclusive = false;
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
        let comparison =
            comparison::compare(&current.of(&scenario, &transport), &before, &base.what);
        regressed |= comparison.regressed;
        inconclusive |= comparison.verdict == GateVerdict::Inconclusive;
        compared += 1;
        print(&format!(
            "## {scenario} ({transport})\n\n{}",
            markdown::comparison(&comparison)
        ));
    }
    anyhow::ensure!(
        compared > 0,
        "{} and {} have no scenario in common",
        current.what,
        base.what
    );
    let verdict = match (regressed, inconclusive) {
        (true, _) => GateVerdict::Regression,
        (false, true) => GateVerdict::Inconclusive,
        (false, false) => GateVerdict::NoRegression,
    };
    print(&format!(
        "{}: {} compared with {}",
        verdict.as_str(),
        current.what,
        base.what,
    ));
    Ok(Outcome {
        passed: !regressed,
        inconclusive,
    })
}

#[allow(clippy::print_stdout)]
fn print(text: &str) {
    println!("{text}");
}

/// A new run id: the UTC time and a random suffix (`20261123T101500Z-3f2a`).
pub fn run_id() -> String {
    let time = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let compact: String = time.chars().filter(|c| !matches!(c, '-' | ':')).collect();
    format!("{compact}-{:04x}", fastrand::u16(..))
}

/// How a run's monitor reads the server.
#[derive(Debug, Clone)]
enum Sampling {
    /// A foreign server named by its URL: the load generator alone.
    LoadgenOnly,
    /// Servers at `--url`: their `/metrics`.
    Metrics,
    /// Local servers: these processes, one per node.
    Processes(Vec<u32>),
}

/// The server measured, for one run or for every step of a capacity
/// search: its nodes, how to watch them, and the local servers started for
/// it (stopped by [`Server::stop`]).
#[derive(Debug)]
struct Server {
    /// Its nodes.
    targets: Vec<Target>,
    /// How a monitor reads it.
    sampling: Sampling,
    /// The local servers, if they were started for it.
    local: Option<LocalServers>,
}

impl Server {
    /// The server to measure for `scenario`: the one `setup` names, or
    /// local servers started with their files (logs) in `dir`.
    async fn start(scenario: &Scenario, setup: &Setup, dir: &Path) -> anyhow::Result<Self> {
        if let Some(spec) = scenario.target_spec()?
            && spec.origin == Origin::Absolute
        {
            anyhow::ensure!(
                setup.url.is_empty(),
                "{}: the target's subscribe_url names its server; leave --url out",
                scenario.name
            );
            let values = Values {
                topic: "t",
                client: "0",
                ..Values::default()
            };
            let target = Target::of_url(&spec.subscribe_url.expand(&values)).await?;
            return Ok(Self {
                targets: vec![target],
                sampling: Sampling::LoadgenOnly,
                local: None,
            });
        }
        if !setup.url.is_empty() {
            warn_of_own_settings(scenario, setup.url.len());
            let mut targets = Vec::with_capacity(setup.url.len());
            for url in &setup.url {
                targets.push(Target::resolve(url).await?);
            }
            return Ok(Self {
                targets,
                sampling: Sampling::Metrics,
                local: None,
            });
        }
        let program = setup
            .server_bin
            .clone()
            .map_or(ServerProgram::Embedded, ServerProgram::Binary);
        let server_args = scenario.server_args_with(&setup.server_args);
        let nodes = usize::try_from(scenario.nodes).unwrap_or(1);
        let local = LocalServers::start(&program, &server_args, nodes, dir).await?;
        let targets = (local.servers.iter())
            .map(|server| Target {
                addr: server.addr,
                host: server.addr.to_string(),
                tls: false,
            })
            .collect();
        let pids = local.servers.iter().map(|server| server.pid).collect();
        Ok(Self {
            targets,
            sampling: Sampling::Processes(pids),
            local: Some(local),
        })
    }

    /// A fresh monitor of it, for one run.
    fn monitor(&self, http: &reqwest::Client) -> Monitor {
        match &self.sampling {
            Sampling::LoadgenOnly => Monitor::loadgen_only(),
            Sampling::Metrics => monitor_of(&self.targets, http, |target| {
                Monitor::metrics(&target.base_url(), http.clone())
            }),
            Sampling::Processes(pids) => monitor_of(&self.targets, http, |target| {
                let node = self.targets.iter().position(|t| t == target).unwrap_or(0);
                Monitor::process(pids[node])
            }),
        }
    }

    /// The first local server's process id, if it was started here.
    fn pid(&self) -> Option<u32> {
        match &self.sampling {
            Sampling::Processes(pids) => pids.first().copied(),
            Sampling::LoadgenOnly | Sampling::Metrics => None,
        }
    }

    /// Runs `scenario` against it once, `watch` told of each row, and
    /// summarizes it, judged.
    async fn measure(
        &self,
        scenario: &Scenario,
        setup: &Setup,
        http: &reqwest::Client,
        context: Context,
        watch: Option<&dyn Watch>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Measurement> {
        let foreign = scenario.target_spec()?;
        ensure_reachable(http, &self.targets, foreign.as_ref()).await?;
        let run = Run {
            scenario,
            targets: self.targets.iter().cloned().map(Arc::new).collect(),
            http: http.clone(),
            monitor: Some(self.monitor(http)),
            run_id: format!("{}-{}", context.run_id, context.repeat),
            token: setup.token.clone(),
            workers: setup
                .workers
                .resolve(scenario, context.environment.limits.open_files),
            abort: abort(scenario, &context),
            watch,
            agents: setup.agents.as_ref(),
        };
        let measured = run.execute(cancel).await?;
        let summary = analysis::summarize(scenario, &measured, context);
        Ok(Measurement {
            summary,
            stats: measured.totals,
        })
    }

    /// Stops the local servers, if any were started.
    async fn stop(self) {
        if let Some(local) = self.local {
            local.stop().await;
        }
    }
}

/// One monitor of every node of `targets`, each read as `node` says, with
/// its live heap.
fn monitor_of(
    targets: &[Target],
    http: &reqwest::Client,
    node: impl Fn(&Target) -> Monitor,
) -> Monitor {
    (targets.iter())
        .map(|target| node(target).with_heap(&target.base_url(), http.clone()))
        .reduce(Monitor::and)
        .expect("a server has a node")
}

/// Warns of what a scenario asks of the server that servers at `--url`
/// (`urls` of them) decide for themselves.
fn warn_of_own_settings(scenario: &Scenario, urls: usize) {
    if !scenario.server_args.is_empty() {
        tracing::warn!(
            "{} sets the server's flags {:?}: a server at --url keeps its own",
            scenario.name,
            scenario.server_args
        );
    }
    if scenario.nodes > 1 && usize::try_from(scenario.nodes) != Ok(urls) {
        tracing::warn!(
            "{} asks for {} nodes: the {urls} given with --url are measured",
            scenario.name,
            scenario.nodes
        );
    }
}

/// Fails unless every node of `targets` answers `GET /healthz` with a
/// success; for a foreign target, unless a connection (and its TLS
/// handshake, verified as the target says) can be made to it.
async fn ensure_reachable(
    http: &reqwest::Client,
    targets: &[Target],
    foreign: Option<&TargetSpec>,
) -> anyhow::Result<()> {
    if let Some(spec) = foreign {
        let tls = spec.trust.as_ref().map(Connector::new).transpose()?;
        for target in targets {
            let connected = timeout(CONNECT_TIMEOUT, target.connect_from(None, tls.as_ref()))
                .await
                .map_err(|_| anyhow::anyhow!("no connection within {CONNECT_TIMEOUT:?}"))
                .and_then(|c| c.map_err(anyhow::Error::from));
            connected.with_context(|| match &tls {
                Some(tls) => format!(
                    "the target is not reachable at {} over TLS ({})",
                    target.base_url(),
                    tls.trust().describe()
                ),
                None => format!("the target is not reachable at {}", target.base_url()),
            })?;
        }
        return Ok(());
    }
    for target in targets {
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
    }
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
#[derive(Debug)]
pub struct Measurement {
    /// The summary, judged.
    pub summary: Summary,
    /// The histograms.
    pub stats: Stats,
}

/// Runs `scenario` once against the server `setup` names, its files
/// (the local server's log) in `dir`, `watch` told of each row, and
/// summarizes it, judged.
///
/// # Errors
///
/// The server could not be started or reached, the stream could not be
/// set up, or a worker process failed.
pub async fn run_once(
    scenario: &Scenario,
    setup: &Setup,
    http: &reqwest::Client,
    dir: &Path,
    context: Context,
    watch: Option<&dyn Watch>,
    cancel: &CancellationToken,
) -> anyhow::Result<Measurement> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    ensure_token(scenario, setup)?;
    let server = Server::start(scenario, setup, dir).await?;
    let measured = (server.measure(scenario, setup, http, context, watch, cancel)).await;
    server.stop().await;
    measured
}

/// Fails if a foreign target puts each client's token in its request and
/// neither per-user tokens nor `--token` give one.
fn ensure_token(scenario: &Scenario, setup: &Setup) -> anyhow::Result<()> {
    let foreign = scenario.target_spec()?;
    anyhow::ensure!(
        !foreign.as_ref().is_some_and(TargetSpec::uses_token)
            || scenario.auth.is_some()
            || setup.token.is_some(),
        "{}: the target puts the client's token in its request ({{token}}): give --jwt-key \
         (a token minted per client) or --token",
        scenario.name
    );
    Ok(())
}

/// Runs `scenario` once, or its capacity search if it has one ([`run_once`],
/// [`capacity::search`]), shown on `live` as the run `label` (each step of
/// a search as a run of its own).
#[allow(clippy::too_many_arguments)] // the run's parts, each passed on as it is
async fn run_scenario(
    scenario: &Scenario,
    setup: &Setup,
    http: &reqwest::Client,
    dir: &Path,
    context: Context,
    live: &Live,
    label: RunLabel,
    cancel: &CancellationToken,
) -> anyhow::Result<Measurement> {
    if let Some(search) = &scenario.search {
        let shown = capacity::Shown { live, label };
        return capacity::search(scenario, search, setup, http, dir, context, &shown, cancel).await;
    }
    let watcher = live.watch(label, scenario);
    let watch = watcher.as_ref().map(|w| w as &dyn Watch);
    run_once(scenario, setup, http, dir, context, watch, cancel).await
}

/// The judge of `scenario`'s `abort:` thresholds while it runs, if it has
/// any: what was measured so far, summarized as a finished run would be.
fn abort<'a>(scenario: &'a Scenario, context: &Context) -> Option<Abort<'a>> {
    let context = context.clone();
    (scenario.thresholds.iter().any(|t| t.abort)).then(|| Abort {
        grace: scenario.abort_grace,
        judge: Box::new(move |so_far| {
            let summary = analysis::summarize(scenario, so_far, context.clone());
            verdict::aborted(&summary.thresholds, so_far.duration)
        }),
    })
}

/// The server a run measures, as its manifest records it.
fn server_under_test(setup: &Setup) -> ServerUnderTest {
    let program = match (setup.url.as_slice(), &setup.server_bin) {
        ([], Some(path)) => path.display().to_string(),
        ([], None) => "embedded".to_owned(),
        (urls, _) => urls.join(", "),
    };
    ServerUnderTest {
        program,
        args: setup.server_args.clone(),
    }
}

/// Runs each scenario of `plan`, `--repeat` times round after round,
/// shown live as `record.live` asks, writes every report, compares with
/// the baseline, stores the runs in the history and prints the table.
///
/// # Errors
///
/// The baseline cannot be found, results cannot be written, a run could
/// not be made (the others are still reported), the dashboard or the
/// samples file cannot be made or written, or `cancel`.
pub async fn measure(
    plan: &[Scenario],
    setup: &Setup,
    record: &Record,
    cancel: &CancellationToken,
) -> anyhow::Result<Outcome> {
    let live = Live::start(&record.live).await?;
    let outcome = measure_live(plan, setup, record, &live, cancel).await;
    live.finish(outcome.as_ref().err(), cancel).await?;
    outcome
}

/// [`measure`], each run shown on `live`.
async fn measure_live(
    plan: &[Scenario],
    setup: &Setup,
    record: &Record,
    live: &Live,
    cancel: &CancellationToken,
) -> anyhow::Result<Outcome> {
    raise_file_limit();
    // A baseline that cannot be found is a mistake to report before measuring.
    let baseline = match &record.baseline {
        Some(reference) => Some(baseline::resolve(reference, &record.history).await?),
        None => None,
    };
    let run_id = run_id();
    let out = record
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
            let dir = out.join(run_dir(
                name,
                transport,
                plan.len() == 1,
                record.repeat > 1,
                repeat,
            ));
            let context = Context {
                run_id: run_id.clone(),
                environment: Arc::clone(&environment),
                server: server_under_test(setup),
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
            let label = RunLabel {
                run_id: run_id.clone(),
                scenario: name.clone(),
                transport,
                repeat,
            };
            let measured =
                run_scenario(scenario, setup, &http, &dir, context, live, label, cancel).await;
            let measurement = match measured {
                Ok(measurement) => measurement,
                Err(e) => {
                    not_run.note(name, transport, &e);
                    continue;
                }
            };
            live.verdict(&measurement.summary);
            files::write_run(&dir, &measurement.summary)?;
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
        capacity: analysis::capacity::estimate(&summaries),
        groups,
        environment,
    };
    live.judged(&report);
    files::write_report(&out, &report)?;
    if record.store {
        store(&record.history, &report, &stats).await;
    }
    print(&table::render(&summaries));
    let breakdowns = table::render_breakdowns(&summaries);
    if !breakdowns.is_empty() {
        print(&breakdowns);
    }
    for summary in &summaries {
        for bound in &summary.bounded_by {
            print(&format!(
                "bounded by the load generator: {} ({}): {bound}",
                summary.scenario, summary.transport
            ));
        }
        for agent in &summary.agents {
            for bound in &agent.bounded_by {
                print(&format!("bounded by agent {}: {bound}", agent.address));
            }
        }
        if let Some(note) = text::auth_note(summary) {
            print(&format!(
                "{} ({}): {note}",
                summary.scenario, summary.transport
            ));
        }
    }
    print(&text::verdict_lines(&report));
    for (what, why) in &not_run.skipped {
        print(&format!("skipped {what}: {why}"));
    }
    print(&format!("results: {}", out.display()));
    anyhow::ensure!(
        !cancel.is_cancelled(),
        "interrupted; partial results in {}",
        out.display()
    );
    let incomplete = (summaries.iter())
        .filter(|s| s.incomplete)
        .flat_map(|s| s.agents.iter().filter_map(|a| Some((a, a.lost.as_ref()?))))
        .map(|(agent, lost)| {
            format!(
                "agent {} lost {:.1} s in: {}",
                agent.address, lost.at_s, lost.why
            )
        })
        .collect::<Vec<_>>();
    anyhow::ensure!(
        incomplete.is_empty(),
        "the run is incomplete ({}); what was measured is in {}",
        incomplete.join("; "),
        out.display()
    );
    if plan.len() == 1 && record.repeat == 1 {
        anyhow::ensure!(
            not_run.failed.is_empty(),
            "the run could not be made: {}",
            not_run.failed.join("\n")
        );
    }
    anyhow::ensure!(
        not_run.failed.is_empty(),
        "{} of the suite's runs could not be made (the others' results are in {}):\n{}",
        not_run.failed.len(),
        out.display(),
        not_run.failed.join("\n")
    );
    let passed = report.verdict().passed();
    Ok(Outcome {
        passed,
        inconclusive: passed
            && report.groups.iter().any(|g| {
                g.comparison()
                    .is_some_and(|c| c.verdict == GateVerdict::Inconclusive)
            }),
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
fn judge_against(groups: &mut [Group], baseline: &Runs) {
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
        let comparison = comparison::compare(&now, &before, &baseline.what);
        for summary in &mut group.runs {
            summary.comparison = Some(comparison.clone());
            verdict::judge(summary);
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
