//! The run's timeline as the runner records it: once a second (and at
//! each change of phase) the shards are drained into a [`Row`], with a
//! sample of the server's and the load generator's resources (worker
//! processes counted), and added to its phase, to the totals and, node
//! by node, to each server node's totals; a [`Watch`] is told of it.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use streamgauge_server::process;

use crate::metrics::monitor::{CpuSeconds, Monitor, Reading};
use crate::metrics::timeline::{PhaseMeasured, Row, Watch};
use crate::metrics::{Shards, Stats};
use crate::scenario::Phase;

/// Samples the monitor, the load generator's CPU counting its worker
/// processes' (read from `/proc`, like a local server's).
pub(super) struct Sampler {
    monitor: Option<Monitor>,
    /// The worker processes (none when this process runs the clients).
    workers: Vec<u32>,
    /// Their CPU seconds at the first sample.
    first: Option<f64>,
    /// Their CPU seconds at the last sample, and when it was taken.
    last: Option<(f64, Instant)>,
}

impl Sampler {
    /// Samples `monitor` (if any) and the CPU of the `workers` processes.
    pub(super) fn new(monitor: Option<Monitor>, workers: Vec<u32>) -> Self {
        Self {
            monitor,
            workers,
            first: None,
            last: None,
        }
    }

    /// A sample (the first gives no CPU figure: it sets the mark).
    pub(super) async fn sample(&mut self) -> Reading {
        let mut reading = match &mut self.monitor {
            Some(monitor) => monitor.sample().await,
            None => Reading::default(),
        };
        if self.workers.is_empty() {
            return reading;
        }
        let now = self
            .workers
            .iter()
            .map(|&pid| process::read(Some(pid)).map(|p| p.cpu_seconds))
            .sum::<Option<f64>>()
            .map(|seconds| (seconds, Instant::now()));
        self.first = self.first.or(now.map(|(seconds, _)| seconds));
        let workers_pct = now.zip(self.last).map(|((cpu, at), (before, then))| {
            100.0 * (cpu - before) / at.duration_since(then).as_secs_f64().max(f64::EPSILON)
        });
        reading.loadgen_cpu_pct = reading
            .loadgen_cpu_pct
            .zip(workers_pct)
            .map(|(own, workers)| own + workers);
        self.last = now.or(self.last);
        reading
    }

    /// CPU seconds used between the first sample and the last, the
    /// workers' counted as the load generator's.
    pub(super) fn cpu_seconds(&self) -> CpuSeconds {
        let mut used = self
            .monitor
            .as_ref()
            .map(Monitor::cpu_seconds)
            .unwrap_or_default();
        if !self.workers.is_empty() {
            let workers = self
                .first
                .zip(self.last)
                .map(|(first, (last, _))| last - first);
            used.loadgen = used
                .loadgen
                .zip(workers)
                .map(|(own, workers)| own + workers);
        }
        used
    }
}

/// The rows so far, the phases so far, the totals, and the stats of the
/// interval being measured.
pub(super) struct Timeline<'a> {
    /// The scenario's phases.
    spec: &'a [Phase],
    rows: Vec<Row>,
    phases: Vec<PhaseMeasured>,
    /// Everything so far.
    totals: Stats,
    /// Each server node's part of `totals`.
    nodes: Vec<Stats>,
    /// The interval being measured, all nodes together.
    second: Stats,
    /// The interval being drained, node by node (emptied at once).
    by_node: Vec<Stats>,
    spare: Stats,
    pub(super) last_row: Instant,
    /// The number of the phase in effect when the current interval began.
    pub(super) phase: usize,
    /// The number of the phase `phases` ends with.
    phase_added: Option<usize>,
    /// Told of each row.
    watch: Option<&'a dyn Watch>,
}

impl<'a> Timeline<'a> {
    /// An empty timeline of the phases `spec` over `nodes` server nodes,
    /// its first interval starting at `start`, telling `watch` of each row.
    pub(super) fn new(
        spec: &'a [Phase],
        nodes: usize,
        start: Instant,
        watch: Option<&'a dyn Watch>,
    ) -> Self {
        let per_node = || (0..nodes).map(|_| Stats::default()).collect();
        Self {
            spec,
            rows: Vec::new(),
            phases: Vec::new(),
            totals: Stats::default(),
            nodes: per_node(),
            second: Stats::default(),
            by_node: per_node(),
            spare: Stats::default(),
            last_row: start,
            phase: 0,
            phase_added: None,
            watch,
        }
    }

    /// The failures so far.
    pub(super) fn errors(&self) -> u64 {
        self.totals.counts.error_total()
    }

    /// Ends the current interval: drains the shards into a row (added to
    /// the totals), with a monitor sample. The next interval is that of
    /// phase number `next`.
    pub(super) async fn row(
        &mut self,
        shards: &Shards,
        sampler: &mut Sampler,
        elapsed: Duration,
        next: usize,
        clients: usize,
    ) -> Row {
        let seconds = self.last_row.elapsed().as_secs_f64();
        self.last_row = Instant::now();
        self.drain(shards);
        let reading = sampler.sample().await;
        let index = std::mem::replace(&mut self.phase, next);
        let row = row(
            &self.second,
            elapsed,
            seconds,
            &self.spec[index].name,
            clients,
            reading,
        );
        self.add_to_phase(index, &row, seconds);
        if let Some(watch) = self.watch {
            watch.row(&row, &self.second);
        }
        self.totals.add(&self.second);
        self.second.reset();
        self.rows.push(row.clone());
        row
    }

    /// Drains the shards into the interval, each node's part also into
    /// that node's totals.
    fn drain(&mut self, shards: &Shards) {
        shards.drain_nodes(&mut self.by_node, &mut self.spare);
        for (total, part) in self.nodes.iter_mut().zip(&mut self.by_node) {
            total.add(part);
            self.second.add(part);
            part.reset();
        }
    }

    /// Everything recorded so far (the rows, the phases, the totals and
    /// each node's), copied, for judging a run while it goes on.
    pub(super) fn snapshot(&self) -> Finished {
        Finished {
            rows: self.rows.clone(),
            phases: self.phases.clone(),
            totals: self.totals.clone(),
            nodes: self.nodes.clone(),
        }
    }

    /// What clients flushed as they stopped, added to the last phase and
    /// the totals; then the rows, the phases, the totals and each node's.
    pub(super) fn finish(mut self, shards: &Shards) -> Finished {
        self.drain(shards);
        if let Some(last) = self.phases.last_mut() {
            last.stats.add(&self.second);
        }
        self.totals.add(&self.second);
        Finished {
            rows: self.rows,
            phases: self.phases,
            totals: self.totals,
            nodes: self.nodes,
        }
    }

    /// Adds the interval being measured (its `row`, `seconds` long) to its
    /// phase, number `index`: phases are told apart by position, as two
    /// may have the same name.
    fn add_to_phase(&mut self, index: usize, row: &Row, seconds: f64) {
        if self.phase_added != Some(index) {
            self.phase_added = Some(index);
            self.phases.push(PhaseMeasured {
                name: row.phase.clone(),
                seconds: 0.0,
                clients: 0,
                stats: Stats::default(),
            });
        }
        let phase = self.phases.last_mut().expect("pushed if missing");
        phase.seconds += seconds;
        phase.clients = phase.clients.max(row.clients);
        phase.stats.add(&self.second);
    }
}

/// A whole run's timeline.
pub(super) struct Finished {
    /// One row per second, and one at each change of phase.
    pub(super) rows: Vec<Row>,
    /// Each phase, in order.
    pub(super) phases: Vec<PhaseMeasured>,
    /// Everything.
    pub(super) totals: Stats,
    /// Each server node's part of `totals`.
    pub(super) nodes: Vec<Stats>,
}

/// The timeline row of one interval of `seconds`.
fn row(
    stats: &Stats,
    elapsed: Duration,
    seconds: f64,
    phase: &str,
    clients: usize,
    reading: Reading,
) -> Row {
    let latency = |q: f64| quantile(&stats.latency, q);
    let schedule_lag = |q: f64| quantile(&stats.schedule_lag, q);
    Row {
        t_s: elapsed.as_secs_f64(),
        phase: phase.to_owned(),
        clients: u32::try_from(clients).unwrap_or(u32::MAX),
        events_per_s: stats.counts.events as f64 / seconds,
        bytes_per_s: stats.counts.bytes as f64 / seconds,
        latency_p50_us: latency(0.50),
        latency_p90_us: latency(0.90),
        latency_p95_us: latency(0.95),
        latency_p99_us: latency(0.99),
        latency_p999_us: latency(0.999),
        latency_max_us: (!stats.latency.is_empty()).then(|| stats.latency.max()),
        schedule_lag_p50_us: schedule_lag(0.50),
        schedule_lag_p99_us: schedule_lag(0.99),
        errors: stats.counts.error_total(),
        server_cpu_pct: reading.server_cpu_pct,
        server_rss_mb: reading.server_rss_mb,
        server_heap_bytes: reading.server_heap_bytes,
        loadgen_cpu_pct: reading.loadgen_cpu_pct,
        loadgen_rss_mb: reading.loadgen_rss_mb,
        connects: stats.counts.connects,
    }
}

/// The `q` quantile of `histogram` (µs), if it holds anything.
fn quantile(histogram: &Histogram<u64>, q: f64) -> Option<u64> {
    (!histogram.is_empty()).then(|| histogram.value_at_quantile(q))
}
