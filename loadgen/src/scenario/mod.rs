//! What to run: a [`Scenario`] is a validated load shape (phases of client
//! counts over time) plus what each client streams, how it reads, and the
//! thresholds that decide the verdict. Scenarios come from presets
//! ([`preset`]), TOML files ([`mod@file`]) or command-line flags, and are data:
//! the runner has one client loop for all of them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod auth;
pub mod budgets;
pub mod file;
pub mod preset;
pub mod search;
pub mod suite;
pub mod target;
pub mod template;
pub mod threshold;

use self::auth::{Auth, RawAuth};
use self::target::{Origin, RawTarget, TargetSpec};
pub use self::threshold::{Scope, Severity, Threshold};

/// Writes a duration the way scenario files and flags read it (`1s 500ms`).
fn human<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}

/// Reads a duration [`human`] wrote: exactly the same duration.
fn from_human<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
}

/// The transport clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Server-Sent Events.
    Sse,
    /// WebSocket.
    Ws,
    /// Half the clients on each: even-numbered SSE, odd-numbered WebSocket.
    Mixed,
}

impl Transport {
    /// Both transports, each alone.
    pub const ALL: [Transport; 2] = [Transport::Sse, Transport::Ws];

    /// The name used in URLs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
            Transport::Mixed => "mixed",
        }
    }

    /// The transport client number `id` uses: never `Mixed`.
    pub fn for_client(self, id: usize) -> Transport {
        match self {
            Transport::Mixed if id.is_multiple_of(2) => Transport::Sse,
            Transport::Mixed => Transport::Ws,
            one => one,
        }
    }
}

/// What clients stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// The synthetic ticker: `rate` events/s of `size` bytes, endless or
    /// `count` events a stream.
    Ticker,
    /// A durable topic fed by publishers at `publish_rate`; subscribers
    /// resume from their last `seq` when they churn. A publish rate of 0
    /// leaves it quiet: idle subscribers, kept alive by keep-alives.
    Topic,
    /// LLM-like token streams, requested over and over (time to first token).
    Tokens,
    /// A stored dataset of `replay_rows` rows, replayed over and over.
    Replay,
}

impl StreamKind {
    /// The name used in URLs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Ticker => "ticker",
            StreamKind::Topic => "topic",
            StreamKind::Tokens => "tokens",
            StreamKind::Replay => "replay",
        }
    }
}

/// A kind of misbehaving client, run beside the well-behaved ones during a
/// phase: each meets a documented limit of the server (docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AbuseKind {
    /// Never finishes its request head: a header line a second, for ever.
    Slowloris,
    /// Opens a stream written as fast as the server can, and never reads.
    NeverRead,
    /// Publishes bodies and WebSocket frames over the size limit.
    Oversized,
    /// Floods a WebSocket with pings.
    PingFlood,
    /// Opens streams from one address, beyond its connection limit.
    OnePeer,
}

impl AbuseKind {
    /// Every kind, in report order.
    pub const ALL: [AbuseKind; 5] = [
        AbuseKind::Slowloris,
        AbuseKind::NeverRead,
        AbuseKind::Oversized,
        AbuseKind::PingFlood,
        AbuseKind::OnePeer,
    ];

    /// Its rank in [`AbuseKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name in scenario files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            AbuseKind::Slowloris => "slowloris",
            AbuseKind::NeverRead => "never-read",
            AbuseKind::Oversized => "oversized",
            AbuseKind::PingFlood => "ping-flood",
            AbuseKind::OnePeer => "one-peer",
        }
    }
}

/// Misbehaving clients during a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abuse {
    /// How they misbehave.
    pub kind: AbuseKind,
    /// How many at once.
    pub clients: u32,
}

/// The most clients any of `phases` asks for.
pub fn max_clients(phases: &[Phase]) -> u32 {
    phases.iter().map(|p| p.from.max(p.to)).max().unwrap_or(0)
}

/// Most abusers one phase may ask for.
pub const MAX_ABUSERS: u32 = 10_000;

/// One phase of the load: the client count moves linearly from `from` to
/// `to` over `duration` (equal for a steady phase, a jump for a spike).
/// Its serde form round-trips exactly (worker processes receive phases so).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// What it is called in progress and reports (`ramp`, `steady`, …).
    pub name: String,
    /// How long it lasts.
    #[serde(serialize_with = "human", deserialize_with = "from_human")]
    pub duration: Duration,
    /// Clients at its start.
    pub from: u32,
    /// Clients at its end.
    pub to: u32,
    /// Events per second per client during this phase (`None`: the
    /// scenario's rate).
    pub rate: Option<u64>,
    /// Topic publishes per second during this phase (`None`: the
    /// scenario's).
    pub publish_rate: Option<u64>,
    /// Misbehaving clients beside the others during this phase.
    pub abuse: Option<Abuse>,
}

impl Phase {
    /// A phase of `clients` throughout.
    pub fn steady(name: &str, clients: u32, duration: Duration) -> Self {
        Self {
            name: name.to_owned(),
            duration,
            from: clients,
            to: clients,
            rate: None,
            publish_rate: None,
            abuse: None,
        }
    }

    /// Checks what a phase alone can get wrong.
    ///
    /// # Errors
    ///
    /// What is out of bounds.
    pub fn validate(&self) -> Result<(), String> {
        match self.abuse {
            Some(abuse) if !(1..=MAX_ABUSERS).contains(&abuse.clients) => Err(format!(
                "{} abusers is not between 1 and {MAX_ABUSERS}",
                abuse.clients
            )),
            _ => Ok(()),
        }
    }

    /// Clients wanted `elapsed` into the phase.
    pub fn clients_at(&self, elapsed: Duration) -> u32 {
        if self.duration.is_zero() || self.from == self.to {
            return self.to;
        }
        let progress = (elapsed.as_secs_f64() / self.duration.as_secs_f64()).min(1.0);
        let span = f64::from(self.to) - f64::from(self.from);
        (f64::from(self.from) + span * progress).round() as u32
    }
}

/// The token stream's shape (`tokens` scenarios).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TokenShape {
    /// Delay before the first token.
    #[serde(serialize_with = "human")]
    pub ttft: Duration,
    /// Tokens per second after it.
    pub tps: u64,
    /// Tokens per stream.
    pub tokens: u64,
}

/// A validated scenario. Its serde form is the exact scenario a report's
/// manifest records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// Its name, in reports.
    pub name: String,
    /// The transport.
    pub transport: Transport,
    /// What is streamed.
    pub stream: StreamKind,
    /// Events per second per client (ticker; replay pacing); 0 means as
    /// fast as the client reads.
    pub rate: u64,
    /// Payload size in bytes (ticker filler; topic publish padding).
    pub size: usize,
    /// Ticker: events per stream, after which the server ends it and the
    /// client opens the next; 0 means endless streams.
    pub count: u64,
    /// Time each client spends on each event before reading the next.
    #[serde(serialize_with = "human")]
    pub consumer_delay: Duration,
    /// How often, per client and second, a client disconnects and resumes.
    pub churn: f64,
    /// Topic: publishes per second, all publishers together.
    pub publish_rate: u64,
    /// Tokens: the stream's shape.
    pub tokens: TokenShape,
    /// Replay: rows in the dataset.
    pub replay_rows: u64,
    /// The load over time.
    pub phases: Vec<Phase>,
    /// The verdict.
    pub thresholds: Vec<Threshold>,
    /// How long into the run `abort:` thresholds start being checked: the
    /// first seconds' figures rest on too few events to stop a run on.
    #[serde(serialize_with = "human")]
    pub abort_grace: Duration,
    /// Server nodes sharing its topics: clients and publishers are spread
    /// round robin over them. Without `--url`, the load generator starts
    /// this many servers (more than one on a throwaway PostgreSQL
    /// cluster); with `--url`, the URLs given are the nodes.
    pub nodes: u32,
    /// Flags for a server the load generator starts itself (`--max-connections=250`):
    /// the limits a scenario is about. A `--server-arg` for the same flag
    /// wins; against `--url` they do not apply.
    pub server_args: Vec<String>,
    /// A foreign target (`[target]`, `--target-*`): any SSE or WebSocket
    /// server, described as data; `None` measures this project's protocol.
    /// Validated with the scenario ([`Scenario::target_spec`]); its secrets
    /// are not written in reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<RawTarget>,
    /// Requests per second each client sends to an `openai` target, on an
    /// open-model schedule; 0 sends them back to back.
    #[serde(skip_serializing_if = "is_zero")]
    pub request_rate: f64,
    /// Per-user tokens (`[auth]`, `--jwt-*`): each virtual client and
    /// publisher signs its own JWT with this key; `None` sends the static
    /// `--token`, if any. The manifest records the key's file, never the
    /// key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// A capacity search (`capacity`, a file's `capacity` phase): the load
    /// raised step by step until a threshold breaks, then bisected; each
    /// step is [`search::Search::step`] of this scenario. `None`: the
    /// phases run as they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<search::Search>,
}

/// Whether `rate` is 0 (left out of a manifest that never uses it).
fn is_zero(rate: &f64) -> bool {
    *rate == 0.0
}

/// Settings that replace a scenario's where given (from flags or a file).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// The transport.
    pub transport: Option<Transport>,
    /// What is streamed.
    pub stream: Option<StreamKind>,
    /// Events per second per client.
    pub rate: Option<u64>,
    /// Payload bytes.
    pub size: Option<usize>,
    /// Ticker events per stream.
    pub count: Option<u64>,
    /// Time spent on each event.
    pub consumer_delay: Option<Duration>,
    /// Disconnect-and-resume rate per client and second.
    pub churn: Option<f64>,
    /// Topic publishes per second.
    pub publish_rate: Option<u64>,
    /// Server nodes.
    pub nodes: Option<u32>,
    /// Requests per second per client (`openai` targets).
    pub request_rate: Option<f64>,
}

/// Why a scenario is not valid: what is wrong, and which setting says it
/// (so that a scenario file can point at its line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// The setting at fault.
    pub setting: Setting,
    /// What is wrong with it.
    pub message: String,
}

/// A setting of a scenario, as far as validation points at one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// The phases as a whole.
    Phases,
    /// Phase number `n` (from 0, in [`Scenario::phases`]).
    Phase(usize),
    /// `churn`.
    Churn,
    /// `count`.
    Count,
    /// `tokens`.
    Tokens,
    /// `replay`.
    Replay,
    /// `server-args`.
    ServerArgs,
    /// `nodes`.
    Nodes,
    /// A key of `[target]`.
    Target(&'static str),
    /// `request-rate`.
    RequestRate,
    /// `stream` beside a `[target]`, which decides it.
    Stream,
    /// A key of `[auth]`.
    Auth(&'static str),
    /// Threshold number `n` (from 0, in [`Scenario::thresholds`]).
    Threshold(usize),
}

impl Invalid {
    /// `message` about `setting`.
    pub fn new(setting: Setting, message: impl Into<String>) -> Self {
        Self {
            setting,
            message: message.into(),
        }
    }
}

/// How long into a run `abort:` thresholds start being checked, unless
/// the scenario says otherwise.
pub const DEFAULT_ABORT_GRACE: Duration = Duration::from_secs(5);

/// Most clients one scenario may ask for.
pub const MAX_CLIENTS: u32 = 1_000_000;

/// Most server nodes one scenario may spread its clients over.
pub const MAX_NODES: u32 = 16;

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "inline".to_owned(),
            transport: Transport::Sse,
            stream: StreamKind::Ticker,
            rate: 10,
            size: 32,
            count: 0,
            consumer_delay: Duration::ZERO,
            churn: 0.0,
            publish_rate: 100,
            tokens: TokenShape {
                ttft: Duration::from_millis(200),
                tps: 50,
                tokens: 100,
            },
            replay_rows: 5_000,
            phases: vec![Phase::steady("steady", 10, Duration::from_secs(10))],
            thresholds: Vec::new(),
            abort_grace: DEFAULT_ABORT_GRACE,
            nodes: 1,
            server_args: Vec::new(),
            target: None,
            request_rate: 0.0,
            auth: None,
            search: None,
        }
    }
}

/// The phase at `elapsed` into `phases` (its number and itself), and how
/// far into it.
pub fn phase_at(phases: &[Phase], elapsed: Duration) -> (usize, &Phase, Duration) {
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

/// `raw` validated for a scenario on `transport` (which a `/path` target
/// is read over).
fn validate_target(raw: &RawTarget, transport: Transport) -> Result<TargetSpec, Invalid> {
    raw.validate(transport == Transport::Ws)
        .map_err(|e| Invalid::new(Setting::Target(e.key), e.to_string()))
}

/// Descriptors a load generator process holds besides its clients'
/// sockets: the publishers' connections, the monitor's, its own files and
/// pipes.
pub const OTHER_FILES: u64 = 600;

impl Scenario {
    /// Descriptors the busiest process of a run of it in `workers`
    /// processes needs: with one, every client, abuser and [`OTHER_FILES`];
    /// with more, a worker's share of the clients or the parent's abusers,
    /// besides its other files.
    pub fn descriptors_per_process(&self, workers: usize) -> u64 {
        let clients = u64::from(self.max_clients());
        let abusers = u64::from(self.max_abusers());
        if workers <= 1 {
            return clients + abusers + OTHER_FILES;
        }
        (clients.div_ceil(workers as u64)).max(abusers) + OTHER_FILES
    }

    /// Whether it is a ramp: ramping phases take at least half its time.
    pub fn is_ramp(&self) -> bool {
        let ramping: Duration = self
            .phases
            .iter()
            .filter(|p| p.to > p.from)
            .map(|p| p.duration)
            .sum();
        ramping * 2 >= self.duration()
    }

    /// Replaces the settings that `overrides` gives.
    pub fn apply(&mut self, overrides: Overrides) {
        self.transport = overrides.transport.unwrap_or(self.transport);
        self.stream = overrides.stream.unwrap_or(self.stream);
        self.rate = overrides.rate.unwrap_or(self.rate);
        self.size = overrides.size.unwrap_or(self.size);
        self.count = overrides.count.unwrap_or(self.count);
        self.consumer_delay = overrides.consumer_delay.unwrap_or(self.consumer_delay);
        self.churn = overrides.churn.unwrap_or(self.churn);
        self.publish_rate = overrides.publish_rate.unwrap_or(self.publish_rate);
        self.nodes = overrides.nodes.unwrap_or(self.nodes);
        self.request_rate = overrides.request_rate.unwrap_or(self.request_rate);
    }

    /// Sets the foreign target `raw` (flags or a file's table merged) and
    /// what follows from it: the stream's kind, and the transport of an
    /// absolute `subscribe_url`.
    ///
    /// # Errors
    ///
    /// A key of the target is wrong.
    pub fn set_target(&mut self, raw: RawTarget) -> Result<(), Invalid> {
        let spec = validate_target(&raw, self.transport)?;
        self.stream = spec.stream_kind();
        if spec.origin == Origin::Absolute {
            self.transport = if spec.websocket {
                Transport::Ws
            } else {
                Transport::Sse
            };
        }
        self.target = Some(raw);
        Ok(())
    }

    /// Sets per-user tokens as `raw` says (a file's `[auth]` and the
    /// `--jwt-*` flags merged), its key file read and tried.
    ///
    /// # Errors
    ///
    /// A key of `[auth]` is wrong; a key file's fault names the file.
    pub fn set_auth(&mut self, raw: &RawAuth) -> Result<(), Invalid> {
        let auth = raw
            .validate()
            .map_err(|e| Invalid::new(Setting::Auth(e.key), e.message))?;
        self.auth = Some(auth);
        Ok(())
    }

    /// The foreign target, validated; `None` for this project's protocol.
    ///
    /// # Errors
    ///
    /// A key of the target is wrong (a scenario that passed
    /// [`Scenario::validate`] has none).
    pub fn target_spec(&self) -> Result<Option<TargetSpec>, Invalid> {
        self.target
            .as_ref()
            .map(|raw| validate_target(raw, self.transport))
            .transpose()
    }

    /// Events per second per client during `phase`.
    pub fn rate_in(&self, phase: &Phase) -> u64 {
        phase.rate.unwrap_or(self.rate)
    }

    /// Events per second `clients` clients are offered, if the stream is
    /// paced: a ticker at a rate above 0, or a topic (each subscriber gets
    /// every publish).
    pub fn offered_per_s(&self, clients: u32) -> Option<f64> {
        match self.stream {
            StreamKind::Ticker if self.rate > 0 => Some(f64::from(clients) * self.rate as f64),
            StreamKind::Topic if self.publish_rate > 0 => {
                Some(f64::from(clients) * self.publish_rate as f64)
            }
            _ => None,
        }
    }

    /// Topic publishes per second during `phase`.
    pub fn publish_rate_in(&self, phase: &Phase) -> u64 {
        phase.publish_rate.unwrap_or(self.publish_rate)
    }

    /// The flags for a server started for it: `given` (from `--server-arg`),
    /// then its own for every flag `given` does not set.
    pub fn server_args_with(&self, given: &[String]) -> Vec<String> {
        let flag = |arg: &str| arg.split('=').next().unwrap_or(arg).to_owned();
        let set: Vec<String> = given.iter().map(|a| flag(a)).collect();
        let own = self.server_args.iter().filter(|a| !set.contains(&flag(a)));
        given.iter().chain(own).cloned().collect()
    }

    /// Whether it publishes at all: a topic stream with a publish rate
    /// above 0 in some phase (a quiet topic only holds idle subscribers).
    pub fn publishes(&self) -> bool {
        self.stream == StreamKind::Topic && self.phases.iter().any(|p| self.publish_rate_in(p) > 0)
    }

    /// The most misbehaving clients any phase brings.
    pub fn max_abusers(&self) -> u32 {
        self.phases
            .iter()
            .filter_map(|p| p.abuse.map(|a| a.clients))
            .max()
            .unwrap_or(0)
    }

    /// Total duration of its phases.
    pub fn duration(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// The longest it can take: its capacity search's every step, or its
    /// phases.
    pub fn longest(&self) -> Duration {
        self.search
            .as_ref()
            .map_or_else(|| self.duration(), search::Search::longest)
    }

    /// The most clients any phase asks for.
    pub fn max_clients(&self) -> u32 {
        max_clients(&self.phases)
    }

    /// Replaces the phases with a ramp from 0 over `ramp` (if any), then
    /// `clients` for `duration`.
    pub fn set_load(&mut self, clients: u32, duration: Duration, ramp: Duration) {
        self.phases.clear();
        if !ramp.is_zero() {
            self.phases.push(Phase {
                from: 0,
                ..Phase::steady("ramp", clients, ramp)
            });
        }
        self.phases.push(Phase::steady("steady", clients, duration));
    }

    /// Every phase `factor` times as long (for smoke runs of a suite).
    pub fn scale_time(&mut self, factor: f64) {
        for phase in &mut self.phases {
            phase.duration = phase.duration.mul_f64(factor);
        }
        self.tokens.ttft = self.tokens.ttft.mul_f64(factor);
        if let Some(search) = &mut self.search {
            search.scale_time(factor);
        }
    }

    /// Checks the bounds every part of the runner relies on.
    ///
    /// # Errors
    ///
    /// [`Invalid`] naming the first setting out of bounds.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.validate_load()?;
        if !(0.0..=100.0).contains(&self.churn) || self.churn.is_nan() {
            return Err(Invalid::new(
                Setting::Churn,
                format!("churn {} is not between 0 and 100 per second", self.churn),
            ));
        }
        if let Some(arg) = self
            .server_args
            .iter()
            .find(|a| !a.starts_with("--") || !a.contains('='))
        {
            return Err(Invalid::new(
                Setting::ServerArgs,
                format!("server argument {arg:?} is not of the form --flag=value"),
            ));
        }
        if self.count > 0 && self.stream != StreamKind::Ticker {
            return Err(Invalid::new(
                Setting::Count,
                "a count of events per stream is for ticker scenarios only",
            ));
        }
        if self.stream == StreamKind::Replay && self.replay_rows == 0 {
            return Err(Invalid::new(
                Setting::Replay,
                "a replay scenario needs at least one row",
            ));
        }
        if !(1..=MAX_NODES).contains(&self.nodes) {
            return Err(Invalid::new(
                Setting::Nodes,
                format!("{} nodes is not between 1 and {MAX_NODES}", self.nodes),
            ));
        }
        if let Some(search) = &self.search {
            search
                .validate(self)
                .map_err(|e| Invalid::new(Setting::Phase(0), e))?;
        }
        if self.stream == StreamKind::Tokens && self.tokens.tokens == 0 {
            return Err(Invalid::new(
                Setting::Tokens,
                "a tokens scenario needs at least one token per stream",
            ));
        }
        self.validate_scopes()?;
        self.validate_target()
    }

    /// Checks that every threshold scoped to a phase names one of the
    /// scenario's phases (a misspelt phase would fail every run).
    fn validate_scopes(&self) -> Result<(), Invalid> {
        for (n, threshold) in self.thresholds.iter().enumerate() {
            let Some(Scope::Phase(name)) = &threshold.scope else {
                continue;
            };
            if !self.phases.iter().any(|phase| phase.name == *name) {
                let names: Vec<&str> = self.phases.iter().map(|p| p.name.as_str()).collect();
                return Err(Invalid::new(
                    Setting::Threshold(n),
                    format!(
                        "threshold {threshold}: no phase is called {name:?}; the phases: {}",
                        names.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks the foreign target, if any, and what the rest of the
    /// scenario must agree with it.
    fn validate_target(&self) -> Result<(), Invalid> {
        let openai = |spec: &Option<TargetSpec>| {
            spec.as_ref()
                .is_some_and(|s| s.format == target::Format::Openai)
        };
        let spec = self.target_spec()?;
        if !(self.request_rate.is_finite() && self.request_rate >= 0.0)
            || (self.request_rate > 0.0 && !openai(&spec))
        {
            return Err(Invalid::new(
                Setting::RequestRate,
                format!(
                    "request-rate {} is for an openai target: requests per second per client, 0 or more",
                    self.request_rate
                ),
            ));
        }
        let Some(spec) = spec else { return Ok(()) };
        let fail = |message: &str| Err(Invalid::new(Setting::Target("subscribe_url"), message));
        if spec.stream_kind() != self.stream {
            return Err(Invalid::new(
                Setting::Stream,
                format!(
                    "a [target] decides what is streamed ({}): leave `stream` out",
                    spec.stream_kind().as_str()
                ),
            ));
        }
        if spec.origin == Origin::Relative && self.transport == Transport::Mixed {
            return fail("a /path target is read over one transport: sse or ws, not mixed");
        }
        let scheme_transport = if spec.websocket {
            Transport::Ws
        } else {
            Transport::Sse
        };
        if spec.origin == Origin::Absolute && self.transport != scheme_transport {
            return fail("the URL's scheme decides the transport: leave `transport` out");
        }
        if spec.origin == Origin::Absolute && self.nodes > 1 {
            return Err(Invalid::new(
                Setting::Nodes,
                "an absolute subscribe_url names one server: nodes = 1",
            ));
        }
        if self.max_abusers() > 0 {
            return Err(Invalid::new(
                Setting::Phases,
                "misbehaving clients meet this project's server's limits: not with a [target]",
            ));
        }
        if self.auth.is_some() && spec.origin == Origin::Absolute && !spec.uses_token() {
            return Err(Invalid::new(
                Setting::Auth("jwt-key"),
                "the target names its own server, which gets no bearer token: put {token} \
                 (URL) or {{token}} (headers, frames) where it wants each client's token",
            ));
        }
        Ok(())
    }

    /// Checks the phases: some time, some clients, within the limits.
    fn validate_load(&self) -> Result<(), Invalid> {
        let phases = |message: &str| Err(Invalid::new(Setting::Phases, message));
        if self.phases.is_empty() {
            return phases("a scenario needs at least one phase");
        }
        if self.duration().is_zero() {
            return phases("the phases last no time at all");
        }
        if self.max_clients() == 0 {
            return phases("no phase has any client");
        }
        for (n, phase) in self.phases.iter().enumerate() {
            let fail = |message: String| {
                Err(Invalid::new(
                    Setting::Phase(n),
                    format!("phase {:?}: {message}", phase.name),
                ))
            };
            let clients = phase.from.max(phase.to);
            if clients > MAX_CLIENTS {
                return fail(format!(
                    "{clients} clients is over the limit of {MAX_CLIENTS}"
                ));
            }
            if self.stream != StreamKind::Topic && phase.publish_rate.is_some() {
                return fail("a publish rate is for topic scenarios only".to_owned());
            }
            phase.validate().or_else(fail)?;
        }
        Ok(())
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

    #[test]
    fn phases_move_clients_linearly() {
        let ramp = Phase {
            from: 0,
            ..Phase::steady("ramp", 100, Duration::from_secs(10))
        };
        assert_eq!(ramp.clients_at(Duration::ZERO), 0);
        assert_eq!(ramp.clients_at(Duration::from_secs(5)), 50);
        assert_eq!(ramp.clients_at(Duration::from_secs(20)), 100);
        let spike = Phase::steady("spike", 100, Duration::from_secs(5));
        assert_eq!(spike.clients_at(Duration::ZERO), 100);
    }

    #[test]
    fn phases_round_trip_through_json_exactly() {
        let phase = Phase {
            name: "odd".to_owned(),
            duration: Duration::new(3, 141_592_653),
            from: 2,
            to: 7,
            rate: Some(9),
            publish_rate: None,
            abuse: Some(Abuse {
                kind: AbuseKind::NeverRead,
                clients: 3,
            }),
        };
        let json = serde_json::to_string(&phase).unwrap();
        assert_eq!(
            serde_json::from_str::<Phase>(&json).unwrap(),
            phase,
            "{json}"
        );
    }

    #[test]
    fn inline_load_is_a_ramp_then_steady() {
        let mut scenario = Scenario::default();
        scenario.set_load(50, Duration::from_secs(30), Duration::from_secs(5));
        assert_eq!(scenario.duration(), Duration::from_secs(35));
        assert_eq!(scenario.max_clients(), 50);
        assert_eq!(scenario.phases[0].from, 0);
        scenario.set_load(5, Duration::from_secs(3), Duration::ZERO);
        assert_eq!(scenario.phases.len(), 1);
    }

    #[test]
    fn server_arguments_given_win_over_the_scenarios_own() {
        let scenario = Scenario {
            server_args: vec![
                "--max-connections=250".to_owned(),
                "--publish-queue=64".to_owned(),
            ],
            ..Scenario::default()
        };
        let given = ["--max-connections=9".to_owned(), "--quiet".to_owned()];
        assert_eq!(
            scenario.server_args_with(&given),
            ["--max-connections=9", "--quiet", "--publish-queue=64"]
        );
        assert_eq!(scenario.validate(), Ok(()));
        let bad = Scenario {
            server_args: vec!["max-connections".to_owned()],
            ..Scenario::default()
        };
        let err = bad.validate().unwrap_err();
        assert_eq!(err.setting, Setting::ServerArgs);
        assert!(err.message.contains("--flag=value"), "{err}");
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let mut scenario = Scenario::default();
        assert_eq!(scenario.validate(), Ok(()));
        scenario.churn = -1.0;
        assert_eq!(scenario.validate().unwrap_err().setting, Setting::Churn);
        let mut scenario = Scenario::default();
        scenario.set_load(0, Duration::from_secs(1), Duration::ZERO);
        assert_eq!(
            scenario.validate(),
            Err(Invalid::new(Setting::Phases, "no phase has any client"))
        );
        let mut scenario = Scenario::default();
        scenario.phases.push(Phase {
            publish_rate: Some(5),
            ..Phase::steady("second", 1, Duration::from_secs(1))
        });
        assert_eq!(scenario.validate().unwrap_err().setting, Setting::Phase(1));
        let scenario = Scenario {
            stream: StreamKind::Topic,
            count: 3,
            ..Scenario::default()
        };
        assert_eq!(scenario.validate().unwrap_err().setting, Setting::Count);
        let scenario = Scenario {
            stream: StreamKind::Topic,
            publish_rate: 0,
            ..Scenario::default()
        };
        assert_eq!(scenario.validate(), Ok(()), "a quiet topic: idle streams");
        for (rank, kind) in AbuseKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), rank, "{kind:?}");
        }
        assert_eq!(
            (0..4)
                .map(|id| Transport::Mixed.for_client(id).as_str())
                .collect::<Vec<_>>(),
            ["sse", "ws", "sse", "ws"]
        );
    }
}
