//! Worker processes: past what one process's open-file limit holds, the
//! virtual clients run in several processes, each this same executable
//! started with the hidden first argument [`SUBCOMMAND`]. Worker `k` of `N`
//! runs the clients whose number is `k` modulo `N` (`runner::clients`);
//! the parent keeps everything else (the local server, the monitor,
//! publishers, abusers, progress, reports).
//!
//! The protocol is one JSON object per line. On the worker's stdin, the
//! parent sends its [`Setup`], then `start` (the instant the run's clock
//! started, µs since the Unix epoch), then `stop` (with the seq a topic's
//! subscribers must hold by then). On its stdout the worker answers `ready`
//! once set up, sends its measurements as `stats` (HDR histograms encoded
//! exactly, `metrics::wire`) every 100 ms while they change and once more
//! after its clients stopped, then `done`, and exits. The parent adds the
//! stats into its own shards, so that progress, timeline, phases and
//! totals are the same as if its own clients had measured them.
//!
//! Every wait is bounded: a worker that dies, writes anything else, or
//! does not answer in time fails the run with the reason; one whose parent
//! goes away (its stdin ends) stops.

use std::num::NonZeroUsize;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::clients::{Clients, Load, Share};
use crate::client::{Target, adjust_clock, micros, now_micros};
use crate::metrics::wire::Encoded;
use crate::metrics::{Shards, Stats};
use crate::scenario::Scenario;

/// The hidden first argument under which this executable runs as a worker;
/// the second is its log filter.
pub const SUBCOMMAND: &str = "__worker";

/// Most worker processes a run starts.
pub const MAX_WORKERS: usize = 128;

/// How long a worker may take to start and set up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a worker may take to stop its clients (they have 10 s, and a
/// finite stream 5 s to end) and send its last measurements.
const STOP_TIMEOUT: Duration = Duration::from_secs(25);

/// How long a worker may take to exit once done, or to be reaped once
/// failed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long writing one line to a worker may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a worker follows the load and sends its measurements.
const TICK: Duration = Duration::from_millis(100);

/// The log filter workers get: the parent's (`--log`), once set.
static LOG_FILTER: OnceLock<String> = OnceLock::new();

/// Sets the log filter worker processes get: this process's own, which
/// (like its log subscriber) holds for the whole process.
pub fn set_log_filter(filter: &str) {
    let _ = LOG_FILTER.set(filter.to_owned());
}

/// `--workers`: how many processes run the virtual clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCount {
    /// This process alone if its open-file limit holds the scenario, else
    /// as many workers as it takes.
    Auto,
    /// This many: 1 is this process alone, more are worker processes.
    Exactly(NonZeroUsize),
}

impl WorkerCount {
    /// How many processes run `scenario`'s clients, each allowed
    /// `open_files` descriptors (`None`: unknown, taken as enough).
    pub fn resolve(self, scenario: &Scenario, open_files: Option<u64>) -> usize {
        match self {
            WorkerCount::Exactly(n) => n.get(),
            WorkerCount::Auto => needed(scenario, open_files),
        }
    }

    /// How many processes run `clients` clients (an agent's share), each
    /// allowed `open_files` descriptors (`None`: unknown, taken as
    /// enough).
    pub fn resolve_clients(self, clients: u64, open_files: Option<u64>) -> usize {
        match (self, open_files) {
            (WorkerCount::Exactly(n), _) => n.get(),
            (WorkerCount::Auto, Some(open)) if clients + crate::scenario::OTHER_FILES > open => {
                split(clients, open)
            }
            (WorkerCount::Auto, _) => 1,
        }
    }
}

impl std::str::FromStr for WorkerCount {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "auto" {
            return Ok(WorkerCount::Auto);
        }
        match text.parse::<usize>() {
            Ok(n @ 1..=MAX_WORKERS) => Ok(WorkerCount::Exactly(
                NonZeroUsize::new(n).expect("in 1..=MAX_WORKERS"),
            )),
            _ => Err(format!(
                "{text:?} is neither auto nor a number of processes from 1 to {MAX_WORKERS}"
            )),
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every client is a
/// socket.
pub fn raise_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}

/// The processes `scenario` needs at `open_files` descriptors each: 1 if
/// one holds it, else enough workers (at most [`MAX_WORKERS`]).
fn needed(scenario: &Scenario, open_files: Option<u64>) -> usize {
    let Some(open) = open_files else { return 1 };
    if scenario.descriptors_per_process(1) <= open {
        return 1;
    }
    split(u64::from(scenario.max_clients()), open)
}

/// The workers (at least 2) `clients` need at `open` descriptors each.
fn split(clients: u64, open: u64) -> usize {
    let per_worker = open.saturating_sub(crate::scenario::OTHER_FILES).max(1);
    let workers = clients.div_ceil(per_worker);
    usize::try_from(workers).map_or(MAX_WORKERS, |n| n.clamp(2, MAX_WORKERS))
}

/// What a worker needs to run its share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    /// What the clients do.
    pub load: Load,
    /// Where the server listens.
    /// The server nodes: client `i` connects to node `i` modulo their
    /// number.
    pub targets: Vec<Target>,
    /// The run's id, for the worker's logs.
    pub run_id: String,
    /// Bearer token for subscriptions.
    pub token: Option<String>,
    /// Which clients are the worker's: given to [`Workers::start`], the
    /// share the workers split among themselves.
    pub share: Share,
    /// What to add to the system clock, µs (an agent's correction onto its
    /// coordinator's clock, which its workers share).
    #[serde(default)]
    pub clock_adjustment_us: i64,
}

/// A line from the parent to a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Order {
    /// What to run; the first line.
    Setup(Box<Setup>),
    /// The run's clock started at this instant, µs since the Unix epoch.
    Start {
        /// The instant.
        at_unix_us: u64,
    },
    /// Stop: topic subscribers must hold this seq by now.
    Stop {
        /// The seq.
        settled: u64,
    },
}

/// A line from a worker to the parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum News {
    /// Set up: its clients start with the clock.
    Ready,
    /// Measurements since the last, one per server node (the first
    /// node's first).
    Stats(Vec<Encoded>),
    /// Stopped, every measurement sent: it exits.
    Done,
}

/// What the parent heard from a worker, measurements aside.
#[derive(Debug)]
enum Heard {
    Ready,
    Done,
    /// It failed; why.
    Failed(String),
}

/// A worker that failed, and why: [`Workers::explain`] makes the error.
#[derive(Debug)]
pub struct Failure {
    index: usize,
    why: String,
}

/// One worker process, as the parent holds it.
#[derive(Debug)]
struct Process {
    child: Child,
    stdin: ChildStdin,
    pid: u32,
}

/// The parent's worker processes, running the clients of one run.
#[derive(Debug)]
pub struct Workers {
    processes: Vec<Process>,
    heard: mpsc::UnboundedReceiver<(usize, Heard)>,
}

impl Workers {
    /// Starts `count` workers, each with its part of `setup`'s share, their
    /// measurements going into `shards`, and waits until every one is
    /// ready.
    ///
    /// # Errors
    ///
    /// A worker cannot be started, fails, or is not ready in time.
    pub async fn start(count: usize, setup: &Setup, shards: &Arc<Shards>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let filter = LOG_FILTER.get().map_or("warn", String::as_str);
        let (tell, heard) = mpsc::unbounded_channel();
        let mut workers = Self {
            processes: Vec::with_capacity(count),
            heard,
        };
        for index in 0..count {
            let mut child = Command::new(&exe)
                .args([SUBCOMMAND, filter])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                // Its own process group: a Ctrl-C reaches the parent, which
                // stops it in order.
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting worker {} of {count}", index + 1))?;
            let pid = child.id().context("a worker exited at once")?;
            tracing::info!(
                run = setup.run_id,
                "worker {} of {count}: pid {pid}",
                index + 1
            );
            let stdin = child.stdin.take().context("a worker's stdin")?;
            let stdout = child.stdout.take().context("a worker's stdout")?;
            tokio::spawn(listen(index, stdout, Arc::clone(shards), tell.clone()));
            workers.processes.push(Process { child, stdin, pid });
            // Worker `index` of `count` runs every `count`-th client of the
            // share it splits.
            let share = Share {
                index: setup.share.index + setup.share.of * index,
                of: setup.share.of * count,
            };
            let order = Order::Setup(Box::new(Setup {
                share,
                ..setup.clone()
            }));
            workers.send(index, &order).await?;
        }
        workers
            .expect("get ready", READY_TIMEOUT, |h| matches!(h, Heard::Ready))
            .await?;
        Ok(workers)
    }

    /// The workers' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(|p| p.pid).collect()
    }

    /// Starts every worker's clients on the run's clock, started `at`.
    ///
    /// # Errors
    ///
    /// A worker cannot be told.
    pub async fn go(&mut self, at: SystemTime) -> anyhow::Result<()> {
        let at_unix_us = micros(at.duration_since(UNIX_EPOCH).unwrap_or_default());
        for index in 0..self.processes.len() {
            self.send(index, &Order::Start { at_unix_us }).await?;
        }
        Ok(())
    }

    /// The next failure of a worker while the run goes on. Cancel safe.
    pub async fn failure(&mut self) -> Failure {
        loop {
            match self.heard.recv().await {
                Some((index, Heard::Failed(why))) => return Failure { index, why },
                Some((index, Heard::Done)) => {
                    return Failure {
                        index,
                        why: "it stopped before it was told to".to_owned(),
                    };
                }
                Some((_, Heard::Ready)) => {}
                None => std::future::pending().await,
            }
        }
    }

    /// The error `failure` makes, with the worker's exit status if it has
    /// exited (it is killed otherwise).
    pub async fn explain(&mut self, failure: Failure) -> anyhow::Error {
        let count = self.processes.len();
        let process = &mut self.processes[failure.index];
        let status = match tokio::time::timeout(EXIT_TIMEOUT, process.child.wait()).await {
            Ok(Ok(status)) => format!(" (it exited: {status})"),
            _ => {
                let _ = process.child.start_kill();
                " (it was killed)".to_owned()
            }
        };
        anyhow::anyhow!(
            "load generator worker {} of {count} (pid {}) failed: {}{status}",
            failure.index + 1,
            process.pid,
            failure.why
        )
    }

    /// Stops every worker, telling it the seq a topic's subscribers must
    /// hold by now, and waits until each has sent its last measurements
    /// and exited.
    ///
    /// # Errors
    ///
    /// A worker cannot be told, fails, or does not stop in time.
    pub async fn stop(&mut self, settled: u64) -> anyhow::Result<()> {
        for index in 0..self.processes.len() {
            self.send(index, &Order::Stop { settled }).await?;
        }
        self.expect("stop", STOP_TIMEOUT, |h| matches!(h, Heard::Done))
            .await?;
        for process in &mut self.processes {
            match tokio::time::timeout(EXIT_TIMEOUT, process.child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => {
                    tracing::warn!(pid = process.pid, %status, "a worker exited badly")
                }
                Ok(Err(e)) => tracing::warn!(pid = process.pid, "waiting for a worker: {e}"),
                Err(_) => tracing::warn!(pid = process.pid, "a worker did not exit: killed"),
            }
        }
        Ok(())
    }

    /// Writes `order` to worker `index`.
    async fn send(&mut self, index: usize, order: &Order) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(order).expect("an order serializes");
        line.push(b'\n');
        let stdin = &mut self.processes[index].stdin;
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            stdin.write_all(&line).await?;
            stdin.flush().await
        })
        .await;
        let why = match written {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("it could not be written to: {e}"),
            Err(_) => format!("it read nothing for {WRITE_TIMEOUT:?}"),
        };
        Err(self.explain(Failure { index, why }).await)
    }

    /// Waits until every worker has said what `wanted` matches, at most
    /// `within`.
    async fn expect(
        &mut self,
        what: &str,
        within: Duration,
        wanted: impl Fn(&Heard) -> bool,
    ) -> anyhow::Result<()> {
        let mut pending: Vec<usize> = (0..self.processes.len()).collect();
        let deadline = tokio::time::Instant::now() + within;
        while !pending.is_empty() {
            let heard = tokio::time::timeout_at(deadline, self.heard.recv()).await;
            let (index, why) = match heard {
                Ok(Some((index, heard))) if wanted(&heard) => {
                    pending.retain(|&i| i != index);
                    continue;
                }
                Ok(Some((index, Heard::Failed(why)))) => (index, why),
                Ok(Some((index, other))) => (index, format!("it said {other:?} instead")),
                Ok(None) => (pending[0], "its output ended".to_owned()),
                Err(_) => (pending[0], format!("it did not {what} within {within:?}")),
            };
            return Err(self.explain(Failure { index, why }).await);
        }
        Ok(())
    }
}

/// Reads worker `index`'s lines until it is done or fails: measurements go
/// into `shards` (the worker's number as their shard), the rest to `tell`.
async fn listen(
    index: usize,
    stdout: ChildStdout,
    shards: Arc<Shards>,
    tell: mpsc::UnboundedSender<(usize, Heard)>,
) {
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let heard = match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<News>(&line) {
                Ok(News::Stats(nodes)) => match absorb(&shards, index, &nodes) {
                    Ok(()) => continue,
                    Err(e) => {
                        Heard::Failed(format!("it sent measurements that do not decode: {e}"))
                    }
                },
                Ok(News::Ready) => Heard::Ready,
                Ok(News::Done) => Heard::Done,
                Err(e) => Heard::Failed(format!(
                    "it wrote {:?}, which is not the worker protocol: {e}",
                    line.chars().take(120).collect::<String>()
                )),
            },
            Ok(None) => Heard::Failed("its output ended before the run did".to_owned()),
            Err(e) => Heard::Failed(format!("reading its output: {e}")),
        };
        let last = !matches!(heard, Heard::Ready);
        if tell.send((index, heard)).is_err() || last {
            return;
        }
    }
}

/// Adds worker `index`'s measurements of each node into `shards`.
fn absorb(shards: &Shards, index: usize, nodes: &[Encoded]) -> Result<(), String> {
    if nodes.len() != shards.nodes() {
        return Err(format!(
            "{} nodes' measurements for {} nodes",
            nodes.len(),
            shards.nodes()
        ));
    }
    for (node, encoded) in nodes.iter().enumerate() {
        shards.absorb(index, node, &encoded.decode()?);
    }
    Ok(())
}

/// A worker's stdout, one [`News`] a line.
struct Output(tokio::io::Stdout);

impl Output {
    async fn send(&mut self, news: &News) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(news).context("encoding a line for the parent")?;
        line.push(b'\n');
        self.0
            .write_all(&line)
            .await
            .context("writing to the parent")?;
        self.0.flush().await.context("writing to the parent")
    }

    /// Sends what `shards` holds, if anything, node by node.
    async fn send_stats(&mut self, shards: &Shards, spare: &mut Stats) -> anyhow::Result<()> {
        let encoded =
            Encoded::drain(shards, spare).map_err(|e| anyhow::anyhow!("encoding stats: {e}"))?;
        if encoded.iter().all(Encoded::is_empty) {
            return Ok(());
        }
        self.send(&News::Stats(encoded)).await
    }
}

/// The parent's next order on stdin.
async fn next(input: &mut Lines<BufReader<tokio::io::Stdin>>) -> anyhow::Result<Order> {
    let line = input
        .next_line()
        .await
        .context("reading the parent's orders")?
        .context("the parent went away (stdin ended)")?;
    serde_json::from_str(&line).with_context(|| format!("an order that is not one: {line:?}"))
}

/// The instant `at_unix_us` (µs since the Unix epoch, the parent's clock)
/// on this process's monotonic clock, past or to come.
pub fn instant_of(at_unix_us: u64) -> Instant {
    let (now_us, now) = (now_micros(), Instant::now());
    if at_unix_us >= now_us {
        return now + Duration::from_micros(at_unix_us - now_us);
    }
    let ago = Duration::from_micros(now_us - at_unix_us);
    now.checked_sub(ago).unwrap_or(now)
}

/// Runs as a worker: set up, ready, clients on the parent's clock until it
/// says stop, measurements sent all along.
///
/// # Errors
///
/// The parent's orders are not the protocol, or it went away.
pub async fn serve() -> anyhow::Result<()> {
    raise_file_limit();
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let mut output = Output(tokio::io::stdout());
    let setup = match next(&mut input).await? {
        Order::Setup(setup) => *setup,
        other => anyhow::bail!("expected the setup first, not {other:?}"),
    };
    tracing::debug!(run = setup.run_id, share = ?setup.share, "worker set up");
    adjust_clock(setup.clock_adjustment_us);
    anyhow::ensure!(!setup.targets.is_empty(), "the setup names no server");
    let shards = Shards::for_nodes(
        2 * std::thread::available_parallelism().map_or(2, usize::from),
        setup.targets.len(),
    );
    let mut clients = Clients::new(
        setup.load,
        setup.share,
        setup.targets.into_iter().map(Arc::new).collect(),
        Arc::clone(&shards),
        setup.token,
        CancellationToken::new(),
    )?;
    output.send(&News::Ready).await?;
    let start = match next(&mut input).await? {
        Order::Start { at_unix_us } => instant_of(at_unix_us),
        other => anyhow::bail!("expected start, not {other:?}"),
    };
    tokio::time::sleep_until(start.into()).await;
    let mut spare = Stats::default();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let settled = loop {
        tokio::select! {
            order = next(&mut input) => match order? {
                Order::Stop { settled } => break settled,
                other => anyhow::bail!("expected stop, not {other:?}"),
            },
            _ = ticks.tick() => {
                clients.follow(start.elapsed());
                output.send_stats(&shards, &mut spare).await?;
            }
        }
    };
    clients.stop(settled).await;
    output.send_stats(&shards, &mut spare).await?;
    output.send(&News::Done).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Abuse, AbuseKind};

    fn scenario(clients: u32, abusers: Option<u32>) -> Scenario {
        let mut scenario = Scenario::default();
        scenario.set_load(clients, Duration::from_secs(1), Duration::ZERO);
        scenario.phases[0].abuse = abusers.map(|clients| Abuse {
            kind: AbuseKind::Slowloris,
            clients,
        });
        scenario
    }

    #[test]
    fn auto_starts_workers_only_past_one_process_limit() {
        let open = Some(20_000);
        assert_eq!(WorkerCount::Auto.resolve(&scenario(19_000, None), open), 1);
        assert_eq!(
            WorkerCount::Auto.resolve(&scenario(19_000, Some(500)), open),
            2
        );
        // 19,400 clients a worker.
        assert_eq!(WorkerCount::Auto.resolve(&scenario(50_000, None), open), 3);
        assert_eq!(WorkerCount::Auto.resolve(&scenario(50_000, None), None), 1);
        let three: WorkerCount = "3".parse().unwrap();
        assert_eq!(three.resolve(&scenario(10, None), open), 3);
        assert_eq!("auto".parse::<WorkerCount>(), Ok(WorkerCount::Auto));
        for bad in ["0", "129", "many"] {
            assert!(
                bad.parse::<WorkerCount>().unwrap_err().contains("auto"),
                "{bad}"
            );
        }
        let per =
            |clients, abusers, workers| scenario(clients, abusers).descriptors_per_process(workers);
        assert_eq!(per(50_000, None, 1), 50_600);
        assert_eq!(per(50_000, None, 3), 17_267);
        assert_eq!(per(10, Some(5_000), 3), 5_600, "the parent's abusers");
    }

    #[test]
    fn orders_and_news_are_one_json_object_a_line() {
        let line = serde_json::to_string(&Order::Stop { settled: 42 }).unwrap();
        assert_eq!(line, r#"{"stop":{"settled":42}}"#);
        assert_eq!(serde_json::to_string(&News::Ready).unwrap(), r#""ready""#);
        // The parent's clock started 5 s ago: so did the worker's.
        let elapsed = instant_of(now_micros() - 5_000_000).elapsed();
        assert!(
            elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(6),
            "{elapsed:?}"
        );
        // A start to come (an agent's, set ahead) is still to come.
        let ahead = instant_of(now_micros() + 5_000_000) - Instant::now();
        assert!(
            ahead > Duration::from_secs(4) && ahead <= Duration::from_secs(5),
            "{ahead:?}"
        );
    }
}
