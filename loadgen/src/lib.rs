//! The streamgauge load generator: virtual SSE and WebSocket clients that
//! measure a server speaking `PROTOCOL.md`.

pub mod client;
