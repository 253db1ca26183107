//! `summary.json`'s `comparison`: each key figure beside a baseline's, and
//! the decision; and the gate's three-way [`GateVerdict`], which `ab.json`
//! shares. Making the comparison is `analysis::compare`.

use serde::Serialize;

/// What the gate says of a figure, or of all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GateVerdict {
    /// The confidence interval is wholly beyond the budget, the worse way.
    Regression,
    /// The confidence interval is wholly within the budget (an improvement
    /// is a flavour of it).
    NoRegression,
    /// Anything else: not enough evidence either way.
    Inconclusive,
}

impl GateVerdict {
    /// The verdict over figures with `verdicts`: a regression wins, then
    /// an undecided figure; no regression when every figure is decided so.
    pub fn of(verdicts: impl IntoIterator<Item = GateVerdict>) -> GateVerdict {
        verdicts
            .into_iter()
            .fold(GateVerdict::NoRegression, |all, one| match (all, one) {
                (GateVerdict::Regression, _) | (_, GateVerdict::Regression) => {
                    GateVerdict::Regression
                }
                (GateVerdict::Inconclusive, _) | (_, GateVerdict::Inconclusive) => {
                    GateVerdict::Inconclusive
                }
                _ => GateVerdict::NoRegression,
            })
    }

    /// The words reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            GateVerdict::Regression => "REGRESSION",
            GateVerdict::NoRegression => "no regression",
            GateVerdict::Inconclusive => "INCONCLUSIVE",
        }
    }
}

/// How many more rounds (or runs per side) the observed variance suggests
/// for a decision, in words, `unit` being plural (`rounds`, `runs`):
/// `rounds` is `None` for no finite number (the estimate sits on the
/// budget's edge).
pub fn rounds_text(rounds: Option<u64>, unit: &str) -> String {
    match rounds {
        Some(1) => format!("1 more {}", unit.trim_end_matches('s')),
        Some(n) => format!("{n} more {unit}"),
        None => format!("no finite number of {unit}"),
    }
}

/// The most rounds any of `suggestions` (undecided figures') asks for:
/// `None` when one asks for no finite number, `Some(0)` when there is none.
pub fn most_rounds(suggestions: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    suggestions
        .into_iter()
        .try_fold(0, |most, one| one.map(|n| most.max(n)))
}

/// The most rounds the undecided figures among `figures` (each its
/// verdict and the rounds it suggests) suggest for a decision.
pub fn rounds_needed(
    figures: impl IntoIterator<Item = (Option<GateVerdict>, Option<u64>)>,
) -> Option<u64> {
    most_rounds(
        (figures.into_iter())
            .filter(|(verdict, _)| *verdict == Some(GateVerdict::Inconclusive))
            .map(|(_, rounds)| rounds),
    )
}

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
    /// Repeated runs on both sides, and the confidence interval neither
    /// wholly within nor wholly beyond the budget: repeat more to decide.
    Inconclusive,
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
            Status::Inconclusive => "inconclusive",
            Status::NotMeasured => "not measured",
        }
    }

    /// The gate's verdict (`None`: not measured): within noise, unsure and
    /// inconclusive are all undecided.
    pub fn verdict(self) -> Option<GateVerdict> {
        match self {
            Status::Regression => Some(GateVerdict::Regression),
            Status::Unchanged | Status::Improved => Some(GateVerdict::NoRegression),
            Status::WithinNoise | Status::Unsure | Status::Inconclusive => {
                Some(GateVerdict::Inconclusive)
            }
            Status::NotMeasured => None,
        }
    }
}

/// One figure compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The figure's key (a threshold metric name), with its scope in
    /// braces for a phase or a node: `latency.p99{phase=steady}`.
    pub figure: String,
    /// For people.
    pub label: String,
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
    /// When both sides were repeated: the confidence interval (Welch's, at
    /// the comparison's `confidence`) of current / baseline (geometric
    /// means), or of current − baseline for an absolute budget.
    pub ci: Option<[f64; 2]>,
    /// The budget, as people read it (`-5%`, `+20%`, `+0.005`).
    pub budget: String,
    /// The decision.
    pub status: Status,
    /// The gate's verdict (`null`: not measured).
    pub verdict: Option<GateVerdict>,
    /// How many more runs on each side the observed variance suggests for
    /// a decision: 0 when decided; `null` when not measured, when no finite
    /// number would do (the estimate on the budget's edge), or when a side
    /// has a single run (nothing to estimate the variance from).
    pub rounds_suggested: Option<u64>,
}

impl Change {
    /// The decision in words, with the runs suggested when undecided.
    pub fn decision_text(&self) -> String {
        if self.verdict != Some(GateVerdict::Inconclusive) {
            return self.status.as_str().to_owned();
        }
        let more = match (self.rounds_suggested, self.p_value) {
            (None, None) => "repeat both sides (--repeat 3) to test".to_owned(),
            (rounds, _) => format!("{} per side suggested", rounds_text(rounds, "runs")),
        };
        format!("{}: {more}", self.status.as_str())
    }
}

/// A scenario compared with its baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// What the baseline is (a run id, a path, a label).
    pub baseline: String,
    /// How the decision was made, in a sentence.
    pub method: String,
    /// The confidence level of each interval, when both sides were
    /// repeated.
    pub confidence: Option<f64>,
    /// Each key figure.
    pub changes: Vec<Change>,
    /// Some figure regressed beyond its budget and the noise.
    pub regressed: bool,
    /// The gate's verdict over every figure measured.
    pub verdict: GateVerdict,
    /// The most runs per side any undecided figure suggests (0: all
    /// decided; `null`: no finite number, or single runs).
    pub rounds_suggested: Option<u64>,
}

impl Comparison {
    /// Whether some figure is undecided: worse beyond its budget with its
    /// noise unknown ([`Status::Unsure`]) or within the noise, or its
    /// interval inconclusive. The run then passes with a warning.
    pub fn unsure(&self) -> bool {
        self.verdict == GateVerdict::Inconclusive
    }

    /// What an inconclusive comparison needs for a decision, in words.
    pub fn needs_text(&self) -> String {
        match (self.rounds_suggested, self.confidence) {
            (None, None) => "repeat both sides (--repeat 3) to test".to_owned(),
            (rounds, _) => format!(
                "{} per side suggested for a decision",
                rounds_text(rounds, "runs")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regression_wins_then_an_undecided_figure() {
        use GateVerdict::{Inconclusive, NoRegression, Regression};
        assert_eq!(GateVerdict::of([NoRegression, Inconclusive]), Inconclusive);
        assert_eq!(GateVerdict::of([Inconclusive, Regression]), Regression);
        assert_eq!(GateVerdict::of([NoRegression; 3]), NoRegression);
        assert_eq!(GateVerdict::of([]), NoRegression);
        assert_eq!(most_rounds([Some(3), Some(7)]), Some(7));
        assert_eq!(most_rounds([Some(3), None]), None);
        assert_eq!(most_rounds([]), Some(0));
        assert_eq!(rounds_text(None, "rounds"), "no finite number of rounds");
        assert_eq!(rounds_text(Some(1), "runs"), "1 more run");
        assert_eq!(rounds_text(Some(2), "runs"), "2 more runs");
    }
}
