//! Built-in scenarios covering the classic streaming test matrix. Each is
//! data; `--transport` picks SSE (the default) or WebSocket for any of them.

use std::time::Duration;

use super::search::{Growth, Search, Vary};
use super::{Abuse, AbuseKind, Phase, Scenario, StreamKind, TokenShape, Transport};

/// A preset: its name, a one-line description, and how to build it.
pub struct Preset {
    /// The name given to `--preset`.
    pub name: &'static str,
    /// One line for `presets`.
    pub about: &'static str,
    build: fn() -> Scenario,
}

impl Preset {
    /// The scenario.
    pub fn scenario(&self) -> Scenario {
        let mut scenario = (self.build)();
        scenario.name = self.name.to_owned();
        scenario
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `clients` clients at `rate` events/s each: a short ramp, then steady.
fn steady(clients: u32, rate: u64, duration: u64) -> Scenario {
    let mut scenario = Scenario {
        rate,
        ..Scenario::default()
    };
    scenario.set_load(clients, secs(duration), secs(2));
    scenario
}

fn slow(delay_ms: u64) -> Scenario {
    Scenario {
        consumer_delay: Duration::from_millis(delay_ms),
        ..steady(10, 100, 15)
    }
}

fn replay(rows: u64, clients: u32, duration: u64) -> Scenario {
    Scenario {
        stream: StreamKind::Replay,
        rate: 0,
        replay_rows: rows,
        ..steady(clients, 0, duration)
    }
}

fn topic(subscribers: u32, publish_rate: u64, churn: f64) -> Scenario {
    Scenario {
        stream: StreamKind::Topic,
        publish_rate,
        churn,
        ..steady(subscribers, 0, 20)
    }
}

/// Well-behaved clients measured while misbehaving ones, one kind per
/// phase, meet the server's limits at their defaults (the never-read phase
/// outlasts the 30 s write timeout with time to look; 4,200 streams from
/// one address exceed its 4,096).
fn abuse() -> Scenario {
    let with = |kind: AbuseKind, clients: u32, seconds: u64| Phase {
        abuse: Some(Abuse { kind, clients }),
        ..Phase::steady(kind.as_str(), 100, secs(seconds))
    };
    Scenario {
        phases: vec![
            Phase::steady("calm", 100, secs(10)),
            with(AbuseKind::Slowloris, 1_000, 15),
            with(AbuseKind::NeverRead, 100, 40),
            with(AbuseKind::Oversized, 20, 10),
            with(AbuseKind::PingFlood, 20, 10),
            with(AbuseKind::OnePeer, 4_200, 15),
            Phase::steady("recovered", 100, secs(10)),
        ],
        ..steady(100, 100, 0)
    }
}

/// The capacity search: 100 ticker clients, each one's rate doubling from
/// 100 events/s (10,000 events/s in all) in 3 s steps, until a
/// threshold breaks (the default budgets: p95 latency, errors; and
/// delivering 90 % of the events offered), then bisected three times. On
/// two shared cores the load generator may run out first: the knee is then
/// a lower bound, and says so.
fn capacity() -> Scenario {
    let search = Search {
        vary: Vary::Rate,
        // 80,000 events/s in all: far below this machine's knee (2.6
        // million events/s still held), so that the doublings reach it.
        start: 800,
        growth: Growth::Factor(2.0),
        step_duration: secs(3),
        settle: Duration::from_millis(500),
        max_steps: 9,
        bisections: 3,
        resolution: 0.05,
    };
    Scenario {
        rate: search.start,
        phases: vec![Phase::steady("capacity", 100, search.step_duration)],
        search: Some(search),
        ..Scenario::default()
    }
}

/// `subscribers` of a topic published at `publish_rate`: a ramp from none
/// over `ramp` seconds, then all of them for `hold`.
fn topic_load(subscribers: u32, publish_rate: u64, ramp: u64, hold: u64) -> Scenario {
    let mut scenario = topic(subscribers, publish_rate, 0.0);
    scenario.set_load(subscribers, secs(hold), secs(ramp));
    scenario
}

/// Every preset, in the order `presets` lists them.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "single",
        about: "1 client, 10 events/s, 15 s",
        build: || steady(1, 10, 15),
    },
    Preset {
        name: "clients-10",
        about: "10 clients, 10 events/s each, 20 s",
        build: || steady(10, 10, 20),
    },
    Preset {
        name: "clients-50",
        about: "50 clients, 10 events/s each, 20 s",
        build: || steady(50, 10, 20),
    },
    Preset {
        name: "clients-100",
        about: "100 clients, 10 events/s each, 20 s",
        build: || steady(100, 10, 20),
    },
    Preset {
        name: "clients-200",
        about: "200 clients, 10 events/s each, 20 s",
        build: || steady(200, 10, 20),
    },
    Preset {
        name: "rate-1",
        about: "50 clients, 1 event/s each, 20 s",
        build: || steady(50, 1, 20),
    },
    Preset {
        name: "rate-10",
        about: "50 clients, 10 events/s each, 20 s",
        build: || steady(50, 10, 20),
    },
    Preset {
        name: "rate-100",
        about: "50 clients, 100 events/s each, 20 s",
        build: || steady(50, 100, 20),
    },
    Preset {
        name: "burst",
        about: "3 bursts of 50 clients streaming as fast as they read (3 s), each with a 3 s cool-down",
        build: || {
            let mut phases = Vec::new();
            for _ in 0..3 {
                phases.push(Phase::steady("burst", 50, secs(3)));
                phases.push(Phase::steady("cool-down", 0, secs(3)));
            }
            Scenario {
                rate: 0,
                phases,
                ..Scenario::default()
            }
        },
    },
    Preset {
        name: "ramp",
        about: "ramp from 1 to 200 clients over 30 s, 10 events/s each",
        build: || Scenario {
            phases: vec![Phase {
                from: 1,
                ..Phase::steady("ramp", 200, secs(30))
            }],
            ..Scenario::default()
        },
    },
    Preset {
        name: "spike",
        about: "from 0 to 100 clients at once, held 15 s, then a 3 s cool-down",
        build: || Scenario {
            phases: vec![
                Phase::steady("idle", 0, secs(2)),
                Phase::steady("spike", 100, secs(15)),
                Phase::steady("cool-down", 0, secs(3)),
            ],
            ..Scenario::default()
        },
    },
    Preset {
        name: "churn",
        about: "50 topic subscribers each leaving and resuming about every 2 s, 200 publishes/s",
        build: || topic(50, 200, 0.5),
    },
    Preset {
        name: "fanout",
        about: "100 topic subscribers, 1,000 publishes/s: 100,000 deliveries/s",
        build: || topic(100, 1_000, 0.0),
    },
    Preset {
        name: "fanout-1m",
        about: "1 publisher at 1,000 publishes/s to 1,000 topic subscribers: 1,000,000 \
                deliveries/s, 20 s",
        build: || topic_load(1_000, 1_000, 5, 20),
    },
    Preset {
        name: "cluster",
        about: "300 topic subscribers and 500 publishes/s spread over 3 server nodes sharing the \
                topic through PostgreSQL (without --url, a throwaway PostgreSQL cluster and 3 \
                local servers); 3 s ramp, 20 s",
        build: || Scenario {
            nodes: 3,
            ..topic_load(300, 500, 3, 20)
        },
    },
    Preset {
        name: "connections",
        about: "18,000 idle topic subscribers, half SSE and half WebSocket, opened over 20 s and \
                held 60 s (keep-alives only), against a server started with \
                --max-connections=19000",
        build: || Scenario {
            transport: Transport::Mixed,
            server_args: vec!["--max-connections=19000".to_owned()],
            ..topic_load(18_000, 0, 20, 60)
        },
    },
    Preset {
        name: "slow-1ms",
        about: "10 clients at 100 events/s that spend 1 ms on each event",
        build: || slow(1),
    },
    Preset {
        name: "slow-10ms",
        about: "10 clients at 100 events/s that spend 10 ms on each event (just keeping up)",
        build: || slow(10),
    },
    Preset {
        name: "slow-50ms",
        about: "10 clients at 100 events/s that spend 50 ms on each event (backpressure)",
        build: || slow(50),
    },
    Preset {
        name: "tokens",
        about: "50 clients requesting LLM-like token streams (TTFT 200 ms, 50 tokens/s, 100 tokens)",
        build: || Scenario {
            stream: StreamKind::Tokens,
            tokens: TokenShape {
                ttft: Duration::from_millis(200),
                tps: 50,
                tokens: 100,
            },
            ..steady(50, 0, 20)
        },
    },
    Preset {
        name: "replay-5k",
        about: "10 clients replaying a 5,000-row dataset from the store, over and over",
        build: || replay(5_000, 10, 15),
    },
    Preset {
        name: "replay-1m",
        about: "1 client replaying a 1,000,000-row dataset from the store",
        build: || replay(1_000_000, 1, 60),
    },
    Preset {
        name: "throughput",
        about: "10 clients streaming as fast as they read, 15 s",
        build: || steady(10, 0, 15),
    },
    Preset {
        name: "latency",
        about: "100 clients at 100 events/s each (10,000 events/s), 20 s",
        build: || steady(100, 100, 20),
    },
    Preset {
        name: "capacity",
        about: "capacity search: 100 clients, events/s per client doubling from 800 in 3 s steps \
                (up to 20,480,000 events/s in all) until a threshold breaks, then bisected: finds \
                the knee",
        build: capacity,
    },
    Preset {
        name: "overload",
        about: "100 topic subscribers and 500 publishes/s, then 1,000 and 10,000/s for 15 s, then \
                100 and 500/s again, against a server started with --max-connections=250 \
                --publish-queue=64: sheds, then recovers",
        build: || Scenario {
            server_args: vec![
                "--max-connections=250".to_owned(),
                "--publish-queue=64".to_owned(),
            ],
            // Overloaded, the server sheds and answers late; what it admits
            // it must deliver, and nothing may fail any other way.
            thresholds: [
                "counts.shed>0",
                "counts.publishes_shed>0",
                "gaps==0",
                "dups==0",
                "errors.connect==0",
                "errors.http_status==0",
                "errors.protocol==0",
                "errors.closed==0",
                "warn:error_rate<5%",
            ]
            .iter()
            .map(|t| t.parse().expect("the overload thresholds parse"))
            .collect(),
            phases: vec![
                Phase::steady("normal", 100, secs(10)),
                Phase {
                    publish_rate: Some(10_000),
                    ..Phase::steady("overload", 1_000, secs(15))
                },
                Phase::steady("recovered", 100, secs(10)),
            ],
            ..topic(100, 500, 0.0)
        },
    },
    Preset {
        name: "abuse",
        about: "100 clients at 100 events/s; beside them, in turn: 1,000 slowloris heads, 100 \
                streams never read, 20 oversized publishers, 20 ping floods, 4,200 streams from \
                one address; calm before and after",
        build: abuse,
    },
    Preset {
        name: "soak",
        about: "100 clients at 10 events/s for 10 minutes (set another length with --duration)",
        build: || steady(100, 10, 600),
    },
];

/// The preset named `name`.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid_and_named_once() {
        for preset in PRESETS {
            let scenario = preset.scenario();
            assert_eq!(scenario.validate(), Ok(()), "{}", preset.name);
            assert_eq!(scenario.name, preset.name);
            assert_eq!(PRESETS.iter().filter(|p| p.name == preset.name).count(), 1);
        }
    }

    #[test]
    fn the_matrix_of_the_issue_is_covered() {
        for name in [
            "single",
            "clients-10",
            "clients-50",
            "clients-100",
            "clients-200",
            "rate-1",
            "rate-10",
            "rate-100",
            "burst",
            "ramp",
            "spike",
            "churn",
            "slow-1ms",
            "slow-10ms",
            "slow-50ms",
            "replay-5k",
            "replay-1m",
            "soak",
        ] {
            assert!(find(name).is_some(), "{name}");
        }
        assert_eq!(find("replay-1m").unwrap().scenario().replay_rows, 1_000_000);
        assert_eq!(find("spike").unwrap().scenario().phases[1].from, 100);
    }
}
