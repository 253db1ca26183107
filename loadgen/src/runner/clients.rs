//! The virtual clients one process runs, following the load: what they do
//! phase by phase ([`Load`]), which of them are this process's ([`Share`]),
//! and those running now ([`Clients`]). A run in one process holds every
//! client; each worker process holds its share (`super::worker`).
//!
//! Clients are numbered by their slot in the load: while a phase wants `n`
//! clients, clients `0..n` run, whichever process holds them. A client's
//! number chooses its transport on a mixed run and its loopback source
//! address, so several processes together run exactly the clients one
//! process would.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::stop::join_within;
use crate::client::jwt::Minter;
use crate::client::{Agent, ClientSpec, StreamPath, Target, VirtualClient};
use crate::metrics::Shards;
use crate::scenario::auth::Auth;
use crate::scenario::target::Invalid;
use crate::scenario::{Phase, Scenario, Transport, max_clients, phase_at};

/// What the virtual clients of a run do, phase by phase: all a worker
/// process needs of the scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// The transport (`mixed`: by client number).
    pub transport: Transport,
    /// Time each client spends on each event.
    pub consumer_delay: Duration,
    /// Disconnect-and-resume rate per client and second.
    pub churn: f64,
    /// The phases.
    pub phases: Vec<Phase>,
    /// What clients stream in each phase (its rate applied), one per phase.
    pub streams: Vec<StreamPath>,
    /// Per-user tokens: each client mints its own with this key.
    pub auth: Option<Auth>,
    /// On a run over several agents, the number of the agent these clients
    /// run on (`ClientSpec::agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Agent>,
}

impl Load {
    /// The clients of `scenario`, whose topic or wallet is `name`.
    ///
    /// # Errors
    ///
    /// Its foreign target is not valid (never, for a validated scenario).
    pub fn of(scenario: &Scenario, name: &str) -> Result<Self, Invalid> {
        Ok(Self {
            transport: scenario.transport,
            consumer_delay: scenario.consumer_delay,
            churn: scenario.churn,
            phases: scenario.phases.clone(),
            streams: scenario
                .phases
                .iter()
                .map(|phase| StreamPath::of(scenario, name, scenario.rate_in(phase)))
                .collect::<Result<_, _>>()?,
            auth: scenario.auth.clone(),
            agent: None,
        })
    }

    /// The clients wanted `elapsed` into the run, all processes together.
    pub fn clients_at(&self, elapsed: Duration) -> usize {
        let (_, phase, into_phase) = phase_at(&self.phases, elapsed);
        phase.clients_at(into_phase) as usize
    }
}

/// Which clients a process runs: those whose number is `index` modulo
/// `of` (`of` processes share the load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// This process's rank, from 0.
    pub index: usize,
    /// How many processes share the load (at least 1).
    pub of: usize,
}

impl Share {
    /// Every client: the load in one process.
    pub const ALL: Share = Share { index: 0, of: 1 };

    /// How many of clients `0..total` are this share's.
    pub fn count(self, total: usize) -> usize {
        total.saturating_sub(self.index).div_ceil(self.of)
    }

    /// The number of this share's `n`-th client (from 0).
    pub fn id(self, n: usize) -> usize {
        self.index + n * self.of
    }
}

/// This process's clients running now, its `n`-th client in `active[n]`.
#[derive(Debug)]
pub struct Clients {
    load: Load,
    share: Share,
    spec: Arc<ClientSpec>,
    /// The server nodes: client `i` connects to node `i` modulo their
    /// number.
    targets: Vec<Arc<Target>>,
    shards: Arc<Shards>,
    stop: CancellationToken,
    active: Vec<CancellationToken>,
    tasks: JoinSet<()>,
}

impl Clients {
    /// None yet: [`Clients::follow`] starts them, spread round robin over
    /// the nodes `targets` (at least one). They record into `shards` (one
    /// node per target), send `token` (or each its own, minted, with the
    /// load's per-user tokens), and stop with `stop`.
    ///
    /// # Errors
    ///
    /// A TLS target's settings cannot be used (its CA file), or the key
    /// file of per-user tokens can no longer be read.
    pub fn new(
        load: Load,
        share: Share,
        targets: Vec<Arc<Target>>,
        shards: Arc<Shards>,
        token: Option<String>,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let minter = (load.auth.as_ref())
            .map(|auth| Minter::new(auth, load.streams[0].grants()).map(Arc::new))
            .transpose()
            .map_err(anyhow::Error::msg)?;
        if let Some(minter) = &minter {
            let most = share.count(max_clients(&load.phases) as usize);
            minter.prepare((0..most).map(|n| format!("client-{}", share.id(n))));
        }
        let spec = Arc::new(ClientSpec {
            agent: load.agent,
            ..ClientSpec::new(
                load.transport,
                load.streams[0].clone(),
                load.consumer_delay,
                load.churn,
                token,
                minter,
                targets.len(),
            )?
        });
        Ok(Self {
            load,
            share,
            spec,
            targets,
            shards,
            stop,
            active: Vec::new(),
            tasks: JoinSet::new(),
        })
    }

    /// Starts or stops clients so that this share of the clients wanted
    /// `elapsed` into the run are running. A phase that streams something
    /// else (a rate of its own) switches every client at once.
    pub fn follow(&mut self, elapsed: Duration) {
        let (index, phase, into_phase) = phase_at(&self.load.phases, elapsed);
        let wanted = self.share.count(phase.clients_at(into_phase) as usize);
        let stream = &self.load.streams[index];
        if *stream != self.spec.stream {
            self.spec = Arc::new(ClientSpec {
                stream: stream.clone(),
                ..(*self.spec).clone()
            });
            self.scale_to(0);
        }
        self.scale_to(wanted);
    }

    /// Starts or stops clients until `wanted` of this share run.
    fn scale_to(&mut self, wanted: usize) {
        while self.active.len() < wanted {
            let id = self.share.id(self.active.len());
            let node = id % self.targets.len();
            let cancel = self.stop.child_token();
            let client = VirtualClient {
                id,
                node,
                spec: Arc::clone(&self.spec),
                target: Arc::clone(&self.targets[node]),
                recorder: self.shards.recorder_for(id, node),
            };
            self.tasks.spawn(client.run(cancel.clone()));
            self.active.push(cancel);
        }
        while self.active.len() > wanted {
            self.active.pop().expect("more active than wanted").cancel();
        }
    }

    /// Stops every client, a topic's subscribers told that they should
    /// hold `settled` by now, and waits (a bounded time) until they have
    /// flushed their measurements.
    pub async fn stop(&mut self, settled: u64) {
        self.spec.settled.store(settled, Ordering::Release);
        self.stop.cancel();
        join_within(&mut self.tasks, "clients").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_together_hold_every_client_once() {
        for of in 1..=4 {
            for total in 0..=11 {
                let mut ids: Vec<usize> = (0..of)
                    .flat_map(|index| {
                        let share = Share { index, of };
                        (0..share.count(total)).map(move |n| share.id(n))
                    })
                    .collect();
                ids.sort_unstable();
                assert_eq!(ids, (0..total).collect::<Vec<_>>(), "{total} over {of}");
            }
        }
        assert_eq!(Share::ALL.count(7), 7);
        assert_eq!(Share { index: 2, of: 3 }.count(2), 0);
    }

    #[test]
    fn each_phase_streams_at_its_own_rate() {
        let mut scenario = Scenario::default();
        scenario.phases.push(Phase {
            rate: Some(500),
            from: 3,
            ..Phase::steady("fast", 9, Duration::from_secs(4))
        });
        let load = Load::of(&scenario, "t").unwrap();
        assert_eq!(
            load.streams,
            [
                StreamPath::of(&scenario, "t", 10).unwrap(),
                StreamPath::of(&scenario, "t", 500).unwrap()
            ]
        );
        assert_eq!(load.clients_at(Duration::from_secs(1)), 10);
        assert_eq!(load.clients_at(Duration::from_secs(12)), 6);
        let json = serde_json::to_string(&load).unwrap();
        assert_eq!(serde_json::from_str::<Load>(&json).unwrap(), load);
    }
}
