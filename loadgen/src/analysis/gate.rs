//! The gate's three-way decision on one figure, shared by `ab` (paired
//! rounds) and `compare` (repeated runs, Welch): the figure's confidence
//! interval of change / base (or change − base) against its budget.
//!
//! - **regression**: the interval lies wholly beyond the budget's edge, the
//!   worse way;
//! - **no regression**: the interval lies wholly on the good side of that
//!   edge. Budgets are one-sided (how far a figure may move the worse way),
//!   so this is the interval form of the equivalence test (TOST) with a
//!   one-sided margin, a non-inferiority test. When the interval is also
//!   wholly better than no change, the figure **improved**, a flavour of no
//!   regression;
//! - **inconclusive**: the interval straddles the edge.
//!
//! Each figure is tested at level `alpha / K` (Bonferroni over the `K`
//! figures measured), one-sided, so its interval is the two-sided
//! `1 − 2 alpha / K` interval. An undecided figure gets the rounds its
//! observed standard error suggests: the fewest `n'` at which the interval's
//! half-width would fit between the estimate and the edge.

use super::figure::{Better, Budget, Figure};
use super::stats::{Paired, half_width};
use crate::summary::comparison::GateVerdict;

/// The most rounds a suggestion may reach; beyond it, none is finite in
/// practice (a day of rounds).
const MAX_SUGGESTED: u64 = 100_000;

/// What the gate says of one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Regression, no regression or inconclusive.
    pub(crate) verdict: GateVerdict,
    /// No regression, and the interval wholly better than no change.
    pub(crate) improved: bool,
    /// The interval holds no change: the difference is not significant.
    pub(crate) holds_no_change: bool,
    /// More rounds suggested: 0 when decided, `None` for no finite number.
    pub(crate) rounds_suggested: Option<u64>,
}

/// The confidence level of a figure's interval when each is tested at
/// `level` (one-sided).
pub(crate) fn confidence(level: f64) -> f64 {
    1.0 - 2.0 * level
}

/// The two-sided alpha to compute a figure's interval at when it is tested
/// at `level` (one-sided).
pub(crate) fn interval_alpha(level: f64) -> f64 {
    2.0 * level
}

/// The budget's edge on the test's scale, oriented so that worse is
/// positive: `ln(1 + budget)` for a ratio whose higher values are worse.
fn worse_edge(figure: &Figure) -> f64 {
    match (figure.budget, figure.better) {
        (Budget::Relative(fraction), Better::Lower) => (1.0 + fraction).ln(),
        (Budget::Relative(fraction), Better::Higher) => -(1.0 - fraction).ln(),
        (Budget::Absolute(amount), _) => amount,
    }
}

/// +1 when higher values are worse, −1 when they are better.
fn worse_sign(figure: &Figure) -> f64 {
    match figure.better {
        Better::Lower => 1.0,
        Better::Higher => -1.0,
    }
}

/// Decides `figure` from `test` (over `rounds` rounds, or runs per side),
/// tested one-sided at `level`.
pub(crate) fn decide(figure: &Figure, test: &Paired, level: f64, rounds: usize) -> Decision {
    let edge = worse_edge(figure);
    let center = worse_sign(figure) * test.center;
    let half = half_width(test.error, test.freedom, interval_alpha(level));
    let verdict = if center - half > edge {
        GateVerdict::Regression
    } else if center + half <= edge {
        GateVerdict::NoRegression
    } else {
        GateVerdict::Inconclusive
    };
    Decision {
        verdict,
        improved: verdict == GateVerdict::NoRegression && center + half < 0.0,
        holds_no_change: center - half <= 0.0 && 0.0 <= center + half,
        rounds_suggested: match verdict {
            GateVerdict::Inconclusive => more_rounds((edge - center).abs(), test, level, rounds),
            _ => Some(0),
        },
    }
}

/// The fewest more rounds after which the interval's half-width, with the
/// standard error shrinking as `1/√n` and the degrees of freedom growing
/// with the rounds, falls below `distance`; `None` when none would.
fn more_rounds(distance: f64, test: &Paired, level: f64, rounds: usize) -> Option<u64> {
    let n = rounds as f64;
    let fits = |more: u64| {
        let total = n + more as f64;
        let error = test.error * (n / total).sqrt();
        let freedom = test.freedom * (total - 1.0) / (n - 1.0).max(1.0);
        half_width(error, freedom, interval_alpha(level)) < distance
    };
    if distance <= 0.0 || !fits(MAX_SUGGESTED) {
        return None;
    }
    // The half-width shrinks with every round: bisect for the first that fits.
    let (mut low, mut high) = (0, MAX_SUGGESTED);
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if fits(middle) {
            high = middle;
        } else {
            low = middle;
        }
    }
    Some(high)
}

/// Whether more rounds may still decide: stop `--rounds auto` when every
/// figure is decided, or `rounds` has reached `max`; never before `min`.
pub(crate) fn keep_going(verdicts: &[GateVerdict], rounds: u32, min: u32, max: u32) -> bool {
    rounds < min || (rounds < max && verdicts.contains(&GateVerdict::Inconclusive))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::figure::FIGURES;
    use crate::analysis::stats::{Scale, paired};

    fn figure(key: &str) -> &'static Figure {
        FIGURES.iter().find(|f| f.key == key).unwrap()
    }

    /// Rounds of base 100 and the change at `ratios` of it.
    fn test(ratios: &[f64]) -> Paired {
        let base = vec![100.0; ratios.len()];
        let change: Vec<f64> = ratios.iter().map(|r| 100.0 * r).collect();
        paired(&base, &change, Scale::Ratio, interval_alpha(0.01)).unwrap()
    }

    #[test]
    fn an_interval_wholly_inside_beyond_or_across_the_budget() {
        // latency p50: +10 %.
        let p50 = figure("latency.p50");
        let inside = decide(p50, &test(&[1.01, 0.99, 1.02, 1.0, 1.01, 0.995]), 0.01, 6);
        assert_eq!(inside.verdict, GateVerdict::NoRegression, "{inside:?}");
        assert!(!inside.improved);
        assert_eq!(inside.rounds_suggested, Some(0));
        let beyond = decide(p50, &test(&[1.5, 1.6, 1.55, 1.52]), 0.01, 4);
        assert_eq!(beyond.verdict, GateVerdict::Regression, "{beyond:?}");
        let across = decide(p50, &test(&[1.0, 1.2, 0.95, 1.25]), 0.01, 4);
        assert_eq!(across.verdict, GateVerdict::Inconclusive, "{across:?}");
        assert!(across.rounds_suggested.is_some_and(|n| n > 0), "{across:?}");
        let better = decide(p50, &test(&[0.5, 0.52, 0.49, 0.51]), 0.01, 4);
        assert_eq!(
            (better.verdict, better.improved),
            (GateVerdict::NoRegression, true)
        );
        // Throughput: higher is better, so a drop beyond 5 % regresses.
        let events = figure("events_per_s");
        let drop = decide(events, &test(&[0.8, 0.81, 0.79, 0.8]), 0.01, 4);
        assert_eq!(drop.verdict, GateVerdict::Regression, "{drop:?}");
        let rise = decide(events, &test(&[1.2, 1.21, 1.19, 1.2]), 0.01, 4);
        assert!(rise.improved, "{rise:?}");
    }

    #[test]
    fn the_rounds_suggested_fit_the_interval_between_estimate_and_edge() {
        // Differences on an absolute budget of 0.005: mean 0.002, sd 0.004,
        // 4 rounds: se 0.002, distance to the edge 0.003.
        let rate = figure("error_rate");
        let spread = 0.004 * 1.5_f64.sqrt();
        let test = paired(
            &[0.0; 4],
            &[0.002 + spread, 0.002 - spread, 0.002, 0.002],
            Scale::Difference,
            interval_alpha(0.01),
        )
        .unwrap();
        let decision = decide(rate, &test, 0.01, 4);
        assert_eq!(decision.verdict, GateVerdict::Inconclusive, "{decision:?}");
        let more = decision.rounds_suggested.unwrap();
        let fits = |total: f64| {
            half_width(
                test.error * (4.0 / total).sqrt(),
                total - 1.0,
                interval_alpha(0.01),
            ) < 0.003
        };
        let total = 4.0 + more as f64;
        assert!(fits(total) && !fits(total - 1.0), "{more}");
        // z ≈ 2.33 asks (2.33 × 0.004 / 0.003)² ≈ 9.6 rounds in all, t about 13.
        assert!((6..=12).contains(&more), "{more}");
        // An estimate on the edge: no number of rounds decides.
        let on_edge = paired(
            &[0.0; 3],
            &[0.004, 0.005, 0.006],
            Scale::Difference,
            interval_alpha(0.01),
        )
        .unwrap();
        let decision = decide(rate, &on_edge, 0.01, 3);
        assert_eq!(decision.verdict, GateVerdict::Inconclusive);
        assert_eq!(decision.rounds_suggested, None);
    }

    #[test]
    fn auto_rounds_stop_once_every_figure_is_decided_or_at_the_maximum() {
        use GateVerdict::{Inconclusive, NoRegression, Regression};
        let decided = [NoRegression, Regression];
        let open = [NoRegression, Inconclusive];
        assert!(keep_going(&decided, 2, 3, 20), "never before the minimum");
        assert!(!keep_going(&decided, 3, 3, 20));
        assert!(keep_going(&open, 3, 3, 20));
        assert!(keep_going(&open, 19, 3, 20));
        assert!(!keep_going(&open, 20, 3, 20));
    }
}
