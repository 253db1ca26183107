//! Capacity: from a capacity search's steps ([`of_search`]), a suite's
//! load steps (`clients-10`, `clients-50`, …) or a ramp, the knee — the
//! highest load that still met the thresholds — stated as this build's
//! capacity on this machine, with the resource that ran out first (open
//! files, server CPU, load generator CPU, memory, errors) or, when none
//! did, latency alone. When the load generator ran out first, a search's
//! knee is only a lower bound.
//!
//! A search's step holds when it passed its thresholds (the scenario's,
//! the default budgets, and for paced streams delivering 90 % of the
//! events offered); its knee is the highest step that held, and the figure
//! that broke is the first critical threshold of the lowest step that did
//! not. A search estimate replaces its transport's load steps' (which
//! rarely reach a knee).
//!
//! Steps are whole runs, judged by their thresholds. A ramp is judged
//! second by second: a second holds when it had no error, its latency p95
//! stayed within the scenario's critical latency budget (100 ms by default)
//! and, for paced streams, at least 90 % of the offered events arrived. The
//! knee is the last second that held before two seconds in a row did not
//! (one bad second is noise).

use crate::analysis::verdict;
use crate::metrics::timeline::Row;
use crate::metrics::watch::{Descriptors, Load};
use crate::scenario::search::{KEPT_UP, MEASURED, Search};
use crate::scenario::{Scenario, Severity};
use crate::summary::Summary;
use crate::summary::capacity::{Broke, CPU_SATURATED, Capacity, Limit, Point};
use crate::summary::verdict::ThresholdResult;

/// Above this share of the machine's memory, memory ran out.
const MEMORY_SATURATED: f64 = 0.9;

/// At or above this share of its soft limit, a process's open files ran
/// out.
const FILES_SATURATED: f64 = 0.9;

/// The default critical latency budget, p95 µs.
const LATENCY_P95_US: f64 = 100_000.0;

/// Resources in use at one level, as shares of what the machine has.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    server_cpu_pct: f64,
    loadgen_cpu_pct: f64,
    rss_mb: f64,
    errors: bool,
    /// The server's open files neared its limit.
    server_files: bool,
    /// The load generator's open files neared its limit, or its
    /// connection attempts failed on this machine's limits.
    loadgen_files: bool,
    /// The whole machine's busy CPU, % of all cores (other processes
    /// included; 0 when not measured).
    machine_cpu_pct: f64,
}

impl Usage {
    /// What ran out, if anything did.
    fn limit(self, cores: usize, memory_mb: Option<f64>) -> Limit {
        if self.loadgen_files {
            Limit::LoadgenOpenFiles
        } else if self.server_files {
            Limit::ServerOpenFiles
        } else if self.errors {
            Limit::Errors
        } else if memory_mb.is_some_and(|total| self.rss_mb >= MEMORY_SATURATED * total) {
            Limit::Memory
        } else if self.cpu_saturated(cores) {
            if self.server_cpu_pct >= self.loadgen_cpu_pct {
                Limit::ServerCpu
            } else {
                Limit::LoadgenCpu
            }
        } else {
            Limit::Latency
        }
    }

    /// Whether the two processes together used most of the CPU there was,
    /// or the machine as a whole was that busy (it shares its cores with
    /// other processes).
    fn cpu_saturated(self, cores: usize) -> bool {
        self.server_cpu_pct + self.loadgen_cpu_pct >= CPU_SATURATED * 100.0 * cores as f64
            || self.machine_cpu_pct >= CPU_SATURATED * 100.0
    }

    fn of_summary(s: &Summary) -> Self {
        Self {
            server_cpu_pct: s.server.cpu_pct.unwrap_or(0.0),
            loadgen_cpu_pct: s.loadgen_cpu_pct.unwrap_or(0.0),
            rss_mb: s.server.rss_mb.map_or(0.0, |r| r.peak),
            errors: s.error_rate.is_some_and(|rate| rate > 0.0)
                || s.counts.shed + s.counts.publishes_shed > 0,
            server_files: false,
            loadgen_files: !s.bounded_by.is_empty(),
            machine_cpu_pct: 0.0,
        }
    }

    fn of_row(row: &Row) -> Self {
        Self {
            server_cpu_pct: row.server_cpu_pct.unwrap_or(0.0),
            loadgen_cpu_pct: row.loadgen_cpu_pct.unwrap_or(0.0),
            rss_mb: row.server_rss_mb.unwrap_or(0.0),
            errors: row.errors > 0,
            ..Self::default()
        }
    }

    /// [`Usage::of_summary`] of a search's step, with its processes' CPU
    /// (where watched) and open files.
    fn of_step(step: &Step<'_>) -> Self {
        let near = |load: Load| {
            load.files.is_some_and(|d: Descriptors| {
                d.limit
                    .is_some_and(|limit| d.open as f64 >= FILES_SATURATED * limit as f64)
            })
        };
        let usage = Self::of_summary(step.summary);
        Self {
            server_cpu_pct: step.server.cpu_pct.unwrap_or(usage.server_cpu_pct),
            loadgen_cpu_pct: step.loadgen.cpu_pct.unwrap_or(usage.loadgen_cpu_pct),
            server_files: near(step.server),
            loadgen_files: usage.loadgen_files || near(step.loadgen),
            machine_cpu_pct: step.machine_cpu_pct.unwrap_or(0.0),
            ..usage
        }
    }
}

/// One step of a capacity search, as it ran.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// Its level, in the search's varied unit.
    pub level: u64,
    /// Its summary, judged.
    pub summary: &'a Summary,
    /// What the server used during it (nothing known: not a local
    /// server, or no `/proc`).
    pub server: Load,
    /// What the load generator's own process used during it.
    pub loadgen: Load,
    /// The whole machine's busy CPU during it, % of all cores.
    pub machine_cpu_pct: Option<f64>,
}

/// Whether `name` is one of the suite's load steps (`clients-N`).
fn is_step(name: &str) -> bool {
    name.strip_prefix("clients-")
        .is_some_and(|n| n.parse::<u32>().is_ok())
}

/// Judges whether a search's step delivered what it offered: when it
/// offered `offered` events/s (a paced stream), its measured phase (its
/// clients connected) must have delivered at least 90 % of them, a
/// critical threshold `events_per_s{phase=step}>=…` added to its others;
/// the verdict is judged again.
pub fn judge_delivery(summary: &mut Summary, offered: Option<f64>) {
    let Some(offered) = offered else { return };
    if !summary.phases.iter().any(|p| p.name == MEASURED) {
        return;
    }
    let floor = KEPT_UP * offered;
    let delivered = delivered(summary);
    summary.thresholds.push(ThresholdResult {
        expr: format!("events_per_s{{phase={MEASURED}}}>={floor:.0}"),
        metric: "events_per_s",
        value: Some(delivered),
        ok: delivered >= floor,
        severity: Severity::Critical,
        default: true,
        abort: false,
    });
    verdict::judge(summary);
}

/// Events per second a search's step delivered once its clients had
/// connected: its measured phase's, else the whole step's.
pub fn delivered(summary: &Summary) -> f64 {
    (summary.phases.iter())
        .find(|p| p.name == MEASURED)
        .map_or(summary.events_per_s, |p| p.events_per_s)
}

/// The estimates `summaries` allow: each capacity search's, one per
/// transport from its load steps (two or more) unless a search estimated
/// that transport, and one per ramp.
pub fn estimate(summaries: &[Summary]) -> Vec<Capacity> {
    let mut estimates: Vec<Capacity> = summaries
        .iter()
        .filter_map(|s| s.capacity.clone())
        .collect();
    let mut transports: Vec<&'static str> = summaries.iter().map(|s| s.transport).collect();
    transports.dedup();
    transports.retain(|&t| !estimates.iter().any(|e| e.transport == t));
    for transport in transports {
        let mut steps: Vec<&Summary> = summaries
            .iter()
            .filter(|s| s.transport == transport && is_step(&s.scenario))
            .collect();
        if steps.len() >= 2 {
            steps.sort_by_key(|s| s.clients);
            estimates.push(from_steps(&steps));
        }
    }
    for summary in summaries {
        if summary.manifest.scenario.is_ramp() {
            estimates.push(from_ramp(summary));
        }
    }
    estimates
}

/// The knee of a sequence of levels: the last that held before the first
/// `failures` in a row that did not, or `None` if that never happened.
fn knee(points: &[Point], failures: usize) -> Option<(Option<usize>, usize)> {
    let mut last_ok = None;
    for (i, point) in points.iter().enumerate() {
        if point.ok {
            last_ok = Some(i);
        } else if points[i..].iter().take(failures).all(|p| !p.ok) && i + failures <= points.len() {
            return Some((last_ok, i));
        }
    }
    None
}

fn from_steps(steps: &[&Summary]) -> Capacity {
    let points: Vec<Point> = steps
        .iter()
        .map(|s| Point {
            level: None,
            clients: s.clients,
            events_per_s: s.events_per_s,
            latency_p99_us: s.latency_us.map(|l| l.p99),
            server_cpu_pct: s.server.cpu_pct,
            loadgen_cpu_pct: s.loadgen_cpu_pct,
            ok: s.passed,
        })
        .collect();
    let names: Vec<&str> = steps.iter().map(|s| s.scenario.as_str()).collect();
    let environment = &steps[0].manifest.environment;
    let (cores, memory) = (environment.machine.cores, environment.machine.memory_mb);
    let found = knee(&points, 1);
    let limit = found.map_or(Limit::NotReached, |(_, failed)| {
        Usage::of_summary(steps[failed]).limit(cores, memory)
    });
    finish(
        steps[0].transport,
        format!("load steps {}", names.join(", ")),
        points,
        found,
        limit,
    )
}

fn from_ramp(summary: &Summary) -> Capacity {
    let scenario = &summary.manifest.scenario;
    let latency_budget = scenario
        .thresholds
        .iter()
        .find(|t| t.metric == "latency.p95" && t.severity == Severity::Critical)
        .map_or(LATENCY_P95_US, |t| t.value);
    let rows = &summary.timeline;
    let inner = rows.get(1..rows.len().saturating_sub(1)).unwrap_or(&[]);
    let mut previous_clients = rows.first().map_or(0, |r| r.clients);
    let points: Vec<Point> = inner
        .iter()
        .map(|row| {
            // Clients changed during the second: offer what the average had.
            let clients = (previous_clients + row.clients) / 2;
            previous_clients = row.clients;
            let kept_up = scenario
                .offered_per_s(clients)
                .is_none_or(|offered| row.events_per_s >= KEPT_UP * offered);
            let fast = row
                .latency_p95_us
                .is_none_or(|p95| (p95 as f64) <= latency_budget);
            Point {
                level: None,
                clients: row.clients,
                events_per_s: row.events_per_s,
                latency_p99_us: row.latency_p99_us,
                server_cpu_pct: row.server_cpu_pct,
                loadgen_cpu_pct: row.loadgen_cpu_pct,
                ok: row.errors == 0 && kept_up && fast,
            }
        })
        .collect();
    let environment = &summary.manifest.environment;
    let found = knee(&points, 2);
    let limit = found.map_or(Limit::NotReached, |(_, failed)| {
        Usage::of_row(&inner[failed])
            .limit(environment.machine.cores, environment.machine.memory_mb)
    });
    finish(
        summary.transport,
        format!("ramp {}", summary.scenario),
        points,
        found,
        limit,
    )
}

fn finish(
    transport: &'static str,
    source: String,
    points: Vec<Point>,
    found: Option<(Option<usize>, usize)>,
    limit: Limit,
) -> Capacity {
    let at = match found {
        Some((last_ok, _)) => last_ok,
        None => points.iter().rposition(|p| p.ok),
    };
    let knee = at.map(|i| points[i]);
    let statement = match (found, knee) {
        _ if points.is_empty() => format!(
            "{transport}: no load level to judge: the run was too short to estimate capacity"
        ),
        (None, Some(top)) => format!(
            "{transport}: every load up to {} clients ({:.0} events/s) held: capacity on this machine is above that; nothing ran out",
            top.clients, top.events_per_s
        ),
        (Some(_), Some(knee)) => format!(
            "{transport}: capacity on this machine is about {} clients ({:.0} events/s); beyond it, {} ran out first",
            knee.clients,
            knee.events_per_s,
            limit.as_str()
        ),
        (_, None) => format!(
            "{transport}: even the lightest load did not hold; {} ran out first",
            limit.as_str()
        ),
    };
    Capacity {
        transport,
        source,
        knee_clients: knee.map(|k| k.clients),
        knee_events_per_s: knee.map(|k| k.events_per_s),
        limit,
        vary: None,
        knee_level: None,
        broke: None,
        lower_bound: false,
        statement,
        points,
    }
}

/// The estimate of a capacity search over `base` from its `steps` (in the
/// order they ran, at least one), on `cores` cores and `memory_mb` of
/// memory.
pub fn of_search(
    base: &Scenario,
    search: &Search,
    steps: &[Step<'_>],
    cores: usize,
    memory_mb: Option<f64>,
) -> Capacity {
    let transport = steps[0].summary.transport;
    let mut points: Vec<Point> = steps
        .iter()
        .map(|step| Point {
            level: Some(step.level),
            clients: step.summary.clients,
            events_per_s: delivered(step.summary),
            latency_p99_us: step.summary.latency_us.map(|l| l.p99),
            server_cpu_pct: step.server.cpu_pct.or(step.summary.server.cpu_pct),
            loadgen_cpu_pct: step.loadgen.cpu_pct.or(step.summary.loadgen_cpu_pct),
            ok: step.summary.passed,
        })
        .collect();
    points.sort_by_key(|p| p.level);
    let knee = points.iter().rev().find(|p| p.ok).copied();
    let failed = steps
        .iter()
        .filter(|s| !s.summary.passed)
        .min_by_key(|s| s.level);
    let limit = failed.map_or(Limit::NotReached, |step| {
        Usage::of_step(step).limit(cores, memory_mb)
    });
    // The load generator ran out first: the knee says nothing of the server.
    let lower_bound =
        knee.is_some() && matches!(limit, Limit::LoadgenCpu | Limit::LoadgenOpenFiles);
    let broke = failed.map(broke_at);
    let statement = search_statement(base, search, knee, broke.as_ref(), limit, lower_bound);
    Capacity {
        transport,
        source: format!(
            "capacity search of {} over {}, {} steps",
            base.name,
            search.vary.as_str(),
            steps.len()
        ),
        knee_clients: knee.map(|k| k.clients),
        knee_events_per_s: knee.map(|k| k.events_per_s),
        limit,
        vary: Some(search.vary.as_str()),
        knee_level: knee.and_then(|k| k.level),
        broke,
        lower_bound,
        statement,
        points,
    }
}

/// What broke `step`: its first critical threshold that did not hold, or,
/// when every one held, the comparison with the baseline.
fn broke_at(step: &Step<'_>) -> Broke {
    let threshold = step
        .summary
        .thresholds
        .iter()
        .find(|t| !t.ok && t.severity == Severity::Critical);
    Broke {
        level: step.level,
        threshold: threshold.map_or_else(
            || "a regression against the baseline".to_owned(),
            |t| t.expr.clone(),
        ),
        value: threshold.and_then(|t| t.value),
    }
}

/// A search's estimate in a sentence.
fn search_statement(
    base: &Scenario,
    search: &Search,
    knee: Option<Point>,
    broke: Option<&Broke>,
    limit: Limit,
    lower_bound: bool,
) -> String {
    let transport = base.transport.as_str();
    let unit = search.vary.unit();
    let why = |broke: &Broke| {
        let value = broke
            .value
            .map_or_else(|| "not measured".to_owned(), |v| format!("{v:.0}"));
        format!(
            "at {} {unit} {} broke ({value})",
            broke.level, broke.threshold
        )
    };
    match (knee, broke) {
        (Some(knee), None) => format!(
            "{transport}: every step up to {} {unit} ({:.0} events/s) held: capacity on this \
             machine is above {} {unit}; nothing ran out",
            knee.level.unwrap_or_default(),
            knee.events_per_s,
            knee.level.unwrap_or_default(),
        ),
        (Some(knee), Some(broke)) if lower_bound => format!(
            "{transport}: capacity is at least {} {unit} (≥ {:.0} events/s), a lower bound: the \
             load generator ran out first ({}); {}; the server's capacity is higher or unknown",
            knee.level.unwrap_or_default(),
            knee.events_per_s,
            limit.as_str(),
            why(broke)
        ),
        (Some(knee), Some(broke)) => format!(
            "{transport}: capacity on this machine is about {} {unit} ({:.0} events/s); {}; {} \
             ran out first",
            knee.level.unwrap_or_default(),
            knee.events_per_s,
            why(broke),
            limit.as_str()
        ),
        (None, broke) => format!(
            "{transport}: even the lightest step did not hold{}; {} ran out first",
            broke.map(|b| format!(": {}", why(b))).unwrap_or_default(),
            limit.as_str()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::preset;
    use crate::summary::{Context, PhaseSummary, fixture};

    fn point(clients: u32, ok: bool) -> Point {
        Point {
            level: None,
            clients,
            events_per_s: f64::from(clients) * 10.0,
            latency_p99_us: Some(100),
            server_cpu_pct: None,
            loadgen_cpu_pct: None,
            ok,
        }
    }

    #[test]
    fn the_knee_is_the_last_level_before_enough_failures_in_a_row() {
        let levels = [
            point(10, true),
            point(50, true),
            point(100, false),
            point(200, false),
        ];
        assert_eq!(knee(&levels, 1), Some((Some(1), 2)));
        let blip = [
            point(1, true),
            point(2, false),
            point(3, true),
            point(4, false),
            point(5, false),
            point(6, true),
        ];
        assert_eq!(
            knee(&blip, 2),
            Some((Some(2), 3)),
            "one bad second is noise"
        );
        assert_eq!(knee(&[point(1, true), point(2, false)], 2), None);
        assert_eq!(
            knee(&[point(1, false), point(2, false)], 2),
            Some((None, 0))
        );
    }

    #[test]
    fn the_resource_that_ran_out_is_the_busiest_when_cpu_is_saturated() {
        let usage = |server, loadgen, errors| Usage {
            server_cpu_pct: server,
            loadgen_cpu_pct: loadgen,
            rss_mb: 100.0,
            errors,
            ..Usage::default()
        };
        assert_eq!(
            usage(120.0, 60.0, false).limit(2, Some(1e4)),
            Limit::ServerCpu
        );
        assert_eq!(
            usage(50.0, 140.0, false).limit(2, Some(1e4)),
            Limit::LoadgenCpu
        );
        assert_eq!(usage(50.0, 40.0, false).limit(2, Some(1e4)), Limit::Latency);
        assert_eq!(usage(50.0, 40.0, true).limit(2, Some(1e4)), Limit::Errors);
        assert_eq!(
            usage(50.0, 40.0, false).limit(2, Some(105.0)),
            Limit::Memory
        );
    }

    /// A judged summary of a search's step at `level`: `passed`, or broken
    /// on its p95 latency; the server and the load generator using
    /// `cpu` % of one core each.
    fn step_summary(level: u64, passed: bool, cpu: (f64, f64)) -> Summary {
        let scenario = fixture::scenario("clients-10", &[]);
        let measured = fixture::measured(&scenario, 3);
        let context = Context::lone("r1", "http://127.0.0.1:1");
        let mut summary = crate::analysis::summarize(&scenario, &measured, context);
        summary.events_per_s = level as f64 * 100.0;
        summary.error_rate = Some(0.0);
        summary.server.cpu_pct = Some(cpu.0);
        summary.loadgen_cpu_pct = Some(cpu.1);
        summary.passed = passed;
        summary.thresholds = vec![ThresholdResult {
            expr: "latency.p95<100ms".to_owned(),
            metric: "latency.p95",
            value: Some(250_000.0),
            ok: passed,
            severity: Severity::Critical,
            default: true,
            abort: false,
        }];
        summary
    }

    /// The estimate of a search whose steps at `levels` held up to 3,000,
    /// its broken steps using `cpu`, the processes' open files as given.
    fn searched(cpu: (f64, f64), files: (Option<Descriptors>, Option<Descriptors>)) -> Capacity {
        let watched = |files| Load {
            cpu_pct: None,
            files,
        };
        let levels = [1_000, 2_000, 4_000, 3_000, 3_500];
        let summaries: Vec<Summary> = levels
            .iter()
            .map(|&level| {
                let ok = level <= 3_000;
                step_summary(level, ok, if ok { (20.0, 20.0) } else { cpu })
            })
            .collect();
        let steps: Vec<Step<'_>> = levels
            .iter()
            .zip(&summaries)
            .map(|(&level, summary)| Step {
                level,
                summary,
                server: watched(files.0),
                loadgen: watched(files.1),
                machine_cpu_pct: None,
            })
            .collect();
        let base = preset::find("capacity").unwrap().scenario();
        let search = base.search.clone().unwrap();
        of_search(&base, &search, &steps, 2, Some(1e5))
    }

    #[test]
    fn a_search_reports_its_knee_what_broke_and_what_ran_out() {
        let server_bound = searched((150.0, 30.0), (None, None));
        assert_eq!(server_bound.knee_level, Some(3_000));
        assert_eq!(server_bound.knee_events_per_s, Some(300_000.0));
        assert_eq!(server_bound.vary, Some("rate"));
        assert_eq!(
            server_bound.broke,
            Some(Broke {
                level: 3_500,
                threshold: "latency.p95<100ms".to_owned(),
                value: Some(250_000.0),
            })
        );
        assert_eq!(
            (server_bound.limit, server_bound.lower_bound),
            (Limit::ServerCpu, false)
        );
        let levels: Vec<Option<u64>> = server_bound.points.iter().map(|p| p.level).collect();
        assert_eq!(
            levels,
            [
                Some(1_000),
                Some(2_000),
                Some(3_000),
                Some(3_500),
                Some(4_000)
            ]
        );
        assert!(
            server_bound
                .statement
                .contains("about 3000 events/s per client")
                && server_bound
                    .statement
                    .contains("at 3500 events/s per client latency.p95<100ms broke"),
            "{}",
            server_bound.statement
        );
        let loadgen_bound = searched((30.0, 150.0), (None, None));
        assert_eq!(
            (loadgen_bound.limit, loadgen_bound.lower_bound),
            (Limit::LoadgenCpu, true)
        );
        assert!(
            loadgen_bound.statement.contains("at least 3000")
                && loadgen_bound
                    .statement
                    .contains("(≥ 300000 events/s), a lower bound"),
            "{}",
            loadgen_bound.statement
        );
    }

    #[test]
    fn open_files_near_their_limit_ran_out_and_the_load_generators_make_a_lower_bound() {
        let near = Some(Descriptors {
            open: 19_000,
            limit: Some(20_000),
        });
        let far = Some(Descriptors {
            open: 2_000,
            limit: Some(20_000),
        });
        let server = searched((150.0, 30.0), (near, far));
        assert_eq!(
            (server.limit, server.lower_bound),
            (Limit::ServerOpenFiles, false)
        );
        let loadgen = searched((150.0, 30.0), (far, near));
        assert_eq!(
            (loadgen.limit, loadgen.lower_bound),
            (Limit::LoadgenOpenFiles, true)
        );
        let refused = Usage {
            loadgen_files: true,
            errors: true,
            ..Usage::default()
        };
        assert_eq!(refused.limit(2, None), Limit::LoadgenOpenFiles);
        let shared = Usage {
            server_cpu_pct: 50.0,
            loadgen_cpu_pct: 90.0,
            machine_cpu_pct: 97.0,
            ..Usage::default()
        };
        assert_eq!(shared.limit(2, None), Limit::LoadgenCpu, "a busy machine");
        let refusing = Usage {
            errors: true,
            ..shared
        };
        assert_eq!(
            refusing.limit(2, None),
            Limit::Errors,
            "the server's refusals come before a busy machine"
        );
    }

    #[test]
    fn a_search_whose_every_step_held_is_above_its_top_and_one_with_none_has_no_knee() {
        let plan = preset::find("capacity").unwrap().scenario();
        let search = plan.search.clone().unwrap();
        let held = step_summary(8_000, true, (50.0, 50.0));
        let step = |summary| Step {
            level: 8_000,
            summary,
            server: Load::default(),
            loadgen: Load::default(),
            machine_cpu_pct: None,
        };
        let above = of_search(&plan, &search, &[step(&held)], 2, None);
        assert_eq!(
            (above.limit, above.knee_level),
            (Limit::NotReached, Some(8_000))
        );
        assert!(
            above.statement.contains("above 8000"),
            "{}",
            above.statement
        );
        let broke = step_summary(8_000, false, (50.0, 50.0));
        let none = of_search(&plan, &search, &[step(&broke)], 2, None);
        assert_eq!((none.knee_level, none.lower_bound), (None, false));
        assert!(
            none.statement.contains("even the lightest step"),
            "{}",
            none.statement
        );
        assert_eq!(
            estimate(&[Summary {
                capacity: Some(above.clone()),
                ..held
            }]),
            [above],
            "a search's estimate stands for its transport"
        );
    }

    #[test]
    fn a_step_that_delivered_under_90_percent_of_its_offer_in_its_measured_phase_broke() {
        let mut summary = step_summary(100, true, (20.0, 20.0));
        let phase = |name: &str, events_per_s| PhaseSummary {
            name: name.to_owned(),
            events_per_s,
            ..summary.phases[0].clone()
        };
        summary.phases = vec![phase("connect", 10.0), phase(MEASURED, 9_500.0)];
        let mut held = summary.clone();
        judge_delivery(&mut held, Some(10_000.0));
        assert!(held.passed);
        judge_delivery(&mut summary, Some(11_000.0));
        assert!(!summary.passed);
        let added = summary.thresholds.last().unwrap();
        assert_eq!(
            (added.expr.as_str(), added.value),
            ("events_per_s{phase=step}>=9900", Some(9_500.0))
        );
        let mut unpaced = step_summary(100, true, (20.0, 20.0));
        judge_delivery(&mut unpaced, None);
        assert_eq!(unpaced.thresholds.len(), 1);
    }

    #[test]
    fn without_levels_there_is_no_estimate() {
        let capacity = finish(
            "sse",
            "ramp capacity".into(),
            Vec::new(),
            None,
            Limit::NotReached,
        );
        assert_eq!(capacity.knee_clients, None);
        assert!(
            capacity.statement.contains("too short"),
            "{}",
            capacity.statement
        );
    }

    #[test]
    fn steps_are_recognized_by_name() {
        assert!(is_step("clients-100"));
        assert!(!is_step("clients-x") && !is_step("rate-10"));
    }
}
