//! A process's resources, read from `/proc`: CPU time, resident memory and
//! file descriptors. The server exposes its own as Prometheus' standard
//! process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`),
//! so that a load generator on another machine sees its CPU and memory; a
//! load generator on the same machine reads the server's directly. Linux
//! only: elsewhere nothing is read and nothing is exposed.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// A process's resources at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time so far, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
}

/// Reads the resources of process `pid` (`None`: this process).
pub fn read(pid: Option<u32>) -> Option<ProcessStats> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let limits = std::fs::read_to_string(format!("{dir}/limits")).ok();
    Some(ProcessStats {
        cpu_seconds: cpu_ticks(&stat)? as f64 / clock_ticks_per_second(),
        rss_bytes: rss_kib(&status)? * 1024,
        open_fds: std::fs::read_dir(format!("{dir}/fd")).map_or(0, |fds| fds.count() as u64),
        max_fds: limits.as_deref().and_then(max_open_files),
    })
}

/// User + system time, in clock ticks, from `/proc/PID/stat`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces: count from its ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of the file are 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in KiB, from `/proc/PID/status`.
fn rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft limit of `Max open files`, from `/proc/PID/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Exposes this process's [`ProcessStats`] at every scrape.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(stats) = read(None) else {
            return Ok(());
        };
        ConstCounter::new(stats.cpu_seconds).encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            MetricType::Counter,
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory, in bytes",
                Some(stats.rss_bytes),
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                Some(stats.open_fds),
            ),
            (
                "process_max_fds",
                "Most open file descriptors allowed",
                stats.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let value = i64::try_from(value).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    MetricType::Gauge,
                )?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files_even_with_spaces_in_the_name() {
        let stat =
            "1234 (my server) S 1 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 1000 200";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(rss_kib("Name:\tx\nVmRSS:\t  2048 kB\n"), Some(2048));
        let limits = "Limit Soft Limit Hard Limit Units\nMax open files            20000                20000                files\n";
        assert_eq!(max_open_files(limits), Some(20_000));
    }

    #[test]
    fn reads_this_process() {
        let stats = read(None).expect("/proc is readable on Linux");
        assert!(stats.rss_bytes > 0 && stats.open_fds > 0);
        assert!(stats.cpu_seconds >= 0.0);
    }
}
