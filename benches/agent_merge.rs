//! The coordinator's merge of its agents' interval reports: one second of
//! a run over 16 agents, each report a line of JSON holding one node's
//! measurements of a busy second (every histogram populated across four
//! decades, as a loaded agent's are), parsed, decoded and merged exactly
//! into the coordinator's shards. Time per round of 16 reports, against
//! the bar of 5 % of one core (50 ms per second).
//!
//! Run with `cargo bench --bench agent_merge`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use streamgauge_loadgen::metrics::wire::Encoded;
use streamgauge_loadgen::metrics::{Sample, Shards, Stats};
use streamgauge_loadgen::runner::agents::merge;
use streamgauge_loadgen::runner::control::{FromAgent, Report};

/// Agents reporting each second.
const AGENTS: usize = 16;

/// Values recorded per histogram of one report: a second of 50,000
/// events.
const VALUES: usize = 50_000;

/// One agent's report of a busy second, as the line it sends.
fn report_line(seed: u64) -> Vec<u8> {
    let shards = Shards::new(1);
    let mut recorder = shards.recorder(0);
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..VALUES {
        // Log-uniform from 50 µs to 500 ms.
        let us = (50.0 * 10f64.powf(4.0 * rng.f64())) as u64;
        recorder.event(120, us);
        for sample in [Sample::EndToEnd, Sample::FromPublish, Sample::ScheduleLag] {
            recorder.sample(sample, us + rng.u64(0..200));
        }
    }
    for _ in 0..500 {
        recorder.sample(Sample::Publish, rng.u64(300..20_000));
        recorder.sample(Sample::Connect, rng.u64(200..5_000));
    }
    recorder.flush();
    let mut stats = Stats::default();
    shards.drain_into(&mut stats, &mut Stats::default());
    let report = Report {
        nodes: vec![Encoded::of(&stats).unwrap()],
        acked: seed,
        cpu_seconds: 1.0,
        rss_bytes: 1 << 26,
    };
    serde_json::to_vec(&FromAgent::Report(Box::new(report))).unwrap()
}

fn merge_a_second(c: &mut Criterion) {
    let lines: Vec<Vec<u8>> = (0..AGENTS as u64).map(report_line).collect();
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let shards = Shards::new(4);
    let mut totals: Vec<Stats> = (0..AGENTS).map(|_| Stats::default()).collect();
    let mut group = c.benchmark_group("agent_merge");
    // The JSON a second of reports is, parsed per second of the run.
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("16_reports", |b| {
        b.iter(|| {
            for (agent, line) in lines.iter().enumerate() {
                let Ok(FromAgent::Report(report)) = serde_json::from_slice(black_box(line)) else {
                    panic!("a report");
                };
                merge(&report, &shards, agent, &mut totals[agent]).unwrap();
            }
            // The coordinator drains its shards once a second.
            shards.drain_into(&mut Stats::default(), &mut Stats::default());
        });
    });
    group.finish();
}

criterion_group!(benches, merge_a_second);
criterion_main!(benches);
