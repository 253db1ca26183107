//! The timeline a run records: one [`Row`] per second (and one at each
//! change of phase), each phase's measurements ([`PhaseMeasured`]), and
//! everything a run measured ([`Measured`]), which the summary is built
//! from. The runner fills these; it never builds a summary itself. A
//! [`Watch`] is told of each row as it is made (the live dashboard and
//! the samples file).

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Stats;
use super::monitor::CpuSeconds;

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    /// Seconds since the load started.
    pub t_s: f64,
    /// The phase.
    pub phase: String,
    /// Clients connected or connecting.
    pub clients: u32,
    /// Events received per second.
    pub events_per_s: f64,
    /// Bytes received per second.
    pub bytes_per_s: f64,
    /// Median delivery latency this second, µs.
    pub latency_p50_us: Option<u64>,
    /// 90th percentile delivery latency this second, µs.
    pub latency_p90_us: Option<u64>,
    /// 95th percentile delivery latency this second, µs.
    pub latency_p95_us: Option<u64>,
    /// 99th percentile delivery latency this second, µs.
    pub latency_p99_us: Option<u64>,
    /// 99.9th percentile delivery latency this second, µs.
    pub latency_p999_us: Option<u64>,
    /// Highest delivery latency this second, µs.
    pub latency_max_us: Option<u64>,
    /// Failures this second.
    pub errors: u64,
    /// Server CPU, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server resident memory, MiB.
    pub server_rss_mb: Option<f64>,
    /// Server live heap bytes (servers built with heap profiling only).
    pub server_heap_bytes: Option<u64>,
    /// Load generator CPU, % of one core.
    pub loadgen_cpu_pct: Option<f64>,
    /// Load generator resident memory, MiB.
    pub loadgen_rss_mb: Option<f64>,
    /// Streams opened: connection attempts that settled, reconnects
    /// included.
    pub connects: u64,
    /// Median schedule lag (receipt − `sched`) this second, µs; `None`
    /// when no event carried `sched`.
    pub schedule_lag_p50_us: Option<u64>,
    /// 99th percentile schedule lag this second, µs.
    pub schedule_lag_p99_us: Option<u64>,
}

/// Told of each [`Row`] as the runner makes it, with the interval's own
/// measurements (what the row was drawn from). Called on the runner's
/// loop once a second: it must return at once.
pub trait Watch: Send + Sync + std::fmt::Debug {
    /// One more row of the run; `interval` is what it measured.
    fn row(&self, row: &Row, interval: &Stats);
}

/// What one phase measured.
#[derive(Debug, Clone)]
pub struct PhaseMeasured {
    /// The phase's name.
    pub name: String,
    /// How long, s.
    pub seconds: f64,
    /// The most clients at once.
    pub clients: u32,
    /// Its measurements.
    pub stats: Stats,
}

/// What a run measured: the summary is built from it.
#[derive(Debug)]
pub struct Measured {
    /// When the load started.
    pub started_at: SystemTime,
    /// How long it ran.
    pub duration: Duration,
    /// Totals.
    pub totals: Stats,
    /// One row per second, and one at each change of phase.
    pub timeline: Vec<Row>,
    /// Each phase, in order.
    pub phases: Vec<PhaseMeasured>,
    /// The server measured: its base URL, or its nodes' separated by `, `.
    pub target: String,
    /// Each server node's part of the totals (one entry for one node).
    pub nodes: Vec<NodeMeasured>,
    /// CPU time used during the load.
    pub cpu_seconds: CpuSeconds,
    /// Processes that ran the virtual clients: 1 (the load generator
    /// itself), or its worker processes.
    pub workers: usize,
    /// Why the run was stopped before its end, if an `abort:` threshold
    /// broke.
    pub aborted: Option<Aborted>,
    /// On a run over several agents, each agent's part (empty otherwise).
    pub agents: Vec<AgentMeasured>,
    /// Whether the run stopped early because an agent was lost (without
    /// `--tolerate-agent-loss`): its figures lack what was not measured.
    pub incomplete: bool,
}

/// What one agent of a run over several measured, and how it fared.
#[derive(Debug)]
pub struct AgentMeasured {
    /// Its control address (`HOST:PORT`).
    pub address: String,
    /// The clients it ran (at the most).
    pub clients: u32,
    /// Its machine's cores.
    pub cores: usize,
    /// Its clock minus the coordinator's, µs, as estimated before the run.
    pub clock_offset_us: i64,
    /// The most the true offset may differ from that, µs.
    pub clock_uncertainty_us: u64,
    /// Whether that uncertainty is within `--max-clock-uncertainty`: if
    /// not, its delivery latency is not comparable with other agents'.
    pub clock_comparable: bool,
    /// CPU seconds it used during the run (its worker processes
    /// included).
    pub cpu_seconds: f64,
    /// Its largest resident memory reported, bytes.
    pub rss_bytes: u64,
    /// Its measurements, every node's together.
    pub stats: Stats,
    /// Whether and when it was lost during the run.
    pub lost: Option<Lost>,
}

/// An agent lost during a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lost {
    /// Seconds into the run when it was found lost.
    pub at_s: f64,
    /// Why: it failed, disconnected, or stalled.
    pub why: String,
}

/// An `abort:` threshold that broke during the run, which then stopped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Aborted {
    /// The threshold, as written (with its `abort:` prefix).
    pub threshold: String,
    /// Its metric.
    pub metric: &'static str,
    /// Its metric's value when it broke, in the metric's unit.
    pub value: f64,
    /// Seconds into the run when it broke.
    pub at_s: f64,
}

/// What the clients connected to one server node measured.
#[derive(Debug)]
pub struct NodeMeasured {
    /// The node's base URL.
    pub url: String,
    /// The most of the run's clients connected to it at once.
    pub clients: u32,
    /// Its part of the totals: its clients' events and latencies, and the
    /// publishes sent to it.
    pub stats: Stats,
}
