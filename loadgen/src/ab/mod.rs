//! The merge gate: `ab` measures the same scenario against two server
//! builds (the base, say the merge base, and the change), alternately,
//! round after round on the same machine, so the machine's drift falls on
//! both alike, and decides with a paired test.
//!
//! # How the decision is made
//!
//! Rounds alternate the order (base then change, then change then base,
//! …), each run on a fresh server. For each key figure (the figures and
//! budgets of [`compare`](crate::analysis::compare)), the rounds' pairs go through a
//! two-sided paired t-test ([`stats`](crate::analysis::stats)) on the log of the ratio change/base
//! (on the difference for the error rate), Bonferroni-corrected for the
//! number of figures tested: each at `alpha / K`, with its confidence
//! interval at `1 − alpha / K`. A figure **regressed** when the difference
//! is significant, goes the worse way, and the ratio is beyond the figure's
//! budget. The gate fails on a regression, or when the change breaks a
//! critical threshold.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::analysis::compare::{Better, Budget, FIGURES, Figure, budget_text};
use crate::local_server::ServerProgram;
use crate::report::files;
use crate::report::text::display;
use crate::run::{self, Setup};
use crate::runner::worker::WorkerCount;
use crate::scenario::{Scenario, Severity};
use crate::summary::manifest::{Environment, ServerUnderTest};
use crate::summary::{Context, Summary};

pub mod build;
pub mod render;

use self::build::{Build, Builder, Ready};
use crate::analysis::stats::{Paired, Scale, paired};

/// What `ab` runs: the scenario, the two builds and their arguments, the
/// rounds and the level of the tests, where builds and results go.
#[derive(Debug, Clone)]
pub struct Options {
    /// The scenario, validated.
    pub scenario: Scenario,
    /// The base build (say the merge base).
    pub base: Build,
    /// The change.
    pub change: Build,
    /// Extra arguments for the base's server.
    pub base_args: Vec<String>,
    /// Extra arguments for the change's server.
    pub change_args: Vec<String>,
    /// Rounds; each runs the scenario once on each side.
    pub rounds: u32,
    /// Family-wise significance level of the paired tests.
    pub alpha: f64,
    /// The cargo profile git builds use.
    pub cargo_profile: String,
    /// Where git builds, their worktrees and binaries go.
    pub build_dir: PathBuf,
    /// Where results go [default: `streamgauge-results/RUN-ID`].
    pub out: Option<PathBuf>,
    /// Bearer token sent with publishes, seeds and subscriptions.
    pub token: Option<String>,
}

/// One of the two builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    /// `base` or `change`.
    pub name: &'static str,
    /// The build as given (`embedded`, a path, `git:REF`).
    pub build: String,
    /// Its commit, for a git build.
    pub commit: Option<String>,
    /// Extra server arguments.
    pub args: Vec<String>,
}

/// What the test says of one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Significantly worse, beyond the budget.
    Regression,
    /// Significantly better, beyond the budget.
    Improvement,
    /// Significantly different, within the budget.
    WithinBudget,
    /// Not significantly different.
    NoSignificantDifference,
    /// Not measured in every round on both sides.
    NotMeasured,
}

impl Decision {
    /// The words reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Regression => "REGRESSION",
            Decision::Improvement => "improvement",
            Decision::WithinBudget => "different, within budget",
            Decision::NoSignificantDifference => "no significant difference",
            Decision::NotMeasured => "not measured",
        }
    }
}

/// One figure tested.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FigureTest {
    /// The figure's key (a threshold metric name).
    pub figure: &'static str,
    /// For people.
    pub label: &'static str,
    /// Its unit.
    pub unit: &'static str,
    /// Its value per round, base.
    pub base: Vec<f64>,
    /// Its value per round, change.
    pub change: Vec<f64>,
    /// `ratio` (change / base) or `difference` (change − base).
    pub scale: &'static str,
    /// The ratio or difference.
    pub estimate: Option<f64>,
    /// Its confidence interval.
    pub ci: Option<[f64; 2]>,
    /// The two-sided p-value.
    pub p_value: Option<f64>,
    /// The budget.
    pub budget: String,
    /// The decision.
    pub decision: Decision,
}

/// The outcome of an A/B comparison: `ab.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbReport {
    /// This invocation's id.
    pub run_id: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// The scenario.
    pub scenario: String,
    /// `sse` or `ws`.
    pub transport: &'static str,
    /// The base build.
    pub base: Side,
    /// The change.
    pub change: Side,
    /// Which side ran first in each round.
    pub order: Vec<String>,
    /// The family-wise significance level.
    pub alpha: f64,
    /// The confidence level of each interval (Bonferroni-corrected).
    pub confidence: f64,
    /// How the decision was made.
    pub method: String,
    /// Each figure.
    pub figures: Vec<FigureTest>,
    /// Critical thresholds the change broke, one line each.
    pub broken: Vec<String>,
    /// Some figure regressed.
    pub regressed: bool,
    /// Nothing regressed and the change held its critical thresholds.
    pub passed: bool,
    /// Versions, machine and limits.
    pub environment: Arc<Environment>,
}

/// The decision on `figure` from its paired test at level `alpha`.
fn decide(figure: &Figure, test: Paired, alpha: f64) -> Decision {
    let (neutral, budget) = match figure.budget {
        Budget::Relative(fraction) => (1.0, fraction),
        Budget::Absolute(amount) => (0.0, amount),
    };
    let worse = match figure.better {
        Better::Higher => test.estimate < neutral,
        Better::Lower => test.estimate > neutral,
    };
    let beyond = (test.estimate - neutral).abs() > budget;
    match (test.p_value < alpha, worse, beyond) {
        (false, _, _) => Decision::NoSignificantDifference,
        (true, _, false) => Decision::WithinBudget,
        (true, true, true) => Decision::Regression,
        (true, false, true) => Decision::Improvement,
    }
}

/// Tests every figure over the rounds (`base[i]`, `change[i]`), with
/// Bonferroni's correction at family-wise level `alpha`; also returns the
/// confidence level used.
pub fn analyse(base: &[Value], change: &[Value], alpha: f64) -> (Vec<FigureTest>, f64) {
    let measured: Vec<(&Figure, Vec<f64>, Vec<f64>)> = FIGURES
        .iter()
        .filter_map(|f| Some((f, f.values(base)?, f.values(change)?)))
        .collect();
    let testable = measured
        .iter()
        .filter(|(f, a, b)| paired(a, b, f.scale(), alpha).is_some())
        .count()
        .max(1);
    let level = alpha / testable as f64;
    let tests = FIGURES
        .iter()
        .map(|figure| {
            let found = measured.iter().find(|(f, _, _)| f.key == figure.key);
            let (a, b) = found.map_or((Vec::new(), Vec::new()), |(_, a, b)| (a.clone(), b.clone()));
            let test = paired(&a, &b, figure.scale(), level);
            FigureTest {
                figure: figure.key,
                label: figure.label,
                unit: figure.unit,
                scale: match figure.scale() {
                    Scale::Ratio => "ratio",
                    Scale::Difference => "difference",
                },
                estimate: test.map(|t| t.estimate),
                ci: test.map(|t| [t.low, t.high]),
                p_value: test.map(|t| t.p_value),
                budget: budget_text(figure),
                decision: test.map_or(Decision::NotMeasured, |t| decide(figure, t, level)),
                base: a,
                change: b,
            }
        })
        .collect();
    (tests, 1.0 - level)
}

/// Runs `scenario` once on one side.
async fn run_side(
    scenario: &Scenario,
    side: &Side,
    ready: &Ready,
    token: Option<&String>,
    dir: &Path,
    context: Context,
    cancel: &CancellationToken,
) -> anyhow::Result<Summary> {
    let setup = Setup {
        url: Vec::new(),
        server_bin: match &ready.program {
            ServerProgram::Embedded => None,
            ServerProgram::Binary(path) => Some(path.clone()),
        },
        server_args: side.args.clone(),
        workers: WorkerCount::Auto,
        token: token.cloned(),
    };
    let http = reqwest::Client::builder().no_proxy().build()?;
    let measurement = run::run_once(scenario, &setup, &http, dir, context, None, cancel).await?;
    files::write_run(dir, &measurement.summary)?;
    Ok(measurement.summary)
}

/// Critical thresholds the change's runs broke.
fn broken(runs: &[Summary]) -> Vec<String> {
    runs.iter()
        .flat_map(|s| {
            s.thresholds
                .iter()
                .filter(|t| !t.ok && t.severity == Severity::Critical)
                .map(move |t| {
                    format!(
                        "round {}: `{}` broke: measured {}",
                        s.repeat,
                        t.expr,
                        display(t.metric, t.value)
                    )
                })
        })
        .collect()
}

/// Runs the A/B comparison `options` ask for, writes `ab.json`, `report.md`
/// and `junit.xml`, prints the verdict, and says whether it passed.
///
/// # Errors
///
/// The scenario, a build, or a run could not be made; results could not
/// be written; or `cancel`.
pub async fn run(
    args: &Options,
    run_id: String,
    cancel: &CancellationToken,
) -> anyhow::Result<bool> {
    let scenario = &args.scenario;
    let builder = Builder {
        dir: args.build_dir.clone(),
        profile: args.cargo_profile.clone(),
    };
    let base_ready = builder.ready(&args.base, cancel).await?;
    let change_ready = builder.ready(&args.change, cancel).await?;
    let side = |name, build: &Build, ready: &Ready, extra: &[String]| Side {
        name,
        build: build.to_string(),
        commit: ready.commit.clone(),
        args: extra.to_vec(),
    };
    let base = side("base", &args.base, &base_ready, &args.base_args);
    let change = side("change", &args.change, &change_ready, &args.change_args);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("streamgauge-results").join(&run_id));
    let here = std::env::current_dir()?;
    let environment = Arc::new(Environment::detect(&here));
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut runs: [Vec<Summary>; 2] = [Vec::new(), Vec::new()];
    let mut order = Vec::new();
    for round in 1..=args.rounds {
        let sides = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        order.push(
            if round % 2 == 1 {
                "base, change"
            } else {
                "change, base"
            }
            .to_owned(),
        );
        for i in sides {
            let (side, ready) = if i == 0 {
                (&base, &base_ready)
            } else {
                (&change, &change_ready)
            };
            let context = Context {
                run_id: run_id.clone(),
                environment: Arc::clone(&environment),
                server: ServerUnderTest {
                    program: side.build.clone(),
                    args: side.args.clone(),
                },
                label: Some(side.name.to_owned()),
                repeat: round,
            };
            let dir = out.join(format!("round-{round}")).join(side.name);
            let summary = run_side(
                scenario,
                side,
                ready,
                args.token.as_ref(),
                &dir,
                context,
                cancel,
            )
            .await?;
            runs[i].push(summary);
            anyhow::ensure!(
                !cancel.is_cancelled(),
                "interrupted; partial results in {}",
                out.display()
            );
        }
    }
    let json = |runs: &[Summary]| -> Vec<Value> {
        runs.iter()
            .map(|s| serde_json::to_value(s).expect("a summary serializes"))
            .collect()
    };
    let (figures, confidence) = analyse(&json(&runs[0]), &json(&runs[1]), args.alpha);
    let broken = broken(&runs[1]);
    let regressed = figures.iter().any(|f| f.decision == Decision::Regression);
    let report = AbReport {
        run_id,
        started_at,
        scenario: scenario.name.clone(),
        transport: scenario.transport.as_str(),
        base,
        change,
        order,
        alpha: args.alpha,
        confidence,
        method: render::method(args.rounds, args.alpha, confidence),
        passed: !regressed && broken.is_empty(),
        regressed,
        figures,
        broken,
        environment,
    };
    render::write(&out, &report)?;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", render::markdown(&report));
        println!("results: {}", out.display());
    }
    Ok(report.passed)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn runs(p50: &[f64], events: &[f64]) -> Vec<Value> {
        p50.iter()
            .zip(events)
            .map(|(p50, events)| {
                json!({"latency_us": {"p50": p50, "p99": p50 * 3.0}, "events_per_s": events, "error_rate": 0.0})
            })
            .collect()
    }

    fn decision(tests: &[FigureTest], figure: &str) -> Decision {
        tests.iter().find(|t| t.figure == figure).unwrap().decision
    }

    #[test]
    fn a_slowed_change_regresses_and_the_same_build_does_not() {
        let base = runs(&[200.0, 220.0, 190.0, 210.0, 205.0, 215.0], &[1000.0; 6]);
        let slowed = runs(
            &[20_200.0, 20_300.0, 20_150.0, 20_250.0, 20_180.0, 20_400.0],
            &[1000.0; 6],
        );
        let (tests, confidence) = analyse(&base, &slowed, 0.05);
        assert_eq!(decision(&tests, "latency.p50"), Decision::Regression);
        assert_eq!(decision(&tests, "latency.p99"), Decision::Regression);
        assert_eq!(
            decision(&tests, "events_per_s"),
            Decision::NoSignificantDifference
        );
        assert_eq!(decision(&tests, "connect.p95"), Decision::NotMeasured);
        // Four figures tested (throughput, p50, p99, error rate): each at 0.05 / 4.
        assert!(
            (confidence - (1.0 - 0.05 / 4.0)).abs() < 1e-12,
            "{confidence}"
        );
        let p50 = tests.iter().find(|t| t.figure == "latency.p50").unwrap();
        let ratio = p50.estimate.unwrap();
        assert!((90.0..110.0).contains(&ratio), "{ratio}");
        let [low, high] = p50.ci.unwrap();
        assert!(low < ratio && ratio < high);

        let again = runs(&[210.0, 200.0, 215.0, 195.0, 220.0, 200.0], &[1000.0; 6]);
        let (tests, _) = analyse(&base, &again, 0.05);
        assert!(
            tests.iter().all(|t| t.decision != Decision::Regression),
            "{tests:?}"
        );
    }

    #[test]
    fn a_significant_change_within_budget_is_not_a_regression() {
        let base = runs(&[200.0; 4], &[1000.0, 1001.0, 999.0, 1000.0]);
        let change = runs(&[200.0; 4], &[990.0, 991.0, 989.0, 990.0]);
        let (tests, _) = analyse(&base, &change, 0.05);
        assert_eq!(decision(&tests, "events_per_s"), Decision::WithinBudget);
    }
}
