//! What a run's publishers do, as data ([`PublishPlan`]): the coordinator
//! of a run over several agents sends it to each, and every process that
//! publishes (this one, or each agent) starts its publishers from it the
//! same way ([`PublishPlan::start`]), then follows the phases' rates.

use std::sync::Arc;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::publisher::{self, Acks, Destination, Publishing};
use super::stop::join_within;
use crate::client::jwt::{Credential, Grants, Minter};
use crate::client::{Agent, Target};
use crate::metrics::Shards;
use crate::scenario::auth::Auth;
use crate::scenario::target::TargetSpec;
use crate::scenario::{Scenario, StreamKind};

/// A topic scenario's publishers: where publishes go, at what rate in each
/// phase, how large, and with what credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishPlan {
    /// The topic published to (a foreign target's, or the run's own).
    pub topic: String,
    /// A foreign target, published to as it says; `None`: this project's
    /// topics, on every node.
    pub foreign: Option<TargetSpec>,
    /// Publishes per second in each phase.
    pub rates: Vec<u64>,
    /// Padding bytes per publish.
    pub size: usize,
    /// Per-user tokens: the publisher mints its own (`publisher-0`).
    pub auth: Option<Auth>,
}

/// Publishers running: their tasks, what they acknowledged, and the rate
/// they follow.
#[derive(Debug)]
pub struct Publishers {
    /// The publisher's tasks (and a foreign WebSocket's).
    tasks: JoinSet<()>,
    /// The publishes acknowledged so far.
    pub acks: Arc<Acks>,
    rate: watch::Sender<u64>,
    rates: Vec<u64>,
}

impl Publishers {
    /// Waits (a bounded time) until the publishers, stopped, have flushed
    /// their last counts.
    pub async fn join(&mut self) {
        join_within(&mut self.tasks, "publishers").await;
    }

    /// Publishes at phase `index`'s rate from now on.
    pub fn enter(&self, index: usize) {
        let rate = self.rates.get(index).copied().unwrap_or(0);
        self.rate
            .send_if_modified(|now| std::mem::replace(now, rate) != rate);
    }
}

/// Where publishers start: the run's nodes and what they share.
#[derive(Debug)]
pub struct Origin<'a> {
    /// The server's nodes.
    pub targets: &'a [Arc<Target>],
    /// Bearer token, when none is minted.
    pub token: Option<&'a str>,
    /// Where each node's publishes are recorded.
    pub shards: &'a Arc<Shards>,
    /// Ends the publishers.
    pub stop: &'a CancellationToken,
}

impl PublishPlan {
    /// `scenario`'s publishers, its own topic being `name`; `None` if it
    /// does not publish.
    ///
    /// # Errors
    ///
    /// Its foreign target is not valid (never, for a validated scenario).
    pub fn of(scenario: &Scenario, name: &str) -> anyhow::Result<Option<Self>> {
        if scenario.stream != StreamKind::Topic || !scenario.publishes() {
            return Ok(None);
        }
        let foreign = scenario.target_spec()?;
        let topic = (foreign.as_ref())
            .and_then(|spec| spec.topic.clone())
            .unwrap_or_else(|| name.to_owned());
        Ok(Some(Self {
            topic,
            foreign,
            rates: (scenario.phases.iter())
                .map(|phase| scenario.publish_rate_in(phase))
                .collect(),
            size: scenario.size,
            auth: scenario.auth.clone(),
        }))
    }

    /// Starts the publishers at the first phase's rate, sending only
    /// `agent`'s own publishes on a run over several agents.
    ///
    /// # Errors
    ///
    /// The publisher's key file cannot be read, or a foreign target's
    /// publish URL cannot be reached or set up.
    pub async fn start(&self, at: &Origin<'_>, agent: Option<Agent>) -> anyhow::Result<Publishers> {
        let credential = self.credential()?;
        let mut tasks = JoinSet::new();
        let token = (credential.as_ref())
            .map(Credential::token)
            .or(at.token)
            .map(str::to_owned);
        let to = match &self.foreign {
            Some(spec) => {
                let cancel = at.stop.child_token();
                let server = &at.targets[0];
                publisher::foreign(
                    spec,
                    &self.topic,
                    token.as_deref(),
                    server,
                    cancel,
                    &mut tasks,
                )
                .await?
            }
            None => Destination::Topics {
                urls: (at.targets.iter())
                    .map(|t| format!("{}/topics/{}/events", t.base_url(), self.topic))
                    .collect(),
            },
        };
        let (rate, rates) = watch::channel(self.rates.first().copied().unwrap_or(0));
        let publishing = Publishing {
            to,
            rate: rates,
            size: self.size,
            token: at.token.map(str::to_owned),
            credential,
            agent,
        };
        let recorders = (0..at.targets.len())
            .map(|node| at.shards.recorder_for(usize::MAX, node))
            .collect();
        let acks = Arc::new(Acks::default());
        // Its own: its connections are the publisher's alone.
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("building the publisher's HTTP client")?;
        tasks.spawn(publisher::run(
            http,
            publishing,
            Arc::clone(&acks),
            recorders,
            at.stop.child_token(),
        ));
        Ok(Publishers {
            tasks,
            acks,
            rate,
            rates: self.rates.clone(),
        })
    }

    /// The publisher's own token (`publisher-0`, allowed to publish to the
    /// topic), with per-user tokens.
    fn credential(&self) -> anyhow::Result<Option<Credential>> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let grants = Grants {
            subscribe: Vec::new(),
            publish: vec![self.topic.clone()],
        };
        let minter = Minter::new(auth, grants).map_err(anyhow::Error::msg)?;
        Ok(Some(Credential::new(
            Arc::new(minter),
            "publisher-0".to_owned(),
        )))
    }
}
