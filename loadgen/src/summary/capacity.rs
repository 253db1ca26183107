//! A capacity estimate, as `suite.json`, a capacity search's
//! `summary.json` and the reports hold it: the knee of a capacity search,
//! of load steps or of a ramp, the figure that broke, what ran out, and
//! whether the knee is only a lower bound. Estimating it is
//! `analysis::capacity`.

use serde::Serialize;

/// Above this share of all a machine's cores, its CPU ran out: what a
/// capacity search judges the server and load generator by, and an agent
/// its own CPU by (`summary::agents`).
pub const CPU_SATURATED: f64 = 0.85;

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
    /// The server's open files neared its limit.
    ServerOpenFiles,
    /// The load generator's open files (or local ports) ran out.
    LoadgenOpenFiles,
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
            Limit::ServerOpenFiles => "server open files",
            Limit::LoadgenOpenFiles => "load generator open files",
            Limit::Errors => "errors",
            Limit::Latency => "latency (no resource saturated)",
            Limit::NotReached => "none: every load tried held",
        }
    }
}

/// One load level: a step, or a second of a ramp.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// A capacity search's level, in its varied unit (`null` for load
    /// steps and ramps, whose level is `clients`).
    pub level: Option<u64>,
    /// Clients.
    pub clients: u32,
    /// Events received per second.
    pub events_per_s: f64,
    /// Delivery latency p99, µs.
    pub latency_p99_us: Option<u64>,
    /// Server CPU, % of one core (`null`: not measured).
    pub server_cpu_pct: Option<f64>,
    /// Load generator CPU, % of one core (`null`: not measured).
    pub loadgen_cpu_pct: Option<f64>,
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
    /// A capacity search's varied load: `clients`, `rate` or
    /// `publish-rate` (`null` for load steps and ramps).
    pub vary: Option<&'static str>,
    /// A capacity search's knee in its varied unit (`null`: not a search,
    /// or even the lightest step broke).
    pub knee_level: Option<u64>,
    /// The figure that broke at the first level that did not hold (`null`:
    /// none broke, or not a search).
    pub broke: Option<Broke>,
    /// The load generator ran out first (its CPU or its open files): the
    /// knee is at least this, and says nothing of the server's capacity.
    pub lower_bound: bool,
    /// The estimate, in a sentence.
    pub statement: String,
    /// Every level, for the scaling chart.
    pub points: Vec<Point>,
}

/// The figure that broke a capacity search's step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Broke {
    /// The step's level, in the search's varied unit.
    pub level: u64,
    /// The threshold that broke (`events_per_s>=…`: the step did not
    /// deliver 90 % of the events it offered), or what made the step fail
    /// otherwise.
    pub threshold: String,
    /// The measured value, in the threshold's unit (`null`: not measured).
    pub value: Option<f64>,
}
