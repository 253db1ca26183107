//! The coordinator's side of a run over several agents (load generators on
//! other machines, `streamgauge-loadgen agent`): connect to each, prove the
//! token, check the build, estimate its clock ([`super::clock`]), give it
//! its share of the clients and publishers, start every agent on one
//! clock, merge their interval reports exactly into this process's shards
//! (as worker processes' are), and stop them.
//!
//! Agent `a` of `A` runs the clients whose number is `a` modulo `A` and
//! the publishes `k` with `k` modulo `A` equal to `a`. An agent that fails,
//! disconnects, or sends no report for [`STALL`] is lost: the run stops,
//! or (tolerating the loss) goes on without it; either way it is said
//! when and why.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::clients::Share;
use super::clock::{self, Offset, RoundTrip};
use super::control::{
    self, AgentSetup, ControlError, FromAgent, Hello, Inbox, Outbox, Report, ToAgent,
};
use super::publisher::Acks;
use crate::client::{micros, now_micros};
use crate::metrics::timeline::{AgentMeasured, Lost};
use crate::metrics::wire::Encoded;
use crate::metrics::{Shards, Stats};

/// How long connecting to an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the handshake and each clock round trip may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an agent may take to set up (start its workers, mint tokens).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The least time between telling the agents the start and the start.
const START_MARGIN: Duration = Duration::from_millis(100);

/// An agent that sends no report for this long is lost.
pub const STALL: Duration = Duration::from_secs(5);

/// How long an agent may take, once told to stop, to send its last report
/// (its clients have 10 s to stop, finite streams 5 s to end).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the coordinator reaches its agents.
#[derive(Debug, Clone)]
pub struct AgentsSpec {
    /// Each agent's control address, `HOST:PORT`.
    pub addresses: Vec<String>,
    /// The shared token.
    pub token: Arc<Vec<u8>>,
    /// Whether a run goes on when an agent is lost.
    pub tolerate_loss: bool,
    /// The clock uncertainty past which delivery latency is not comparable
    /// across agents, µs.
    pub max_clock_uncertainty_us: u64,
}

/// An agent lost during the run, as the listener found it.
#[derive(Debug)]
pub struct Loss {
    index: usize,
    why: String,
}

/// What is known of one agent, updated as its reports come.
#[derive(Debug)]
struct Status {
    address: String,
    clients: u32,
    cores: usize,
    clock: Offset,
    /// CPU seconds it used since the start, as its last report said.
    cpu_seconds: f64,
    rss_bytes: u64,
    stats: Stats,
    lost: Option<Lost>,
}

/// One connected agent.
#[derive(Debug)]
struct Link {
    /// Its writing half, until it is lost (dropped with the reading half,
    /// the connection closes and the agent stops).
    outbox: Option<Outbox>,
    /// Its reading half, until its listener takes it.
    inbox: Option<Inbox>,
    /// Its listener, once the run started.
    listener: Option<tokio::task::JoinHandle<()>>,
    live: bool,
}

/// What a listener tells the coordinator.
#[derive(Debug)]
enum Heard {
    Done,
    Failed(String),
}

/// The agents of one run.
#[derive(Debug)]
pub struct Agents {
    links: Vec<Link>,
    status: Arc<Mutex<Vec<Status>>>,
    heard: mpsc::UnboundedReceiver<(usize, Heard)>,
    tell: mpsc::UnboundedSender<(usize, Heard)>,
    acks: Arc<Acks>,
    tolerate_loss: bool,
    max_clock_uncertainty_us: u64,
    started: Option<Instant>,
}

impl Agents {
    /// Connects to every agent of `spec`, handshakes and estimates its
    /// clock.
    ///
    /// # Errors
    ///
    /// An agent is unreachable, refuses this coordinator, is of another
    /// build, or breaks the protocol: the error names it.
    pub async fn connect(spec: &AgentsSpec) -> anyhow::Result<Self> {
        let (tell, heard) = mpsc::unbounded_channel();
        let mut agents = Self {
            links: Vec::with_capacity(spec.addresses.len()),
            status: Arc::new(Mutex::new(Vec::new())),
            heard,
            tell,
            acks: Arc::new(Acks::default()),
            tolerate_loss: spec.tolerate_loss,
            max_clock_uncertainty_us: spec.max_clock_uncertainty_us,
            started: None,
        };
        for address in &spec.addresses {
            let (link, cores, clock) = handshake(address, &spec.token)
                .await
                .map_err(|why| anyhow::anyhow!("agent {address}: {why}"))?;
            tracing::info!(
                agent = address,
                offset_us = clock.offset_us,
                uncertainty_us = clock.uncertainty_us,
                "agent connected"
            );
            if clock.uncertainty_us > spec.max_clock_uncertainty_us {
                tracing::warn!(
                    "agent {address}: its clock is known to ±{} µs only, more than \
                     --max-clock-uncertainty ({} µs): delivery latency is not comparable \
                     across agents",
                    clock.uncertainty_us,
                    spec.max_clock_uncertainty_us
                );
            }
            agents.links.push(link);
            agents.lock().push(Status {
                address: address.clone(),
                clients: 0,
                cores,
                clock,
                cpu_seconds: 0.0,
                rss_bytes: 0,
                stats: Stats::default(),
                lost: None,
            });
        }
        Ok(agents)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Status>> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many agents the run has.
    pub fn count(&self) -> usize {
        self.links.len()
    }

    /// How far ahead the run's start is set: [`START_MARGIN`] plus four
    /// of the slowest agent's round trips.
    pub fn lead(&self) -> Duration {
        let slowest = (self.lock().iter())
            .map(|s| s.clock.uncertainty_us)
            .max()
            .unwrap_or(0);
        START_MARGIN + Duration::from_micros(8 * slowest)
    }

    /// The publishes agents have had acknowledged, as their reports came.
    pub fn acks(&self) -> &Arc<Acks> {
        &self.acks
    }

    /// Sends agent `a` the setup `setup_of(a, its clock correction)` makes,
    /// and waits until every agent is ready.
    ///
    /// # Errors
    ///
    /// An agent cannot be told, fails to set up, or is not ready in time.
    pub async fn set_up(
        &mut self,
        clients: usize,
        setup_of: impl Fn(Share, i64) -> AgentSetup,
    ) -> anyhow::Result<()> {
        let of = self.count();
        for index in 0..of {
            let share = Share { index, of };
            let correction = {
                let agent = &mut self.lock()[index];
                agent.clients = u32::try_from(share.count(clients)).unwrap_or(u32::MAX);
                -agent.clock.offset_us
            };
            let setup = ToAgent::Setup(Box::new(setup_of(share, correction)));
            self.send(index, &setup).await?;
        }
        for index in 0..of {
            let address = self.lock()[index].address.clone();
            let inbox = self.links[index]
                .inbox
                .as_mut()
                .expect("not yet listened to");
            match inbox.next::<FromAgent>(READY_TIMEOUT).await {
                Ok(FromAgent::Ready) => {}
                Ok(FromAgent::Failed { why }) => {
                    anyhow::bail!("agent {address} could not set up: {why}")
                }
                Ok(other) => anyhow::bail!("agent {address} said {other:?} instead of ready"),
                Err(e) => anyhow::bail!("agent {address} did not get ready: {e}"),
            }
        }
        Ok(())
    }

    /// Starts every agent's clients on the run's clock, started `at`; its
    /// reports go into `shards` from now on.
    ///
    /// # Errors
    ///
    /// An agent cannot be told.
    pub async fn go(&mut self, at: SystemTime, shards: &Arc<Shards>) -> anyhow::Result<()> {
        let at_unix_us = micros(at.duration_since(UNIX_EPOCH).unwrap_or_default());
        // A loss is timed from the start, which is a lead ahead of now.
        let lead = at.duration_since(SystemTime::now()).unwrap_or_default();
        self.started = Some(Instant::now() + lead);
        let first_wait = self.lead() + STALL;
        for index in 0..self.count() {
            self.send(index, &ToAgent::Start { at_unix_us }).await?;
            let listener = Listener {
                index,
                first_wait,
                inbox: self.links[index].inbox.take().expect("listened to once"),
                shards: Arc::clone(shards),
                status: Arc::clone(&self.status),
                acks: Arc::clone(&self.acks),
                tell: self.tell.clone(),
            };
            self.links[index].listener = Some(tokio::spawn(listener.listen()));
            self.links[index].live = true;
        }
        Ok(())
    }

    /// The next agent lost while the run goes on. Cancel safe.
    pub async fn loss(&mut self) -> Loss {
        loop {
            match self.heard.recv().await {
                Some((index, Heard::Failed(why))) => return Loss { index, why },
                Some((index, Heard::Done)) => {
                    return Loss {
                        index,
                        why: "it stopped before it was told to".to_owned(),
                    };
                }
                None => std::future::pending().await,
            }
        }
    }

    /// Records `loss`; whether the run goes on (agent losses tolerated).
    pub fn lose(&mut self, loss: Loss) -> bool {
        let at_s = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let mut status = self.lock();
        let agent = &mut status[loss.index];
        tracing::warn!(
            agent = agent.address,
            "agent lost {at_s:.1} s into the run: {}",
            loss.why
        );
        agent.lost = Some(Lost {
            at_s,
            why: loss.why,
        });
        drop(status);
        // Nothing more of it counts, and closing the connection stops it,
        // should it still be running.
        let link = &mut self.links[loss.index];
        if let Some(listener) = link.listener.take() {
            listener.abort();
        }
        link.outbox = None;
        link.live = false;
        self.tolerate_loss
    }

    /// Stops every live agent, telling it the seq a topic's subscribers
    /// must hold by now, and waits until each has sent its last report.
    /// An agent that fails now is recorded as lost, not an error: what the
    /// others measured stands.
    pub async fn stop(&mut self, settled: u64) {
        for index in 0..self.count() {
            if self.links[index].live
                && let Err(e) = self.send(index, &ToAgent::Stop { settled }).await
            {
                self.lose(Loss {
                    index,
                    why: e.to_string(),
                });
            }
        }
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        while self.links.iter().any(|link| link.live) {
            let heard = tokio::time::timeout_at(deadline, self.heard.recv()).await;
            match heard {
                Ok(Some((index, Heard::Done))) => self.links[index].live = false,
                Ok(Some((index, Heard::Failed(why)))) => {
                    self.lose(Loss { index, why });
                }
                Ok(None) => break,
                Err(_) => {
                    let index = (self.links.iter().position(|l| l.live)).expect("one is live");
                    self.lose(Loss {
                        index,
                        why: format!("it did not stop within {STOP_TIMEOUT:?}"),
                    });
                }
            }
        }
    }

    /// Each agent's part of the run that lasted `duration`.
    pub fn measured(&self) -> Vec<AgentMeasured> {
        (self.lock().iter())
            .map(|s| AgentMeasured {
                address: s.address.clone(),
                clients: s.clients,
                cores: s.cores,
                clock_offset_us: s.clock.offset_us,
                clock_uncertainty_us: s.clock.uncertainty_us,
                clock_comparable: s.clock.uncertainty_us <= self.max_clock_uncertainty_us,
                cpu_seconds: s.cpu_seconds,
                rss_bytes: s.rss_bytes,
                stats: s.stats.clone(),
                lost: s.lost.clone(),
            })
            .collect()
    }

    /// The error losing agent `index` for `why` makes.
    pub fn explain(&self, index: usize, why: &str) -> anyhow::Error {
        anyhow::anyhow!("agent {}: {why}", self.lock()[index].address)
    }

    /// Writes `message` to agent `index`.
    async fn send(&mut self, index: usize, message: &ToAgent) -> anyhow::Result<()> {
        let Some(outbox) = self.links[index].outbox.as_mut() else {
            return Err(self.explain(index, "it was lost"));
        };
        let sent = outbox.send(message).await;
        sent.map_err(|e| self.explain(index, &e.to_string()))
    }
}

/// Connects to the agent at `address`, proves the token, checks its
/// build and estimates its clock.
async fn handshake(address: &str, token: &[u8]) -> Result<(Link, usize, Offset), String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| format!("unreachable: no connection within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("unreachable: {e}"))?;
    let (mut inbox, mut outbox) = control::split(stream);
    let fail = |e: ControlError| e.to_string();
    let FromAgent::Greeting {
        protocol,
        commit,
        nonce,
    } = inbox.next(HANDSHAKE_TIMEOUT).await.map_err(fail)?
    else {
        return Err("it did not greet first".to_owned());
    };
    let hello = Hello {
        protocol: control::PROTOCOL,
        commit: control::COMMIT.to_owned(),
        proof: control::proof(token, &nonce),
    };
    outbox.send(&ToAgent::Hello(hello)).await.map_err(fail)?;
    let answer = inbox.next(HANDSHAKE_TIMEOUT).await;
    if let Some(why) = control::mismatch(protocol, &commit) {
        return Err(format!("another build of the load generator: {why}"));
    }
    let cores = match answer.map_err(fail)? {
        FromAgent::Welcome { cores } => cores,
        FromAgent::Refused { reason } => return Err(format!("refused this coordinator: {reason}")),
        other => return Err(format!("it said {other:?} instead of welcome")),
    };
    let mut trips = Vec::with_capacity(clock::ROUNDS);
    for _ in 0..clock::ROUNDS {
        let sent_us = now_micros();
        outbox.send(&ToAgent::Ping).await.map_err(fail)?;
        let FromAgent::Pong { at_us } = inbox.next(HANDSHAKE_TIMEOUT).await.map_err(fail)? else {
            return Err("it did not answer a ping with a pong".to_owned());
        };
        trips.push(RoundTrip {
            sent_us,
            agent_us: at_us,
            back_us: now_micros(),
        });
    }
    let clock = clock::estimate(&trips).expect("round trips were made");
    let link = Link {
        outbox: Some(outbox),
        inbox: Some(inbox),
        listener: None,
        live: false,
    };
    Ok((link, cores, clock))
}

/// Merges `report`'s measurements, exactly, into `shards` (as shard
/// `shard`, each node's apart) and into `total` (every node's together).
///
/// # Errors
///
/// The report has measurements for another number of nodes, or some that
/// do not decode.
pub fn merge(
    report: &Report,
    shards: &Shards,
    shard: usize,
    total: &mut Stats,
) -> Result<(), String> {
    if report.nodes.len() != shards.nodes() {
        return Err(format!(
            "{} nodes' measurements for {} nodes",
            report.nodes.len(),
            shards.nodes()
        ));
    }
    // Every node's decoded before any is merged: a report is taken whole
    // or not at all.
    let nodes = (report.nodes.iter())
        .map(Encoded::decode)
        .collect::<Result<Vec<_>, _>>()?;
    for (node, stats) in nodes.iter().enumerate() {
        shards.absorb(shard, node, stats);
        total.add(stats);
    }
    Ok(())
}

/// Reads one agent's reports until it is done or lost.
struct Listener {
    index: usize,
    /// How long the first report may take: the lead to the start, and
    /// [`STALL`].
    first_wait: Duration,
    inbox: Inbox,
    shards: Arc<Shards>,
    status: Arc<Mutex<Vec<Status>>>,
    acks: Arc<Acks>,
    tell: mpsc::UnboundedSender<(usize, Heard)>,
}

impl Listener {
    async fn listen(mut self) {
        let mut within = self.first_wait;
        let heard = loop {
            let next = self.inbox.next::<FromAgent>(within).await;
            within = STALL;
            match next {
                Ok(FromAgent::Report(report)) => {
                    if let Err(why) = self.absorb(&report) {
                        break Heard::Failed(format!("its report does not decode: {why}"));
                    }
                }
                Ok(FromAgent::Done) => break Heard::Done,
                Ok(FromAgent::Failed { why }) => break Heard::Failed(format!("it failed: {why}")),
                Ok(other) => break Heard::Failed(format!("it said {other:?} during the run")),
                Err(ControlError::Silent(_)) => {
                    break Heard::Failed(format!("stalled: no report for {STALL:?}"));
                }
                Err(e) => break Heard::Failed(format!("disconnected: {e}")),
            }
        };
        let _ = self.tell.send((self.index, heard));
    }

    /// Adds a report's measurements into the shards (this agent's shard,
    /// each node's own) and into the agent's status.
    fn absorb(&self, report: &Report) -> Result<(), String> {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let agent = &mut status[self.index];
        if agent.lost.is_some() {
            return Ok(());
        }
        merge(report, &self.shards, self.index, &mut agent.stats)?;
        // Its worker processes, once reaped, no longer count in its last
        // reports: it used at least what it said before.
        agent.cpu_seconds = agent.cpu_seconds.max(report.cpu_seconds);
        agent.rss_bytes = agent.rss_bytes.max(report.rss_bytes);
        if report.acked > 0 {
            self.acks.push(report.acked);
        }
        Ok(())
    }
}
