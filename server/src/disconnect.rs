//! Why a stream ended, and what that means on the wire.
//!
//! Once a stream has started, errors are no longer HTTP errors: every end of
//! a stream is a [`Disconnect`], and the reason decides the WebSocket close
//! code (RFC 6455) or, on SSE, a clean end of the body. The reason is also
//! the `reason` label of `streamgauge_disconnects_total`.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disconnect {
    /// The source finished (`count` reached): WS 1000, SSE end of body.
    Complete,
    /// The server is shutting down: WS 1001, SSE end of body.
    Shutdown,
    /// The peer closed the stream or its connection went away.
    PeerGone,
    /// The peer stopped answering pings within the timeout: WS 1008.
    PeerTimeout,
    /// The peer stopped reading for longer than the write timeout. Its
    /// connection is dropped: nothing more can be written to it.
    SlowConsumer,
    /// The peer sent a message this stream does not accept: WS 1003.
    UnsupportedData,
    /// The peer sent a message over the size limit: WS 1009.
    MessageTooBig,
    /// The server is at its connection limit: WS 1013.
    OverCapacity,
    /// A topic subscriber fell behind and its policy is to be disconnected
    /// (it may resume from its last `seq`): WS 1008.
    Lagged,
    /// The peer sent a message that is not a valid publish frame: WS 1007.
    InvalidMessage,
    /// The peer tried to publish without a valid token: WS 1008.
    Unauthorized,
    /// The store failed under this stream: WS 1011.
    StorageUnavailable,
    /// The peer sent pings faster than a stream answers them: WS 1008.
    PingFlood,
    /// The JWT that opened the stream expired: WS 4401, SSE `end` notice.
    TokenExpired,
    /// The JWT's subject or id was denylisted: WS 4403, SSE `end` notice.
    Revoked,
    /// An operator deleted the topic (after its `deleted` gap notice): WS
    /// 4404, SSE `end` notice.
    TopicDeleted,
}

impl Disconnect {
    /// The WebSocket close code to send, or `None` when nothing can or need
    /// be sent (the peer is gone or not reading).
    pub fn close_code(self) -> Option<u16> {
        match self {
            Disconnect::Complete => Some(1000),
            Disconnect::Shutdown => Some(1001),
            Disconnect::UnsupportedData => Some(1003),
            Disconnect::PeerTimeout => Some(1008),
            Disconnect::MessageTooBig => Some(1009),
            Disconnect::OverCapacity => Some(1013),
            Disconnect::Lagged | Disconnect::Unauthorized | Disconnect::PingFlood => Some(1008),
            Disconnect::InvalidMessage => Some(1007),
            Disconnect::StorageUnavailable => Some(1011),
            // Application codes (RFC 6455, 7.4.2), after HTTP's 401 and 403.
            Disconnect::TokenExpired => Some(4401),
            Disconnect::Revoked => Some(4403),
            Disconnect::TopicDeleted => Some(4404),
            Disconnect::PeerGone | Disconnect::SlowConsumer => None,
        }
    }

    /// Whether an SSE client is told why its stream ends with an `end`
    /// notice: the reasons where the server ends a stream that should have
    /// gone on while the client still reads (a WebSocket gets the close
    /// code). Any other end of body is a completion, a shutdown, or a peer
    /// that cannot be written to.
    pub fn notifies_sse(self) -> bool {
        matches!(
            self,
            Disconnect::StorageUnavailable
                | Disconnect::Lagged
                | Disconnect::TokenExpired
                | Disconnect::Revoked
                | Disconnect::TopicDeleted
        )
    }

    /// The metric label: a stable snake_case name.
    pub fn label(self) -> &'static str {
        match self {
            Disconnect::Complete => "complete",
            Disconnect::Shutdown => "shutdown",
            Disconnect::PeerGone => "peer_gone",
            Disconnect::PeerTimeout => "peer_timeout",
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::UnsupportedData => "unsupported_data",
            Disconnect::MessageTooBig => "message_too_big",
            Disconnect::OverCapacity => "over_capacity",
            Disconnect::Lagged => "lagged",
            Disconnect::InvalidMessage => "invalid_message",
            Disconnect::Unauthorized => "unauthorized",
            Disconnect::StorageUnavailable => "storage_unavailable",
            Disconnect::PingFlood => "ping_flood",
            Disconnect::TokenExpired => "token_expired",
            Disconnect::Revoked => "revoked",
            Disconnect::TopicDeleted => "topic_deleted",
        }
    }

    /// A short human-readable reason, sent in WebSocket close frames.
    pub fn reason(self) -> &'static str {
        match self {
            Disconnect::Complete => "stream complete",
            Disconnect::Shutdown => "server shutting down",
            Disconnect::PeerGone => "peer gone",
            Disconnect::PeerTimeout => "no pong within the timeout",
            Disconnect::SlowConsumer => "peer stopped reading",
            Disconnect::UnsupportedData => "this stream accepts no messages",
            Disconnect::MessageTooBig => "message too big",
            Disconnect::OverCapacity => "server at connection limit, try again later",
            Disconnect::Lagged => "slow consumer: fell behind the topic; resume from your last seq",
            Disconnect::InvalidMessage => "expected a publish frame: {\"publish\": <JSON>}",
            Disconnect::Unauthorized => "publishing requires a valid bearer token",
            Disconnect::StorageUnavailable => "storage unavailable; resume from your last seq",
            Disconnect::PingFlood => "too many pings: at most 100 a second",
            // The reason itself: what a client reads to decide to renew.
            Disconnect::TokenExpired => "token_expired",
            Disconnect::Revoked => "revoked",
            Disconnect::TopicDeleted => "topic_deleted",
        }
    }
}

impl EncodeLabelValue for Disconnect {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_follow_rfc_6455_and_protocol_md() {
        assert_eq!(Disconnect::Complete.close_code(), Some(1000));
        assert_eq!(Disconnect::Shutdown.close_code(), Some(1001));
        assert_eq!(Disconnect::PeerTimeout.close_code(), Some(1008));
        assert_eq!(Disconnect::MessageTooBig.close_code(), Some(1009));
        assert_eq!(Disconnect::OverCapacity.close_code(), Some(1013));
        assert_eq!(Disconnect::Lagged.close_code(), Some(1008));
        assert_eq!(Disconnect::InvalidMessage.close_code(), Some(1007));
        assert_eq!(Disconnect::StorageUnavailable.close_code(), Some(1011));
        assert_eq!(Disconnect::PingFlood.close_code(), Some(1008));
        assert_eq!(Disconnect::TokenExpired.close_code(), Some(4401));
        assert_eq!(Disconnect::Revoked.close_code(), Some(4403));
        assert_eq!(Disconnect::TopicDeleted.close_code(), Some(4404));
        assert_eq!(Disconnect::PeerGone.close_code(), None);
    }

    #[test]
    fn reasons_fit_a_close_frame() {
        // A close frame's reason must fit in 123 bytes (RFC 6455, 5.5).
        for d in [
            Disconnect::Complete,
            Disconnect::Shutdown,
            Disconnect::PeerGone,
            Disconnect::PeerTimeout,
            Disconnect::SlowConsumer,
            Disconnect::UnsupportedData,
            Disconnect::MessageTooBig,
            Disconnect::OverCapacity,
            Disconnect::Lagged,
            Disconnect::InvalidMessage,
            Disconnect::Unauthorized,
            Disconnect::StorageUnavailable,
            Disconnect::PingFlood,
            Disconnect::TokenExpired,
            Disconnect::Revoked,
            Disconnect::TopicDeleted,
        ] {
            assert!(d.reason().len() <= 123);
        }
    }
}
