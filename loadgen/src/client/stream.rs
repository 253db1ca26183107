//! What a stream yields, on either transport: a [`Frame`] (an event, a
//! keep-alive, the end), or why it failed ([`ClientError`], sorted as
//! `summary.json` counts failures); and the clock frames are stamped with.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::format::Message;
use crate::metrics::ErrorKind;
use crate::metrics::auth::{Ended, Refusal};

/// What [`now_micros`] adds to the system clock, µs: 0 but on an agent,
/// which puts its measurements on its coordinator's clock.
static ADJUSTMENT_US: AtomicI64 = AtomicI64::new(0);

/// The wall clock in µs since the Unix epoch, the server's `ts` clock:
/// the system's, adjusted by [`adjust_clock`].
pub fn now_micros() -> u64 {
    let system = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    u64::try_from(system.saturating_add(ADJUSTMENT_US.load(Ordering::Relaxed))).unwrap_or(0)
}

/// Makes [`now_micros`] read the system clock plus `by_us` from now on
/// (for the whole process): an agent's measurements on its coordinator's
/// clock (and a test's injected offset).
pub fn adjust_clock(by_us: i64) {
    ADJUSTMENT_US.store(by_us, Ordering::Relaxed);
}

/// `duration` in whole µs.
pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Why a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be made.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The server refused the stream with this unexpected status.
    #[error("status {0}")]
    Status(u16),
    /// The server shed the stream: `503` or `429` (with `Retry-After` in
    /// seconds, if it gave one) or WebSocket close `1013`. A load the server
    /// refuses by design, counted apart from the errors.
    #[error("shed with {code}")]
    Shed {
        /// The HTTP status or the WebSocket close code.
        code: u16,
        /// How long the server asked the client to wait.
        retry_after: Option<Duration>,
    },
    /// The server refused the credential: `401` or `403` (before any
    /// stream; a WebSocket's before the upgrade), the body saying why.
    #[error("refused with {status}: {reason:?}")]
    Refused {
        /// `401` or `403`.
        status: u16,
        /// The body's `reason`.
        reason: Refusal,
    },
    /// The server ended the live stream because of its token (SSE `end`
    /// with that reason, WebSocket close 4401 or 4403).
    #[error("ended: {0:?}")]
    Ended(Ended),
    /// Malformed bytes.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
    /// The stream broke off.
    #[error("closed: {0}")]
    Closed(String),
}

impl ClientError {
    /// The server answered the stream request with `status` (not 200 or
    /// 101) and `Retry-After` (delta seconds, if any): shed for 429 and
    /// 503, otherwise an unexpected status.
    pub fn refused(status: u16, retry_after: Option<u64>) -> Self {
        match status {
            429 | 503 => ClientError::Shed {
                code: status,
                retry_after: retry_after.map(Duration::from_secs),
            },
            other => ClientError::Status(other),
        }
    }

    /// [`ClientError::refused`], a `401` or `403` read with its `body`:
    /// the credential refused, and why.
    pub fn answered(status: u16, retry_after: Option<u64>, body: &[u8]) -> Self {
        match status {
            401 | 403 => ClientError::Refused {
                status,
                reason: Refusal::of_body(body),
            },
            other => ClientError::refused(other, retry_after),
        }
    }

    /// Whether it is this machine's limit (out of file descriptors or
    /// local ports), not the server's answer.
    pub fn is_local_limit(&self) -> bool {
        let ClientError::Connect(e) = self else {
            return false;
        };
        matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::EADDRNOTAVAIL | libc::EADDRINUSE)
        )
    }

    /// How `summary.json` counts it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Connect(_) => ErrorKind::Connect,
            ClientError::Status(_) | ClientError::Shed { .. } | ClientError::Refused { .. } => {
                ErrorKind::HttpStatus
            }
            ClientError::Protocol(_) => ErrorKind::Protocol,
            ClientError::Timeout => ErrorKind::Timeout,
            ClientError::Closed(_) | ClientError::Ended(_) => ErrorKind::Closed,
        }
    }
}

/// What a stream delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// An event, a notice, or a foreign message.
    Event {
        /// What it says.
        message: Message,
        /// Its size on the wire (the JSON).
        bytes: usize,
        /// When it arrived, µs since the Unix epoch.
        received_us: u64,
    },
    /// A keep-alive.
    KeepAlive,
    /// The server ended the stream cleanly (or sent the target's end
    /// marker).
    End,
}
