//! The suite: the standard matrix of scenarios, on both transports. Quick
//! (a representative subset, under two minutes) or full (every preset).
//! Every scenario of the suite must deliver and lose nothing: `events>0`,
//! `gaps==0`, `dups==0`, `error_rate<1%`, and for topics `behind_at_end==0`;
//! the default budgets of [`budgets`] apply on top. Both end with the
//! `capacity` search on each transport (the quick suite's in about 10 s),
//! which gives each transport's capacity estimate; the full suite's
//! `clients-N` load steps stay as measurements at fixed loads.

use std::time::Duration;

use super::{Scenario, StreamKind, Transport, budgets, preset};

/// The quick suite: a preset and how long its load lasts.
const QUICK: [(&str, u64); 7] = [
    ("clients-100", 6),
    ("rate-100", 6),
    ("churn", 6),
    ("tokens", 6),
    ("replay-5k", 5),
    ("slow-10ms", 5),
    ("capacity", 10),
];

/// The scenarios of a quick (or full) suite on `transports`, their phases
/// scaled by `time_scale`, with the default budgets unless `defaults` is
/// false.
pub fn plan(
    full: bool,
    transports: &[Transport],
    time_scale: f64,
    defaults: bool,
) -> Vec<Scenario> {
    let presets: Vec<(Scenario, Option<Duration>)> = if full {
        preset::PRESETS
            .iter()
            .map(|p| (p.scenario(), None))
            .collect()
    } else {
        QUICK
            .iter()
            .map(|&(name, seconds)| {
                let preset = preset::find(name).expect("the quick suite names real presets");
                (preset.scenario(), Some(Duration::from_secs(seconds)))
            })
            .collect()
    };
    let mut plan = Vec::new();
    for (i, &transport) in transports.iter().enumerate() {
        for (scenario, length) in &presets {
            // A preset of both transports at once runs once, as it is.
            let mixed = scenario.transport == Transport::Mixed;
            if mixed && i > 0 {
                continue;
            }
            let mut scenario = scenario.clone();
            if !mixed {
                scenario.transport = transport;
            }
            if let Some(length) = *length {
                shorten(&mut scenario, length);
            }
            scenario.thresholds.extend(
                thresholds(&scenario)
                    .into_iter()
                    .map(|t| t.parse().expect("valid thresholds")),
            );
            if defaults {
                budgets::add_defaults(&mut scenario);
            }
            scenario.scale_time(time_scale);
            plan.push(scenario);
        }
    }
    plan
}

/// What every suite scenario must hold.
fn thresholds(scenario: &Scenario) -> Vec<&'static str> {
    let mut thresholds = vec!["gaps==0", "dups==0", "error_rate<1%"];
    // A quiet topic holds idle subscribers: it delivers no event.
    if scenario.stream != StreamKind::Topic || scenario.publishes() {
        thresholds.push("events>0");
    }
    if scenario.stream == StreamKind::Topic {
        thresholds.push("behind_at_end==0");
    }
    thresholds
}

/// Scales every phase so that the scenario lasts `length`; a capacity
/// search, so that it lasts at most `length`.
fn shorten(scenario: &mut Scenario, length: Duration) {
    let factor = length.as_secs_f64() / scenario.longest().as_secs_f64();
    for phase in &mut scenario.phases {
        phase.duration = phase.duration.mul_f64(factor);
    }
    if let Some(search) = &mut scenario.search {
        search.scale_time(factor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_suite_covers_both_transports_in_under_two_minutes() {
        let plan = plan(false, &[Transport::Sse, Transport::Ws], 1.0, true);
        assert_eq!(plan.len(), 14);
        let total: Duration = plan.iter().map(Scenario::longest).sum();
        assert!(
            total < Duration::from_secs(100),
            "{total:?} of load, plus set-up"
        );
        assert!(
            plan.iter()
                .all(|s| s.thresholds.len() >= 4 && s.validate().is_ok())
        );
        let capacity: Vec<&Scenario> = plan.iter().filter(|s| s.search.is_some()).collect();
        assert_eq!(capacity.len(), 2, "a capacity search on each transport");
        assert!(
            capacity
                .iter()
                .all(|s| s.longest() <= Duration::from_secs(12)),
            "{:?}",
            capacity[0].search
        );
        let churn = plan.iter().find(|s| s.name == "churn").unwrap();
        assert!(churn.thresholds.iter().any(|t| t.metric == "behind_at_end"));
        assert!(churn.thresholds.iter().any(|t| t.default));
    }

    #[test]
    fn the_full_suite_runs_every_preset() {
        let plan = plan(true, &[Transport::Ws], 0.5, false);
        assert_eq!(plan.len(), preset::PRESETS.len());
        assert!(
            plan.iter()
                .all(|s| s.transport == Transport::Ws || s.name == "connections")
        );
        let both = super::plan(true, &Transport::ALL, 1.0, false);
        assert_eq!(
            both.len(),
            2 * preset::PRESETS.len() - 1,
            "the mixed preset runs once"
        );
        let mixed: Vec<_> = both.iter().filter(|s| s.name == "connections").collect();
        assert_eq!(mixed.len(), 1);
        assert_eq!(mixed[0].transport, Transport::Mixed);
        let idle: Vec<String> = mixed[0]
            .thresholds
            .iter()
            .map(|t| t.metric.to_owned())
            .collect();
        assert!(
            !idle.contains(&"events".to_owned()),
            "{idle:?}: idle streams get no event"
        );
    }
}
