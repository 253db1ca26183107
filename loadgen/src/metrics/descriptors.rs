//! Open files of a process (the load generator itself, or a local server)
//! and its soft limit, read from `/proc` (`None` where there is none), and
//! the peak of them over a capacity search's step: running out of
//! descriptors is one of the things that can bound a step.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often [`watch`] reads.
const EVERY: Duration = Duration::from_millis(250);

/// Descriptors open in a process, and how many it may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Descriptors {
    /// Open now (or at the peak).
    pub open: u64,
    /// Its soft limit (`None`: unlimited or not known).
    pub limit: Option<u64>,
}

impl Descriptors {
    /// The process `pid`'s (`None`: this one), if `/proc` tells.
    pub fn read(pid: Option<u32>) -> Option<Self> {
        let dir = pid.map_or_else(|| "/proc/self".to_owned(), |pid| format!("/proc/{pid}"));
        let open = std::fs::read_dir(format!("{dir}/fd")).ok()?.count() as u64;
        let limits = std::fs::read_to_string(format!("{dir}/limits")).ok();
        Some(Self {
            open,
            limit: limits.as_deref().and_then(soft_limit),
        })
    }

    /// The larger count of `self` and `other`, with the limit known.
    #[must_use]
    pub fn max(self, other: Self) -> Self {
        Self {
            open: self.open.max(other.open),
            limit: self.limit.or(other.limit),
        }
    }
}

/// The soft "Max open files" of a `/proc/PID/limits` text.
fn soft_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The peak open files of the process `pid` (`None`: this one) until
/// `stop`, read every 250 ms (`None` if `/proc` never told).
///
/// # Cancel safety
///
/// Dropping it loses the peak; cancel `stop` to have it.
pub async fn watch(pid: Option<u32>, stop: CancellationToken) -> Option<Descriptors> {
    let mut peak: Option<Descriptors> = None;
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return peak,
            _ = tick.tick() => {
                if let Some(now) = Descriptors::read(pid) {
                    peak = Some(peak.map_or(now, |p| p.max(now)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63432                63432                processes \n\
                      Max open files            20000                40000                files     \n";
        assert_eq!(soft_limit(limits), Some(20_000));
        assert_eq!(
            soft_limit("Max open files  unlimited  unlimited  files\n"),
            None
        );
        let here = Descriptors::read(None).expect("this process has /proc");
        assert!(here.open > 0 && here.limit.is_some(), "{here:?}");
    }
}
