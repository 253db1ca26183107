//! Runs one scenario against one target: sets its stream up (a topic's
//! publishers, a replay's dataset), moves the number of virtual clients
//! through the phases, and once a second drains the measurements into the
//! timeline, samples the monitor and updates the progress line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::abuse::{self, AbuseSpec};
use crate::client::{ClientSpec, StreamPath, Target, VirtualClient};
use crate::metrics::{Shards, Stats};
use crate::monitor::{Monitor, Reading};
use crate::publisher::{self, Acks, Publishing};
use crate::report::progress::Progress;
use crate::report::{Measured, PhaseMeasured, Row};
use crate::scenario::{Phase, Scenario, StreamKind};

/// How often the client count follows the phases.
const TICK: Duration = Duration::from_millis(100);

/// How long clients and publishers may take to stop at the end.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A topic event acknowledged this long before the end must have reached
/// every subscriber by then; one that has not counts as behind at the end.
const SETTLE: Duration = Duration::from_secs(1);

/// Everything one run needs.
#[derive(Debug)]
pub struct Run<'a> {
    /// What to run.
    pub scenario: &'a Scenario,
    /// Against what.
    pub target: Arc<Target>,
    /// For set-up requests and publishers.
    pub http: reqwest::Client,
    /// Samples the server, if it can be.
    pub monitor: Option<Monitor>,
    /// This run's id (names the topic or wallet).
    pub run_id: String,
    /// Bearer token for publishes, seeds and subscriptions.
    pub token: Option<String>,
}

/// The phase at `elapsed` into `phases` (its number and itself), and how
/// far into it.
fn phase_at(phases: &[Phase], elapsed: Duration) -> (usize, &Phase, Duration) {
    let mut start = Duration::ZERO;
    for (index, phase) in phases.iter().enumerate() {
        if elapsed < start + phase.duration {
            return (index, phase, elapsed - start);
        }
        start += phase.duration;
    }
    let last = phases.len() - 1;
    (last, &phases[last], phases[last].duration)
}

/// Waits until every task of `tasks` (stopping: cancelled) has ended, at
/// most [`STOP_TIMEOUT`]; aborts those still running then.
async fn join_within(tasks: &mut JoinSet<()>, what: &str) {
    let stopped = tokio::time::timeout(STOP_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if stopped.is_err() {
        tracing::warn!("some {what} did not stop within {STOP_TIMEOUT:?}");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
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

/// The clients running now, newest last.
struct Clients {
    spec: Arc<ClientSpec>,
    target: Arc<Target>,
    shards: Arc<Shards>,
    stop: CancellationToken,
    active: Vec<CancellationToken>,
    tasks: JoinSet<()>,
    next_id: usize,
}

impl Clients {
    /// Stops every client: those started next stream `stream` (a phase
    /// with a rate of its own switches every client at once).
    fn restream(&mut self, stream: StreamPath) {
        self.spec = Arc::new(ClientSpec {
            stream,
            ..(*self.spec).clone()
        });
        self.scale_to(0);
    }

    /// Starts or stops clients until `wanted` run.
    fn scale_to(&mut self, wanted: usize) {
        while self.active.len() < wanted {
            let cancel = self.stop.child_token();
            let client = VirtualClient {
                id: self.next_id,
                spec: Arc::clone(&self.spec),
                target: Arc::clone(&self.target),
                recorder: self.shards.recorder(self.next_id),
            };
            self.tasks.spawn(client.run(cancel.clone()));
            self.active.push(cancel);
            self.next_id += 1;
        }
        while self.active.len() > wanted {
            self.active.pop().expect("more active than wanted").cancel();
        }
    }
}

impl Run<'_> {
    /// A name for this run's topic or wallet (PROTOCOL.md's name rules).
    fn stream_name(&self) -> String {
        let raw = format!("sg-{}-{}", self.run_id, self.scenario.name);
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':') {
                    c
                } else {
                    '-'
                }
            })
            .take(200)
            .collect()
    }

    /// Seeds the replay dataset.
    async fn seed(&self, wallet: &str) -> anyhow::Result<()> {
        let url = format!(
            "{}/api/trades/{wallet}/seed?count={}",
            self.target.base_url(),
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
        anyhow::ensure!(
            status == reqwest::StatusCode::CREATED,
            "seeding {url}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// Runs the scenario until its phases end or `cancel`.
    ///
    /// # Errors
    ///
    /// The stream could not be set up (a replay dataset not seeded).
    pub async fn execute(mut self, cancel: &CancellationToken) -> anyhow::Result<Measured> {
        let scenario = self.scenario;
        let name = self.stream_name();
        if scenario.stream == StreamKind::Replay {
            self.seed(&name).await?;
        }
        let shards = Shards::new(2 * std::thread::available_parallelism().map_or(2, usize::from));
        let stop = cancel.child_token();
        let mut rate = scenario.rate_in(&scenario.phases[0]);
        let settled = Arc::new(AtomicU64::new(0));
        let mut clients = Clients {
            spec: Arc::new(ClientSpec {
                transport: scenario.transport,
                stream: StreamPath::of(scenario, &name, rate),
                consumer_delay: scenario.consumer_delay,
                churn: scenario.churn,
                token: self.token.clone(),
                settled: Arc::clone(&settled),
            }),
            target: Arc::clone(&self.target),
            shards: Arc::clone(&shards),
            stop: stop.clone(),
            active: Vec::new(),
            tasks: JoinSet::new(),
            next_id: 0,
        };
        let acks = Arc::new(Acks::default());
        let (publish_rate, rates) = watch::channel(scenario.publish_rate_in(&scenario.phases[0]));
        if scenario.publishes() {
            let publishing = Publishing {
                url: format!("{}/topics/{name}/events", self.target.base_url()),
                rate: rates,
                size: scenario.size,
                token: self.token.clone(),
            };
            let recorder = shards.recorder(usize::MAX);
            let publishers = publisher::run(
                self.http.clone(),
                publishing,
                Arc::clone(&acks),
                recorder,
                stop.child_token(),
            );
            clients.tasks.spawn(publishers);
        }
        let mut abusers = Abusers {
            stop: stop.clone(),
            current: stop.child_token(),
            tasks: JoinSet::new(),
            target: Arc::clone(&self.target),
            topic: name.clone(),
            token: self.token.clone(),
            shards: Arc::clone(&shards),
        };
        if let Some(monitor) = &mut self.monitor {
            monitor.sample().await; // the baseline the first CPU figure needs
        }

        let label = format!("{} ({})", scenario.name, scenario.transport.as_str());
        let mut progress = Progress::new(&label, scenario.duration());
        let mut totals = Stats::default();
        let started_at = SystemTime::now();
        let start = Instant::now();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let total = scenario.duration();
        let mut timeline = Timeline {
            spec: &scenario.phases,
            rows: Vec::new(),
            phases: Vec::new(),
            second: Stats::default(),
            spare: Stats::default(),
            last_row: start,
            phase: 0,
            phase_added: None,
        };
        abusers.enter(&scenario.phases[0], scenario.phases[0].duration);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticks.tick() => {}
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
                    .row(
                        &shards,
                        &mut self.monitor,
                        elapsed,
                        index,
                        clients.active.len(),
                        &mut totals,
                    )
                    .await;
                progress.update(&row, totals.counts.error_total());
            }
            if changed {
                abusers.enter(phase, phase.duration.saturating_sub(into_phase));
                publish_rate.send_replace(scenario.publish_rate_in(phase));
                if scenario.rate_in(phase) != rate {
                    rate = scenario.rate_in(phase);
                    clients.restream(StreamPath::of(scenario, &name, rate));
                }
            }
            clients.scale_to(phase.clients_at(into_phase) as usize);
        }
        // The last, partial interval, measured before the clients stop.
        let elapsed = start.elapsed().min(total);
        let (index, _, _) = phase_at(&scenario.phases, elapsed);
        timeline
            .row(
                &shards,
                &mut self.monitor,
                elapsed,
                index,
                clients.active.len(),
                &mut totals,
            )
            .await;
        settled.store(acks.settled_by(Instant::now() - SETTLE), Ordering::Release);
        // Clients count until they stop: so does the duration.
        let duration = start.elapsed();
        stop.cancel();
        join_within(&mut clients.tasks, "clients").await;
        abusers.finish().await;
        // What clients flushed as they stopped belongs to the last phase.
        let mut tail = Stats::default();
        shards.drain_into(&mut tail, &mut timeline.spare);
        if let Some(last) = timeline.phases.last_mut() {
            last.stats.add(&mut tail);
        }
        totals.add(&mut tail);
        progress.finish();
        let cpu_seconds = self.monitor.as_ref().map(Monitor::cpu_seconds);
        Ok(Measured {
            cpu_seconds: cpu_seconds.unwrap_or_default(),
            started_at,
            duration,
            totals,
            timeline: timeline.rows,
            phases: timeline.phases,
            target: self.target.base_url(),
        })
    }
}

/// The rows so far, the phases so far, and the stats of the interval being
/// measured.
struct Timeline<'a> {
    /// The scenario's phases.
    spec: &'a [Phase],
    rows: Vec<Row>,
    phases: Vec<PhaseMeasured>,
    second: Stats,
    spare: Stats,
    last_row: Instant,
    /// The number of the phase in effect when the current interval began.
    phase: usize,
    /// The number of the phase `phases` ends with.
    phase_added: Option<usize>,
}

impl Timeline<'_> {
    /// Ends the current interval: drains the shards into a row (added to
    /// `totals`), with a monitor sample. The next interval is that of phase
    /// number `next`.
    async fn row(
        &mut self,
        shards: &Shards,
        monitor: &mut Option<Monitor>,
        elapsed: Duration,
        next: usize,
        clients: usize,
        totals: &mut Stats,
    ) -> Row {
        let seconds = self.last_row.elapsed().as_secs_f64();
        self.last_row = Instant::now();
        shards.drain_into(&mut self.second, &mut self.spare);
        let reading = match monitor {
            Some(monitor) => monitor.sample().await,
            None => Reading::default(),
        };
        let index = std::mem::replace(&mut self.phase, next);
        let row = row(
            &self.second,
            elapsed,
            seconds,
            &self.spec[index].name,
            clients,
            reading,
        );
        self.add_to_phase(index, &row, seconds);
        totals.add(&mut self.second);
        self.second.reset();
        self.rows.push(row.clone());
        row
    }

    /// Adds the interval being measured (its `row`, `seconds` long) to its
    /// phase, number `index`: phases are told apart by position, as two
    /// may have the same name.
    fn add_to_phase(&mut self, index: usize, row: &Row, seconds: f64) {
        if self.phase_added != Some(index) {
            self.phase_added = Some(index);
            self.phases.push(PhaseMeasured {
                name: row.phase.clone(),
                seconds: 0.0,
                clients: 0,
                stats: Stats::default(),
            });
        }
        let phase = self.phases.last_mut().expect("pushed if missing");
        phase.seconds += seconds;
        phase.clients = phase.clients.max(row.clients);
        phase.stats.add(&mut self.second);
    }
}

/// The timeline row of one interval of `seconds`.
fn row(
    stats: &Stats,
    elapsed: Duration,
    seconds: f64,
    phase: &str,
    clients: usize,
    reading: Reading,
) -> Row {
    let latency = |q: f64| (!stats.latency.is_empty()).then(|| stats.latency.value_at_quantile(q));
    Row {
        t_s: elapsed.as_secs_f64(),
        phase: phase.to_owned(),
        clients: u32::try_from(clients).unwrap_or(u32::MAX),
        events_per_s: stats.counts.events as f64 / seconds,
        bytes_per_s: stats.counts.bytes as f64 / seconds,
        latency_p50_us: latency(0.50),
        latency_p90_us: latency(0.90),
        latency_p95_us: latency(0.95),
        latency_p99_us: latency(0.99),
        latency_p999_us: latency(0.999),
        latency_max_us: (!stats.latency.is_empty()).then(|| stats.latency.max()),
        errors: stats.counts.error_total(),
        server_cpu_pct: reading.server_cpu_pct,
        server_rss_mb: reading.server_rss_mb,
        server_heap_bytes: reading.server_heap_bytes,
        loadgen_cpu_pct: reading.loadgen_cpu_pct,
        loadgen_rss_mb: reading.loadgen_rss_mb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_one_another() {
        let phases = [
            Phase::steady("a", 1, Duration::from_secs(2)),
            Phase::steady("b", 5, Duration::from_secs(3)),
        ];
        let name = |s: f64| phase_at(&phases, Duration::from_secs_f64(s)).1.name.clone();
        assert_eq!(
            (name(0.0), name(1.9), name(2.0), name(4.9), name(9.0)),
            ("a".into(), "a".into(), "b".into(), "b".into(), "b".into())
        );
        assert_eq!(
            phase_at(&phases, Duration::from_secs(3)).2,
            Duration::from_secs(1)
        );
        assert_eq!(phase_at(&phases, Duration::from_secs(9)).0, 1);
    }
}
