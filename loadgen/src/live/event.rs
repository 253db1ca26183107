//! The events of the live view, as the dashboard's SSE stream sends them
//! (`event:` its [`Kind`], `data:` its JSON) and as the samples file writes
//! its lines: a run starts, a timeline row (a sample), a phase begins, a
//! run's verdict, the invocation is done. Only the shapes and their JSON
//! live here; docs/cli.md lists them.

use serde::Serialize;

use crate::metrics::timeline::{Aborted, Row};
use crate::scenario::Scenario;
use crate::summary::Summary;
use crate::summary::verdict::{ThresholdResult, Verdict};

/// Which run of an invocation an event is about: a suite's runs share
/// its id and differ by scenario, transport and repetition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunLabel {
    /// The invocation's id (its results directory's name by default).
    pub run_id: String,
    /// The scenario's name.
    pub scenario: String,
    /// `sse`, `ws` or `mixed`.
    pub transport: &'static str,
    /// The repetition, from 1 (`--repeat`).
    pub repeat: u32,
}

/// The kind of an event: its SSE `event:` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A run starts ([`Started`]).
    Run,
    /// A timeline row ([`Sample`]).
    Sample,
    /// A phase begins ([`PhaseBegins`]).
    Phase,
    /// A run's verdict ([`RunVerdict`]).
    Verdict,
    /// The invocation is done ([`Done`]).
    Done,
}

impl Kind {
    /// The SSE `event:` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Run => "run",
            Kind::Sample => "sample",
            Kind::Phase => "phase",
            Kind::Verdict => "verdict",
            Kind::Done => "done",
        }
    }
}

/// One event: its kind and its JSON, serialized once.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its kind.
    pub kind: Kind,
    /// Its JSON, on one line.
    pub data: String,
}

impl Event {
    /// An event of `kind` carrying `payload`.
    pub fn of(kind: Kind, payload: &impl Serialize) -> Self {
        Self {
            kind,
            data: serde_json::to_string(payload).expect("a live event serializes"),
        }
    }
}

/// A phase as the scenario plans it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedPhase {
    /// Its name.
    pub name: String,
    /// When it starts, s into the run.
    pub start_s: f64,
    /// How long it lasts, s.
    pub duration_s: f64,
}

/// A run starts: which, and its planned phases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Started {
    /// Which run.
    #[serde(flatten)]
    pub run: RunLabel,
    /// How long it is planned to last, s.
    pub duration_s: f64,
    /// Its phases, in order.
    pub phases: Vec<PlannedPhase>,
}

impl Started {
    /// The start of `run`, of `scenario`.
    pub fn of(run: RunLabel, scenario: &Scenario) -> Self {
        let mut start_s = 0.0;
        let phases = (scenario.phases.iter())
            .map(|phase| {
                let planned = PlannedPhase {
                    name: phase.name.clone(),
                    start_s,
                    duration_s: phase.duration.as_secs_f64(),
                };
                start_s += planned.duration_s;
                planned
            })
            .collect();
        Self {
            run,
            duration_s: scenario.duration().as_secs_f64(),
            phases,
        }
    }
}

/// One timeline row of a run: the row's own fields (docs/loadgen.md's
/// timeline) beside the run's. The samples file's lines are these.
#[derive(Debug, Serialize)]
pub struct Sample<'a> {
    /// Which run.
    #[serde(flatten)]
    pub run: &'a RunLabel,
    /// The row.
    #[serde(flatten)]
    pub row: &'a Row,
}

/// A phase begins, as the rows show it.
#[derive(Debug, Serialize)]
pub struct PhaseBegins<'a> {
    /// Which run.
    #[serde(flatten)]
    pub run: &'a RunLabel,
    /// The phase.
    pub phase: &'a str,
    /// When it began, s into the run.
    pub t_s: f64,
}

/// A run's verdict, and the thresholds that broke.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunVerdict {
    /// Which run.
    #[serde(flatten)]
    pub run: RunLabel,
    /// `pass`, `warn` or `fail`.
    pub verdict: Verdict,
    /// The thresholds that did not hold, as `summary.json` has them.
    pub broken: Vec<ThresholdResult>,
    /// Set when an `abort:` threshold stopped the run, as `summary.json`
    /// has it.
    pub aborted: Option<Aborted>,
}

impl RunVerdict {
    /// The verdict of the run `summary` describes.
    pub fn of(summary: &Summary) -> Self {
        Self {
            run: RunLabel {
                run_id: summary.run_id.clone(),
                scenario: summary.scenario.clone(),
                transport: summary.transport,
                repeat: summary.repeat,
            },
            verdict: summary.verdict,
            broken: (summary.thresholds.iter())
                .filter(|t| !t.ok)
                .cloned()
                .collect(),
            aborted: summary.aborted.clone(),
        }
    }
}

/// The invocation is done: its verdict and each run's, judged against
/// the baseline if there was one, or the error that stopped it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Done {
    /// The worst verdict of its runs (`null` when it failed).
    pub verdict: Option<Verdict>,
    /// Each run's verdict.
    pub runs: Vec<RunVerdict>,
    /// Why the invocation could not be made, if it could not.
    pub error: Option<String>,
    /// Whether the dashboard stays up until Ctrl-C (`--dashboard-hold`).
    pub held: bool,
}
