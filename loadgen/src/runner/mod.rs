//! Runs one scenario against one target: sets its stream up (a topic's
//! publishers, a replay's dataset), moves the number of virtual clients
//! through the phases, and once a second drains the measurements into the
//! timeline, samples the monitor and updates the progress line. It hands
//! back what it measured (`metrics::timeline::Measured`) and never builds a
//! summary or a report itself.
//!
//! - [`clients`]: the virtual clients one process runs, following the
//!   load; past one process's open files, [`worker`] processes run them
//!   (each its share) and this one everything else.
//! - [`publisher`]: open-model topic publishers; [`abuse`]: misbehaving
//!   clients beside the others; [`progress`]: the live progress line.
//! - `timeline`: the rows, phases and resource samples of the run;
//!   `stop`: how its tasks stop within a bound.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::abort::Abort;
use self::abuse::AbuseSpec;
use self::clients::{Clients, Load, Share};
use self::progress::Progress;
use self::publisher::{Acks, Destination, Publishing};
use self::stop::join_within;
use self::timeline::{Finished, Sampler, Timeline};
use self::worker::Workers;
use crate::client::Target;
use crate::client::jwt::{Credential, Grants, Minter};
use crate::metrics::monitor::{CpuSeconds, Monitor};
use crate::metrics::timeline::{Aborted, Measured, NodeMeasured, Watch};
use crate::metrics::{Shards, Stats};
use crate::scenario::{Phase, Scenario, StreamKind, phase_at};

pub mod abort;
pub mod abuse;
pub mod clients;
pub mod progress;
pub mod publisher;
mod stop;
mod timeline;
pub mod worker;

/// How often the client count follows the phases.
const TICK: Duration = Duration::from_millis(100);

/// A scenario the server under test cannot run: it lacks an endpoint the
/// scenario needs beyond the core protocol (docs/protocol.md). A suite skips it and goes on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// A topic event acknowledged this long before the end must have reached
/// every subscriber by then; one that has not counts as behind at the end.
const SETTLE: Duration = Duration::from_secs(1);

/// Everything one run needs.
#[derive(Debug)]
pub struct Run<'a> {
    /// What to run.
    pub scenario: &'a Scenario,
    /// Against what: the server's nodes (at least one), over which clients
    /// and publishes are spread round robin.
    pub targets: Vec<Arc<Target>>,
    /// For set-up requests (publishers have their own).
    pub http: reqwest::Client,
    /// Samples the server, if it can be.
    pub monitor: Option<Monitor>,
    /// This run's id (names the topic or wallet).
    pub run_id: String,
    /// Bearer token for publishes, seeds and subscriptions.
    pub token: Option<String>,
    /// Processes that run the virtual clients: 1 is this one; more are
    /// worker processes ([`worker`]), and this one runs none.
    pub workers: usize,
    /// Judges the run every second, when it has `abort:` thresholds.
    pub abort: Option<Abort<'a>>,
    /// Told of each timeline row as it is made (the live dashboard, the
    /// samples file), if anything watches.
    pub watch: Option<&'a dyn Watch>,
}

/// The misbehaving clients of the current phase.
struct Abusers {
    /// The run's stop.
    stop: CancellationToken,
    /// Stops the current phase's abusers.
    current: CancellationToken,
    tasks: JoinSet<()>,
    target: Arc<Target>,
    topic: String,
    token: Option<String>,
    shards: Arc<Shards>,
}

impl Abusers {
    /// Stops the current phase's abusers and waits (a bounded time) until
    /// they have, so that their last counts are flushed.
    async fn finish(&mut self) {
        self.current.cancel();
        join_within(&mut self.tasks, "abusers").await;
    }

    /// Starts the abusers of `phase` (which ends `left` from now), if it
    /// has any; those of the phase before have finished.
    fn enter(&mut self, phase: &Phase, left: Duration) {
        self.current = self.stop.child_token();
        let Some(abuse) = phase.abuse else { return };
        let spec = Arc::new(AbuseSpec {
            kind: abuse.kind,
            target: Arc::clone(&self.target),
            topic: self.topic.clone(),
            token: self.token.clone(),
            ends_at: Instant::now() + left,
        });
        for i in 0..abuse.clients as usize {
            let recorder = self.shards.recorder(usize::MAX - i);
            self.tasks.spawn(abuse::run(
                Arc::clone(&spec),
                recorder,
                self.current.clone(),
            ));
        }
    }
}

/// Who runs the virtual clients: this process, or worker processes.
enum Fleet {
    /// This process, every client (boxed: far larger than the other).
    Here(Box<Clients>),
    /// Worker processes, each its share.
    Workers(Workers),
}

impl Fleet {
    /// Follows the load `elapsed` into the run (workers follow it on the
    /// same clock themselves).
    fn follow(&mut self, elapsed: Duration) {
        if let Fleet::Here(clients) = self {
            clients.follow(elapsed);
        }
    }

    /// The next failure of a worker; never for clients run here. Cancel
    /// safe.
    async fn failure(&mut self) -> worker::Failure {
        match self {
            Fleet::Here(_) => std::future::pending().await,
            Fleet::Workers(workers) => workers.failure().await,
        }
    }

    /// The error a worker's `failure` makes.
    async fn explain(&mut self, failure: worker::Failure) -> anyhow::Error {
        match self {
            Fleet::Workers(workers) => workers.explain(failure).await,
            Fleet::Here(_) => unreachable!("only a worker process fails: {failure:?}"),
        }
    }

    /// Stops every client, topic subscribers told the seq they must hold
    /// by now, once each has flushed its measurements.
    async fn stop(&mut self, settled: u64) -> anyhow::Result<()> {
        match self {
            Fleet::Here(clients) => {
                clients.stop(settled).await;
                Ok(())
            }
            Fleet::Workers(workers) => workers.stop(settled).await,
        }
    }
}

impl Run<'_> {
    /// A name for this run's topic or wallet, unique to the run: by
    /// docs/protocol.md's name rules, or for a `foreign` target letters,
    /// digits and `-` only (and at most 64 of them), which fit common route
    /// patterns.
    fn stream_name(&self, foreign: bool) -> String {
        let raw = format!("sg-{}-{}", self.run_id, self.scenario.name);
        let allowed = |c: char| {
            c.is_ascii_alphanumeric() || c == '-' || (!foreign && matches!(c, '.' | '_' | ':'))
        };
        raw.chars()
            .map(|c| if allowed(c) { c } else { '-' })
            .take(if foreign { 64 } else { 200 })
            .collect()
    }

    /// Each node's part of the run, `stats` in node order.
    fn nodes(&self, stats: Vec<Stats>) -> Vec<NodeMeasured> {
        let clients = self.scenario.max_clients() as usize;
        let of = self.targets.len();
        (self.targets.iter().zip(stats).enumerate())
            .map(|(index, (target, stats))| NodeMeasured {
                url: target.base_url(),
                clients: u32::try_from(Share { index, of }.count(clients)).unwrap_or(u32::MAX),
                stats,
            })
            .collect()
    }

    /// The publisher's own token (`publisher-0`, allowed to publish to
    /// `topic`), with per-user tokens.
    fn publisher_credential(&self, topic: &str) -> anyhow::Result<Option<Credential>> {
        let Some(auth) = &self.scenario.auth else {
            return Ok(None);
        };
        let grants = Grants {
            subscribe: Vec::new(),
            publish: vec![topic.to_owned()],
        };
        let minter = Minter::new(auth, grants).map_err(anyhow::Error::msg)?;
        Ok(Some(Credential::new(
            Arc::new(minter),
            "publisher-0".to_owned(),
        )))
    }

    /// Seeds the replay dataset.
    async fn seed(&self, wallet: &str) -> anyhow::Result<()> {
        let url = format!(
            "{}/api/trades/{wallet}/seed?count={}",
            self.targets[0].base_url(),
            self.scenario.replay_rows
        );
        let mut request = self.http.post(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("seeding {url}"))?;
        let status = response.status();
        if matches!(
            status,
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::METHOD_NOT_ALLOWED
        ) {
            return Err(Unsupported(format!(
                "the server has no replay dataset to seed (POST /api/trades/{{wallet}}/seed: \
                 {status}); replay is this project's extension of the protocol (docs/protocol.md)"
            ))
            .into());
        }
        anyhow::ensure!(
            status == reqwest::StatusCode::CREATED,
            "seeding {url}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// The processes that run the clients, set up and ready; with
    /// workers, each has its share and this process none.
    async fn fleet(
        &self,
        load: Load,
        shards: &Arc<Shards>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Fleet> {
        if self.workers <= 1 {
            return Ok(Fleet::Here(Box::new(Clients::new(
                load,
                Share::ALL,
                self.targets.clone(),
                Arc::clone(shards),
                self.token.clone(),
                stop.child_token(),
            )?)));
        }
        let setup = worker::Setup {
            load,
            targets: self.targets.iter().map(|t| (**t).clone()).collect(),
            run_id: self.run_id.clone(),
            token: self.token.clone(),
            share: Share::ALL,
        };
        Ok(Fleet::Workers(
            Workers::start(self.workers, &setup, shards).await?,
        ))
    }

    /// Runs the scenario until its phases end or `cancel`.
    ///
    /// # Errors
    ///
    /// The stream could not be set up (a replay dataset not seeded), or a
    /// worker process failed.
    pub async fn execute(mut self, cancel: &CancellationToken) -> anyhow::Result<Measured> {
        let scenario = self.scenario;
        let foreign = scenario.target_spec()?;
        let name = self.stream_name(foreign.is_some());
        if scenario.stream == StreamKind::Replay {
            self.seed(&name).await?;
        }
        let shards = Shards::for_nodes(
            2 * std::thread::available_parallelism().map_or(2, usize::from),
            self.targets.len(),
        );
        let stop = cancel.child_token();
        let load = Load::of(scenario, &name)?;
        let mut fleet = self.fleet(load.clone(), &shards, &stop).await?;
        let acks = Arc::new(Acks::default());
        let (publish_rate, rates) = watch::channel(scenario.publish_rate_in(&scenario.phases[0]));
        let mut publishers = JoinSet::new();
        if scenario.publishes() {
            let topic = (foreign.as_ref())
                .and_then(|spec| spec.topic.as_deref())
                .unwrap_or(&name);
            let credential = self.publisher_credential(topic)?;
            let to = match &foreign {
                Some(spec) => {
                    let cancel = stop.child_token();
                    let server = &self.targets[0];
                    let token = (credential.as_ref())
                        .map(Credential::token)
                        .or(self.token.as_deref());
                    publisher::foreign(spec, topic, token, server, cancel, &mut publishers).await?
                }
                None => Destination::Topics {
                    urls: (self.targets.iter())
                        .map(|t| format!("{}/topics/{name}/events", t.base_url()))
                        .collect(),
                },
            };
            let publishing = Publishing {
                to,
                rate: rates,
                size: scenario.size,
                token: self.token.clone(),
                credential,
            };
            let recorders = (0..self.targets.len())
                .map(|node| shards.recorder_for(usize::MAX, node))
                .collect();
            // Its own: its connections belong to the publisher's runtime.
            let http = reqwest::Client::builder()
                .no_proxy()
                .build()
                .context("building the publisher's HTTP client")?;
            publishers.spawn(publisher::run(
                http,
                publishing,
                Arc::clone(&acks),
                recorders,
                stop.child_token(),
            ));
        }
        let mut abusers = Abusers {
            stop: stop.clone(),
            current: stop.child_token(),
            tasks: JoinSet::new(),
            target: Arc::clone(&self.targets[0]),
            topic: name.clone(),
            token: self.token.clone(),
            shards: Arc::clone(&shards),
        };
        let workers = match &fleet {
            Fleet::Here(_) => Vec::new(),
            Fleet::Workers(workers) => workers.pids(),
        };
        let mut sampler = Sampler::new(self.monitor.take(), workers);
        sampler.sample().await; // the baseline the first CPU figure needs

        let label = format!("{} ({})", scenario.name, scenario.transport.as_str());
        let mut progress = Progress::new(&label, scenario.duration());
        let started_at = SystemTime::now();
        let start = Instant::now();
        if let Fleet::Workers(workers) = &mut fleet {
            workers.go(started_at).await?;
        }
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let total = scenario.duration();
        let mut timeline = Timeline::new(&scenario.phases, self.targets.len(), start, self.watch);
        // The clients wanted at the last tick, all processes together.
        let mut running = 0;
        let mut abort = self.abort.take();
        let mut aborted = None;
        abusers.enter(&scenario.phases[0], scenario.phases[0].duration);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticks.tick() => {}
                failure = fleet.failure() => return Err(fleet.explain(failure).await),
            }
            let elapsed = start.elapsed();
            if elapsed >= total {
                break;
            }
            let (index, phase, into_phase) = phase_at(&scenario.phases, elapsed);
            // A row ends every second, and at every change of phase (before
            // the load changes), so that each phase's figures are its own.
            let changed = timeline.phase != index;
            if changed {
                // The abusers' last counts belong to their own phase.
                abusers.finish().await;
            }
            if changed || timeline.last_row.elapsed() >= Duration::from_secs(1) {
                let row = timeline
                    .row(&shards, &mut sampler, elapsed, index, running)
                    .await;
                progress.update(&row, timeline.errors());
                aborted = (abort.as_mut()).and_then(|abort| {
                    abort.check(elapsed, || {
                        let so_far = timeline.snapshot();
                        self.measured(so_far, started_at, elapsed, sampler.cpu_seconds(), None)
                    })
                });
                if aborted.is_some() {
                    break;
                }
            }
            if changed {
                abusers.enter(phase, phase.duration.saturating_sub(into_phase));
                publish_rate.send_replace(scenario.publish_rate_in(phase));
            }
            fleet.follow(elapsed);
            running = load.clients_at(elapsed);
        }
        // The last, partial interval, measured before the clients stop.
        let elapsed = start.elapsed().min(total);
        let (index, _, _) = phase_at(&scenario.phases, elapsed);
        timeline
            .row(&shards, &mut sampler, elapsed, index, running)
            .await;
        let settled = acks.settled_by(Instant::now() - SETTLE);
        // The clients learn `settled` as they are stopped: cancelling the
        // run's token first stopped them before it was set (behind_at_end
        // then came out 0 by chance).
        fleet.stop(settled).await?;
        stop.cancel();
        join_within(&mut publishers, "publishers").await;
        // Clients count until they stop (finite streams read to their end:
        // `client::FINISH_GRACE`): so does the duration.
        let duration = start.elapsed();
        abusers.finish().await;
        // What clients flushed as they stopped belongs to the last phase.
        let finished = timeline.finish(&shards);
        progress.finish();
        let cpu_seconds = sampler.cpu_seconds();
        Ok(self.measured(finished, started_at, duration, cpu_seconds, aborted))
    }

    /// What the run measured, from its `finished` timeline.
    fn measured(
        &self,
        finished: Finished,
        started_at: SystemTime,
        duration: Duration,
        cpu_seconds: CpuSeconds,
        aborted: Option<Aborted>,
    ) -> Measured {
        Measured {
            cpu_seconds,
            started_at,
            duration,
            totals: finished.totals,
            timeline: finished.rows,
            phases: finished.phases,
            target: (self.targets.iter())
                .map(|t| t.base_url())
                .collect::<Vec<_>>()
                .join(", "),
            nodes: self.nodes(finished.nodes),
            workers: self.workers.max(1),
            aborted,
        }
    }
}
