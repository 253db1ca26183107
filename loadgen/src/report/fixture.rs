//! Realistic reports for the renderers' tests: summaries made by
//! [`Summary::new`] from recorded latencies and a timeline, load steps that
//! give a capacity estimate, a comparison with a baseline.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Context, Group, Measured, PhaseMeasured, Report, Row, Summary};
use crate::metrics::{ErrorKind, Stats};
use crate::monitor::CpuSeconds;
use crate::scenario::{Scenario, preset};

/// `seconds` timeline rows of `clients` clients: a ramp second, then steady
/// seconds with some jitter, an error in the third.
fn timeline(clients: u32, seconds: usize) -> Vec<Row> {
    (0..seconds)
        .map(|i| {
            let t = i as f64 + 1.0;
            let jitter = (i % 3) as u64 * 40;
            Row {
                t_s: t,
                phase: if i == 0 { "ramp" } else { "steady" }.to_owned(),
                clients: if i == 0 { clients / 2 } else { clients },
                events_per_s: f64::from(clients) * 10.0 - (i % 2) as f64 * 3.0,
                bytes_per_s: f64::from(clients) * 320.0,
                latency_p50_us: Some(180 + jitter),
                latency_p90_us: Some(400 + jitter),
                latency_p95_us: Some(520 + jitter),
                latency_p99_us: Some(900 + 2 * jitter),
                latency_p999_us: Some(2_400 + 3 * jitter),
                latency_max_us: Some(4_000),
                errors: u64::from(i == 2),
                server_cpu_pct: Some(12.5 + i as f64),
                server_rss_mb: Some(21.0 + i as f64 * 0.5),
                server_heap_bytes: None,
                loadgen_cpu_pct: Some(8.0),
                loadgen_rss_mb: Some(30.0 + i as f64),
            }
        })
        .collect()
}

/// Latencies from 100 µs to about 5 ms, most near 250 µs.
fn stats(clients: u32) -> Stats {
    let mut stats = Stats::default();
    for i in 0..2_000u64 {
        let us = 100 + (i * i) % 300 + if i % 100 == 0 { 5_000 } else { 0 };
        stats.latency.record(us).unwrap();
        stats.connect.record(800 + i % 50).unwrap();
    }
    stats.counts.events = 2_000 * u64::from(clients);
    stats.counts.bytes = 64_000 * u64::from(clients);
    stats.counts.connects = u64::from(clients) + 1;
    stats.counts.errors[ErrorKind::Closed as usize] = 1;
    stats
}

/// What a run of `scenario` over `seconds` timeline rows measured.
fn measured(scenario: &Scenario, seconds: usize) -> Measured {
    let clients = scenario.max_clients();
    Measured {
        started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        duration: Duration::from_secs(seconds as u64),
        totals: stats(clients),
        timeline: timeline(clients, seconds),
        phases: vec![PhaseMeasured {
            name: "steady".to_owned(),
            seconds: seconds as f64,
            clients,
            stats: stats(clients),
        }],
        target: "http://127.0.0.1:8080".to_owned(),
        workers: 1,
        cpu_seconds: CpuSeconds {
            server: Some(1.25),
            loadgen: Some(0.5),
        },
    }
}

/// A run of `scenario` over `seconds` timeline rows.
pub(crate) fn summary(scenario: &Scenario, seconds: usize) -> Summary {
    let measured = measured(scenario, seconds);
    Summary::new(scenario, &measured, Context::lone("r1", &measured.target))
}

/// The preset `name` with `thresholds` and the default budgets.
pub(crate) fn scenario(name: &str, thresholds: &[&str]) -> Scenario {
    let mut scenario = preset::find(name).expect("a preset").scenario();
    scenario
        .thresholds
        .extend(thresholds.iter().map(|t| t.parse().expect("a threshold")));
    crate::verdict::add_defaults(&mut scenario);
    scenario
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
        run.comparison = Some(crate::compare::compare(
            &[serde_json::to_value(&*run).unwrap()],
            &[slower.clone()],
            "main <abc>",
        ));
        run.judge();
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
        capacity: crate::capacity::estimate(&steps),
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
    let summary = Summary::new(&scenario, &measured, Context::lone("r0", &measured.target));
    Report::of_run(&summary)
}
