//! The verdict of a run and each threshold's outcome, as `summary.json`
//! holds them. Deciding them is `analysis::verdict`.

use serde::Serialize;

use crate::scenario::Severity;

/// Pass, pass with warnings, or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Everything held.
    Pass,
    /// Every critical threshold and budget held; a warning broke.
    Warn,
    /// A critical threshold or a regression budget broke.
    Fail,
}

impl Verdict {
    /// The verdict of threshold results and whether a regression was found.
    pub fn of(thresholds: &[ThresholdResult], regressed: bool) -> Self {
        let broke = |severity| thresholds.iter().any(|t| !t.ok && t.severity == severity);
        if regressed || broke(Severity::Critical) {
            Verdict::Fail
        } else if broke(Severity::Warning) {
            Verdict::Warn
        } else {
            Verdict::Pass
        }
    }

    /// Whether the run passes (exit code 0).
    pub fn passed(self) -> bool {
        self != Verdict::Fail
    }

    /// The word reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "pass with warnings",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One threshold's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdResult {
    /// The expression, without its severity prefix.
    pub expr: String,
    /// The metric it reads.
    pub metric: &'static str,
    /// The measured value, in the metric's unit (`null`: not measured).
    pub value: Option<f64>,
    /// Whether it held (a metric not measured does not hold).
    pub ok: bool,
    /// `critical` or `warning`.
    pub severity: Severity,
    /// A default budget rather than one the user gave.
    pub default: bool,
    /// An `abort:` threshold, checked during the run.
    pub abort: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_do_not_fail_and_regressions_do() {
        let result = |severity, ok| ThresholdResult {
            expr: "gaps==0".to_owned(),
            metric: "gaps",
            value: Some(0.0),
            ok,
            severity,
            default: false,
            abort: false,
        };
        let warned = [
            result(Severity::Critical, true),
            result(Severity::Warning, false),
        ];
        assert_eq!(Verdict::of(&warned, false), Verdict::Warn);
        assert!(Verdict::of(&warned, false).passed());
        assert_eq!(Verdict::of(&warned, true), Verdict::Fail);
        let broke = [result(Severity::Critical, false)];
        assert_eq!(Verdict::of(&broke, false), Verdict::Fail);
        assert_eq!(Verdict::of(&[], false), Verdict::Pass);
    }
}
