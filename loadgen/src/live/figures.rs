//! What the dashboard's `/metrics` shows: the load generator's own
//! figures in the Prometheus text format, with conventional names (listed
//! in docs/cli.md). Counters add up the rows of every run of the
//! invocation; gauges are the latest row's; `process_*` are this
//! process's own (the server's collector, reused). A figure the latest row
//! does not have (no latency in an interval without events, no server
//! figures without a monitor) is left out rather than made up.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use streamgauge_server::metrics::Exposition;
use streamgauge_server::process::ProcessCollector;

use super::event::RunLabel;
use crate::metrics::timeline::Row;
use crate::metrics::{ErrorKind, Stats};

/// The figures so far.
#[derive(Debug, Default)]
struct Tally {
    /// Events received, every run's rows.
    events: u64,
    /// Payload bytes received.
    bytes: u64,
    /// Streams opened.
    connects: u64,
    /// Failures, by kind in [`ErrorKind::ALL`] order.
    errors: [u64; 5],
    /// The run in progress (or the last one).
    run: Option<RunLabel>,
    /// Its latest row.
    last: Option<Row>,
}

/// The figures, shared between the runner's watcher and the scrapes.
#[derive(Debug, Clone, Default)]
pub(super) struct Figures(Arc<Mutex<Tally>>);

impl Figures {
    /// Counts `row` of `run`, `interval` being what it measured.
    pub(super) fn add(&self, run: &RunLabel, row: &Row, interval: &Stats) {
        let mut tally = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = &interval.counts;
        tally.events += counts.events;
        tally.bytes += counts.bytes;
        tally.connects += counts.connects;
        for (total, n) in tally.errors.iter_mut().zip(counts.errors) {
            *total += n;
        }
        if tally.run.as_ref() != Some(run) {
            tally.run = Some(run.clone());
        }
        tally.last = Some(row.clone());
    }

    /// Every figure, in the Prometheus text format 0.0.4.
    pub(super) fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        registry.register_collector(Box::new(ProcessCollector));
        Exposition::Prometheus.encode(&registry)
    }
}

/// The quantiles of a row's delivery latency, with their label values.
fn latency_quantiles(row: &Row) -> [(&'static str, Option<u64>); 5] {
    [
        ("0.5", row.latency_p50_us),
        ("0.9", row.latency_p90_us),
        ("0.95", row.latency_p95_us),
        ("0.99", row.latency_p99_us),
        ("0.999", row.latency_p999_us),
    ]
}

/// Writes a counter `name` (its samples get `_total`).
fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Fmt {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

/// Writes a gauge `name`, if it has a value.
fn gauge<N: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: Option<N>,
) -> Fmt {
    match value {
        Some(value) => ConstGauge::new(value).encode(encoder.encode_descriptor(
            name,
            help,
            None,
            MetricType::Gauge,
        )?),
        None => Ok(()),
    }
}

/// What encoding returns.
type Fmt = Result<(), std::fmt::Error>;

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Fmt {
        let tally = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let e = &mut encoder;
        counter(
            e,
            "streamgauge_loadgen_events",
            "Events received",
            tally.events,
        )?;
        counter(
            e,
            "streamgauge_loadgen_bytes",
            "Payload bytes received",
            tally.bytes,
        )?;
        counter(
            e,
            "streamgauge_loadgen_connects",
            "Streams opened, reconnects included",
            tally.connects,
        )?;
        let mut errors = e.encode_descriptor(
            "streamgauge_loadgen_errors",
            "Failures, by kind",
            None,
            MetricType::Counter,
        )?;
        for (kind, n) in ErrorKind::ALL.iter().zip(tally.errors) {
            ConstCounter::new(n).encode(errors.encode_family(&[("kind", kind.key())])?)?;
        }
        if let Some(run) = &tally.run {
            let repeat = run.repeat.to_string();
            let labels = [
                ("run_id", run.run_id.as_str()),
                ("scenario", run.scenario.as_str()),
                ("transport", run.transport),
                ("repeat", repeat.as_str()),
            ];
            let mut info = e.encode_descriptor(
                "streamgauge_loadgen_run_info",
                "The run in progress (or the last one)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1).encode(info.encode_family(&labels)?)?;
        }
        let Some(row) = &tally.last else {
            return Ok(());
        };
        latest(e, row)
    }
}

/// Writes the gauges of the latest row.
fn latest(e: &mut DescriptorEncoder<'_>, row: &Row) -> Fmt {
    let bytes = |mib: Option<f64>| mib.map(|mib| (mib * 1024.0 * 1024.0).round() as u64);
    gauge(
        e,
        "streamgauge_loadgen_clients",
        "Clients connected or connecting",
        Some(row.clients),
    )?;
    gauge(
        e,
        "streamgauge_loadgen_events_per_second",
        "Events received per second, the latest interval",
        Some(row.events_per_s),
    )?;
    gauge(
        e,
        "streamgauge_loadgen_elapsed_seconds",
        "Seconds into the run, at the latest interval's end",
        Some(row.t_s),
    )?;
    let quantiles = latency_quantiles(row);
    if quantiles.iter().any(|(_, us)| us.is_some()) {
        let mut latency = e.encode_descriptor(
            "streamgauge_loadgen_latency_seconds",
            "Delivery latency (receipt - ts) over the latest interval, by quantile",
            None,
            MetricType::Gauge,
        )?;
        for (quantile, us) in quantiles {
            if let Some(us) = us {
                ConstGauge::new(us as f64 / 1e6)
                    .encode(latency.encode_family(&[("quantile", quantile)])?)?;
            }
        }
    }
    gauge(
        e,
        "streamgauge_loadgen_cpu_percent",
        "Load generator CPU, % of one core, worker processes included",
        row.loadgen_cpu_pct,
    )?;
    gauge(
        e,
        "streamgauge_loadgen_resident_memory_bytes",
        "Load generator resident memory",
        bytes(row.loadgen_rss_mb),
    )?;
    gauge(
        e,
        "streamgauge_loadgen_server_cpu_percent",
        "Server CPU, % of one core, as the load generator samples it",
        row.server_cpu_pct,
    )?;
    gauge(
        e,
        "streamgauge_loadgen_server_resident_memory_bytes",
        "Server resident memory, as the load generator samples it",
        bytes(row.server_rss_mb),
    )?;
    gauge(
        e,
        "streamgauge_loadgen_server_heap_bytes",
        "Server live heap (servers built with heap profiling)",
        row.server_heap_bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label() -> RunLabel {
        RunLabel {
            run_id: "r1".to_owned(),
            scenario: "steady".to_owned(),
            transport: "sse",
            repeat: 1,
        }
    }

    #[test]
    fn counters_add_up_the_rows_and_gauges_show_the_latest() {
        let figures = Figures::default();
        let mut interval = Stats::default();
        interval.counts.events = 40;
        interval.counts.errors[ErrorKind::Timeout as usize] = 2;
        let row = |clients, p99| Row {
            clients,
            events_per_s: 40.0,
            latency_p99_us: p99,
            ..Row::default()
        };
        figures.add(&label(), &row(3, Some(2_500)), &interval);
        figures.add(&label(), &row(4, None), &interval);
        let text = figures.render();
        for line in [
            "streamgauge_loadgen_events_total 80",
            "streamgauge_loadgen_errors_total{kind=\"timeout\"} 4",
            "streamgauge_loadgen_errors_total{kind=\"connect\"} 0",
            "streamgauge_loadgen_clients 4",
            "streamgauge_loadgen_run_info{run_id=\"r1\",scenario=\"steady\",transport=\"sse\",repeat=\"1\"} 1",
            "# TYPE streamgauge_loadgen_events_total counter",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        // The latest interval had no latency: no quantile is made up.
        assert!(!text.contains("latency_seconds{"), "{text}");
        assert!(!text.contains("server_cpu_percent"), "no monitor: {text}");
    }

    #[test]
    fn latency_quantiles_are_in_seconds() {
        let figures = Figures::default();
        let row = Row {
            latency_p50_us: Some(1_500),
            latency_p99_us: Some(250_000),
            ..Row::default()
        };
        figures.add(&label(), &row, &Stats::default());
        let text = figures.render();
        assert!(
            text.contains("streamgauge_loadgen_latency_seconds{quantile=\"0.5\"} 0.0015"),
            "{text}"
        );
        assert!(
            text.contains("streamgauge_loadgen_latency_seconds{quantile=\"0.99\"} 0.25"),
            "{text}"
        );
        assert!(!text.contains("quantile=\"0.9\""), "{text}");
    }
}
