//! The analyses: they read what a run measured and the summary model, and
//! decide: thresholds and the verdict ([`verdict`]), memory growth and
//! burst recovery ([`memory`]), the comparison with a baseline
//! ([`compare`]) on its key figures ([`figure`]) and the gate's three-way
//! decision ([`gate`]), capacity from load steps and ramps ([`capacity`]),
//! with the statistics they share ([`stats`]). They fill in the summary's
//! judged parts and never render anything.

use crate::metrics::timeline::Measured;
use crate::scenario::Scenario;
use crate::summary::{Context, Summary};

pub mod capacity;
pub mod compare;
pub mod figure;
pub mod gate;
pub mod memory;
pub mod stats;
pub mod verdict;

/// The summary of `measured` for `scenario`, judged: its memory analysed,
/// its thresholds evaluated (on its JSON form, memory included) and its
/// verdict set.
pub fn summarize(scenario: &Scenario, measured: &Measured, context: Context) -> Summary {
    let mut summary = Summary::new(scenario, measured, context);
    summary.memory = memory::analyse(&summary.timeline);
    let json = serde_json::to_value(&summary).expect("a summary serializes");
    summary.thresholds = verdict::evaluate(&json, &scenario.thresholds);
    verdict::judge(&mut summary);
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::auth::Refusal;
    use crate::metrics::{ErrorKind, Stats};
    use crate::summary::fixture;

    #[test]
    fn thresholds_are_evaluated_on_the_summary_and_a_missing_metric_fails() {
        let mut totals = Stats::default();
        for _ in 0..980 {
            totals.latency.record(1_000).unwrap();
        }
        for _ in 0..20 {
            totals.latency.record(30_000).unwrap();
        }
        totals.counts.events = 3;
        totals.counts.connects = 4;
        totals.counts.errors[ErrorKind::Closed as usize] = 1;
        totals.counts.auth.token_refreshes = 7;
        totals.counts.auth.refused(Refusal::Expired);
        let scenario = Scenario {
            thresholds: [
                "latency.p99<50ms",
                "latency.p50<1ms",
                "error_rate<=25%",
                "ttft.p95<1s",
                "events_per_s>0.2",
                "auth.token_refreshes>=7",
                "auth.refreshes_refused==0",
            ]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect(),
            ..Scenario::default()
        };
        let summary = summarize(
            &scenario,
            &fixture::of_totals(totals),
            Context::lone("r1", "http://127.0.0.1:1"),
        );
        let ok: Vec<bool> = summary.thresholds.iter().map(|t| t.ok).collect();
        assert_eq!(ok, [true, false, true, false, true, true, true]);
        let values: Vec<Option<f64>> = summary.thresholds.iter().map(|t| t.value).collect();
        assert!(
            values[0].is_some_and(|p99| (30_000.0..30_100.0).contains(&p99)),
            "{values:?}"
        );
        assert_eq!(values[1], Some(1_000.0));
        assert_eq!(values[2], Some(0.25));
        assert_eq!(
            values[3], None,
            "ttft does not apply to a ticker: null, and the threshold fails"
        );
        assert!(!summary.passed);
    }
}
