//! Default budgets: every scenario gets thresholds drawn from common
//! production budgets, unless it sets the same metric itself (or the user
//! asks for none): error rate warning at 1 %, critical at 5 %; connection
//! success warning under 99 %, critical under 95 %; and, for paced streams
//! that clients read as fast as they come, delivery latency p95 warning at
//! 50 ms, critical at 100 ms. (Streams read as fast as possible and slow
//! readers queue by design: their latency measures the backlog, not the
//! server.)

use super::{Scenario, StreamKind, Threshold};

/// Default budgets: each pair is a warning and a critical threshold on one
/// metric.
const BUDGETS: [(&str, [&str; 2]); 3] = [
    ("error_rate", ["warn:error_rate<1%", "error_rate<5%"]),
    (
        "connect_success",
        ["warn:connect_success>=99%", "connect_success>=95%"],
    ),
    (
        "latency.p95",
        ["warn:latency.p95<50ms", "latency.p95<100ms"],
    ),
];

/// Whether delivery latency measures the server in `scenario`: events are
/// paced (never "as fast as the client reads"), clients read at once, and
/// it is not a ramp (a ramp looks for the load where latency breaks; the
/// capacity estimate judges it second by second).
fn latency_applies(scenario: &Scenario) -> bool {
    if scenario.is_ramp() {
        return false;
    }
    // A foreign target's latency is measured only through its ts_pointer,
    // and paced only by the load generator's own publishes.
    if let Ok(Some(target)) = scenario.target_spec() {
        return target.ts_pointer.is_some()
            && scenario.publishes()
            && scenario.consumer_delay.is_zero();
    }
    let paced = match scenario.stream {
        // A quiet topic (no publishes) delivers nothing to measure.
        StreamKind::Topic => scenario.publishes(),
        StreamKind::Tokens => true,
        StreamKind::Ticker | StreamKind::Replay => {
            scenario.phases.iter().all(|p| scenario.rate_in(p) > 0)
        }
    };
    paced && scenario.consumer_delay.is_zero()
}

/// Adds the default budgets to `scenario` for every metric it does not
/// already have a threshold on.
pub fn add_defaults(scenario: &mut Scenario) {
    for (metric, exprs) in BUDGETS {
        let given = (scenario.thresholds.iter()).any(|t| t.metric == metric && t.scope.is_none());
        if given || (metric.starts_with("latency.") && !latency_applies(scenario)) {
            continue;
        }
        for expr in exprs {
            let mut threshold: Threshold = expr.parse().expect("default budgets parse");
            threshold.default = true;
            scenario.thresholds.push(threshold);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::preset;

    fn exprs(scenario: &Scenario) -> Vec<String> {
        scenario
            .thresholds
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn defaults_are_production_budgets_where_they_apply() {
        let mut paced = preset::find("clients-100").unwrap().scenario();
        add_defaults(&mut paced);
        assert_eq!(
            exprs(&paced),
            [
                "warn:error_rate<1%",
                "error_rate<5%",
                "warn:connect_success>=99%",
                "connect_success>=95%",
                "warn:latency.p95<50ms",
                "latency.p95<100ms",
            ]
        );
        assert!(paced.thresholds.iter().all(|t| t.default));
        for unpaced in [
            "throughput",
            "slow-50ms",
            "replay-5k",
            "burst",
            "connections",
        ] {
            let mut scenario = preset::find(unpaced).unwrap().scenario();
            add_defaults(&mut scenario);
            assert!(
                scenario
                    .thresholds
                    .iter()
                    .all(|t| !t.metric.starts_with("latency")),
                "{unpaced}: {:?}",
                exprs(&scenario)
            );
            assert_eq!(scenario.thresholds.len(), 4, "{unpaced}");
        }
    }

    #[test]
    fn a_given_threshold_replaces_the_default_on_its_metric() {
        let mut scenario = preset::find("rate-100").unwrap().scenario();
        scenario.thresholds.push("latency.p95<5ms".parse().unwrap());
        add_defaults(&mut scenario);
        let latency: Vec<String> = exprs(&scenario)
            .into_iter()
            .filter(|e| e.contains("latency"))
            .collect();
        assert_eq!(latency, ["latency.p95<5ms"]);
    }
}
