//! What the summary's, analyses' and renderers' tests build on: a
//! realistic run's measurements (recorded latencies, a timeline), and
//! presets with their default budgets.

use std::time::{Duration, SystemTime};

use crate::metrics::monitor::CpuSeconds;
use crate::metrics::timeline::{Measured, NodeMeasured, PhaseMeasured, Row};
use crate::metrics::{ErrorKind, Stats};
use crate::scenario::{Scenario, budgets, preset};

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
                schedule_lag_p50_us: Some(200 + jitter),
                schedule_lag_p99_us: Some(1_100 + 2 * jitter),
                errors: u64::from(i == 2),
                server_cpu_pct: Some(12.5 + i as f64),
                server_rss_mb: Some(21.0 + i as f64 * 0.5),
                server_heap_bytes: None,
                loadgen_cpu_pct: Some(8.0),
                loadgen_rss_mb: Some(30.0 + i as f64),
                connects: if i == 0 { u64::from(clients) } else { 0 },
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
pub(crate) fn measured(scenario: &Scenario, seconds: usize) -> Measured {
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
        nodes: vec![NodeMeasured {
            url: "http://127.0.0.1:8080".to_owned(),
            clients,
            stats: stats(clients),
        }],
        workers: 1,
        aborted: None,
        agents: Vec::new(),
        incomplete: false,
        cpu_seconds: CpuSeconds {
            server: Some(1.25),
            loadgen: Some(0.5),
        },
    }
}

/// A ten-second run that measured `totals` and nothing else.
pub(crate) fn of_totals(totals: Stats) -> Measured {
    Measured {
        cpu_seconds: CpuSeconds::default(),
        started_at: SystemTime::UNIX_EPOCH,
        duration: Duration::from_secs(10),
        totals,
        timeline: Vec::new(),
        phases: Vec::new(),
        target: "http://127.0.0.1:1".to_owned(),
        nodes: Vec::new(),
        workers: 1,
        aborted: None,
        agents: Vec::new(),
        incomplete: false,
    }
}

/// The preset `name` with `thresholds` and the default budgets.
pub(crate) fn scenario(name: &str, thresholds: &[&str]) -> Scenario {
    let mut scenario = preset::find(name).expect("a preset").scenario();
    scenario
        .thresholds
        .extend(thresholds.iter().map(|t| t.parse().expect("a threshold")));
    budgets::add_defaults(&mut scenario);
    scenario
}
