//! Baseline comparison with noise-aware tolerances: for each key figure of
//! a scenario, the change from a baseline and whether it is a regression
//! beyond the figure's budget.
//!
//! # How the decision is made
//!
//! Each side is summarized by the median of its runs (`--repeat N`). When
//! both sides have two or more runs, a change is beyond the noise when
//! Welch's t-test on the runs (on logarithms, so on ratios; on differences
//! for the error rate) finds it significant at 5 %, Bonferroni-corrected
//! over the figures tested. With a single run on a side there is nothing to
//! test, so noise bands stand in: a side's band is the range of its runs,
//! or, for a single run, the interquartile range of its per-second values (a
//! figure that moves that much from one second to the next cannot reveal a
//! smaller change); a change is beyond the noise when it exceeds both bands
//! together. A figure **regressed** when its median moved the wrong way by
//! more than its budget *and* beyond the noise. A change beyond the budget
//! but inside the noise is reported as **within noise**, not as a
//! regression; repeat the runs to narrow the noise. Improvements are found
//! the same way.
//!
//! Both sides are read from the JSON form of their summaries, so a baseline
//! can be a `summary.json` written by an older build: a figure either side
//! lacks is "not measured".

use serde_json::Value;

use super::stats::{Scale, welch};
use super::verdict::metric;
use crate::summary::comparison::{Change, Comparison, Estimate, NoiseSource, Status};

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Better {
    Higher,
    Lower,
}

/// How far a figure may move the wrong way before it is a regression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Budget {
    /// A fraction of the baseline.
    Relative(f64),
    /// An amount in the figure's unit (for rates that are often zero).
    Absolute(f64),
}

/// A key figure.
pub(crate) struct Figure {
    /// Its path in the summary's JSON (threshold metric names).
    pub(crate) key: &'static str,
    /// For people.
    pub(crate) label: &'static str,
    /// Its unit.
    pub(crate) unit: &'static str,
    /// Which way is better.
    pub(crate) better: Better,
    /// How far it may move the wrong way.
    pub(crate) budget: Budget,
    /// Its value in one timeline row, for single-run noise.
    per_second: Option<fn(&Value) -> Option<f64>>,
}

fn row_field(row: &Value, field: &str) -> Option<f64> {
    row.get(field)?.as_f64()
}

/// Server CPU µs per event in one row.
fn row_cpu_per_event(row: &Value) -> Option<f64> {
    let cpu = row_field(row, "server_cpu_pct")?;
    let events = row_field(row, "events_per_s").filter(|&e| e > 0.0)?;
    Some(cpu * 1e4 / events)
}

/// A timeline row's error rate: its errors over its events and errors.
fn row_error_rate(row: &Value) -> Option<f64> {
    let errors = row_field(row, "errors")?;
    let events = row_field(row, "events_per_s")?;
    Some(if errors > 0.0 {
        errors / (events + errors)
    } else {
        0.0
    })
}

/// The figures compared, with their budgets.
pub(crate) const FIGURES: [Figure; 9] = [
    Figure {
        key: "events_per_s",
        label: "throughput",
        unit: "events/s",
        better: Better::Higher,
        budget: Budget::Relative(0.05),
        per_second: Some(|row| row_field(row, "events_per_s")),
    },
    Figure {
        key: "latency.p50",
        label: "latency p50",
        unit: "µs",
        better: Better::Lower,
        budget: Budget::Relative(0.10),
        per_second: Some(|row| row_field(row, "latency_p50_us")),
    },
    Figure {
        key: "latency.p99",
        label: "latency p99",
        unit: "µs",
        better: Better::Lower,
        budget: Budget::Relative(0.20),
        per_second: Some(|row| row_field(row, "latency_p99_us")),
    },
    Figure {
        key: "publish_to_receive.p99",
        label: "publish to receive p99",
        unit: "µs",
        better: Better::Lower,
        budget: Budget::Relative(0.20),
        per_second: None,
    },
    Figure {
        key: "ttft.p95",
        label: "time to first event p95",
        unit: "ms",
        better: Better::Lower,
        budget: Budget::Relative(0.10),
        per_second: None,
    },
    Figure {
        key: "connect.p95",
        label: "connect p95",
        unit: "ms",
        better: Better::Lower,
        budget: Budget::Relative(0.25),
        per_second: None,
    },
    Figure {
        key: "error_rate",
        label: "error rate",
        unit: "",
        better: Better::Lower,
        budget: Budget::Absolute(0.005),
        per_second: Some(row_error_rate),
    },
    Figure {
        key: "server.cpu_us_per_event",
        label: "server CPU per event",
        unit: "µs",
        better: Better::Lower,
        budget: Budget::Relative(0.10),
        per_second: Some(row_cpu_per_event),
    },
    Figure {
        key: "server.rss_mb.peak",
        label: "server RSS peak",
        unit: "MiB",
        better: Better::Lower,
        budget: Budget::Relative(0.10),
        per_second: None,
    },
];

/// The family-wise significance level of the tests on repeated runs.
pub const ALPHA: f64 = 0.05;

/// How the decision was made, for reports, with `tests` figures tested.
fn method(tests: usize) -> String {
    format!(
        "each side is the median of its runs; with two or more runs on each side, a figure moved beyond the noise when Welch's t-test on the runs (on logarithms, so on ratios; on differences for the error rate) finds the change significant at alpha {ALPHA} / {tests} (Bonferroni over the figures tested); with a single run on a side, when the change exceeds both noise bands together (a side's band is the range of its repeated runs, or a single run's interquartile range of per-second values); a figure regressed when it moved the wrong way by more than its budget and beyond the noise, and is within noise when it moved beyond its budget inside the noise"
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

impl Figure {
    /// How its values are compared.
    pub(crate) fn scale(&self) -> Scale {
        match self.budget {
            Budget::Relative(_) => Scale::Ratio,
            Budget::Absolute(_) => Scale::Difference,
        }
    }

    /// Its value in each of `runs` (summaries' JSON), if every run has it.
    pub(crate) fn values(&self, runs: &[Value]) -> Option<Vec<f64>> {
        let values: Vec<f64> = runs
            .iter()
            .map(|run| metric(run, self.key))
            .collect::<Option<_>>()?;
        (!values.is_empty()).then_some(values)
    }
}

/// The median and noise band of `figure` over `runs`, whose values are
/// `values`.
fn estimate(figure: &Figure, runs: &[Value], mut values: Vec<f64>) -> Estimate {
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
        .per_second
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
struct Sides<'a> {
    figure: &'a Figure,
    current: Vec<f64>,
    baseline: Vec<f64>,
}

impl Sides<'_> {
    /// Whether both sides have repeated runs to test.
    fn testable(&self) -> bool {
        self.current.len() > 1 && self.baseline.len() > 1
    }

    /// The comparison, testing at `level` when both sides were repeated.
    fn change(self, current_runs: &[Value], baseline_runs: &[Value], level: f64) -> Change {
        let figure = self.figure;
        let test = welch(&self.baseline, &self.current, figure.scale(), level);
        let now = estimate(figure, current_runs, self.current);
        let before = estimate(figure, baseline_runs, self.baseline);
        let (change, status) = match against_budget(figure, now.median, before.median) {
            None => (None, Status::NotMeasured),
            Some((change, worse, beyond_budget)) => {
                let unknown = now.noise_from == NoiseSource::Unknown
                    && before.noise_from == NoiseSource::Unknown;
                let beyond_noise = match test {
                    Some(test) => Some(test.p_value < level),
                    None if unknown => None,
                    None => Some((now.median - before.median).abs() > now.noise + before.noise),
                };
                let status = match (beyond_budget, worse, beyond_noise) {
                    (false, _, _) | (true, false, Some(false) | None) => Status::Unchanged,
                    (true, true, Some(true)) => Status::Regression,
                    (true, true, Some(false)) => Status::WithinNoise,
                    (true, true, None) => Status::Unsure,
                    (true, false, Some(true)) => Status::Improved,
                };
                (Some(change), status)
            }
        };
        Change {
            figure: figure.key,
            label: figure.label,
            unit: figure.unit,
            current: Some(now),
            baseline: Some(before),
            change,
            p_value: test.map(|t| t.p_value),
            budget: budget_text(figure),
            status,
        }
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

/// The budget of `figure` as people read it.
pub(crate) fn budget_text(figure: &Figure) -> String {
    let sign = match figure.better {
        Better::Higher => '-',
        Better::Lower => '+',
    };
    match figure.budget {
        Budget::Relative(fraction) => format!("{sign}{:.0}%", fraction * 100.0),
        Budget::Absolute(amount) => format!("{sign}{amount}"),
    }
}

/// Compares the runs of one scenario (`current`, its repetitions' summary
/// JSON) with `baseline` runs of the same scenario, described by `what`.
pub fn compare(current: &[Value], baseline: &[Value], what: &str) -> Comparison {
    let sides: Vec<Option<Sides<'_>>> = FIGURES
        .iter()
        .map(|figure| {
            Some(Sides {
                figure,
                current: figure.values(current)?,
                baseline: figure.values(baseline)?,
            })
        })
        .collect();
    let tests = sides
        .iter()
        .flatten()
        .filter(|s| s.testable())
        .count()
        .max(1);
    let level = ALPHA / tests as f64;
    let changes: Vec<Change> = sides
        .into_iter()
        .zip(&FIGURES)
        .map(|(sides, figure)| match sides {
            Some(sides) => sides.change(current, baseline, level),
            None => Change {
                figure: figure.key,
                label: figure.label,
                unit: figure.unit,
                current: None,
                baseline: None,
                change: None,
                p_value: None,
                budget: budget_text(figure),
                status: Status::NotMeasured,
            },
        })
        .collect();
    Comparison {
        baseline: what.to_owned(),
        method: method(tests),
        regressed: changes.iter().any(|c| c.status == Status::Regression),
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
    fn a_change_inside_the_noise_is_not_a_regression() {
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
        assert_eq!(status(&c, "events_per_s"), Status::WithinNoise);
        assert!(!c.regressed);
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
