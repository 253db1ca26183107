//! The connection limit, and the replay limit built the same way. Each
//! stream (each replay) holds an owned permit for its whole life; when none
//! is left the stream is shed at once (SSE `503` with `Retry-After`,
//! WebSocket close 1013) instead of queueing, so the server keeps serving
//! the streams it has.
//!
//! A `tower` concurrency-limit layer would not do: it counts a request only
//! until its response headers are sent, while a stream lives on in the body.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is at its limit of {limit} {what}")]
pub struct OverCapacity {
    /// The configured limit.
    pub limit: usize,
    /// What is limited, plural: `streams`, `replays`.
    pub what: &'static str,
}

/// Hands out one permit per open stream (or whatever it counts), up to a
/// limit.
#[derive(Debug, Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    limit: usize,
    what: &'static str,
}

impl Admission {
    /// Admits at most `limit` streams at once.
    pub fn new(limit: usize) -> Self {
        Self::counting(limit, "streams")
    }

    /// Admits at most `limit` of `what` (plural, for the error) at once.
    pub fn counting(limit: usize, what: &'static str) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            what,
        }
    }

    /// Takes a permit without waiting.
    ///
    /// # Errors
    ///
    /// [`OverCapacity`] when every permit is in use.
    pub fn try_admit(&self) -> Result<OwnedSemaphorePermit, OverCapacity> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| OverCapacity {
                limit: self.limit,
                what: self.what,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_over_the_limit_and_readmits_after_release() {
        let admission = Admission::counting(2, "replays");
        let a = admission.try_admit().unwrap();
        let _b = admission.try_admit().unwrap();
        let over = admission.try_admit().unwrap_err();
        assert_eq!(
            over,
            OverCapacity {
                limit: 2,
                what: "replays"
            }
        );
        assert_eq!(over.to_string(), "the server is at its limit of 2 replays");
        drop(a);
        assert!(admission.try_admit().is_ok());
    }
}
