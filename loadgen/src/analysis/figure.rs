//! The key figures the gate compares (`compare`, `ab`): each with the way
//! that is better and its budget (how far it may move the worse way), read
//! from a summary's JSON by its threshold metric name, for the whole run or
//! scoped to one phase or one node: `latency.p99{phase=steady}`,
//! `latency.p99{node=http://10.0.0.2:8080}`.
//!
//! A scoped figure is read from the summary's `phases` (by `name`) or
//! `nodes` (by `url`) section, and exists only when the run has two or more
//! phases (nodes) and every run on both sides measured it: one phase alone
//! is the whole run.

use serde_json::Value;

use super::stats::Scale;
use super::verdict::metric;

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
pub(crate) const FIGURES: [Figure; 12] = [
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
        key: "end_to_end.p50",
        label: "end to end p50",
        unit: "µs",
        better: Better::Lower,
        budget: Budget::Relative(0.10),
        per_second: None,
    },
    Figure {
        key: "end_to_end.p99",
        label: "end to end p99",
        unit: "µs",
        better: Better::Lower,
        budget: Budget::Relative(0.20),
        per_second: None,
    },
    Figure {
        key: "schedule_lag.p99",
        label: "schedule lag p99",
        unit: "µs",
        better: Better::Lower,
        budget: Budget::Relative(0.20),
        per_second: None,
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

impl Figure {
    /// How its values are compared.
    pub(crate) fn scale(&self) -> Scale {
        match self.budget {
            Budget::Relative(_) => Scale::Ratio,
            Budget::Absolute(_) => Scale::Difference,
        }
    }

    /// The budget as people read it (`-5%`, `+20%`, `+0.005`).
    pub(crate) fn budget_text(&self) -> String {
        let sign = match self.better {
            Better::Higher => '-',
            Better::Lower => '+',
        };
        match self.budget {
            Budget::Relative(fraction) => format!("{sign}{:.0}%", fraction * 100.0),
            Budget::Absolute(amount) => format!("{sign}{amount}"),
        }
    }
}

/// Where a figure is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The whole run.
    Run,
    /// One phase, by name.
    Phase(String),
    /// One node, by URL.
    Node(String),
}

impl Scope {
    /// The part of a run (a summary's JSON) this scope reads.
    fn section<'a>(&self, run: &'a Value) -> Option<&'a Value> {
        let find = |list: &str, field: &str, wanted: &str| {
            run.get(list)?
                .as_array()?
                .iter()
                .find(|item| item.get(field).and_then(Value::as_str) == Some(wanted))
        };
        match self {
            Scope::Run => Some(run),
            Scope::Phase(name) => find("phases", "name", name),
            Scope::Node(url) => find("nodes", "url", url),
        }
    }
}

/// A figure in a scope: one line of a comparison.
#[derive(Clone)]
pub(crate) struct Scoped {
    /// The figure.
    pub(crate) figure: &'static Figure,
    /// Where it is read.
    pub(crate) scope: Scope,
}

impl Scoped {
    /// Its name: the metric name, with its scope in braces.
    pub(crate) fn name(&self) -> String {
        match &self.scope {
            Scope::Run => self.figure.key.to_owned(),
            Scope::Phase(name) => format!("{}{{phase={name}}}", self.figure.key),
            Scope::Node(url) => format!("{}{{node={url}}}", self.figure.key),
        }
    }

    /// Its label, for people, with the scope as its name has it:
    /// `latency p99 {phase=steady}`.
    pub(crate) fn label(&self) -> String {
        match &self.scope {
            Scope::Run => self.figure.label.to_owned(),
            Scope::Phase(name) => format!("{} {{phase={name}}}", self.figure.label),
            Scope::Node(url) => format!("{} {{node={url}}}", self.figure.label),
        }
    }

    /// Its value in each of `runs` (summaries' JSON), if every run has it.
    pub(crate) fn values(&self, runs: &[Value]) -> Option<Vec<f64>> {
        let values: Vec<f64> = runs
            .iter()
            .map(|run| metric(self.scope.section(run)?, self.figure.key))
            .collect::<Option<_>>()?;
        (!values.is_empty()).then_some(values)
    }

    /// Its value in one timeline row, for a single run's noise: only the
    /// whole run has a timeline.
    pub(crate) fn per_second(&self) -> Option<fn(&Value) -> Option<f64>> {
        match self.scope {
            Scope::Run => self.figure.per_second,
            Scope::Phase(_) | Scope::Node(_) => None,
        }
    }
}

/// The names in `list` (`phases` or `nodes`) of the first run, by `field`,
/// when it has two or more.
fn names(runs: &[Value], list: &str, field: &str) -> Vec<String> {
    let items = runs
        .first()
        .and_then(|run| run.get(list)?.as_array().cloned())
        .unwrap_or_default();
    if items.len() < 2 {
        return Vec::new();
    }
    items
        .iter()
        .filter_map(|item| Some(item.get(field)?.as_str()?.to_owned()))
        .collect()
}

/// A figure's value per run, current then baseline.
pub(crate) type Values = (Vec<f64>, Vec<f64>);

/// What to compare between `current` and `baseline` runs: every figure
/// of the whole run (measured or not), then each figure of each phase and
/// node that every run on both sides measured, as values per run
/// (`None`: not measured).
pub(crate) fn figures(current: &[Value], baseline: &[Value]) -> Vec<(Scoped, Option<Values>)> {
    let scopes = names(current, "phases", "name")
        .into_iter()
        .map(Scope::Phase)
        .chain(names(current, "nodes", "url").into_iter().map(Scope::Node));
    let whole = FIGURES.iter().map(|figure| Scoped {
        figure,
        scope: Scope::Run,
    });
    let parts = scopes.flat_map(|scope| {
        FIGURES.iter().map(move |figure| Scoped {
            figure,
            scope: scope.clone(),
        })
    });
    whole
        .map(|scoped| {
            let values = both(&scoped, current, baseline);
            (scoped, values)
        })
        .chain(parts.filter_map(|scoped| {
            let values = both(&scoped, current, baseline)?;
            Some((scoped, Some(values)))
        }))
        .collect()
}

/// The values of `scoped` in `current` and `baseline`, if both have it.
fn both(scoped: &Scoped, current: &[Value], baseline: &[Value]) -> Option<Values> {
    Some((scoped.values(current)?, scoped.values(baseline)?))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(steady_p99: u64) -> Value {
        json!({
            "events_per_s": 100.0,
            "latency_us": {"p50": 10, "p99": 20},
            "phases": [
                {"name": "ramp", "events_per_s": 50.0, "latency_us": {"p50": 5, "p99": 9}},
                {"name": "steady", "events_per_s": 100.0, "latency_us": {"p50": 10, "p99": steady_p99}},
            ],
            "nodes": [{"url": "http://a", "events_per_s": 100.0}],
        })
    }

    #[test]
    fn phases_are_figures_of_their_own_and_a_lone_node_is_not() {
        let found = figures(&[run(30), run(31)], &[run(20), run(21)]);
        let names: Vec<String> = found.iter().map(|(s, _)| s.name()).collect();
        assert_eq!(names.len(), FIGURES.len() + 6, "{names:?}");
        let (steady, values) = found
            .iter()
            .find(|(s, _)| s.name() == "latency.p99{phase=steady}")
            .unwrap();
        assert_eq!(steady.label(), "latency p99 {phase=steady}");
        assert_eq!(
            values.as_ref().unwrap(),
            &(vec![30.0, 31.0], vec![20.0, 21.0])
        );
        assert!(steady.per_second().is_none());
        // Whole-run figures are listed even when not measured.
        let ttft = found.iter().find(|(s, _)| s.name() == "ttft.p95").unwrap();
        assert!(ttft.1.is_none());
        assert!(!names.iter().any(|n| n.contains("node=")), "{names:?}");
    }
}
