//! Each agent's part of a run over several machines (`summary.json`'s
//! `agents`): what its clients measured, what it cost the agent, how well
//! its clock is known, whether it bounded the figures, and whether it was
//! lost.

use serde::Serialize;

use super::capacity::CPU_SATURATED;
use super::{Bucket, LatencyUs, Millis};
use crate::metrics::timeline::{AgentMeasured, Lost};

/// One agent's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentSummary {
    /// Its control address (`HOST:PORT`).
    pub address: String,
    /// The most of the run's clients it ran at once.
    pub clients: u32,
    /// Events its clients received.
    pub events: u64,
    /// Events its clients received per second.
    pub events_per_s: f64,
    /// Failures of its clients and publishes.
    pub errors: u64,
    /// Delivery latency of its clients (receipt − `ts`).
    pub latency_us: Option<LatencyUs>,
    /// The same in buckets doubling from 1 µs, as the run's own
    /// `latency_distribution`: the run's is these added up, exactly.
    pub latency_distribution: Vec<Bucket>,
    /// Topics: receipt − its own publisher's intended send time (its own
    /// publishes only: one clock).
    pub end_to_end_us: Option<LatencyUs>,
    /// Topics: receipt − `pts`.
    pub publish_to_receive_us: Option<LatencyUs>,
    /// Topics: publishes it sent and had acknowledged.
    pub published: u64,
    /// Topics: latency of its publishes, from their intended send time.
    pub publish_ms: Option<Millis>,
    /// Its CPU over the run, % of one core (its worker processes
    /// included).
    pub cpu_pct: f64,
    /// Its cores.
    pub cores: usize,
    /// Its largest resident memory, MiB.
    pub rss_mb: f64,
    /// Its clock minus the coordinator's, µs (its measurements were put on
    /// the coordinator's clock).
    pub clock_offset_us: i64,
    /// The most the true offset may differ from `clock_offset_us`, µs.
    pub clock_uncertainty_us: u64,
    /// Whether that uncertainty is within `--max-clock-uncertainty`: if
    /// not, its delivery latency is not comparable with other agents'.
    pub clock_comparable: bool,
    /// What on this agent, rather than the server, bounded the figures
    /// (its CPU saturated); empty when nothing did.
    pub bounded_by: Vec<String>,
    /// When and why it was lost during the run (`null` if it was not).
    pub lost: Option<Lost>,
}

impl AgentSummary {
    /// The figures of `agent` over a run of `seconds`.
    pub fn of(agent: &AgentMeasured, seconds: f64) -> Self {
        let (s, c) = (&agent.stats, &agent.stats.counts);
        // A lost agent's rates are over the time it ran.
        let seconds =
            (agent.lost.as_ref()).map_or(seconds, |lost| lost.at_s.clamp(f64::EPSILON, seconds));
        let cpu_pct = 100.0 * agent.cpu_seconds / seconds;
        let mut bounded_by = Vec::new();
        if cpu_pct >= CPU_SATURATED * 100.0 * agent.cores as f64 {
            bounded_by.push(format!(
                "agent CPU: {cpu_pct:.0} % of one core on its {} cores; add agents or \
                 use larger machines",
                agent.cores
            ));
        }
        Self {
            address: agent.address.clone(),
            clients: agent.clients,
            events: c.events,
            events_per_s: c.events as f64 / seconds,
            errors: c.error_total(),
            latency_us: LatencyUs::of(&s.latency),
            latency_distribution: Bucket::of(&s.latency),
            end_to_end_us: LatencyUs::of(&s.end_to_end),
            publish_to_receive_us: LatencyUs::of(&s.from_publish),
            published: c.published,
            publish_ms: Millis::of(&s.publish),
            cpu_pct,
            cores: agent.cores,
            rss_mb: agent.rss_bytes as f64 / (1024.0 * 1024.0),
            clock_offset_us: agent.clock_offset_us,
            clock_uncertainty_us: agent.clock_uncertainty_us,
            clock_comparable: agent.clock_comparable,
            bounded_by,
            lost: agent.lost.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Stats;

    fn agent(cpu_seconds: f64) -> AgentMeasured {
        let mut stats = Stats::default();
        stats.counts.events = 4_000;
        stats.latency.record(250).unwrap();
        AgentMeasured {
            address: "127.0.0.2:4000".to_owned(),
            clients: 10,
            cores: 2,
            clock_offset_us: -1_500,
            clock_uncertainty_us: 40,
            clock_comparable: true,
            cpu_seconds,
            rss_bytes: 3 << 20,
            stats,
            lost: None,
        }
    }

    #[test]
    fn an_agent_whose_cpu_saturated_is_flagged() {
        let calm = AgentSummary::of(&agent(1.0), 2.0);
        assert_eq!(
            (calm.cpu_pct, calm.events_per_s, calm.rss_mb),
            (50.0, 2_000.0, 3.0)
        );
        assert!(calm.bounded_by.is_empty());
        assert_eq!(calm.latency_us.map(|l| l.max), Some(250));
        let busy = AgentSummary::of(&agent(3.6), 2.0);
        assert_eq!(busy.cpu_pct, 180.0);
        assert!(
            busy.bounded_by[0].contains("agent CPU"),
            "{:?}",
            busy.bounded_by
        );
    }
}
