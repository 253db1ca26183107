//! One process (the load generator itself, or a local server) watched over
//! a span of time, such as a capacity search's step: the CPU it used
//! (its share of one core, from its CPU seconds at the start and the end)
//! and the peak of its open files against its soft limit, read from
//! `/proc` every 250 ms. A step's own summary may have no CPU figure when
//! it lasts under its monitor's first second; this one always has.

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
    }
}
