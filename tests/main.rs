//! End-to-end tests of the streamgauge server: a real server on
//! `127.0.0.1:0` (in-process, through `streamgauge_server::run`), real
//! HTTP, SSE and WebSocket clients, synchronized on events and on the
//! server's `/metrics`, never on sleeps.

// Helpers are `pub` to share them between the modules of this one binary.
#![allow(unreachable_pub)]

#[macro_use]
mod support;

mod backpressure;
mod cluster;
mod cors;
mod demo;
mod direct_vs_hyper;
mod http1;
mod https;
mod limits;
mod liveness;
mod loadgen;
mod ops;
mod phases;
mod proxies;
mod replay;
mod shutdown;
mod streams;
mod topics;
