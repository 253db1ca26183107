//! Runs one scenario against one target: sets its stream up (a topic's
//! publishers, a replay's dataset), moves the number of virtual clients
//! through the phases, and once a second drains the measurements into the
//! timeline, samples the monitor and updates the progress line. It hands
//! back what it measured (`metrics::timeline::Measured`) and never builds a
//! summary or a report itself.
//!
//! - [`clients`]: the virtual clients one process runs, following the
//!   load; past one process's open files, [`worker`] processes run them
//!   (each its share) and this one everything else; on several machines,
//!   [`agents`] run them, each its share, over [`control`] connections
//!   whose clocks [`clock`] estimates. [`fleet`]: whichever of these does.
//! - [`plan`]: what the publishers do, as data; [`publisher`]: open-model
//!   topic publishers; [`abuse`]: misbehaving clients beside the others;
//!   [`progress`]: the live progress line.
//! - `timeline`: the rows, phases and resource samples of the run;
//!   `stop`: how its tasks stop within a bound.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::abort::Abort;
use self::abuse::AbuseSpec;
use self::agents::{Agents, AgentsSpec};
use self::clients::{Load, Share};
use self::control::AgentSetup;
use self::fleet::{Fleet, Trouble};
use self::plan::{Origin, PublishPlan, Publishers};
use self::progress::Progress;
use self::publisher::Acks;
use self::stop::join_within;
use self::timeline::{Finished, Sampler, Timeline};
use self::worker::Setup;
use crate::client::{Agent, Target};
use crate::metrics::monitor::{CpuSeconds, Monitor};
use crate::metrics::timeline::{Aborted, Measured, NodeMeasured, Watch};
use crate::metrics::{Shards, Stats};
use crate::scenario::{Phase, Scenario, StreamKind, phase_at};

pub mod abort;
pub mod abuse;
pub mod agents;
pub mod clients;
pub mod clock;
pub mod control;
pub mod fleet;
pub mod plan;
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
    /// Agents on other machines that run the clients and publishers
    /// instead (`workers` is then theirs to decide).
    pub agents: Option<&'a AgentsSpec>,
    /// Judges the run every second, when it has `abort:` thresholds.
    pub abort: Option<Abort<'a>>,
    /// Told of each timeline row as it is made (the live dashboard, the
    /// samples file), if anything watches.
    pub watch: Option<&'a dyn Watch>,
}

/// How a run ended early, if it did.
struct Ended {
    /// An `abort:` threshold broke.
    aborted: Option<Aborted>,
    /// An agent was lost, and losses are not tolerated.
    incomplete: bool,
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

    /// Who runs the clients, set up and ready: this process, worker
    /// processes (each its share), or agents (each its share of the
    /// clients and of `plan`'s publishes).
    async fn fleet(
        &self,
        load: Load,
        plan: Option<&PublishPlan>,
        shards: &Arc<Shards>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Fleet> {
        let setup = fleet::setup_of(load, &self.targets, &self.run_id, self.token.as_deref());
        let Some(spec) = self.agents else {
            return Fleet::local(setup, self.workers, shards, stop).await;
        };
        let mut agents = Agents::connect(spec).await?;
        let clients = self.scenario.max_clients() as usize;
        agents
            .set_up(clients, |share, correction| AgentSetup {
                clients: Setup {
                    load: Load {
                        agent: Some(Agent {
                            index: u32::try_from(share.index).unwrap_or(u32::MAX),
                            of: u32::try_from(share.of).unwrap_or(u32::MAX),
                        }),
                        ..setup.load.clone()
                    },
                    share,
                    clock_adjustment_us: correction,
                    ..setup.clone()
                },
                publish: plan.cloned(),
            })
            .await?;
        Ok(Fleet::Agents(agents))
    }

    /// This process's publishers, if the run publishes and no agent does.
    async fn publishers(
        &self,
        plan: Option<&PublishPlan>,
        fleet: &Fleet,
        shards: &Arc<Shards>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<Publishers>> {
        let (Some(plan), Fleet::Here(_) | Fleet::Workers(_)) = (plan, fleet) else {
            return Ok(None);
        };
        let origin = Origin {
            targets: &self.targets,
            token: self.token.as_deref(),
            shards,
            stop,
        };
        Ok(Some(plan.start(&origin, None).await?))
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
        // However the run ends, its publishers and clients stop with it.
        let _stop_on_drop = stop.clone().drop_guard();
        let load = Load::of(scenario, &name)?;
        let plan = PublishPlan::of(scenario, &name)?;
        let mut fleet = self
            .fleet(load.clone(), plan.as_ref(), &shards, &stop)
            .await?;
        let mut publishers = self
            .publishers(plan.as_ref(), &fleet, &shards, &stop)
            .await?;
        let acks = match (&fleet, &publishers) {
            (Fleet::Agents(agents), _) => Arc::clone(agents.acks()),
            (_, Some(publishers)) => Arc::clone(&publishers.acks),
            _ => Arc::new(Acks::default()),
        };
        let mut abusers = Abusers {
            stop: stop.clone(),
            current: stop.child_token(),
            tasks: JoinSet::new(),
            target: Arc::clone(&self.targets[0]),
            topic: name.clone(),
            token: self.token.clone(),
            shards: Arc::clone(&shards),
        };
        let mut sampler = Sampler::new(self.monitor.take(), fleet.pids());
        sampler.sample().await; // the baseline the first CPU figure needs

        let label = format!("{} ({})", scenario.name, scenario.transport.as_str());
        let mut progress = Progress::new(&label, scenario.duration());
        // Agents are told a start a little ahead, so that every one of them
        // starts on time.
        let lead = fleet.lead();
        let started_at = SystemTime::now() + lead;
        let start = Instant::now() + lead;
        match &mut fleet {
            Fleet::Workers(workers) => workers.go(started_at).await?,
            Fleet::Agents(agents) => agents.go(started_at, &shards).await?,
            Fleet::Here(_) => {}
        }
        tokio::time::sleep_until(start.into()).await;
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let total = scenario.duration();
        let mut timeline = Timeline::new(&scenario.phases, self.targets.len(), start, self.watch);
        // The clients wanted at the last tick, all processes together.
        let mut running = 0;
        let mut abort = self.abort.take();
        let mut aborted = None;
        let mut incomplete = false;
        abusers.enter(&scenario.phases[0], scenario.phases[0].duration);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticks.tick() => {}
                trouble = fleet.trouble() => {
                    if self.goes_on(&mut fleet, trouble).await? {
                        continue;
                    }
                    incomplete = true;
                    break;
                }
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
                        let ended = Ended {
                            aborted: None,
                            incomplete: false,
                        };
                        self.measured(
                            so_far,
                            &fleet,
                            started_at,
                            elapsed,
                            sampler.cpu_seconds(),
                            ended,
                        )
                    })
                });
                if aborted.is_some() {
                    break;
                }
            }
            if changed {
                abusers.enter(phase, phase.duration.saturating_sub(into_phase));
                if let Some(publishers) = &publishers {
                    publishers.enter(index);
                }
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
        if let Some(publishers) = &mut publishers {
            publishers.join().await;
        }
        // Clients count until they stop (finite streams read to their end:
        // `client::FINISH_GRACE`): so does the duration.
        let duration = start.elapsed();
        abusers.finish().await;
        // What clients flushed as they stopped belongs to the last phase.
        let finished = timeline.finish(&shards);
        progress.finish();
        let cpu_seconds = sampler.cpu_seconds();
        let ended = Ended {
            aborted,
            incomplete,
        };
        Ok(self.measured(finished, &fleet, started_at, duration, cpu_seconds, ended))
    }

    /// Whether the run goes on after `trouble` in its fleet: a worker's
    /// failure is an error; a lost agent stops the run (marked incomplete)
    /// unless losses are tolerated.
    async fn goes_on(&self, fleet: &mut Fleet, trouble: Trouble) -> anyhow::Result<bool> {
        match (fleet, trouble) {
            (Fleet::Workers(workers), Trouble::Worker(failure)) => {
                Err(workers.explain(failure).await)
            }
            (Fleet::Agents(agents), Trouble::Agent(loss)) => Ok(agents.lose(loss)),
            (_, trouble) => unreachable!("trouble from another fleet: {trouble:?}"),
        }
    }

    /// What the run measured, from its `finished` timeline and `fleet`.
    fn measured(
        &self,
        finished: Finished,
        fleet: &Fleet,
        started_at: SystemTime,
        duration: Duration,
        cpu_seconds: CpuSeconds,
        ended: Ended,
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
            aborted: ended.aborted,
            agents: match fleet {
                Fleet::Agents(agents) => agents.measured(),
                Fleet::Here(_) | Fleet::Workers(_) => Vec::new(),
            },
            incomplete: ended.incomplete,
        }
    }
}
