//! The publisher's clock: waits until an instant to the operating system's
//! timer precision (µs), not tokio's (ms).
//!
//! Tokio's timers fire on 1 ms ticks, rounded up, and the runtime's driver
//! parks for whole milliseconds: a publish due at `t` went out up to 2 ms
//! after `t` (0.8–1.3 ms p50 until the server had it), and since every
//! publish figure counts from its intended send time, that lateness landed
//! in `publish_ms` and `end_to_end_us` as if it were the server's. The
//! metronome is a Linux timerfd, armed for each instant and polled by the
//! runtime like a socket: the kernel's high-resolution timer (no slack)
//! wakes the runtime's own thread at the instant, with no thread in
//! between. Written on `libc` (already a dependency) rather than a timerfd
//! crate: it takes three calls, and tokio's `AsyncFd` does the polling.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::sleep_until;

/// Wakes its one waiter at an instant.
#[derive(Debug)]
pub struct Metronome {
    /// The timerfd; `None` if the kernel refused one (then tokio's timer).
    timer: Option<AsyncFd<OwnedFd>>,
}

impl Metronome {
    /// A metronome on the current runtime. Should the kernel refuse a
    /// timerfd, it waits with tokio's timer instead (and says so).
    pub fn start() -> Self {
        let timer = create().and_then(|fd| {
            // SAFETY: the timerfd is owned by the AsyncFd (an OwnedFd: open,
            // and the same descriptor, until it is dropped with it).
            Ok(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?)
        });
        if let Err(e) = &timer {
            tracing::warn!("publishes paced on tokio's 1 ms timer: no timerfd: {e}");
        }
        Self { timer: timer.ok() }
    }

    /// Resolves at `at`, or at once if `at` has passed. One waiter at a
    /// time: arming the timer again moves it (and forgets an expiry that
    /// a waiter dropped midway left behind).
    pub async fn until(&self, at: Instant) {
        let wait = at.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return;
        }
        let Some(timer) = &self.timer else {
            return sleep_until(at.into()).await;
        };
        if arm(timer.get_ref(), wait).is_err() {
            return sleep_until(at.into()).await;
        }
        loop {
            let Ok(mut ready) = timer.readable().await else {
                return sleep_until(at.into()).await;
            };
            // Readiness left from an earlier expiry reads nothing (the
            // kernel reset the count when the timer was armed): wait on.
            match ready.try_io(|fd| expired(fd.get_ref())) {
                Ok(Ok(())) => return,
                Ok(Err(_)) => return sleep_until(at.into()).await,
                Err(_would_block) => {}
            }
        }
    }
}

/// A non-blocking timerfd on the monotonic clock (that of [`Instant`]).
fn create() -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create takes no pointers.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Arms `timer` to expire once, `wait` from now.
fn arm(timer: &OwnedFd, wait: Duration) -> io::Result<()> {
    let value = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: libc::time_t::try_from(wait.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        },
    };
    // SAFETY: `value` lives through the call; the old value is not asked.
    let armed =
        unsafe { libc::timerfd_settime(timer.as_raw_fd(), 0, &value, std::ptr::null_mut()) };
    if armed < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads `timer`'s expiry count: `WouldBlock` if it has not expired.
fn expired(timer: &OwnedFd) -> io::Result<()> {
    let mut count = [0u8; 8];
    // SAFETY: `count` is 8 writable bytes, as a timerfd read needs.
    let read = unsafe { libc::read(timer.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_no_sooner_than_asked_and_forgets_an_expiry_left_behind() {
        let metronome = Metronome::start();
        let timer = metronome.timer.as_ref().expect("a timerfd on Linux");
        // An expiry nobody read, as a wait dropped midway leaves behind,
        // with the runtime knowing the timer readable.
        arm(timer.get_ref(), Duration::from_micros(1)).unwrap();
        drop(timer.readable().await.unwrap());
        let start = Instant::now();
        for step in 1..=3u32 {
            let at = start + Duration::from_millis(2) * step;
            metronome.until(at).await;
            assert!(Instant::now() >= at, "woken before its instant");
        }
    }
}
