//! Baseline comparison with noise-aware tolerances: for each key figure of
//! a scenario (whole, and per phase and per node: [`figure`](super::figure)),
//! the change from a baseline and the gate's verdict on it.
//!
//! # How the decision is made
//!
//! Each side is summarized by the median of its runs (`--repeat N`). When
//! both sides have two or more runs, each figure gets Welch's confidence
//! interval of current / baseline (on logarithms, so on ratios; of the
//! difference for the error rate), Bonferroni-corrected over the figures
//! tested, and the three-way decision of [`gate`](super::gate): a
//! **regression** when the interval lies wholly beyond the budget the worse
//! way, **unchanged** (no regression; **improved** when wholly better than
//! no change) when it lies wholly within, **inconclusive** otherwise, with
//! the runs per side the observed variance suggests for a decision.
//!
//! With a single run on a side there is nothing to test, so noise bands
//! stand in: a side's band is the range of its runs, or, for a single run,
//! the interquartile range of its per-second values (a figure that moves
//! that much from one second to the next cannot reveal a smaller change); a
//! change is beyond the noise when it exceeds both bands together. A figure
//! **regressed** when its median moved the wrong way by more than its budget
//! *and* beyond the noise. A change beyond the budget but inside the noise
//! is **within noise**, and with the noise unknown on both sides
//! **unsure**: both undecided (the gate's inconclusive); repeat the runs to
//! decide.
//!
//! Both sides are read from the JSON form of their summaries, so a baseline
//! can be a `summary.json` written by an older build: a figure either side
//! lacks is "not measured".

use serde_json::Value;

use super::figure::{self, Better, Budget, Figure, Scoped};
use super::gate::{self, Decision};
use super::stats::welch;
use crate::summary::comparison::{
    Change, Comparison, Estimate, GateVerdict, NoiseSource, Status, rounds_needed,
};

/// The family-wise significance level of the tests on repeated runs.
pub const ALPHA: f64 = 0.05;

/// How the decision was made, for reports, with `tests` figures tested.
fn method(tests: usize) -> String {
    format!(
        "each side is the median of its runs; with two or more runs on each side, a figure regressed when Welch's confidence interval of current / baseline (on logarithms, so on ratios; of the difference for the error rate) lies wholly beyond its budget the worse way, is unchanged (no regression) when it lies wholly within, improved when also wholly better than no change, and inconclusive otherwise; each figure is tested one-sided at alpha {ALPHA} / {tests} (Bonferroni over the figures tested), so its interval is the two-sided {:.2}% one; with a single run on a side, a figure regressed when it moved the wrong way by more than its budget and beyond both noise bands together (a side's band is the range of its repeated runs, or a single run's interquartile range of per-second values), and is within noise (undecided) when it moved beyond its budget inside the noise",
        gate::confidence(ALPHA / tests as f64) * 100.0
    )
}

/// The median of `values` (not empty).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The value at quantile `q` of sorted `values` (linear interpolation).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let at = q * (sorted.len() - 1) as f64;
    let (low, high) = (at.floor() as usize, at.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (at - low as f64)
}

/// The median and noise band of `figure` over `runs`, whose values are
/// `values`.
fn estimate(figure: &Scoped, runs: &[Value], mut values: Vec<f64>) -> Estimate {
    let median = median(&mut values);
    if values.len() > 1 {
        return Estimate {
            median,
            noise: values[values.len() - 1] - values[0],
            noise_from: NoiseSource::Repeats,
            runs: values.len(),
        };
    }
    let seconds = figure
        .per_second()
        .and_then(|value| per_second(&runs[0], value));
    Estimate {
        median,
        noise: seconds.unwrap_or(0.0),
        noise_from: if seconds.is_some() {
            NoiseSource::Seconds
        } else {
            NoiseSource::Unknown
        },
        runs: 1,
    }
}

/// The interquartile range of a run's per-second values, leaving out the
/// first and last rows (connecting, and a partial second).
fn per_second(run: &Value, value: fn(&Value) -> Option<f64>) -> Option<f64> {
    let rows = run.get("timeline")?.as_array()?;
    let inner = rows.get(1..rows.len().saturating_sub(1))?;
    let mut values: Vec<f64> = inner.iter().filter_map(value).collect();
    if values.len() < 4 {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(quantile(&values, 0.75) - quantile(&values, 0.25))
}

/// The change of the medians and whether it is beyond `figure`'s budget
/// (`None`: a relative change from zero).
fn against_budget(figure: &Figure, current: f64, baseline: f64) -> Option<(f64, bool, bool)> {
    let delta = current - baseline;
    let worse = match figure.better {
        Better::Higher => delta < 0.0,
        Better::Lower => delta > 0.0,
    };
    match figure.budget {
        Budget::Relative(budget) => (baseline != 0.0).then(|| {
            let relative = delta / baseline.abs();
            (100.0 * relative, worse, relative.abs() > budget)
        }),
        Budget::Absolute(budget) => Some((delta, worse, delta.abs() > budget)),
    }
}

/// One figure's values on both sides.
struct Sides {
    scoped: Scoped,
    current: Vec<f64>,
    baseline: Vec<f64>,
}

/// The status of a tested figure from the gate's decision.
fn tested_status(decision: Decision) -> Status {
    match decision.verdict {
        GateVerdict::Regression => Status::Regression,
        GateVerdict::NoRegression if decision.improved => Status::Improved,
        GateVerdict::NoRegression => Status::Unchanged,
        GateVerdict::Inconclusive => Status::Inconclusive,
    }
}

/// The status of a figure with a single run on a side, from its noise
/// bands: whether it moved `worse`, `beyond_budget`, and beyond the noise
/// (`None`: the noise unknown on both sides).
fn banded_status(beyond_budget: bool, worse: bool, beyond_noise: Option<bool>) -> Status {
    match (beyond_budget, worse, beyond_noise) {
        (false, _, _) | (true, false, Some(false) | None) => Status::Unchanged,
        (true, true, Some(true)) => Status::Regression,
        (true, true, Some(false)) => Status::WithinNoise,
        (true, true, None) => Status::Unsure,
        (true, false, Some(true)) => Status::Improved,
    }
}

impl Sides {
    /// Whether both sides have repeated runs to test.
    fn testable(&self) -> bool {
        self.current.len() > 1 && self.baseline.len() > 1
    }

    /// The comparison, testing one-sided at `level` when both sides were
    /// repeated.
    fn change(self, current_runs: &[Value], baseline_runs: &[Value], level: f64) -> Change {
        let figure = self.scoped.figure;
        let runs = self.current.len().min(self.baseline.len());
        let test = welch(
            &self.baseline,
            &self.current,
            figure.scale(),
            gate::interval_alpha(level),
        );
        let decision = test.map(|test| gate::decide(figure, &test, level, runs));
        let now = estimate(&self.scoped, current_runs, self.current);
        let before = estimate(&self.scoped, baseline_runs, self.baseline);
        let (change, status) = match against_budget(figure, now.median, before.median) {
            None => (None, Status::NotMeasured),
            Some((change, worse, beyond_budget)) => {
                let unknown = now.noise_from == NoiseSource::Unknown
                    && before.noise_from == NoiseSource::Unknown;
                let beyond_noise = (!unknown)
                    .then(|| (now.median - before.median).abs() > now.noise + before.noise);
                let status = decision.map_or_else(
                    || banded_status(beyond_budget, worse, beyond_noise),
                    tested_status,
                );
                (Some(change), status)
            }
        };
        let verdict = status.verdict();
        Change {
            figure: self.scoped.name(),
            label: self.scoped.label(),
            unit: figure.unit,
            current: Some(now),
            baseline: Some(before),
            change,
            p_value: test.map(|t| t.p_value),
            ci: test.map(|t| [t.low, t.high]),
            budget: figure.budget_text(),
            status,
            verdict,
            rounds_suggested: match (decision, verdict) {
                (_, None) => None,
                (Some(decision), Some(_)) => decision.rounds_suggested,
                (None, Some(GateVerdict::Inconclusive)) => None,
                (None, Some(_)) => Some(0),
            },
        }
    }
}

/// A figure that either side lacks.
fn not_measured(scoped: &Scoped) -> Change {
    Change {
        figure: scoped.name(),
        label: scoped.label(),
        unit: scoped.figure.unit,
        current: None,
        baseline: None,
        change: None,
        p_value: None,
        ci: None,
        budget: scoped.figure.budget_text(),
        status: Status::NotMeasured,
        verdict: None,
        rounds_suggested: None,
    }
}

/// A figure's label with its unit, as tables head it: `latency p99 (µs)`.
pub(crate) fn labelled(label: &str, unit: &str) -> String {
    if unit.is_empty() {
        label.to_owned()
    } else {
        format!("{label} ({unit})")
    }
}

/// Compares the runs of one scenario (`current`, its repetitions' summary
/// JSON) with `baseline` runs of the same scenario, described by `what`.
pub fn compare(current: &[Value], baseline: &[Value], what: &str) -> Comparison {
    let sides: Vec<Result<Sides, Scoped>> = figure::figures(current, baseline)
        .into_iter()
        .map(|(scoped, values)| match values {
            Some((current, baseline)) => Ok(Sides {
                scoped,
                current,
                baseline,
            }),
            None => Err(scoped),
        })
        .collect();
    let tested = sides.iter().flatten().filter(|s| s.testable()).count();
    let tests = tested.max(1);
    let level = ALPHA / tests as f64;
    let changes: Vec<Change> = sides
        .into_iter()
        .map(|sides| match sides {
            Ok(sides) => sides.change(current, baseline, level),
            Err(scoped) => not_measured(&scoped),
        })
        .collect();
    let verdict = GateVerdict::of(changes.iter().filter_map(|c| c.verdict));
    Comparison {
        baseline: what.to_owned(),
        method: method(tests),
        confidence: (tested > 0).then(|| gate::confidence(level)),
        // Only a regression's verdict is Regression, and it wins over
        // every other.
        regressed: verdict == GateVerdict::Regression,
        rounds_suggested: rounds_needed(changes.iter().map(|c| (c.verdict, c.rounds_suggested))),
        verdict,
        changes,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A summary's JSON with a throughput, a p99 and per-second rows.
    fn run(events_per_s: f64, p99: u64, seconds: &[f64]) -> Value {
        let timeline: Vec<Value> = seconds
            .iter()
            .map(|&e| json!({"events_per_s": e, "latency_p99_us": p99}))
            .collect();
        json!({
            "events_per_s": events_per_s,
            "latency_us": {"p50": 100, "p99": p99},
            "error_rate": 0.0,
            "timeline": timeline,
        })
    }

    fn status(comparison: &Comparison, figure: &str) -> Status {
        comparison
            .changes
            .iter()
            .find(|c| c.figure == figure)
            .unwrap()
            .status
    }

    #[test]
    fn a_change_beyond_budget_and_noise_of_repeats_is_a_regression() {
        let base = [
            run(1000.0, 500, &[]),
            run(1010.0, 520, &[]),
            run(990.0, 480, &[]),
        ];
        let slower = [
            run(800.0, 900, &[]),
            run(810.0, 950, &[]),
            run(790.0, 920, &[]),
        ];
        let c = compare(&slower, &base, "main");
        assert_eq!(status(&c, "events_per_s"), Status::Regression);
        assert_eq!(status(&c, "latency.p99"), Status::Regression);
        assert_eq!(status(&c, "latency.p50"), Status::Unchanged);
        assert_eq!(status(&c, "error_rate"), Status::Unchanged);
        assert_eq!(status(&c, "ttft.p95"), Status::NotMeasured);
        assert!(c.regressed);
        let change = c
            .changes
            .iter()
            .find(|c| c.figure == "events_per_s")
            .unwrap();
        assert!((change.change.unwrap() + 20.0).abs() < 1e-9);
        assert_eq!(change.budget, "-5%");
        assert_eq!(change.baseline.unwrap().noise, 20.0);
        assert!(change.p_value.unwrap() < 0.05 / 4.0, "{change:?}");
        // The other way round, the same figures improved.
        let c = compare(&base, &slower, "main");
        assert_eq!(status(&c, "events_per_s"), Status::Improved);
        assert!(!c.regressed);
    }

    #[test]
    fn a_change_inside_the_noise_is_inconclusive_with_the_runs_it_needs() {
        // Runs that scatter by ±30%: a 20% drop of the median is noise.
        let base = [
            run(1000.0, 500, &[]),
            run(1300.0, 500, &[]),
            run(700.0, 500, &[]),
        ];
        let now = [
            run(800.0, 500, &[]),
            run(1100.0, 500, &[]),
            run(500.0, 500, &[]),
        ];
        let c = compare(&now, &base, "main");
        assert_eq!(status(&c, "events_per_s"), Status::Inconclusive);
        assert!(!c.regressed && c.unsure());
        assert_eq!(c.verdict, GateVerdict::Inconclusive);
        let change = c
            .changes
            .iter()
            .find(|c| c.figure == "events_per_s")
            .unwrap();
        let [low, high] = change.ci.unwrap();
        assert!(low < 0.95 && high > 0.95, "{change:?}");
        let more = change.rounds_suggested.unwrap();
        assert!(more > 0 && c.rounds_suggested == Some(more), "{c:?}");
        assert!(
            change
                .decision_text()
                .contains(&format!("{more} more runs")),
            "{}",
            change.decision_text()
        );
        // Steady runs of the same build: decided, no regression.
        let again = [
            run(1001.0, 500, &[]),
            run(1009.0, 500, &[]),
            run(992.0, 500, &[]),
        ];
        let steady = [
            run(1000.0, 500, &[]),
            run(1010.0, 500, &[]),
            run(990.0, 500, &[]),
        ];
        let c = compare(&again, &steady, "main");
        assert_eq!(c.verdict, GateVerdict::NoRegression, "{c:?}");
        assert_eq!(c.rounds_suggested, Some(0));
    }

    #[test]
    fn a_single_run_takes_its_noise_from_its_seconds() {
        // Seconds scatter by ±25% around 1000: a 10% drop is within noise…
        let noisy = [750.0, 1250.0, 1000.0, 750.0, 1250.0, 1000.0, 900.0];
        let base = [run(1000.0, 500, &noisy)];
        let c = compare(&[run(900.0, 500, &noisy)], &base, "main");
        let change = c
            .changes
            .iter()
            .find(|c| c.figure == "events_per_s")
            .unwrap();
        assert_eq!(change.baseline.unwrap().noise_from, NoiseSource::Seconds);
        assert_eq!(change.status, Status::WithinNoise);
        // …but steady seconds reveal it.
        let steady = [1000.0, 1001.0, 999.0, 1000.0, 1000.0, 1001.0, 999.0];
        let c = compare(
            &[run(900.0, 500, &[899.0; 7])],
            &[run(1000.0, 500, &steady)],
            "x",
        );
        assert_eq!(status(&c, "events_per_s"), Status::Regression);
        // Noise bands of a single run against repeats: the sum of both.
        // (median 1050, band 100; a drop of 70 is beyond the 5% budget but
        // inside the band, a drop of 110 is beyond both).
        let repeats = [run(1000.0, 500, &[]), run(1100.0, 500, &[])];
        let c = compare(&[run(980.0, 500, &[])], &repeats, "x");
        assert_eq!(status(&c, "events_per_s"), Status::WithinNoise);
        let c = compare(&[run(940.0, 500, &[])], &repeats, "x");
        assert_eq!(status(&c, "events_per_s"), Status::Regression);
        // A figure without per-second values has unknown noise.
        let c = compare(&[run(900.0, 500, &[])], &[run(1000.0, 500, &[])], "x");
        let change = c
            .changes
            .iter()
            .find(|c| c.figure == "events_per_s")
            .unwrap();
        assert_eq!(change.current.unwrap().noise_from, NoiseSource::Unknown);
    }

    #[test]
    fn a_change_with_its_noise_unknown_on_both_sides_is_unsure() {
        let c = compare(&[run(900.0, 500, &[])], &[run(1000.0, 500, &[])], "x");
        assert_eq!(status(&c, "events_per_s"), Status::Unsure);
        assert!(c.unsure() && !c.regressed);
    }

    #[test]
    fn error_rates_have_an_absolute_budget() {
        // Errors in every second: 20 of 1000 events.
        let mut errors = run(1000.0, 500, &[980.0; 6]);
        errors["error_rate"] = json!(0.02);
        for row in errors["timeline"].as_array_mut().unwrap() {
            row["errors"] = json!(20);
        }
        let mut clean = run(1000.0, 500, &[1000.0; 6]);
        for row in clean["timeline"].as_array_mut().unwrap() {
            row["errors"] = json!(0);
        }
        let c = compare(&[errors], &[clean], "x");
        assert_eq!(status(&c, "error_rate"), Status::Regression);
        let change = c.changes.iter().find(|c| c.figure == "error_rate").unwrap();
        assert_eq!(change.change, Some(0.02));
    }

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.25), 2.0);
        assert_eq!(quantile(&[1.0, 2.0], 0.5), 1.5);
    }
}
