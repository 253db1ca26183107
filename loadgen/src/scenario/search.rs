//! A capacity search, as data: what load to raise (clients, events/s per
//! client, or topic publishes/s), from where, by how much per step, how
//! long each step lasts, and how finely to bisect once a step has broken a
//! threshold. [`Search::step`] turns a level into the scenario of one step;
//! [`Bisection`] decides, from the steps' outcomes so far, which level to
//! try next. Running the steps is `run::capacity`; what they mean is
//! `analysis::capacity`.

use std::time::Duration;

use serde::Serialize;

use super::{MAX_CLIENTS, Phase, Scenario, StreamKind, Threshold, human};

/// Below this share of the events offered, a paced step did not keep up
/// (a saturated server paces slower rather than answering later).
pub const KEPT_UP: f64 = 0.9;

/// The phase of a step whose delivery is judged, after its clients have
/// connected in a first phase, `connect`.
pub const MEASURED: &str = "step";

/// The longest a step's `connect` phase lasts (otherwise a quarter of it).
const CONNECT_AT_MOST: Duration = Duration::from_secs(1);

/// Time scaling shortens no step below this (or below its own length, if
/// shorter): shorter still, connecting the clients dominates the step.
pub const MIN_STEP: Duration = Duration::from_millis(500);

/// Most steps one search may grow through.
pub const MAX_STEPS: u32 = 100;

/// Most bisection steps one search may take.
pub const MAX_BISECTIONS: u32 = 20;

/// What a capacity search raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Vary {
    /// Clients, each at the scenario's rate.
    Clients,
    /// Events per second per client (ticker, replay), the clients fixed.
    Rate,
    /// Topic publishes per second, the subscribers fixed.
    PublishRate,
}

impl Vary {
    /// The name in flags, files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Vary::Clients => "clients",
            Vary::Rate => "rate",
            Vary::PublishRate => "publish-rate",
        }
    }

    /// The unit of a level, for people.
    pub fn unit(self) -> &'static str {
        match self {
            Vary::Clients => "clients",
            Vary::Rate => "events/s per client",
            Vary::PublishRate => "publishes/s",
        }
    }

    /// The highest level a step may ask for.
    fn ceiling(self) -> u64 {
        match self {
            Vary::Clients => u64::from(MAX_CLIENTS),
            Vary::Rate | Vary::PublishRate => 1_000_000_000,
        }
    }
}

/// How the load grows from one step to the next until one breaks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Growth {
    /// Each step this many times the last (above 1).
    Factor(f64),
    /// Each step this much above the last (at least 1).
    Step(u64),
}

/// A validated capacity search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Search {
    /// What is raised.
    pub vary: Vary,
    /// The first step's level.
    pub start: u64,
    /// How levels grow until a step breaks.
    pub growth: Growth,
    /// How long each step's load lasts.
    #[serde(serialize_with = "human")]
    pub step_duration: Duration,
    /// The pause between two steps, for the server to drop the last
    /// step's connections.
    #[serde(serialize_with = "human")]
    pub settle: Duration,
    /// At most this many growing steps: if the last still holds, the knee
    /// is above it.
    pub max_steps: u32,
    /// At most this many bisection steps between the last level that held
    /// and the first that broke.
    pub bisections: u32,
    /// Bisection stops once the first level that broke is within this
    /// share of the last that held (0: to the exact level).
    pub resolution: f64,
}

impl Default for Search {
    fn default() -> Self {
        Self {
            vary: Vary::Clients,
            start: 10,
            growth: Growth::Factor(2.0),
            step_duration: Duration::from_secs(3),
            settle: Duration::from_millis(500),
            max_steps: 8,
            bisections: 4,
            resolution: 0.05,
        }
    }
}

impl Search {
    /// Checks the bounds the driver relies on, for a search over `base`.
    ///
    /// # Errors
    ///
    /// What is out of bounds, in a sentence.
    pub fn validate(&self, base: &Scenario) -> Result<(), String> {
        let fail = |message: String| Err(format!("capacity: {message}"));
        if !(1..=self.vary.ceiling()).contains(&self.start) {
            return fail(format!(
                "start {} is not between 1 and {}",
                self.start,
                self.vary.ceiling()
            ));
        }
        match self.growth {
            Growth::Factor(f) if !(f.is_finite() && f > 1.0) => {
                return fail(format!("factor {f} is not above 1"));
            }
            Growth::Step(0) => return fail("a step of 0 never grows".to_owned()),
            _ => {}
        }
        if self.step_duration.is_zero() {
            return fail("a step needs some duration".to_owned());
        }
        if !(1..=MAX_STEPS).contains(&self.max_steps) {
            return fail(format!(
                "max-steps {} is not between 1 and {MAX_STEPS}",
                self.max_steps
            ));
        }
        if self.bisections > MAX_BISECTIONS {
            return fail(format!(
                "bisections {} is over {MAX_BISECTIONS}",
                self.bisections
            ));
        }
        if !(0.0..1.0).contains(&self.resolution) {
            return fail(format!(
                "resolution {} is not a share from 0 to under 1",
                self.resolution
            ));
        }
        let fits = match self.vary {
            Vary::Clients => true,
            Vary::Rate => matches!(base.stream, StreamKind::Ticker | StreamKind::Replay),
            Vary::PublishRate => base.stream == StreamKind::Topic,
        };
        if !fits {
            return fail(format!(
                "varying {} does not apply to a {} stream",
                self.vary.as_str(),
                base.stream.as_str()
            ));
        }
        Ok(())
    }

    /// The longest a search can take: every growing and bisection step,
    /// and the pauses between them.
    pub fn longest(&self) -> Duration {
        let steps = self.max_steps + self.bisections;
        self.step_duration * steps + self.settle * steps.saturating_sub(1)
    }

    /// Every duration `factor` times as long, a step no shorter than
    /// [`MIN_STEP`] (unless it was already).
    pub fn scale_time(&mut self, factor: f64) {
        let floor = MIN_STEP.min(self.step_duration);
        self.step_duration = self.step_duration.mul_f64(factor).max(floor);
        self.settle = self.settle.mul_f64(factor);
    }

    /// The scenario of the step at `level` of a search over `base`: the
    /// step's length at that level, its first quarter (a second at most)
    /// a `connect` phase and the rest the [`MEASURED`] phase, with
    /// critical thresholds on what marks a server at its capacity, unless
    /// the scenario has its own on the same figure: it shed no stream
    /// (`counts.shed==0`) nor publish. Whether a paced step delivered
    /// what it offered is judged on its measured phase
    /// (`analysis::capacity::judge_delivery`).
    pub fn step(&self, base: &Scenario, level: u64) -> Scenario {
        let mut step = base.clone();
        step.search = None;
        let clients = match self.vary {
            Vary::Clients => u32::try_from(level).unwrap_or(MAX_CLIENTS),
            Vary::Rate | Vary::PublishRate => base.max_clients(),
        };
        match self.vary {
            Vary::Clients => {}
            Vary::Rate => step.rate = level,
            Vary::PublishRate => step.publish_rate = level,
        }
        let connect = (self.step_duration / 4).min(CONNECT_AT_MOST);
        step.phases = vec![
            Phase::steady("connect", clients, connect),
            Phase::steady(MEASURED, clients, self.step_duration - connect),
        ];
        let mut limits = vec!["counts.shed==0"];
        if step.publishes() {
            limits.push("counts.publishes_shed==0");
        }
        for expr in limits {
            let threshold: Threshold = expr.parse().expect("a step's thresholds parse");
            if !step.thresholds.iter().any(|t| t.metric == threshold.metric) {
                step.thresholds.push(threshold);
            }
        }
        step
    }

    /// The level after `level` while growing, within the ceiling.
    fn grow(&self, level: u64) -> u64 {
        let next = match self.growth {
            Growth::Factor(f) => ((level as f64) * f).ceil() as u64,
            Growth::Step(step) => level.saturating_add(step),
        };
        next.max(level + 1).min(self.vary.ceiling())
    }

    /// How far apart the last level that held and the first that broke may
    /// be when bisection stops.
    fn tolerance(&self, good: u64) -> u64 {
        ((good as f64 * self.resolution).floor() as u64).max(1)
    }
}

/// The driver of a search: which level to try next, given what the steps
/// so far did. Levels grow until one breaks, then bisect between the last
/// that held and the first that broke.
#[derive(Debug, Clone)]
pub struct Bisection {
    search: Search,
    /// The highest level that held.
    good: Option<u64>,
    /// The lowest level that broke.
    bad: Option<u64>,
    /// Growing steps taken.
    grown: u32,
    /// Bisection steps taken.
    bisected: u32,
}

impl Bisection {
    /// A search not yet started.
    pub fn new(search: &Search) -> Self {
        Self {
            search: search.clone(),
            good: None,
            bad: None,
            grown: 0,
            bisected: 0,
        }
    }

    /// The level to try next; `None` once the search is over.
    pub fn next(&self) -> Option<u64> {
        let search = &self.search;
        match (self.good, self.bad) {
            (None, None) => Some(search.start),
            (Some(good), None) if self.grown < search.max_steps => {
                let next = search.grow(good);
                (next > good).then_some(next)
            }
            (Some(good), Some(bad))
                if self.bisected < search.bisections && bad - good > search.tolerance(good) =>
            {
                Some(good + (bad - good) / 2)
            }
            _ => None,
        }
    }

    /// Records that the step at `level` held (`ok`) or broke.
    pub fn record(&mut self, level: u64, ok: bool) {
        if self.bad.is_none() {
            self.grown += 1;
        } else {
            self.bisected += 1;
        }
        if ok {
            self.good = Some(self.good.map_or(level, |good| good.max(level)));
        } else {
            self.bad = Some(self.bad.map_or(level, |bad| bad.min(level)));
        }
    }

    /// The highest level that held (the knee), if any did.
    pub fn knee(&self) -> Option<u64> {
        self.good
    }

    /// The lowest level that broke, if any did.
    pub fn broke_at(&self) -> Option<u64> {
        self.bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `search` against a fake step runner that holds up to `knee`,
    /// and gives the levels tried.
    fn drive(search: &Search, holds: impl Fn(u64) -> bool) -> (Bisection, Vec<u64>) {
        let mut bisection = Bisection::new(search);
        let mut tried = Vec::new();
        while let Some(level) = bisection.next() {
            assert!(tried.len() < 200, "the search ends: {tried:?}");
            tried.push(level);
            bisection.record(level, holds(level));
        }
        (bisection, tried)
    }

    fn search(start: u64, growth: Growth, bisections: u32, resolution: f64) -> Search {
        Search {
            start,
            growth,
            bisections,
            resolution,
            max_steps: 10,
            ..Search::default()
        }
    }

    #[test]
    fn bisection_finds_the_exact_knee_within_its_bounded_steps() {
        let exact = search(10, Growth::Factor(2.0), 20, 0.0);
        for knee in [10, 11, 37, 64, 79, 5_119] {
            let (found, tried) = drive(&exact, |level| level <= knee);
            assert_eq!(found.knee(), Some(knee), "{tried:?}");
            assert_eq!(found.broke_at(), Some(knee + 1), "{tried:?}");
            // Doubling past the knee, then halving a gap as wide: both
            // logarithmic in the knee.
            let bits = (u64::BITS - knee.leading_zeros()) as usize;
            assert!(tried.len() <= 2 * bits, "{knee}: {tried:?}");
        }
        assert_eq!(
            drive(&exact, |level| level <= 37).1,
            [10, 20, 40, 30, 35, 37, 38],
            "grow by the factor, then halve the gap"
        );
    }

    #[test]
    fn bisection_stops_at_its_resolution_or_its_budget() {
        let coarse = search(100, Growth::Step(100), 20, 0.1);
        let (found, tried) = drive(&coarse, |level| level <= 433);
        let (good, bad) = (found.knee().unwrap(), found.broke_at().unwrap());
        assert!(good <= 433 && 433 < bad, "{tried:?}");
        assert!(bad - good <= good / 10, "{good}..{bad}: {tried:?}");
        let budget = search(100, Growth::Step(100), 2, 0.0);
        let (found, tried) = drive(&budget, |level| level <= 433);
        assert_eq!(tried, [100, 200, 300, 400, 500, 450, 425]);
        assert_eq!((found.knee(), found.broke_at()), (Some(425), Some(450)));
    }

    #[test]
    fn a_search_that_never_breaks_or_breaks_at_once_ends_without_bisecting() {
        let plan = Search {
            max_steps: 4,
            ..search(1, Growth::Factor(3.0), 5, 0.0)
        };
        let (held, tried) = drive(&plan, |_| true);
        assert_eq!(tried, [1, 3, 9, 27]);
        assert_eq!((held.knee(), held.broke_at()), (Some(27), None));
        let (broke, tried) = drive(&plan, |_| false);
        assert_eq!(tried, [1]);
        assert_eq!((broke.knee(), broke.broke_at()), (None, Some(1)));
        let at_the_ceiling = Search {
            vary: Vary::Clients,
            start: u64::from(MAX_CLIENTS),
            ..plan
        };
        assert_eq!(drive(&at_the_ceiling, |_| true).1, [u64::from(MAX_CLIENTS)]);
    }

    #[test]
    fn a_step_is_one_steady_phase_at_its_level_that_must_keep_up() {
        let base = Scenario {
            rate: 100,
            ..Scenario::default()
        };
        let plan = Search::default();
        let step = plan.step(&base, 40);
        assert_eq!(step.max_clients(), 40);
        assert_eq!(step.duration(), plan.step_duration);
        let phases: Vec<(&str, Duration)> = (step.phases.iter())
            .map(|p| (p.name.as_str(), p.duration))
            .collect();
        assert_eq!(
            phases,
            [
                ("connect", Duration::from_millis(750)),
                (MEASURED, Duration::from_millis(2_250))
            ]
        );
        let added: Vec<String> = step.thresholds.iter().map(ToString::to_string).collect();
        assert_eq!(added, ["counts.shed==0"]);
        let by_rate = Search {
            vary: Vary::Rate,
            ..Search::default()
        };
        let step = by_rate.step(&base, 500);
        assert_eq!((step.max_clients(), step.rate), (10, 500));
        let unpaced = Scenario {
            rate: 0,
            ..Scenario::default()
        };
        let overload = Scenario {
            thresholds: vec!["counts.shed>0".parse().unwrap()],
            ..unpaced
        };
        assert_eq!(
            plan.step(&overload, 5).thresholds,
            overload.thresholds,
            "the scenario's own threshold on a figure stands"
        );
    }

    #[test]
    fn validation_names_what_is_out_of_bounds() {
        let base = Scenario::default();
        let bad = |search: Search| search.validate(&base).unwrap_err();
        assert!(
            bad(Search {
                start: 0,
                ..Search::default()
            })
            .contains("start 0")
        );
        assert!(
            bad(Search {
                growth: Growth::Factor(1.0),
                ..Search::default()
            })
            .contains("factor 1 is not above 1")
        );
        assert!(
            bad(Search {
                vary: Vary::PublishRate,
                ..Search::default()
            })
            .contains("publish-rate does not apply to a ticker")
        );
        assert!(
            bad(Search {
                resolution: 1.0,
                ..Search::default()
            })
            .contains("resolution")
        );
        assert_eq!(Search::default().validate(&base), Ok(()));
        let plan = Search::default();
        assert_eq!(
            plan.longest(),
            plan.step_duration * 12 + plan.settle * 11,
            "8 growing and 4 bisection steps"
        );
        let mut smoke = plan.clone();
        smoke.scale_time(0.01);
        assert_eq!(
            (smoke.step_duration, smoke.settle),
            (MIN_STEP, Duration::from_millis(5))
        );
    }
}
