//! One process (the load generator itself, or a local server) watched over
//! a span of time, such as a capacity search's step: the CPU it used
//! (its share of one core, from its CPU seconds at the start and the end)
//! and the peak of its open files against its soft limit, read from
//! `/proc` every 250 ms; and the whole machine's CPU ([`machine`]), which
//! other processes share. A step's own summary may have no CPU figure when
//! it lasts under its monitor's first second; these always have.

use std::time::{Duration, Instant};

use streamgauge_server::process;
use tokio_util::sync::CancellationToken;

/// How often [`watch`] reads.
const EVERY: Duration = Duration::from_millis(250);

/// Descriptors open in a process, and how many it may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Descriptors {
    /// Open at the peak.
    pub open: u64,
    /// Its soft limit (`None`: unlimited or not known).
    pub limit: Option<u64>,
}

/// What a process used over a span of time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    /// CPU, % of one core (`None`: `/proc` did not tell).
    pub cpu_pct: Option<f64>,
    /// Its open files at their peak.
    pub files: Option<Descriptors>,
}

/// What the process `pid` (`None`: this one) used from now until `stop`.
///
/// # Cancel safety
///
/// Dropping it loses what it read; cancel `stop` to have it.
pub async fn watch(pid: Option<u32>, stop: CancellationToken) -> Load {
    let started = Instant::now();
    let first = process::read(pid);
    let mut load = Load::default();
    let mut last = first;
    let mut tick = tokio::time::interval(EVERY);
    loop {
        if let Some(now) = last {
            let peak = load.files.map_or(0, |d| d.open).max(now.open_fds);
            load.files = Some(Descriptors {
                open: peak,
                limit: now.max_fds,
            });
        }
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => last = process::read(pid),
        }
    }
    let end = process::read(pid).or(last);
    let seconds = started.elapsed().as_secs_f64();
    load.cpu_pct = first
        .zip(end)
        .filter(|_| seconds > 0.0)
        .map(|(first, end)| 100.0 * (end.cpu_seconds - first.cpu_seconds) / seconds);
    load
}

/// Busy and total CPU time of the whole machine so far, in clock ticks,
/// from the first line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: idle and iowait
    // are not busy.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The whole machine's busy CPU from now until `stop`, % of all its cores
/// (`None`: `/proc/stat` did not tell).
pub async fn machine(stop: CancellationToken) -> Option<f64> {
    let first = machine_ticks();
    stop.cancelled().await;
    let (busy, total) = first
        .zip(machine_ticks())
        .map(|((b0, t0), (b1, t1))| (b1 - b0, t1 - t0))?;
    (total > 0).then(|| 100.0 * busy as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn this_process_is_watched_until_told_to_stop() {
        let stop = CancellationToken::new();
        stop.cancel();
        let load = watch(None, stop).await;
        let files = load.files.expect("this process has /proc");
        assert!(files.open > 0 && files.limit.is_some(), "{load:?}");
        assert!(load.cpu_pct.is_some_and(|pct| pct >= 0.0), "{load:?}");
        let (busy, total) = machine_ticks().expect("this machine has /proc/stat");
        assert!(busy <= total && total > 0);
    }
}
