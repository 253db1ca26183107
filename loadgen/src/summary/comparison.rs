//! `summary.json`'s `comparison`: each key figure beside a baseline's, and
//! the decision. Making the comparison is `analysis::compare`.

use serde::Serialize;

/// Where a side's noise band comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseSource {
    /// The range of repeated runs.
    Repeats,
    /// The interquartile range of one run's per-second values.
    Seconds,
    /// Not measurable (one run, no per-second values): taken as zero; a
    /// change beyond the budget with both sides unknown is
    /// [`Status::Unsure`].
    Unknown,
}

/// One side of a comparison for one figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// The median over runs.
    pub median: f64,
    /// The noise band's width, in the figure's unit.
    pub noise: f64,
    /// Where the noise band comes from.
    pub noise_from: NoiseSource,
    /// Runs measured.
    pub runs: usize,
}

/// The decision for one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Worse than the budget, beyond the noise.
    Regression,
    /// Worse than the budget, but within the noise.
    WithinNoise,
    /// Within the budget.
    Unchanged,
    /// Better by more than the budget, beyond the noise.
    Improved,
    /// Worse than the budget, but the noise is unknown on both sides (single
    /// runs, and a figure without per-second values): a warning, not a
    /// regression; repeat the runs to decide.
    Unsure,
    /// Missing on one side.
    NotMeasured,
}

impl Status {
    /// The words reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Regression => "REGRESSION",
            Status::WithinNoise => "within noise",
            Status::Unchanged => "unchanged",
            Status::Improved => "improved",
            Status::Unsure => "worse, noise unknown",
            Status::NotMeasured => "not measured",
        }
    }
}

/// One figure compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The figure's key (a threshold metric name).
    pub figure: &'static str,
    /// For people.
    pub label: &'static str,
    /// Its unit.
    pub unit: &'static str,
    /// The run measured now.
    pub current: Option<Estimate>,
    /// The baseline.
    pub baseline: Option<Estimate>,
    /// Change of the medians: % of the baseline, or for an absolute
    /// budget, the difference in the figure's unit.
    pub change: Option<f64>,
    /// Welch's p-value, when both sides were repeated.
    pub p_value: Option<f64>,
    /// The budget, as people read it (`-5%`, `+20%`, `+0.005`).
    pub budget: String,
    /// The decision.
    pub status: Status,
}

/// A scenario compared with its baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// What the baseline is (a run id, a path, a label).
    pub baseline: String,
    /// How the decision was made, in a sentence.
    pub method: String,
    /// Each key figure.
    pub changes: Vec<Change>,
    /// Some figure regressed beyond its budget and the noise.
    pub regressed: bool,
}

impl Comparison {
    /// Whether some figure moved the wrong way beyond its budget with its
    /// noise unknown ([`Status::Unsure`]).
    pub fn unsure(&self) -> bool {
        self.changes.iter().any(|c| c.status == Status::Unsure)
    }
}
