//! Realistic reports for the renderers' tests: judged summaries of the
//! summary fixture's runs, load steps that give a capacity estimate, a
//! comparison with a baseline.

use std::sync::Arc;

use crate::analysis::{self, capacity, compare, verdict};
use crate::metrics::Stats;
use crate::metrics::timeline::Measured;
use crate::scenario::Scenario;
use crate::summary::fixture::measured;
pub(crate) use crate::summary::fixture::scenario;
use crate::summary::{Context, Group, Report, Summary};

/// A run of `scenario` over `seconds` timeline rows.
pub(crate) fn summary(scenario: &Scenario, seconds: usize) -> Summary {
    let measured = measured(scenario, seconds);
    analysis::summarize(scenario, &measured, Context::lone("r1", &measured.target))
}

fn group(runs: Vec<Summary>) -> Group {
    Group {
        scenario: runs[0].scenario.clone(),
        transport: runs[0].transport,
        runs,
    }
}

/// A suite's report: load steps `clients-10`, `clients-50` and
/// `clients-100` (whose p99 threshold breaks, so it is the knee's limit),
/// the middle one repeated and compared with a baseline, and a scenario
/// whose name needs escaping, with heap samples.
pub(crate) fn report() -> Report {
    let ten = summary(&scenario("clients-10", &["warn:latency.p50<0.1ms"]), 8);
    let mut fifty: Vec<Summary> = (1..=2)
        .map(|repeat| Summary {
            repeat,
            ..summary(&scenario("clients-50", &[]), 8)
        })
        .collect();
    let baseline = serde_json::to_value(&fifty[0]).unwrap();
    let mut slower = baseline.clone();
    slower["events_per_s"] = serde_json::json!(fifty[0].events_per_s * 1.5);
    for run in &mut fifty {
        run.comparison = Some(compare::compare(
            &[serde_json::to_value(&*run).unwrap()],
            &[slower.clone()],
            "main <abc>",
        ));
        verdict::judge(run);
    }
    let hundred = summary(&scenario("clients-100", &["latency.p99<1ms"]), 8);
    let mut odd = scenario("single", &[]);
    odd.name = "<script>&\"odd'".to_owned();
    let mut tricky = summary(&odd, 5);
    for (i, row) in tricky.timeline.iter_mut().enumerate() {
        row.server_heap_bytes = Some(3_000_000 + i as u64 * 250_000);
    }
    let steps = [ten.clone(), fifty[0].clone(), hundred.clone()];
    Report {
        run_id: "suite-1".to_owned(),
        started_at: ten.started_at.clone(),
        label: Some("branch <x> & \"y\"".to_owned()),
        capacity: capacity::estimate(&steps),
        environment: Arc::clone(&ten.manifest.environment),
        groups: vec![
            group(vec![ten]),
            group(fifty),
            group(vec![hundred]),
            group(vec![tricky]),
        ],
    }
}

/// A single run that measured nothing: no latency, an empty timeline.
pub(crate) fn empty() -> Report {
    let scenario = scenario("single", &[]);
    let measured = Measured {
        totals: Stats::default(),
        ..measured(&scenario, 0)
    };
    let summary = analysis::summarize(&scenario, &measured, Context::lone("r0", &measured.target));
    Report::of_run(&summary, capacity::estimate(std::slice::from_ref(&summary)))
}
