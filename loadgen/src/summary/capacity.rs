//! A capacity estimate, as `suite.json` and the reports hold it: the knee
//! of load steps or a ramp, and what ran out. Estimating it is
//! `analysis::capacity`.

use serde::Serialize;

/// What limited the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// The server used most of the CPU there was.
    ServerCpu,
    /// The load generator used most of the CPU there was.
    LoadgenCpu,
    /// The server's memory neared the machine's.
    Memory,
    /// Requests or streams failed.
    Errors,
    /// Latency broke its budget with no resource saturated.
    Latency,
    /// Every step held: the knee is above the highest load tried.
    NotReached,
}

impl Limit {
    /// For people.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::ServerCpu => "server CPU",
            Limit::LoadgenCpu => "load generator CPU",
            Limit::Memory => "memory",
            Limit::Errors => "errors",
            Limit::Latency => "latency (no resource saturated)",
            Limit::NotReached => "none: every load tried held",
        }
    }
}

/// One load level: a step, or a second of a ramp.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Clients.
    pub clients: u32,
    /// Events received per second.
    pub events_per_s: f64,
    /// Delivery latency p99, µs.
    pub latency_p99_us: Option<u64>,
    /// Whether it met the thresholds.
    pub ok: bool,
}

/// A capacity estimate for one transport.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    /// `sse` or `ws`.
    pub transport: &'static str,
    /// What it was estimated from.
    pub source: String,
    /// Clients at the knee (`null`: even the lightest load failed).
    pub knee_clients: Option<u32>,
    /// Events per second at the knee.
    pub knee_events_per_s: Option<f64>,
    /// What ran out first beyond it.
    pub limit: Limit,
    /// The estimate, in a sentence.
    pub statement: String,
    /// Every level, for the scaling chart.
    pub points: Vec<Point>,
}
