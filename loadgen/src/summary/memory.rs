//! `summary.json`'s `memory`: the server's live heap and RSS over a run,
//! their growth, what each stream opened left behind and what a burst
//! gave back. The analysis that fills it is
//! `analysis::memory`.

use serde::Serialize;

/// Which of the two grew.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grew {
    /// Neither: both are indistinguishable from flat.
    Neither,
    /// The live heap (and RSS did not): retained allocations, a leak.
    Heap,
    /// RSS alone: the allocator keeping freed memory, not a leak.
    Rss,
    /// Both: a leak.
    Both,
    /// Not enough samples of either to say.
    Unknown,
}

/// One memory figure's analysis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    /// Growth after the warm-up, bytes per hour.
    pub growth_per_hour: Option<f64>,
    /// Its 95 % confidence interval, bytes per hour.
    pub growth_ci95: Option<[f64; 2]>,
    /// The fit's R² (`None`: the samples were flat).
    pub r2: Option<f64>,
    /// Samples in the fit.
    pub samples: usize,
    /// Memory kept per stream opened, bytes: the slope over the samples
    /// taken with no client connected, after the warm-up, against the
    /// streams opened so far (`None` without two such samples with streams
    /// opened between them).
    pub retained_per_stream: Option<f64>,
    /// Its 95 % confidence interval, bytes (`None` below three such
    /// samples).
    pub retained_per_stream_ci95: Option<[f64; 2]>,
    /// The growth is above zero with 95 % confidence.
    pub grew: bool,
    /// The burst, when the run had one.
    pub burst: Option<Burst>,
    /// The share of the burst's memory that came back (0 to 1).
    pub recovery: Option<f64>,
}

/// Memory around a burst, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Burst {
    /// The last quiet second before it.
    pub before: f64,
    /// The highest sample from it on.
    pub peak: f64,
    /// The last sample.
    pub end: f64,
}

/// The memory analysis of a run: `summary.json`'s `memory`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    /// The live heap (`null` unless the server serves `/debug/heap`).
    pub heap: Option<Figures>,
    /// Resident memory.
    pub rss: Option<Figures>,
    /// Which grew.
    pub grew: Grew,
    /// The analysis, in sentences.
    pub statement: String,
}
