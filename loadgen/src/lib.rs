//! The streamgauge load generator: virtual SSE and WebSocket clients that
//! measure a server speaking `PROTOCOL.md`.
//!
//! The scenario runner, clients, metrics and reports arrive with the load
//! generator issue; until then this crate only reserves its place in the
//! workspace layout of `DESIGN.md`.
