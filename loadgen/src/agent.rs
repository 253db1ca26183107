//! `streamgauge-loadgen agent`: a load generator that waits for a
//! coordinator (`run --agent`), runs its share of one run's clients and
//! publishes, reports what it measures every second, and goes back to
//! waiting.
//!
//! It runs scenarios only, never commands: what a coordinator can ask of
//! it is a load ([`runner::clients::Load`]) against the servers it names,
//! and publishers ([`runner::plan::PublishPlan`]). It accepts a coordinator
//! that proves it knows the token, of the same build; any other is told
//! why it is refused, and so is one that comes while a run goes on. The
//! conversation is `runner::control`'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use streamgauge_server::process;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::client::{Agent, Target, adjust_clock, now_micros};
use crate::metrics::wire::Encoded;
use crate::metrics::{Shards, Stats};
use crate::runner::control::{
    self, AgentSetup, ControlError, FromAgent, Inbox, Outbox, Report, ToAgent,
};
use crate::runner::fleet::{Fleet, Trouble};
use crate::runner::plan::{Origin, PublishPlan, Publishers};
use crate::runner::publisher::Acks;
use crate::runner::worker::{WorkerCount, instant_of, raise_file_limit};
use crate::scenario::max_clients;

/// Most bytes a coordinator's hello may have: it is not yet known.
const MAX_HELLO: usize = 4096;

/// Most connections being greeted at once: past them, a connection is
/// closed unanswered.
const MAX_GREETING: usize = 16;

/// How long a coordinator may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a coordinator may take between pings and its setup, and
/// between ready and start.
const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(120);

/// How long past its load's end a run may go before the agent gives up on
/// its coordinator's stop.
const STOP_MARGIN: Duration = Duration::from_secs(60);

/// How often the agent follows the load.
const TICK: Duration = Duration::from_millis(100);

/// Most agents a run may have (a share of more is no share).
const MAX_AGENTS: usize = 1 << 16;

/// How often it reports.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where it waits for a coordinator.
    pub listen: String,
    /// The token a coordinator must prove it knows.
    pub token: Vec<u8>,
    /// Processes that run its clients.
    pub workers: WorkerCount,
    /// Test only: how far ahead its clock reads, µs.
    pub clock_offset_us: i64,
}

/// Waits for coordinators until `cancel`, one run at a time. Says
/// `agent listening on ADDR` on stdout once it listens.
///
/// # Errors
///
/// It cannot listen where it was told to.
pub async fn serve(options: Options, cancel: &CancellationToken) -> anyhow::Result<()> {
    raise_file_limit();
    adjust_clock(options.clock_offset_us);
    let listener = TcpListener::bind(&options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let addr = listener.local_addr().context("the agent's address")?;
    say(&format!("agent listening on {addr}"));
    let options = Arc::new(options);
    let busy = Arc::new(AtomicBool::new(false));
    let greeting = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accepting a coordinator: {e}");
                    continue;
                }
            },
        };
        if greeting.load(Ordering::Acquire) >= MAX_GREETING {
            tracing::warn!(%peer, "{MAX_GREETING} connections are being greeted: closed");
            continue;
        }
        let (options, busy) = (Arc::clone(&options), Arc::clone(&busy));
        let greeting = Greeting::new(&greeting);
        let cancel = cancel.clone();
        tokio::spawn(async move {
            match session(stream, &options, &busy, greeting, &cancel).await {
                Ok(()) => tracing::info!(%peer, "run done; waiting for a coordinator"),
                Err(why) => tracing::warn!(%peer, "coordinator session ended: {why}"),
            }
        });
    }
}

#[allow(clippy::print_stdout)]
fn say(line: &str) {
    println!("{line}");
}

/// One coordinator's connection: the handshake, then its run if it is
/// accepted and the agent is free.
async fn session(
    stream: TcpStream,
    options: &Options,
    busy: &AtomicBool,
    greeting: Greeting,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let (mut inbox, mut outbox) = control::split(stream);
    let greeted = greet(&mut inbox, &mut outbox, &options.token).await;
    drop(greeting);
    let Err(reason) = greeted? else {
        if busy.swap(true, Ordering::AcqRel) {
            let reason = "busy with another coordinator's run".to_owned();
            return refuse(&mut outbox, reason).await;
        }
        let _free = Free { busy, options };
        return run(&mut inbox, &mut outbox, options, cancel).await;
    };
    refuse(&mut outbox, reason).await
}

/// A connection being greeted, counted while it is.
struct Greeting(Arc<AtomicUsize>);

impl Greeting {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for Greeting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Frees the agent when a run's session ends, however it ends: not busy,
/// its clock as it was.
struct Free<'a> {
    busy: &'a AtomicBool,
    options: &'a Options,
}

impl Drop for Free<'_> {
    fn drop(&mut self) {
        adjust_clock(self.options.clock_offset_us);
        self.busy.store(false, Ordering::Release);
    }
}

/// Tells the coordinator it is refused, and why; the error says it too.
async fn refuse(outbox: &mut Outbox, reason: String) -> Result<(), String> {
    let _ = outbox
        .send(&FromAgent::Refused {
            reason: reason.clone(),
        })
        .await;
    Err(format!("refused: {reason}"))
}

/// Greets the coordinator and checks its hello: `Ok(Err(reason))` if it
/// is to be refused.
async fn greet(
    inbox: &mut Inbox,
    outbox: &mut Outbox,
    token: &[u8],
) -> Result<Result<(), String>, String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no random bytes for a nonce".to_owned())?;
    let nonce = control::hex(&bytes);
    let greeting = FromAgent::Greeting {
        protocol: control::PROTOCOL,
        commit: control::COMMIT.to_owned(),
        nonce: nonce.clone(),
    };
    outbox.send(&greeting).await.map_err(|e| e.to_string())?;
    let hello = match inbox
        .next_at_most::<ToAgent>(HELLO_TIMEOUT, MAX_HELLO)
        .await
    {
        Ok(ToAgent::Hello(hello)) => hello,
        Ok(other) => return Ok(Err(format!("expected hello, not {other:?}"))),
        Err(e) => return Err(e.to_string()),
    };
    if let Some(why) = control::mismatch(hello.protocol, &hello.commit) {
        return Ok(Err(format!("another build of the load generator: {why}")));
    }
    if !control::proven(token, &nonce, &hello.proof) {
        return Ok(Err("the token does not match".to_owned()));
    }
    Ok(Ok(()))
}

/// An accepted coordinator's run: clock pings, the setup, the share run
/// and reported until the coordinator says stop.
async fn run(
    inbox: &mut Inbox,
    outbox: &mut Outbox,
    options: &Options,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let fail = |e: ControlError| e.to_string();
    outbox
        .send(&FromAgent::Welcome { cores })
        .await
        .map_err(fail)?;
    let setup = loop {
        match inbox
            .next::<ToAgent>(COORDINATOR_TIMEOUT)
            .await
            .map_err(fail)?
        {
            ToAgent::Ping => {
                let pong = FromAgent::Pong {
                    at_us: now_micros(),
                };
                outbox.send(&pong).await.map_err(fail)?;
            }
            ToAgent::Setup(setup) => break *setup,
            other => return Err(format!("expected its setup, not {other:?}")),
        }
    };
    let mut running = match Running::set_up(setup, options, cancel).await {
        Ok(running) => running,
        Err(e) => {
            let why = format!("{e:#}");
            let _ = outbox.send(&FromAgent::Failed { why: why.clone() }).await;
            return Err(why);
        }
    };
    outbox.send(&FromAgent::Ready).await.map_err(fail)?;
    let result = running.run(inbox, outbox, cancel).await;
    if let Err(why) = &result {
        let _ = outbox.send(&FromAgent::Failed { why: why.clone() }).await;
    }
    running.finish().await;
    result
}

/// What an agent's publishers do, where, with what token, as which agent.
struct ToPublish {
    plan: PublishPlan,
    targets: Vec<Arc<Target>>,
    token: Option<String>,
    agent: Option<Agent>,
}

/// This agent's share of a run, set up.
struct Running {
    fleet: Fleet,
    /// What the publishers do, if the run publishes.
    publish: Option<ToPublish>,
    /// The publishers, once the run started.
    publishers: Option<Publishers>,
    shards: Arc<Shards>,
    phases: Vec<crate::scenario::Phase>,
    stop: CancellationToken,
}

impl Running {
    /// Sets up `setup`'s clients (here or in worker processes), on the
    /// coordinator's clock; they and the publishers stop with `cancel`.
    async fn set_up(
        setup: AgentSetup,
        options: &Options,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let AgentSetup { clients, publish } = setup;
        let (share, agent) = (clients.share, clients.load.agent);
        anyhow::ensure!(
            (1..=MAX_AGENTS).contains(&share.of)
                && share.index < share.of
                && agent
                    .is_none_or(|a| (a.index as usize, a.of as usize) == (share.index, share.of)),
            "the setup's share is not one: {share:?}, agent {agent:?}"
        );
        let adjustment = options.clock_offset_us + clients.clock_adjustment_us;
        adjust_clock(adjustment);
        tracing::info!(run = clients.run_id, share = ?clients.share, "set up");
        anyhow::ensure!(!clients.targets.is_empty(), "the setup names no server");
        let targets: Vec<Arc<Target>> = clients.targets.iter().cloned().map(Arc::new).collect();
        let shards = Shards::for_nodes(
            2 * std::thread::available_parallelism().map_or(2, usize::from),
            targets.len(),
        );
        let stop = cancel.child_token();
        let phases = clients.load.phases.clone();
        let ours = clients.share.count(max_clients(&phases) as usize) as u64;
        let open_files = process::read(None).and_then(|p| p.max_fds);
        let workers = options.workers.resolve_clients(ours, open_files);
        let token = clients.token.clone();
        let setup = crate::runner::worker::Setup {
            clock_adjustment_us: adjustment,
            ..clients
        };
        let fleet = Fleet::local(setup, workers, &shards, &stop).await?;
        Ok(Self {
            fleet,
            publish: publish.map(|plan| ToPublish {
                plan,
                targets,
                token,
                agent,
            }),
            publishers: None,
            shards,
            phases,
            stop,
        })
    }

    /// Starts the publishers, if the run publishes: at the run's start,
    /// so that every agent's schedule is the run's.
    async fn start_publishers(&mut self) -> anyhow::Result<()> {
        let Some(publish) = &self.publish else {
            return Ok(());
        };
        let origin = Origin {
            targets: &publish.targets,
            token: publish.token.as_deref(),
            shards: &self.shards,
            stop: &self.stop,
        };
        self.publishers = Some(publish.plan.start(&origin, publish.agent).await?);
        Ok(())
    }

    /// Runs from the coordinator's start until its stop, reporting every
    /// second; then stops the clients, still reporting, and sends the last
    /// report.
    async fn run(
        &mut self,
        inbox: &mut Inbox,
        outbox: &mut Outbox,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let fail = |e: ControlError| e.to_string();
        let at_unix_us = match inbox
            .next::<ToAgent>(COORDINATOR_TIMEOUT)
            .await
            .map_err(fail)?
        {
            ToAgent::Start { at_unix_us } => at_unix_us,
            other => return Err(format!("expected start, not {other:?}")),
        };
        let ahead = Duration::from_micros(at_unix_us.saturating_sub(now_micros()));
        if ahead > COORDINATOR_TIMEOUT {
            return Err(format!("a start {ahead:?} ahead is no start"));
        }
        let start = instant_of(at_unix_us);
        if let Fleet::Workers(workers) = &mut self.fleet {
            let at = std::time::UNIX_EPOCH + Duration::from_micros(at_unix_us);
            workers.go(at).await.map_err(|e| format!("{e:#}"))?;
        }
        tokio::select! {
            () = cancel.cancelled() => return Err("the agent was interrupted".to_owned()),
            () = tokio::time::sleep_until(start.into()) => {}
        }
        self.start_publishers()
            .await
            .map_err(|e| format!("{e:#}"))?;
        tracing::info!("run started");
        let reporter = self.reporter();
        let total: Duration = self.phases.iter().map(|p| p.duration).sum();
        let deadline = start + total + STOP_MARGIN;
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported = Instant::now();
        let settled = loop {
            // The one bound on the run: the coordinator's stop by the
            // load's end and a margin.
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::select! {
                () = cancel.cancelled() => return Err("the agent was interrupted".to_owned()),
                order = inbox.next::<ToAgent>(left) => match order {
                    Ok(ToAgent::Stop { settled }) => break settled,
                    Ok(other) => return Err(format!("expected stop, not {other:?}")),
                    Err(ControlError::Silent(_)) => {
                        return Err(format!("no stop within {STOP_MARGIN:?} of the load's end"));
                    }
                    Err(e) => return Err(format!("the coordinator went away: {e}")),
                },
                trouble = self.fleet.trouble() => return Err(self.explain(trouble).await),
                _ = ticks.tick() => {
                    self.follow(start.elapsed());
                    if reported.elapsed() >= REPORT_EVERY {
                        reported = Instant::now();
                        reporter.send(outbox).await?;
                    }
                }
            }
        };
        self.stop_reporting(settled, &reporter, outbox).await?;
        // The publishers' last counts go in the last report.
        self.finish().await;
        reporter.send(outbox).await?;
        outbox.send(&FromAgent::Done).await.map_err(fail)
    }

    /// What reports this run's measurements, from now on.
    fn reporter(&self) -> Reporter {
        let pids = self.fleet.pids();
        Reporter {
            shards: Arc::clone(&self.shards),
            cpu_before: usage(&pids).0,
            pids,
            acks: self.publishers.as_ref().map(|p| Arc::clone(&p.acks)),
        }
    }

    /// Follows the load and the publish rate `elapsed` into the run.
    fn follow(&mut self, elapsed: Duration) {
        self.fleet.follow(elapsed);
        if let Some(publishers) = &self.publishers {
            let (index, _, _) = crate::scenario::phase_at(&self.phases, elapsed);
            publishers.enter(index);
        }
    }

    /// Stops the clients (topic subscribers told they must hold
    /// `settled`), reporting every second while they stop.
    async fn stop_reporting(
        &mut self,
        settled: u64,
        reporter: &Reporter,
        outbox: &mut Outbox,
    ) -> Result<(), String> {
        let mut stopping = std::pin::pin!(self.fleet.stop(settled));
        let mut ticks = tokio::time::interval(REPORT_EVERY);
        ticks.tick().await;
        loop {
            tokio::select! {
                stopped = &mut stopping => return stopped.map_err(|e| format!("{e:#}")),
                _ = ticks.tick() => reporter.send(outbox).await?,
            }
        }
    }

    /// The error a worker's failure makes (an agent has no agents).
    async fn explain(&mut self, trouble: Trouble) -> String {
        match (&mut self.fleet, trouble) {
            (Fleet::Workers(workers), Trouble::Worker(failure)) => {
                format!("{:#}", workers.explain(failure).await)
            }
            (_, trouble) => format!("{trouble:?}"),
        }
    }

    /// Stops the publishers, once the clients are stopped.
    async fn finish(&mut self) {
        self.stop.cancel();
        if let Some(publishers) = &mut self.publishers {
            publishers.join().await;
        }
    }
}

/// This process's and `pids`' CPU seconds and resident bytes together.
fn usage(pids: &[u32]) -> (f64, u64) {
    std::iter::once(None)
        .chain(pids.iter().copied().map(Some))
        .filter_map(process::read)
        .fold((0.0, 0), |(cpu, rss), p| {
            (cpu + p.cpu_seconds, rss + p.rss_bytes)
        })
}

/// Reports a run's measurements: what its shards hold, its CPU and RSS
/// (its worker processes' included), its publishers' acknowledgements.
struct Reporter {
    shards: Arc<Shards>,
    pids: Vec<u32>,
    /// CPU seconds used before the start.
    cpu_before: f64,
    acks: Option<Arc<Acks>>,
}

impl Reporter {
    /// Sends what was measured since the last report.
    async fn send(&self, outbox: &mut Outbox) -> Result<(), String> {
        let nodes = Encoded::drain(&self.shards, &mut Stats::default())?;
        let (cpu, rss_bytes) = usage(&self.pids);
        let report = Report {
            nodes,
            acked: (self.acks.as_ref()).map_or(0, |acks| acks.settled_by(Instant::now())),
            cpu_seconds: (cpu - self.cpu_before).max(0.0),
            rss_bytes,
        };
        let sent = outbox.send(&FromAgent::Report(Box::new(report))).await;
        sent.map_err(|e| e.to_string())
    }
}
