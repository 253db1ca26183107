//! Capacity: from a suite's load steps (`clients-10`, `clients-50`, …) or a
//! ramp, the knee — the highest load that still met the thresholds — stated
//! as this build's capacity on this machine, with the resource that ran out
//! first (server CPU, load generator CPU, memory, errors) or, when none
//! did, latency alone.
//!
//! Steps are whole runs, judged by their thresholds. A ramp is judged
//! second by second: a second holds when it had no error, its latency p95
//! stayed within the scenario's critical latency budget (100 ms by default)
//! and, for paced streams, at least 90 % of the offered events arrived. The
//! knee is the last second that held before two seconds in a row did not
//! (one bad second is noise).

use crate::metrics::timeline::Row;
use crate::scenario::{Scenario, Severity, StreamKind};
use crate::summary::Summary;
use crate::summary::capacity::{Capacity, Limit, Point};

/// Below this share of the offered events a ramp second did not keep up.
const KEPT_UP: f64 = 0.9;

/// Above this share of all cores, the CPU ran out.
const CPU_SATURATED: f64 = 0.85;

/// Above this share of the machine's memory, memory ran out.
const MEMORY_SATURATED: f64 = 0.9;

/// The default critical latency budget, p95 µs.
const LATENCY_P95_US: f64 = 100_000.0;

/// Resources in use at one level, as shares of what the machine has.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    server_cpu_pct: f64,
    loadgen_cpu_pct: f64,
    rss_mb: f64,
    errors: bool,
}

impl Usage {
    /// What ran out, if anything did.
    fn limit(self, cores: usize, memory_mb: Option<f64>) -> Limit {
        let all_cpu = 100.0 * cores as f64;
        if self.errors {
            Limit::Errors
        } else if memory_mb.is_some_and(|total| self.rss_mb >= MEMORY_SATURATED * total) {
            Limit::Memory
        } else if self.server_cpu_pct + self.loadgen_cpu_pct >= CPU_SATURATED * all_cpu {
            if self.server_cpu_pct >= self.loadgen_cpu_pct {
                Limit::ServerCpu
            } else {
                Limit::LoadgenCpu
            }
        } else {
            Limit::Latency
        }
    }

    fn of_summary(s: &Summary) -> Self {
        Self {
            server_cpu_pct: s.server.cpu_pct.unwrap_or(0.0),
            loadgen_cpu_pct: s.loadgen_cpu_pct.unwrap_or(0.0),
            rss_mb: s.server.rss_mb.map_or(0.0, |r| r.peak),
            errors: s.error_rate.is_some_and(|rate| rate > 0.0),
        }
    }

    fn of_row(row: &Row) -> Self {
        Self {
            server_cpu_pct: row.server_cpu_pct.unwrap_or(0.0),
            loadgen_cpu_pct: row.loadgen_cpu_pct.unwrap_or(0.0),
            rss_mb: row.server_rss_mb.unwrap_or(0.0),
            errors: row.errors > 0,
        }
    }
}

/// Whether `name` is one of the suite's load steps (`clients-N`).
fn is_step(name: &str) -> bool {
    name.strip_prefix("clients-")
        .is_some_and(|n| n.parse::<u32>().is_ok())
}

/// The estimates `summaries` allow: one per transport from its load steps
/// (two or more), and one per ramp.
pub fn estimate(summaries: &[Summary]) -> Vec<Capacity> {
    let mut estimates = Vec::new();
    let mut transports: Vec<&'static str> = summaries.iter().map(|s| s.transport).collect();
    transports.dedup();
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
            clients: s.clients,
            events_per_s: s.events_per_s,
            latency_p99_us: s.latency_us.map(|l| l.p99),
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

/// Events per second a ramp second offered, if the stream is paced.
fn offered(scenario: &Scenario, clients: u32) -> Option<f64> {
    match scenario.stream {
        StreamKind::Ticker if scenario.rate > 0 => Some(f64::from(clients) * scenario.rate as f64),
        StreamKind::Topic => Some(f64::from(clients) * scenario.publish_rate as f64),
        _ => None,
    }
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
            let kept_up = offered(scenario, clients)
                .is_none_or(|offered| row.events_per_s >= KEPT_UP * offered);
            let fast = row
                .latency_p95_us
                .is_none_or(|p95| (p95 as f64) <= latency_budget);
            Point {
                clients: row.clients,
                events_per_s: row.events_per_s,
                latency_p99_us: row.latency_p99_us,
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
        statement,
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(clients: u32, ok: bool) -> Point {
        Point {
            clients,
            events_per_s: f64::from(clients) * 10.0,
            latency_p99_us: Some(100),
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
