//! Transports only frame and deliver bytes: SSE events in a chunked body,
//! WebSocket text frames. Keep-alive, liveness and close codes live here.
//!
//! A [`Transport`] is driven by [`session::run`](crate::session::run); it
//! never sees a queue or a source. [`memory`] is an in-memory twin for tests
//! and benchmarks (feature `test-util`).

use std::future::Future;

use bytes::Bytes;

use crate::disconnect::Disconnect;
use crate::writer::Batch;

/// What the peer sent that the session must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A text message (WebSocket), for the stream's inbox.
    Text(Bytes),
    /// Something that ends the stream: a close, a forbidden message, an
    /// error.
    End(Disconnect),
}

#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod sse;
pub mod ws;

/// The outbound side of one streaming connection.
pub trait Transport: Send {
    /// Writes one batch and flushes it once.
    ///
    /// # Errors
    ///
    /// The [`Disconnect`] that ends the stream when the write fails.
    fn write_batch(
        &mut self,
        batch: &Batch<'_>,
    ) -> impl Future<Output = Result<(), Disconnect>> + Send;

    /// Called at every keep-alive interval: checks the peer's liveness and
    /// sends a keep-alive if one is needed. Returns whether one was sent.
    ///
    /// # Errors
    ///
    /// The [`Disconnect`] that ends the stream (a dead peer, a failed write).
    fn keep_alive(&mut self) -> impl Future<Output = Result<bool, Disconnect>> + Send;

    /// Reads from the peer and resolves only with a text message or with
    /// what ends the stream; control frames are handled inside.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: used in `select!` against the queue and timers.
    fn recv(&mut self) -> impl Future<Output = Inbound> + Send;

    /// Sends a reply to a message the peer sent (one text frame, flushed).
    /// Only transports that return [`Inbound::Text`] are ever asked to.
    ///
    /// # Errors
    ///
    /// The [`Disconnect`] that ends the stream when the write fails.
    fn send_reply(&mut self, reply: Bytes) -> impl Future<Output = Result<(), Disconnect>> + Send;

    /// Ends the stream as `reason` says (close code, end of body).
    fn close(self, reason: Disconnect) -> impl Future<Output = ()> + Send;
}
