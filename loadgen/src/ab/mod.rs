//! The merge gate: `ab` measures the same scenario against two server
//! builds (the base, say the merge base, and the change), alternately,
//! round after round on the same machine, so the machine's drift falls on
//! both alike, and decides with a paired test.
//!
//! # How the decision is made
//!
//! Rounds alternate the order (base then change, then change then base,
//! …), each run on a fresh server. For each key figure (the figures and
//! budgets of [`figure`](crate::analysis::figure), whole and per phase and
//! node), the rounds' pairs give a paired t interval
//! ([`stats`](crate::analysis::stats)) of change / base (of the difference
//! for the error rate), Bonferroni-corrected over the `K` figures measured:
//! each is tested one-sided at `alpha / K`, so its interval is the two-sided
//! `1 − 2 alpha / K` one. Each figure gets the three-way decision of
//! [`gate`](crate::analysis::gate): **regression** (the interval wholly
//! beyond the budget the worse way), **no regression** (wholly within it;
//! reported as an **improvement** when also wholly better than no change,
//! as **within budget** otherwise) or **inconclusive**, with the rounds its
//! observed variance suggests. The gate fails on a regression or a broken
//! critical threshold, and is inconclusive when a figure is undecided.
//!
//! With `--rounds auto` the rounds go on until every figure is decided,
//! from [`MIN_AUTO_ROUNDS`] up to `--max-rounds`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::analysis::figure;
use crate::analysis::gate;
use crate::local_server::ServerProgram;
use crate::report::files;
use crate::report::text::display;
use crate::run::{self, Outcome, Setup};
use crate::runner::worker::WorkerCount;
use crate::scenario::{Scenario, Severity};
use crate::summary::comparison::{GateVerdict, rounds_needed};
use crate::summary::manifest::{Environment, ServerUnderTest};
use crate::summary::{Context, Summary};

pub mod build;
pub mod render;

use self::build::{Build, Builder, Ready};
use crate::analysis::stats::{Scale, paired};

/// The fewest rounds `--rounds auto` decides on: with two, the paired
/// interval has one degree of freedom and is too wide for any budget.
pub const MIN_AUTO_ROUNDS: u32 = 3;

/// How many rounds `ab` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounds {
    /// This many.
    Fixed(u32),
    /// Until every figure is decided, from [`MIN_AUTO_ROUNDS`] up to `max`.
    Auto {
        /// The most rounds.
        max: u32,
    },
}

impl Rounds {
    /// Whether another round is needed after `done` rounds; `verdicts`
    /// analyses those rounds (only when `auto` may stop).
    fn another(self, done: u32, verdicts: impl FnOnce() -> Vec<GateVerdict>) -> bool {
        match self {
            Rounds::Fixed(n) => done < n,
            Rounds::Auto { max } => {
                done < MIN_AUTO_ROUNDS || gate::keep_going(&verdicts(), done, MIN_AUTO_ROUNDS, max)
            }
        }
    }
}

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
    pub rounds: Rounds,
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
    /// The interval wholly beyond the budget, the worse way.
    Regression,
    /// No regression: the interval wholly better than no change.
    Improvement,
    /// No regression: the interval wholly within the budget.
    WithinBudget,
    /// The interval across the budget's edge and away from no change: not
    /// enough evidence.
    Inconclusive,
    /// The interval across the budget's edge and holding no change: not
    /// enough evidence either (inconclusive), under the name ab.json gave
    /// this case before the gate could say inconclusive.
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
            Decision::WithinBudget => "within budget",
            Decision::Inconclusive => "inconclusive",
            Decision::NoSignificantDifference => "inconclusive (no significant difference)",
            Decision::NotMeasured => "not measured",
        }
    }

    /// The gate's verdict (`None`: not measured).
    pub fn verdict(self) -> Option<GateVerdict> {
        match self {
            Decision::Regression => Some(GateVerdict::Regression),
            Decision::Improvement | Decision::WithinBudget => Some(GateVerdict::NoRegression),
            Decision::Inconclusive | Decision::NoSignificantDifference => {
                Some(GateVerdict::Inconclusive)
            }
            Decision::NotMeasured => None,
        }
    }
}

/// One figure tested.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FigureTest {
    /// The figure's key (a threshold metric name), with its scope in
    /// braces for a phase or a node: `latency.p99{phase=steady}`.
    pub figure: String,
    /// For people.
    pub label: String,
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
    /// Its confidence interval, at the report's `confidence`.
    pub ci: Option<[f64; 2]>,
    /// The two-sided p-value of "no difference".
    pub p_value: Option<f64>,
    /// The budget.
    pub budget: String,
    /// The decision.
    pub decision: Decision,
    /// The gate's verdict (`null`: not measured).
    pub verdict: Option<GateVerdict>,
    /// How many more rounds the observed variance suggests for a decision:
    /// 0 when decided; `null` when not measured or when no finite number
    /// would do (the estimate on the budget's edge).
    pub rounds_suggested: Option<u64>,
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
    /// With `--rounds auto`, the most rounds it could run (`null`: a fixed
    /// number of rounds).
    pub max_rounds: Option<u32>,
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
    /// The gate's verdict: `regression` (a figure regressed or the change
    /// broke a critical threshold), `inconclusive` (a figure undecided), or
    /// `no_regression`.
    pub verdict: GateVerdict,
    /// The most rounds any undecided figure suggests (0: all decided;
    /// `null`: no finite number).
    pub rounds_suggested: Option<u64>,
    /// The verdict is `no_regression`: nothing regressed, every figure was
    /// decided and the change held its critical thresholds.
    pub passed: bool,
    /// Versions, machine and limits.
    pub environment: Arc<Environment>,
}

/// The decision on `figure` from its gate decision.
fn decision(decided: gate::Decision) -> Decision {
    match decided.verdict {
        GateVerdict::Regression => Decision::Regression,
        GateVerdict::NoRegression if decided.improved => Decision::Improvement,
        GateVerdict::NoRegression => Decision::WithinBudget,
        GateVerdict::Inconclusive if decided.holds_no_change => Decision::NoSignificantDifference,
        GateVerdict::Inconclusive => Decision::Inconclusive,
    }
}

/// Tests every figure over the rounds (`base[i]`, `change[i]`), with
/// Bonferroni's correction at family-wise level `alpha`; also returns the
/// confidence level of the intervals.
pub fn analyse(base: &[Value], change: &[Value], alpha: f64) -> (Vec<FigureTest>, f64) {
    let found = figure::figures(change, base);
    let testable = found
        .iter()
        .filter(|(scoped, values)| {
            values
                .as_ref()
                .is_some_and(|(b, a)| paired(a, b, scoped.figure.scale(), alpha).is_some())
        })
        .count()
        .max(1);
    let level = alpha / testable as f64;
    let tests = found
        .into_iter()
        .map(|(scoped, values)| {
            let figure = scoped.figure;
            let (b, a) = values.unwrap_or_default();
            let test = paired(&a, &b, figure.scale(), gate::interval_alpha(level));
            let decided = test.map(|t| gate::decide(figure, &t, level, a.len()));
            let decision = decided.map_or(Decision::NotMeasured, decision);
            FigureTest {
                figure: scoped.name(),
                label: scoped.label(),
                unit: figure.unit,
                scale: match figure.scale() {
                    Scale::Ratio => "ratio",
                    Scale::Difference => "difference",
                },
                estimate: test.map(|t| t.estimate),
                ci: test.map(|t| [t.low, t.high]),
                p_value: test.map(|t| t.p_value),
                budget: figure.budget_text(),
                decision,
                verdict: decision.verdict(),
                rounds_suggested: decided.and_then(|d| d.rounds_suggested),
                base: a,
                change: b,
            }
        })
        .collect();
    (tests, gate::confidence(level))
}

/// The gate's verdict on `figures` and the change's `broken` thresholds,
/// and the most rounds an undecided figure suggests.
fn verdict(figures: &[FigureTest], broken: &[String]) -> (GateVerdict, Option<u64>) {
    let thresholds = (!broken.is_empty()).then_some(GateVerdict::Regression);
    let verdict = GateVerdict::of(figures.iter().filter_map(|f| f.verdict).chain(thresholds));
    let rounds = rounds_needed(figures.iter().map(|f| (f.verdict, f.rounds_suggested)));
    (verdict, rounds)
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
        agents: None,
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

/// The summaries' JSON, per side, that the figures are read from.
fn json(runs: &[Summary]) -> Vec<Value> {
    runs.iter()
        .map(|s| serde_json::to_value(s).expect("a summary serializes"))
        .collect()
}

/// Runs the A/B comparison `options` ask for, writes `ab.json`, `report.md`
/// and `junit.xml`, prints the verdict, and says how it ended: failed on a
/// regression, inconclusive when a figure is undecided.
///
/// # Errors
///
/// The scenario, a build, or a run could not be made; results could not
/// be written; or `cancel`.
pub async fn run(
    args: &Options,
    run_id: String,
    cancel: &CancellationToken,
) -> anyhow::Result<Outcome> {
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
    let sides = [
        (
            side("base", &args.base, &base_ready, &args.base_args),
            &base_ready,
        ),
        (
            side("change", &args.change, &change_ready, &args.change_args),
            &change_ready,
        ),
    ];
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("streamgauge-results").join(&run_id));
    let here = std::env::current_dir()?;
    let environment = Arc::new(Environment::detect(&here));
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut runs: [Vec<Summary>; 2] = [Vec::new(), Vec::new()];
    let mut order = Vec::new();
    let mut done = 0;
    while args.rounds.another(done, || {
        let (figures, _) = analyse(&json(&runs[0]), &json(&runs[1]), args.alpha);
        figures.iter().filter_map(|f| f.verdict).collect()
    }) {
        done += 1;
        let (first, words) = if done % 2 == 1 {
            ([0, 1], "base, change")
        } else {
            ([1, 0], "change, base")
        };
        order.push(words.to_owned());
        for i in first {
            let (side, ready) = &sides[i];
            let context = Context {
                run_id: run_id.clone(),
                environment: Arc::clone(&environment),
                server: ServerUnderTest {
                    program: side.build.clone(),
                    args: side.args.clone(),
                },
                label: Some(side.name.to_owned()),
                repeat: done,
            };
            let dir = out.join(format!("round-{done}")).join(side.name);
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
    let (figures, confidence) = analyse(&json(&runs[0]), &json(&runs[1]), args.alpha);
    let broken = broken(&runs[1]);
    let (verdict, rounds_suggested) = verdict(&figures, &broken);
    let [(base, _), (change, _)] = sides;
    let report = AbReport {
        run_id,
        started_at,
        scenario: scenario.name.clone(),
        transport: scenario.transport.as_str(),
        base,
        change,
        order,
        max_rounds: match args.rounds {
            Rounds::Fixed(_) => None,
            Rounds::Auto { max } => Some(max),
        },
        alpha: args.alpha,
        confidence,
        method: render::method(args.rounds, args.alpha, confidence),
        passed: verdict == GateVerdict::NoRegression,
        regressed: figures.iter().any(|f| f.decision == Decision::Regression),
        verdict,
        rounds_suggested,
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
    Ok(Outcome {
        passed: verdict != GateVerdict::Regression,
        inconclusive: verdict == GateVerdict::Inconclusive,
    })
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
        assert_eq!(decision(&tests, "events_per_s"), Decision::WithinBudget);
        assert_eq!(decision(&tests, "connect.p95"), Decision::NotMeasured);
        // Four figures tested (throughput, p50, p99, error rate): each
        // one-sided at 0.05 / 4, a two-sided interval at 1 − 2 × 0.05 / 4.
        assert!(
            (confidence - (1.0 - 0.1 / 4.0)).abs() < 1e-12,
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
    fn two_rounds_of_a_noisy_figure_are_inconclusive_with_the_rounds_they_need() {
        let base = runs(&[200.0, 210.0], &[1000.0, 1000.0]);
        let change = runs(&[190.0, 230.0], &[1000.0, 1000.0]);
        let (tests, _) = analyse(&base, &change, 0.05);
        let p50 = tests.iter().find(|t| t.figure == "latency.p50").unwrap();
        // Its interval holds no change: the name ab.json gave this before.
        assert_eq!(p50.decision, Decision::NoSignificantDifference);
        assert_eq!(p50.verdict, Some(GateVerdict::Inconclusive));
        assert!(p50.rounds_suggested.is_some_and(|n| n > 0), "{p50:?}");
        let (verdict, rounds) = verdict(&tests, &[]);
        assert_eq!(verdict, GateVerdict::Inconclusive);
        assert!(rounds >= p50.rounds_suggested, "{rounds:?}");
        // A broken critical threshold is a regression, whatever the figures.
        let (verdict, _) = self::verdict(&tests, &["round 1: broke".to_owned()]);
        assert_eq!(verdict, GateVerdict::Regression);
    }

    #[test]
    fn auto_rounds_reach_the_minimum_then_stop_when_decided() {
        let auto = Rounds::Auto { max: 5 };
        let undecided = || vec![GateVerdict::Inconclusive];
        let decided = || vec![GateVerdict::NoRegression];
        assert!(auto.another(2, || unreachable!("not analysed under the minimum")));
        assert!(auto.another(3, undecided));
        assert!(!auto.another(3, decided));
        assert!(!auto.another(5, undecided));
        assert!(Rounds::Fixed(2).another(1, undecided));
        assert!(!Rounds::Fixed(2).another(2, undecided));
    }

    #[test]
    fn a_significant_change_within_budget_is_not_a_regression() {
        let base = runs(&[200.0; 4], &[1000.0, 1001.0, 999.0, 1000.0]);
        let change = runs(&[200.0; 4], &[990.0, 991.0, 989.0, 990.0]);
        let (tests, _) = analyse(&base, &change, 0.05);
        assert_eq!(decision(&tests, "events_per_s"), Decision::WithinBudget);
    }
}
