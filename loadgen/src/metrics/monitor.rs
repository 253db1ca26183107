//! Samples the server's CPU and memory once a second, and the load
//! generator's own CPU and resident memory, so a report says who was busy
//! and what the load generator's connections cost it. A server the load
//! generator started is read from `/proc/PID`; any other from its
//! `/metrics` (the standard `process_*` metrics, when it has them). The live
//! heap comes from the server's `GET /debug/heap` (a server built with its
//! `dhat-heap` feature); a server without it answers 404 once and is not
//! asked again. A server of several nodes is the sum of its nodes: their
//! CPU, resident memory and live heap added up (a figure is given only when
//! every node gave it).

use std::time::Instant;

use streamgauge_server::process::{self, ProcessStats};

/// How long a `/metrics` scrape may take.
const SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Where the server's figures come from.
#[derive(Debug)]
enum Source {
    /// A local child process.
    Process(u32),
    /// A remote server's `/metrics`.
    Metrics { url: String, http: reqwest::Client },
}

/// One sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// Server CPU since the last sample, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server resident memory, MiB.
    pub server_rss_mb: Option<f64>,
    /// Load generator CPU since the last sample, % of one core.
    pub loadgen_cpu_pct: Option<f64>,
    /// Load generator resident memory, MiB.
    pub loadgen_rss_mb: Option<f64>,
    /// Server live heap bytes, when it serves `/debug/heap`.
    pub server_heap_bytes: Option<u64>,
}

/// Where the live heap is read, while the server serves it.
#[derive(Debug)]
struct HeapProbe {
    url: String,
    http: reqwest::Client,
}

impl HeapProbe {
    /// The live heap bytes; `Err` when the server has no heap figures (the
    /// probe is dropped), `Ok(None)` when this one read failed.
    async fn read(&self) -> Result<Option<u64>, ()> {
        let Ok(response) = self
            .http
            .get(&self.url)
            .timeout(SCRAPE_TIMEOUT)
            .send()
            .await
        else {
            return Ok(None);
        };
        if !response.status().is_success() {
            return Err(());
        }
        let body = tokio::time::timeout(SCRAPE_TIMEOUT, response.json::<serde_json::Value>()).await;
        match body {
            Ok(Ok(json)) => json["current_bytes"].as_u64().map(Some).ok_or(()),
            _ => Ok(None),
        }
    }
}

/// CPU seconds at an instant, to turn the next reading into a percentage.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    seconds: f64,
    at: Instant,
}

impl CpuMark {
    /// % of one core used since `self`, and the new mark.
    fn advance(mark: &mut Option<CpuMark>, seconds: f64) -> Option<f64> {
        let now = CpuMark {
            seconds,
            at: Instant::now(),
        };
        let pct = mark.map(|before| {
            let wall = now.at.duration_since(before.at).as_secs_f64();
            if wall > 0.0 {
                100.0 * (now.seconds - before.seconds) / wall
            } else {
                0.0
            }
        });
        *mark = Some(now);
        pct
    }
}

/// CPU time used over a run, s (`None`: not measurable).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CpuSeconds {
    /// By the server.
    pub server: Option<f64>,
    /// By the load generator.
    pub loadgen: Option<f64>,
}

/// Where one server node's figures come from.
#[derive(Debug)]
struct Node {
    source: Source,
    heap: Option<HeapProbe>,
}

impl Node {
    /// Its CPU seconds and resident bytes, and its live heap (`Err`: it
    /// has no heap figures).
    async fn read(&self) -> (Option<(f64, Option<u64>)>, Result<Option<u64>, ()>) {
        let server = match &self.source {
            Source::Process(pid) => {
                process::read(Some(*pid)).map(|s| (s.cpu_seconds, Some(s.rss_bytes)))
            }
            Source::Metrics { url, http } => scrape(http, url).await,
        };
        let heap = match &self.heap {
            Some(probe) => probe.read().await,
            None => Err(()),
        };
        (server, heap)
    }
}

/// Samples the server (every node of it) and the load generator.
#[derive(Debug)]
pub struct Monitor {
    nodes: Vec<Node>,
    server: Option<CpuMark>,
    loadgen: Option<CpuMark>,
    /// The first CPU figures, for [`Monitor::cpu_seconds`].
    first: (Option<f64>, Option<f64>),
}

impl Monitor {
    /// Reads a local server process.
    pub fn process(pid: u32) -> Self {
        Self::new(Source::Process(pid))
    }

    /// Reads a server's `/metrics` at `base_url`.
    pub fn metrics(base_url: &str, http: reqwest::Client) -> Self {
        Self::new(Source::Metrics {
            url: format!("{base_url}/metrics"),
            http,
        })
    }

    /// Reads the load generator alone: a foreign server named by its URL,
    /// whose process and `/metrics` the load generator does not know.
    pub fn loadgen_only() -> Self {
        Self {
            nodes: Vec::new(),
            server: None,
            loadgen: None,
            first: (None, None),
        }
    }

    /// Also reads the live heap from `base_url`'s `/debug/heap` (the node
    /// added last).
    #[must_use]
    pub fn with_heap(mut self, base_url: &str, http: reqwest::Client) -> Self {
        if let Some(node) = self.nodes.last_mut() {
            node.heap = Some(HeapProbe {
                url: format!("{base_url}/debug/heap"),
                http,
            });
        }
        self
    }

    /// This and `other`'s nodes, as one server's.
    #[must_use]
    pub fn and(mut self, other: Monitor) -> Self {
        self.nodes.extend(other.nodes);
        self
    }

    fn new(source: Source) -> Self {
        Self {
            nodes: vec![Node { source, heap: None }],
            server: None,
            loadgen: None,
            first: (None, None),
        }
    }

    /// CPU seconds used between the first sample and the last.
    pub fn cpu_seconds(&self) -> CpuSeconds {
        let used = |first: Option<f64>, last: Option<CpuMark>| {
            first.zip(last).map(|(first, last)| last.seconds - first)
        };
        CpuSeconds {
            server: used(self.first.0, self.server),
            loadgen: used(self.first.1, self.loadgen),
        }
    }

    /// Takes a sample (the first one gives no CPU figure: it sets the mark).
    pub async fn sample(&mut self) -> Reading {
        // No node: no server figures (not zeros).
        let known = !self.nodes.is_empty();
        let mut server = known.then_some((0.0, Some(0)));
        let mut heap = if known { Ok(Some(0)) } else { Err(()) };
        for node in &self.nodes {
            let (figures, live) = node.read().await;
            server = server
                .zip(figures)
                .map(|((cpu, rss), (more_cpu, more_rss))| {
                    (cpu + more_cpu, rss.zip(more_rss).map(|(a, b)| a + b))
                });
            heap = match (heap, live) {
                (Ok(sum), Ok(live)) => Ok(sum.zip(live).map(|(a, b)| a + b)),
                _ => Err(()),
            };
        }
        let loadgen_stats = process::read(None);
        let loadgen = loadgen_stats.map(|s: ProcessStats| s.cpu_seconds);
        self.first.0 = self.first.0.or(server.map(|(cpu, _)| cpu));
        self.first.1 = self.first.1.or(loadgen);
        if heap.is_err() {
            // A node without heap figures: none is asked again.
            self.nodes.iter_mut().for_each(|node| node.heap = None);
        }
        Reading {
            server_heap_bytes: heap.ok().flatten(),
            server_cpu_pct: server.and_then(|(cpu, _)| CpuMark::advance(&mut self.server, cpu)),
            server_rss_mb: server.and_then(|(_, rss)| rss).map(mebibytes),
            loadgen_cpu_pct: loadgen.and_then(|cpu| CpuMark::advance(&mut self.loadgen, cpu)),
            loadgen_rss_mb: loadgen_stats.map(|s| mebibytes(s.rss_bytes)),
        }
    }
}

/// `bytes` in MiB.
fn mebibytes(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// CPU seconds and resident bytes from a Prometheus exposition.
async fn scrape(http: &reqwest::Client, url: &str) -> Option<(f64, Option<u64>)> {
    // Bounded: a server that does not answer must not stall the run.
    let response = http.get(url).timeout(SCRAPE_TIMEOUT).send().await.ok()?;
    let text = tokio::time::timeout(SCRAPE_TIMEOUT, response.text())
        .await
        .ok()?
        .ok()?;
    let cpu = sample_value(&text, "process_cpu_seconds_total")?;
    Some((
        cpu,
        sample_value(&text, "process_resident_memory_bytes").map(|b| b as u64),
    ))
}

/// The value of the first sample of `name` in a Prometheus text (0.0.4) or
/// OpenMetrics exposition: `name[{labels}] value [timestamp]`.
fn sample_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let rest = match rest.strip_prefix('{') {
            Some(labels) => &labels[labels.find('}')? + 1..],
            None => rest,
        };
        rest.strip_prefix(' ')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_from_either_exposition_format() {
        let prometheus = "# HELP process_cpu_seconds_total CPU.\n\
            # TYPE process_cpu_seconds_total counter\n\
            process_cpu_seconds_total 12.5 1700000000000\n\
            process_cpu_seconds_total_extra 9\n\
            process_resident_memory_bytes{pid=\"7\"} 3.2e7\n";
        assert_eq!(
            sample_value(prometheus, "process_cpu_seconds_total"),
            Some(12.5)
        );
        assert_eq!(
            sample_value(prometheus, "process_resident_memory_bytes"),
            Some(3.2e7)
        );
        let openmetrics = "# TYPE process_cpu_seconds counter\n\
            # UNIT process_cpu_seconds seconds\n\
            process_cpu_seconds_total 0.75\n# EOF\n";
        assert_eq!(
            sample_value(openmetrics, "process_cpu_seconds_total"),
            Some(0.75)
        );
        assert_eq!(
            sample_value(openmetrics, "process_resident_memory_bytes"),
            None
        );
    }

    #[tokio::test]
    async fn a_local_process_gives_memory_at_once_and_cpu_from_the_second_sample() {
        let mut monitor = Monitor::process(std::process::id());
        let first = monitor.sample().await;
        assert!(first.server_rss_mb.unwrap() > 0.0);
        assert_eq!(first.server_cpu_pct, None);
        let second = monitor.sample().await;
        assert!(second.server_cpu_pct.unwrap() >= 0.0);
        assert!(second.loadgen_cpu_pct.is_some());
        // This test process is both: the two memory figures are one.
        let (server, loadgen) = (
            second.server_rss_mb.unwrap(),
            second.loadgen_rss_mb.unwrap(),
        );
        assert!(
            loadgen > 0.0 && (server - loadgen).abs() < 16.0,
            "{server} {loadgen}"
        );
    }

    #[tokio::test]
    async fn a_server_of_several_nodes_is_the_sum_of_its_nodes() {
        let alone = Monitor::process(std::process::id()).sample().await;
        let mut two =
            Monitor::process(std::process::id()).and(Monitor::process(std::process::id()));
        let both = two.sample().await;
        let (one, sum) = (alone.server_rss_mb.unwrap(), both.server_rss_mb.unwrap());
        assert!((sum - 2.0 * one).abs() < 16.0, "{one} {sum}");
        assert_eq!(two.nodes.len(), 2);
    }
}
