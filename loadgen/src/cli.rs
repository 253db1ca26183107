//! The command line: clap definitions, as raw values, and their one-way
//! translation into the plain arguments of the modules that do the work:
//! a validated [`Scenario`] ([`ScenarioArgs::scenario`]), the server and
//! results of a run ([`run::Setup`], [`run::Record`]), `ab`'s
//! [`ab::Options`] and the history's [`Filter`]. Nothing but the dispatch
//! in `lib.rs` (and `main.rs`) imports this module.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::ab::{self, build::Build};
use crate::agent;
use crate::history::Filter;
use crate::live;
use crate::run;
use crate::runner::agents::AgentsSpec;
use crate::runner::control::read_token;
use crate::runner::worker::WorkerCount;
use crate::scenario::auth::RawAuth;
use crate::scenario::search::{Growth, Search, Vary};
use crate::scenario::target::{Format, RawTarget, TsUnit};
use crate::scenario::{
    Overrides, Scenario, Setting, StreamKind, Threshold, Transport, budgets, file, preset,
};

/// A duration written the human way: `250ms`, `30s`, `10m`.
fn duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

/// The streamgauge load generator: measures a streaming server (SSE and
/// WebSocket) that speaks the streamgauge protocol, or any other described
/// as a foreign target (--target-*, a scenario's [target]).
///
/// Exit codes: 0 every threshold held; 1 at least one broke; 2 the run could
/// not be made (bad arguments, bad scenario file, server not reachable).
#[derive(Debug, Parser)]
#[command(name = "streamgauge-loadgen", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Log filter for the load generator's own logs on stderr
    #[arg(
        long,
        global = true,
        env = "STREAMGAUGE_LOG",
        default_value = "warn",
        value_name = "FILTER"
    )]
    pub log: String,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs one scenario: a preset, a scenario file, or inline flags
    Run(RunArgs),
    /// Runs the standard matrix of scenarios on both transports
    Suite(SuiteArgs),
    /// Finds the knee: raises clients, rate or publish rate step by step
    /// against one server until a threshold breaks, then bisects
    Capacity(CapacityArgs),
    /// Lists the presets, one line each
    Presets,
    /// Compares two results (run ids, summary.json paths or labels) figure
    /// by figure, with noise-aware tolerances
    Compare(CompareArgs),
    /// Lists stored runs, or the trend of one scenario's key figures
    History(HistoryArgs),
    /// The merge gate: one scenario against two server builds, alternately,
    /// round after round, decided by a paired statistical test
    Ab(AbArgs),
    /// Waits for a coordinator (`run --agent`), runs its share of the run's
    /// clients and publishes, and goes back to waiting
    Agent(AgentCommandArgs),
}

/// A probability strictly between 0 and 1.
fn probability(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if p > 0.0 && p < 1.0 => Ok(p),
        _ => Err(format!("{text:?} is not a probability between 0 and 1")),
    }
}

/// `--rounds` as given: a number of rounds, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundsArg {
    /// This many rounds.
    Count(u32),
    /// Until every figure is decided.
    Auto,
}

/// `--rounds`: `auto`, or a number from 2 to 1000.
fn rounds(text: &str) -> Result<RoundsArg, String> {
    if text == "auto" {
        return Ok(RoundsArg::Auto);
    }
    match text.parse::<u32>() {
        Ok(n) if (2..=1000).contains(&n) => Ok(RoundsArg::Count(n)),
        _ => Err(format!(
            "{text:?} is neither `auto` nor a number of rounds from 2 to 1000"
        )),
    }
}

/// `--max-rounds` when `--rounds auto` is given without it.
const DEFAULT_MAX_ROUNDS: u32 = 20;

/// `ab`.
#[derive(Debug, Args)]
pub struct AbArgs {
    /// What to run.
    #[command(flatten)]
    pub scenario: ScenarioArgs,

    /// The base build (say the merge base): `embedded` (the server built
    /// into this load generator), a server binary's path, or git:REF (built
    /// into a worktree of its own)
    #[arg(long, value_name = "BUILD")]
    pub base: Build,

    /// The change, in the same forms
    #[arg(long, value_name = "BUILD")]
    pub change: Build,

    /// An extra argument for the base's server (repeatable)
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub base_arg: Vec<String>,

    /// An extra argument for the change's server (repeatable)
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub change_arg: Vec<String>,

    /// Rounds (2 to 1000), each running the scenario once on each side, the
    /// order alternating; or `auto`: rounds until every figure is decided
    /// (3 at least, --max-rounds at most)
    #[arg(long, value_name = "N|auto", default_value = "6", value_parser = rounds)]
    pub rounds: RoundsArg,

    /// With --rounds auto, the most rounds [default: 20]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(3..=1000))]
    pub max_rounds: Option<u32>,

    /// Family-wise significance level of the paired tests
    #[arg(long, value_name = "P", default_value_t = 0.05, value_parser = probability)]
    pub alpha: f64,

    /// The cargo profile git builds use
    #[arg(long, value_name = "PROFILE", default_value = "release")]
    pub cargo_profile: String,

    /// Where git builds, their worktrees and binaries go
    #[arg(long, value_name = "DIR", default_value = "streamgauge-results/builds")]
    pub build_dir: PathBuf,

    /// Results, time scale and token.
    #[command(flatten)]
    pub options: RunOptions,

    /// Leave out the default thresholds
    #[arg(long)]
    pub no_default_thresholds: bool,
}

/// Where runs are stored.
#[derive(Debug, Args)]
pub struct HistoryStore {
    /// The run history database: a SQLite URL or file path, or a
    /// postgres:// URL
    #[arg(
        id = "history",
        long = "history",
        env = "STREAMGAUGE_HISTORY",
        value_name = "URL",
        default_value = "sqlite://streamgauge-results/history.db"
    )]
    pub url: String,
}

/// How a measurement is repeated, labelled, stored and judged.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The run history.
    #[command(flatten)]
    pub history: HistoryStore,

    /// Do not store the runs in the history
    #[arg(long)]
    pub no_history: bool,

    /// A label stored with the runs, such as a branch name (a later
    /// --baseline may name it)
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,

    /// Compare with a baseline: a run id or a label from the history, or a
    /// results directory or summary.json; a regression beyond a figure's
    /// budget and the noise fails the run
    #[arg(long, value_name = "REF")]
    pub baseline: Option<String>,

    /// Runs every scenario this many times (round after round), for a
    /// median and a noise band
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,

    /// Leave out the default thresholds (production budgets for error rate,
    /// connection success and latency)
    #[arg(long)]
    pub no_default_thresholds: bool,
}

/// `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The results measured now: a run id or label from the history, or a
    /// results directory or summary.json
    #[arg(value_name = "CURRENT")]
    pub current: String,

    /// The results to compare with, in the same forms
    #[arg(value_name = "BASELINE")]
    pub baseline: String,

    /// The run history that ids and labels are looked up in.
    #[command(flatten)]
    pub history: HistoryStore,
}

/// `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The run history.
    #[command(flatten)]
    pub history: HistoryStore,

    /// The trend of this scenario's key figures, oldest first
    #[arg(long, value_name = "NAME")]
    pub scenario: Option<String>,

    /// Only runs on this transport
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,

    /// At most this many runs, the newest
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: u32,
}

/// Which server to measure.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The server to measure (http://HOST:PORT); repeat it for the nodes of
    /// a cluster (clients and publishers are spread round robin over them).
    /// Without it, a local server is started on a free port with a fresh
    /// database (a scenario's `nodes`: that many, on a throwaway
    /// PostgreSQL), and stopped after
    #[arg(long, value_name = "URL")]
    pub url: Vec<String>,

    /// The server binary to start when no --url is given [default: the
    /// server built into this load generator]
    #[arg(long, value_name = "PATH", conflicts_with = "url")]
    pub server_bin: Option<PathBuf>,

    /// An extra argument for the local server (repeatable), such as
    /// `--server-arg=--max-batch=1`
    #[arg(
        long,
        value_name = "ARG",
        allow_hyphen_values = true,
        conflicts_with = "url"
    )]
    pub server_arg: Vec<String>,

    /// Processes that run the virtual clients: `auto` starts worker
    /// processes only when the scenario needs more open files than one
    /// process may have; 1 runs every client here; N > 1 starts N worker
    /// processes, each with its share of the clients
    #[arg(long, value_name = "N|auto", default_value = "auto", value_parser = workers)]
    pub workers: WorkerCount,

    /// Agents on other machines.
    #[command(flatten)]
    pub agents: AgentArgs,

    /// Results, time scale and token.
    #[command(flatten)]
    pub options: RunOptions,
}

/// Agents on other machines that run the clients and publishers.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// An agent (`streamgauge-loadgen agent`) that runs a share of the
    /// clients and publishes (repeatable): HOST:PORT of its --listen. With
    /// agents, this load generator runs no client itself: it coordinates,
    /// merges and reports
    #[arg(
        long = "agent",
        value_name = "HOST:PORT",
        requires = "agent_token_file"
    )]
    pub addresses: Vec<String>,

    /// The file holding the token the agents were started with
    #[arg(long, value_name = "FILE")]
    pub agent_token_file: Option<PathBuf>,

    /// An agent's clock known less precisely than this (its offset's
    /// uncertainty) makes the run warn that delivery latency is not
    /// comparable across agents
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = duration)]
    pub max_clock_uncertainty: Duration,

    /// Goes on when an agent is lost mid-run (the report says what was
    /// lost) instead of stopping the run, incomplete, with exit code 2
    #[arg(long)]
    pub tolerate_agent_loss: bool,
}

impl AgentArgs {
    /// The agents these arguments name, if any.
    ///
    /// # Errors
    ///
    /// The token file cannot be read, or an agent's address is not
    /// HOST:PORT.
    pub fn spec(&self) -> anyhow::Result<Option<AgentsSpec>> {
        if self.addresses.is_empty() {
            return Ok(None);
        }
        for address in &self.addresses {
            anyhow::ensure!(
                address.rsplit_once(':').is_some_and(
                    |(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                ),
                "--agent {address:?}: not HOST:PORT"
            );
        }
        let path = (self.agent_token_file.as_ref())
            .ok_or_else(|| anyhow::anyhow!("--agent needs --agent-token-file"))?;
        Ok(Some(AgentsSpec {
            addresses: self.addresses.clone(),
            token: Arc::new(read_token(path)?),
            tolerate_loss: self.tolerate_agent_loss,
            max_clock_uncertainty_us: u64::try_from(self.max_clock_uncertainty.as_micros())
                .unwrap_or(u64::MAX),
        }))
    }
}

/// `agent`: waits for a coordinator and runs its share of one run at a
/// time.
#[derive(Debug, Clone, Args)]
pub struct AgentCommandArgs {
    /// Where to wait for a coordinator (HOST:PORT; port 0: any free one,
    /// said on stdout)
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: String,

    /// The file holding the token a coordinator must prove it knows
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,

    /// Processes that run this agent's clients (as `run --workers`)
    #[arg(long, value_name = "N|auto", default_value = "auto", value_parser = workers)]
    pub workers: WorkerCount,

    /// Test only: this agent's clock reads this much ahead (negative:
    /// behind), as if its machine's clock were off
    #[arg(
        long,
        value_name = "MICROSECONDS",
        hide = true,
        allow_hyphen_values = true
    )]
    pub inject_clock_offset: Option<i64>,
}

impl AgentCommandArgs {
    /// The agent these arguments describe.
    ///
    /// # Errors
    ///
    /// The token file cannot be read.
    pub fn options(&self) -> anyhow::Result<agent::Options> {
        Ok(agent::Options {
            listen: self.listen.clone(),
            token: read_token(&self.token_file)?,
            workers: self.workers,
            clock_offset_us: self.inject_clock_offset.unwrap_or(0),
        })
    }
}

/// `--workers`: `auto` or a number of processes.
fn workers(text: &str) -> Result<WorkerCount, String> {
    text.parse()
}

/// Where results go, how time is scaled, what token is sent.
#[derive(Debug, Clone, Args)]
pub struct RunOptions {
    /// Where results go [default: ./streamgauge-results/RUN-ID/]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Multiplies every phase's duration (e.g. 0.1 for a smoke run)
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0, value_parser = time_scale)]
    pub time_scale: f64,

    /// Bearer token sent with publishes, dataset seeding and subscriptions
    /// (for a server started with --publish-token or --read-token)
    #[arg(
        long,
        env = "STREAMGAUGE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// A time scale: a finite factor above zero.
fn time_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(factor) if factor.is_finite() && factor > 0.0 => Ok(factor),
        _ => Err(format!("{text:?} is not a factor above zero")),
    }
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// What to run.
    #[command(flatten)]
    pub scenario: ScenarioArgs,

    /// The server and results.
    #[command(flatten)]
    pub target: TargetArgs,

    /// Repetition, history, baseline and default thresholds.
    #[command(flatten)]
    pub record: RecordArgs,

    /// The live dashboard and the samples file.
    #[command(flatten)]
    pub live: LiveArgs,
}

/// What is shown while the runs go.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Serve a live dashboard at ADDR (such as 127.0.0.1:9090; port 0 picks
    /// a free one) while the runs go: a page with live charts fed by SSE
    /// (/events) and the load generator's own figures for Prometheus
    /// (/metrics). Stderr says where: `dashboard on http://ADDR/`
    #[arg(long, value_name = "ADDR")]
    pub dashboard: Option<SocketAddr>,

    /// Keep the dashboard up after the runs, showing the verdict, until
    /// Ctrl-C (SIGINT) or SIGTERM
    #[arg(long, requires = "dashboard")]
    pub dashboard_hold: bool,

    /// Write one JSON line per second of every run here (each line its
    /// timeline row and its run), flushed as the run goes
    #[arg(long, value_name = "PATH")]
    pub samples_jsonl: Option<PathBuf>,
}

impl LiveArgs {
    /// What these arguments ask to show live.
    pub fn options(&self) -> live::Options {
        live::Options {
            dashboard: self.dashboard,
            hold: self.dashboard_hold,
            samples: self.samples_jsonl.clone(),
        }
    }
}

/// A scenario: a preset, a file, inline flags, and thresholds.
#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// A built-in scenario (see `presets`)
    #[arg(long, value_name = "NAME", conflicts_with = "scenario")]
    pub preset: Option<String>,

    /// A scenario file (TOML)
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,

    /// The transport: sse, ws, or mixed (half the clients on each)
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,

    /// What clients stream: ticker, topic, tokens or replay
    #[arg(long, value_enum)]
    pub stream: Option<StreamKind>,

    /// Clients (replaces the phases with a ramp and a steady phase)
    #[arg(long, value_name = "N")]
    pub clients: Option<u32>,

    /// Events per second per client; 0 means as fast as clients read
    #[arg(long, value_name = "R")]
    pub rate: Option<u64>,

    /// Payload bytes per event
    #[arg(long, value_name = "BYTES")]
    pub size: Option<usize>,

    /// Ticker: events per stream, after which the server ends it and the
    /// client opens the next (0: endless streams)
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// How long the steady phase lasts (replaces the phases)
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub duration: Option<Duration>,

    /// Ramp from 0 clients over this long first (replaces the phases)
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub ramp: Option<Duration>,

    /// Time each client spends on each event (slow readers)
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub consumer_delay: Option<Duration>,

    /// Disconnect-and-resume rate per client and second
    #[arg(long, value_name = "P")]
    pub churn: Option<f64>,

    /// Topic publishes per second, all publishers together (0: a quiet topic, idle subscribers)
    #[arg(long, value_name = "R")]
    pub publish_rate: Option<u64>,

    /// Server nodes sharing the topic, 1 to 16: without --url, that many
    /// local servers on a throwaway PostgreSQL cluster
    #[arg(long, value_name = "N")]
    pub nodes: Option<u32>,

    /// A threshold such as `latency.p99<50ms` (repeatable); prefix it with
    /// `warn:` for a warning that does not fail the run, or `abort:` to stop
    /// the run as soon as it breaks; scope it to a phase or a server node
    /// with `latency.p99{phase=steady}<5ms` or `{node=URL}`
    #[arg(long, value_name = "EXPR")]
    pub threshold: Vec<String>,

    /// How far into the run `abort:` thresholds start being checked
    /// [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub abort_grace: Option<Duration>,

    /// Requests per second each client sends to an openai target, on an
    /// open-model schedule (0: back to back)
    #[arg(long, value_name = "R")]
    pub request_rate: Option<f64>,

    /// A foreign target: the `[target]` keys as flags.
    #[command(flatten)]
    pub target: TargetFlags,

    /// Per-user tokens: the `[auth]` keys as flags.
    #[command(flatten)]
    pub auth: AuthFlags,
}

/// Per-user tokens: a scenario file's `[auth]` keys as flags (docs/loadgen.md,
/// "Per-user tokens"); each replaces the file's key.
#[derive(Debug, Default, Args)]
pub struct AuthFlags {
    /// Mint a JWT for each virtual client and publisher, signed with this
    /// key: an HS256 secret (the file's bytes) or a PEM private key (RSA:
    /// RS256, EC P-256: ES256, Ed25519: EdDSA)
    #[arg(long, value_name = "FILE")]
    pub jwt_key: Option<PathBuf>,

    /// Each minted token's lifetime, at least 2s; clients renew it at about
    /// three quarters of it [default: 10m]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub jwt_ttl: Option<Duration>,

    /// The `kid` in each minted token's header
    #[arg(long, value_name = "KID")]
    pub jwt_kid: Option<String>,
}

impl AuthFlags {
    /// The keys these flags give, as an `[auth]` table.
    pub fn raw(&self) -> RawAuth {
        RawAuth {
            jwt_key: self.jwt_key.clone(),
            jwt_ttl: self.jwt_ttl,
            jwt_kid: self.jwt_kid.clone(),
        }
    }
}

/// A foreign target's keys as flags, named as in a scenario file's
/// `[target]` table (docs/loadgen.md, "Foreign targets"); each replaces the
/// file's key.
#[derive(Debug, Default, Args)]
pub struct TargetFlags {
    /// The stream to measure: an http(s):// (SSE) or ws(s):// (WebSocket)
    /// URL, or a /path on --url or the local server; {topic} and {client}
    /// are put in per client
    #[arg(long, value_name = "URL")]
    pub target_subscribe_url: Option<String>,

    /// A request header, `NAME: VALUE` (repeatable; ${ENV} is read from the
    /// environment)
    #[arg(long, value_name = "HEADER", value_parser = header)]
    pub target_header: Vec<(String, String)>,

    /// A WebSocket subprotocol offered (repeatable)
    #[arg(long, value_name = "PROTOCOL")]
    pub target_ws_subprotocol: Vec<String>,

    /// A text frame sent once the WebSocket is open (repeatable, in order;
    /// {{topic}} and {{client}} are put in)
    #[arg(long, value_name = "FRAME")]
    pub target_ws_on_open: Vec<String>,

    /// How each message is read: streamgauge, json, text or openai
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub target_format: Option<Format>,

    /// JSON pointer to each message's sequence number (format json)
    #[arg(long, value_name = "POINTER")]
    pub target_seq_pointer: Option<String>,

    /// JSON pointer to each message's time (format json)
    #[arg(long, value_name = "POINTER")]
    pub target_ts_pointer: Option<String>,

    /// The unit of that time: ns, us, ms, s or rfc3339
    #[arg(long, value_enum, value_name = "UNIT")]
    pub target_ts_unit: Option<TsUnit>,

    /// An SSE event name to count (repeatable; default: every event)
    #[arg(long, value_name = "NAME")]
    pub target_event_filter: Vec<String>,

    /// The message that ends a stream, such as [DONE]
    #[arg(long, value_name = "TEXT")]
    pub target_end_marker: Option<String>,

    /// The subscribing request's method (GET; POST for openai)
    #[arg(long, value_name = "METHOD")]
    pub target_request_method: Option<String>,

    /// The subscribing request's body ({{topic}} and {{client}} are put in)
    #[arg(long, value_name = "BODY")]
    pub target_request_body: Option<String>,

    /// Where the load generator publishes: an http(s):// or ws(s):// URL or
    /// a /path ({topic} is put in)
    #[arg(long, value_name = "URL")]
    pub target_publish_url: Option<String>,

    /// The publishes' method [default: POST]
    #[arg(long, value_name = "METHOD")]
    pub target_publish_method: Option<String>,

    /// A publish header, `NAME: VALUE` (repeatable)
    #[arg(long, value_name = "HEADER", value_parser = header)]
    pub target_publish_header: Vec<(String, String)>,

    /// Each publish's body: {{seq}}, {{ts_us}}, {{client}}, {{topic}} and
    /// {{pad}} are put in
    #[arg(long, value_name = "BODY")]
    pub target_publish_body: Option<String>,

    /// Publish with this WebSocket text frame instead of an HTTP request
    /// (the same placeholders)
    #[arg(long, value_name = "FRAME")]
    pub target_ws_publish_frame: Option<String>,

    /// The topic put into {topic} [default: one unique to the run]
    #[arg(long, value_name = "NAME")]
    pub target_topic: Option<String>,

    /// A PEM file of the CA certificates to trust (instead of the system's)
    #[arg(long, value_name = "FILE")]
    pub target_ca_cert: Option<PathBuf>,

    /// Skip TLS certificate verification (the report says so)
    #[arg(long)]
    pub target_insecure: bool,
}

/// `NAME: VALUE`.
fn header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not `NAME: VALUE`"))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

impl TargetFlags {
    /// The keys these flags give, as a `[target]` table.
    pub fn raw(&self) -> RawTarget {
        let list = |values: &[String]| (!values.is_empty()).then(|| values.to_vec());
        let map = |pairs: &[(String, String)]| {
            (!pairs.is_empty()).then(|| pairs.iter().cloned().collect())
        };
        RawTarget {
            subscribe_url: self.target_subscribe_url.clone(),
            headers: map(&self.target_header),
            ws_subprotocols: list(&self.target_ws_subprotocol),
            ws_on_open: list(&self.target_ws_on_open),
            format: self.target_format,
            seq_pointer: self.target_seq_pointer.clone(),
            ts_pointer: self.target_ts_pointer.clone(),
            ts_unit: self.target_ts_unit,
            event_filter: list(&self.target_event_filter),
            end_marker: self.target_end_marker.clone(),
            request_method: self.target_request_method.clone(),
            request_body: self.target_request_body.clone(),
            publish_url: self.target_publish_url.clone(),
            publish_method: self.target_publish_method.clone(),
            publish_headers: map(&self.target_publish_header),
            publish_body: self.target_publish_body.clone(),
            ws_publish_frame: self.target_ws_publish_frame.clone(),
            topic: self.target_topic.clone(),
            ca_cert: self.target_ca_cert.clone(),
            insecure: self.target_insecure.then_some(true),
        }
    }
}

/// `suite`.
#[derive(Debug, Args)]
pub struct SuiteArgs {
    /// The server and results.
    #[command(flatten)]
    pub target: TargetArgs,

    /// A representative subset, under two minutes (the default)
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,

    /// The whole matrix (every preset, long soak included)
    #[arg(long)]
    pub full: bool,

    /// Only this transport [default: both]
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,

    /// Repetition, history, baseline and default thresholds.
    #[command(flatten)]
    pub record: RecordArgs,

    /// The live dashboard and the samples file.
    #[command(flatten)]
    pub live: LiveArgs,
}

/// `capacity`.
#[derive(Debug, Args)]
pub struct CapacityArgs {
    /// What each step runs.
    #[command(flatten)]
    pub scenario: ScenarioArgs,

    /// How the load is raised.
    #[command(flatten)]
    pub search: SearchFlags,

    /// The server and results.
    #[command(flatten)]
    pub target: TargetArgs,

    /// Repetition, history, baseline and default thresholds.
    #[command(flatten)]
    pub record: RecordArgs,

    /// The live dashboard and the samples file: each step shown as a run.
    #[command(flatten)]
    pub live: LiveArgs,
}

/// A capacity search's settings as flags; each replaces a scenario file's
/// `capacity` phase key.
#[derive(Debug, Args)]
pub struct SearchFlags {
    /// What to raise: clients, rate (events/s per client) or publish-rate
    /// (topic publishes/s) [default: clients]
    #[arg(long, value_enum)]
    pub vary: Option<Vary>,

    /// The first step's level, in the varied unit [default: the scenario's
    /// clients, rate or publish rate]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub start: Option<u64>,

    /// Each step this many times the last [default: 2]
    #[arg(long, value_name = "F", conflicts_with = "step")]
    pub factor: Option<f64>,

    /// Each step this much above the last, instead of a factor
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub step: Option<u64>,

    /// How long each step's load lasts [default: 3s]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub step_duration: Option<Duration>,

    /// The pause between steps [default: 500ms]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub settle: Option<Duration>,

    /// Growing steps at most; if the last still holds, the knee is above it
    /// [default: 8]
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u32>,

    /// Bisection steps at most, between the last step that held and the
    /// first that broke [default: 4]
    #[arg(long, value_name = "N")]
    pub bisections: Option<u32>,

    /// Bisect until the first level that broke is within this share of the
    /// last that held (0: the exact level) [default: 0.05]
    #[arg(long, value_name = "SHARE")]
    pub resolution: Option<f64>,
}

impl SearchFlags {
    /// `given` (a scenario's search, or the defaults starting at `base`'s
    /// own level) with these flags' settings in place of its own.
    fn search(&self, given: Option<Search>, base: &Scenario) -> Search {
        let vary = self
            .vary
            .or(given.as_ref().map(|s| s.vary))
            .unwrap_or(Vary::Clients);
        let own_level = match vary {
            Vary::Clients => u64::from(base.max_clients()),
            Vary::Rate => base.rate,
            Vary::PublishRate => base.publish_rate,
        };
        let search = given.filter(|s| s.vary == vary).unwrap_or_else(|| Search {
            vary,
            start: own_level.max(1),
            ..Search::default()
        });
        let growth = match (self.factor, self.step) {
            (Some(factor), _) => Growth::Factor(factor),
            (None, Some(step)) => Growth::Step(step),
            (None, None) => search.growth,
        };
        Search {
            vary,
            start: self.start.unwrap_or(search.start),
            growth,
            step_duration: self.step_duration.unwrap_or(search.step_duration),
            settle: self.settle.unwrap_or(search.settle),
            max_steps: self.max_steps.unwrap_or(search.max_steps),
            bisections: self.bisections.unwrap_or(search.bisections),
            resolution: self.resolution.unwrap_or(search.resolution),
        }
    }
}

impl CapacityArgs {
    /// The scenario of the search: the scenario these arguments describe,
    /// its phases one steady step at the first level, with the search and
    /// the default budgets (unless left out), its durations scaled.
    ///
    /// # Errors
    ///
    /// As [`ScenarioArgs::scenario`], and a search out of bounds.
    pub fn scenario(&self) -> anyhow::Result<Scenario> {
        let mut scenario = self.scenario.scenario(1.0, false)?;
        let search = self.search.search(scenario.search.take(), &scenario);
        let clients = match search.vary {
            Vary::Clients => u32::try_from(search.start).unwrap_or(u32::MAX),
            Vary::Rate | Vary::PublishRate => scenario.max_clients(),
        };
        scenario.set_load(clients, search.step_duration, Duration::ZERO);
        scenario.search = Some(search);
        if !self.record.no_default_thresholds {
            budgets::add_defaults(&mut scenario);
        }
        scenario.scale_time(self.target.options.time_scale);
        scenario.validate()?;
        Ok(scenario)
    }
}

impl ScenarioArgs {
    /// The scenario these arguments describe, validated, its phases
    /// scaled by `time_scale`, with the default budgets if `defaults`.
    ///
    /// # Errors
    ///
    /// An unknown preset, a bad scenario file (with its line), a bad
    /// threshold, or settings out of bounds.
    pub fn scenario(&self, time_scale: f64, defaults: bool) -> anyhow::Result<Scenario> {
        let flags = self.target.raw();
        let auth = self.auth.raw();
        let mut scenario = match (&self.preset, &self.scenario) {
            (Some(name), _) => preset::find(name)
                .with_context(|| {
                    format!("no preset named {name:?}; `streamgauge-loadgen presets` lists them")
                })?
                .scenario(),
            (None, Some(path)) => {
                let given = file::Flags {
                    target: Some(&flags),
                    auth: Some(&auth),
                };
                file::load(path, given)?
            }
            (None, None) => Scenario::default(),
        };
        // A file's `[auth]` took the flags in; a preset or flags alone take
        // them here.
        if self.scenario.is_none() && !auth.is_empty() {
            scenario.set_auth(&auth).map_err(|e| match e.setting {
                Setting::Auth(key) => anyhow::anyhow!("--{key}: {}", e.message),
                _ => e.into(),
            })?;
        }
        scenario.apply(Overrides {
            transport: self.transport,
            stream: self.stream,
            rate: self.rate,
            size: self.size,
            count: self.count,
            consumer_delay: self.consumer_delay,
            churn: self.churn,
            publish_rate: self.publish_rate,
            nodes: self.nodes,
            request_rate: self.request_rate,
        });
        self.settle_target(&mut scenario, flags)?;
        if self.clients.is_some() || self.duration.is_some() || self.ramp.is_some() {
            let clients = self.clients.unwrap_or_else(|| scenario.max_clients());
            let steady = self.duration.unwrap_or_else(|| scenario.duration());
            scenario.set_load(clients, steady, self.ramp.unwrap_or(Duration::ZERO));
        }
        for expr in &self.threshold {
            scenario.thresholds.push(expr.parse::<Threshold>()?);
        }
        if let Some(grace) = self.abort_grace {
            scenario.abort_grace = grace;
        }
        if defaults {
            budgets::add_defaults(&mut scenario);
        }
        scenario.scale_time(time_scale);
        scenario.validate()?;
        Ok(scenario)
    }
}

impl ScenarioArgs {
    /// Sets the scenario's foreign target again once the flags are in (a
    /// file's merged with its flags, or the flags alone), refusing a
    /// `--stream` or `--transport` that the target decides.
    fn settle_target(&self, scenario: &mut Scenario, flags: RawTarget) -> anyhow::Result<()> {
        let raw = match scenario.target.take() {
            Some(file) => file.merge(flags),
            None if flags.is_empty() => return Ok(()),
            None => flags,
        };
        anyhow::ensure!(
            self.stream.is_none(),
            "--stream: a target decides what is streamed; leave it out"
        );
        scenario.set_target(raw)?;
        if let Some(given) = self.transport {
            anyhow::ensure!(
                given == scenario.transport,
                "--transport {}: the target's URL scheme says {}",
                given.as_str(),
                scenario.transport.as_str()
            );
        }
        Ok(())
    }
}

impl TargetArgs {
    /// The server these arguments name, and how the load reaches it.
    ///
    /// # Errors
    ///
    /// The agents' token file cannot be read, or an agent's address is not
    /// HOST:PORT.
    pub fn setup(&self) -> anyhow::Result<run::Setup> {
        Ok(run::Setup {
            url: self.url.clone(),
            server_bin: self.server_bin.clone(),
            server_args: self.server_arg.clone(),
            workers: self.workers,
            token: self.options.token.clone(),
            agents: self.agents.spec()?,
        })
    }
}

impl RecordArgs {
    /// How these arguments (with `options`' results directory and what
    /// `live` shows) record an invocation.
    pub fn record(&self, options: &RunOptions, live: &LiveArgs) -> run::Record {
        run::Record {
            out: options.out.clone(),
            history: self.history.url.clone(),
            store: !self.no_history,
            label: self.label.clone(),
            baseline: self.baseline.clone(),
            repeat: self.repeat,
            live: live.options(),
        }
    }
}

impl HistoryArgs {
    /// The runs `history` lists.
    pub fn filter(&self) -> Filter {
        Filter {
            scenario: self.scenario.clone(),
            transport: self.transport.map(|t| t.as_str().to_owned()),
            limit: self.limit,
        }
    }
}

impl AbArgs {
    /// What `ab` runs, its scenario validated.
    ///
    /// # Errors
    ///
    /// As [`ScenarioArgs::scenario`]; or `--max-rounds` without
    /// `--rounds auto`.
    pub fn options(&self) -> anyhow::Result<ab::Options> {
        let rounds = match (self.rounds, self.max_rounds) {
            (RoundsArg::Auto, max) => ab::Rounds::Auto {
                max: max.unwrap_or(DEFAULT_MAX_ROUNDS),
            },
            (RoundsArg::Count(n), None) => ab::Rounds::Fixed(n),
            (RoundsArg::Count(_), Some(_)) => {
                anyhow::bail!("--max-rounds: only with --rounds auto")
            }
        };
        let scenario = self
            .scenario
            .scenario(self.options.time_scale, !self.no_default_thresholds)?;
        anyhow::ensure!(
            scenario.search.is_none(),
            "{}: a capacity search is not an A/B scenario; give ab one of fixed load",
            scenario.name
        );
        Ok(ab::Options {
            scenario,
            base: self.base.clone(),
            change: self.change.clone(),
            base_args: self.base_arg.clone(),
            change_args: self.change_arg.clone(),
            rounds,
            alpha: self.alpha,
            cargo_profile: self.cargo_profile.clone(),
            build_dir: self.build_dir.clone(),
            out: self.options.out.clone(),
            token: self.options.token.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(args: &[&str]) -> anyhow::Result<Scenario> {
        let cli = Cli::try_parse_from(["streamgauge-loadgen", "run"].iter().chain(args)).unwrap();
        let Command::Run(run) = cli.command else {
            unreachable!("parsed a run")
        };
        run.scenario.scenario(
            run.target.options.time_scale,
            !run.record.no_default_thresholds,
        )
    }

    #[test]
    fn inline_flags_override_a_preset() {
        let s = scenario(&[
            "--preset",
            "clients-10",
            "--transport",
            "ws",
            "--rate",
            "100",
        ])
        .unwrap();
        assert_eq!(
            (s.name.as_str(), s.transport, s.rate),
            ("clients-10", Transport::Ws, 100)
        );
        assert_eq!(s.max_clients(), 10);
        let s = scenario(&[
            "--clients",
            "7",
            "--duration",
            "3s",
            "--ramp",
            "1s",
            "--threshold",
            "gaps==0",
        ])
        .unwrap();
        assert_eq!(
            (s.max_clients(), s.duration(), s.thresholds.len()),
            (7, Duration::from_secs(4), 7),
            "gaps==0 and six default budgets"
        );
        let s = scenario(&["--threshold", "gaps==0", "--no-default-thresholds"]).unwrap();
        assert_eq!(s.thresholds.len(), 1);
    }

    #[test]
    fn mistakes_are_named() {
        let message = |args: &[&str]| scenario(args).unwrap_err().to_string();
        assert!(message(&["--preset", "nope"]).contains("no preset named \"nope\""));
        assert!(message(&["--threshold", "p99<1"]).contains("unknown metric"));
        assert!(message(&["--churn=-2"]).contains("churn"));
        let err =
            Cli::try_parse_from(["streamgauge-loadgen", "run", "--time-scale=-1"]).unwrap_err();
        assert!(err.to_string().contains("not a factor above zero"));
        let err = Cli::try_parse_from(["streamgauge-loadgen", "suite", "--workers=0"]).unwrap_err();
        assert!(err.to_string().contains("neither auto nor"), "{err}");
    }

    #[test]
    fn jwt_flags_mint_per_user_tokens_and_their_mistakes_name_the_flag_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "z".repeat(40)).unwrap();
        let key = secret.to_str().unwrap();
        let s = scenario(&["--jwt-key", key, "--jwt-ttl", "5s", "--jwt-kid", "k2"]).unwrap();
        let auth = s.auth.unwrap();
        assert_eq!(
            (auth.jwt_ttl, auth.jwt_kid.as_deref()),
            (Duration::from_secs(5), Some("k2"))
        );
        let message = |args: &[&str]| format!("{:#}", scenario(args).unwrap_err());
        let missing = dir.path().join("nope.pem");
        let err = message(&["--jwt-key", missing.to_str().unwrap()]);
        assert!(
            err.starts_with("--jwt-key: ") && err.contains("nope.pem: cannot read it"),
            "{err}"
        );
        let err = message(&["--jwt-key", key, "--jwt-ttl", "0s"]);
        assert!(
            err.starts_with("--jwt-ttl: a token lifetime of 0s"),
            "{err}"
        );
        let err = message(&["--jwt-ttl", "5s"]);
        assert!(err.contains("--jwt-key FILE"), "{err}");
        // A file's [auth] takes the flags in.
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "[auth]\njwt-ttl = \"1s\"\n").unwrap();
        let err = message(&["--scenario", file.to_str().unwrap(), "--jwt-key", key]);
        assert!(err.contains("s.toml:2: a token lifetime of 1s"), "{err}");
        let s = scenario(&[
            "--scenario",
            file.to_str().unwrap(),
            "--jwt-key",
            key,
            "--jwt-ttl",
            "3s",
        ])
        .unwrap();
        assert_eq!(s.auth.unwrap().jwt_ttl, Duration::from_secs(3));
    }

    fn ab_rounds(args: &[&str]) -> Result<ab::Rounds, String> {
        let all = [
            "streamgauge-loadgen",
            "ab",
            "--base",
            "embedded",
            "--change",
            "embedded",
        ];
        let cli = Cli::try_parse_from(all.iter().chain(args)).map_err(|e| e.to_string())?;
        let Command::Ab(ab) = cli.command else {
            unreachable!("parsed an ab")
        };
        ab.options().map(|o| o.rounds).map_err(|e| e.to_string())
    }

    #[test]
    fn ab_rounds_are_a_number_or_auto_up_to_a_maximum() {
        assert_eq!(ab_rounds(&[]), Ok(ab::Rounds::Fixed(6)));
        assert_eq!(
            ab_rounds(&["--rounds", "auto"]),
            Ok(ab::Rounds::Auto {
                max: DEFAULT_MAX_ROUNDS
            })
        );
        assert_eq!(
            ab_rounds(&["--rounds", "auto", "--max-rounds", "8"]),
            Ok(ab::Rounds::Auto { max: 8 })
        );
        let err = ab_rounds(&["--rounds", "1"]).unwrap_err();
        assert!(err.contains("neither `auto` nor a number"), "{err}");
        let err = ab_rounds(&["--rounds", "4", "--max-rounds", "8"]).unwrap_err();
        assert!(
            err.contains("--max-rounds: only with --rounds auto"),
            "{err}"
        );
        assert!(ab_rounds(&["--rounds", "auto", "--max-rounds", "2"]).is_err());
    }
}
