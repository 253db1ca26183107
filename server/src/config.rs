//! Configuration: command-line flags, `STREAMGAUGE_*` environment variables
//! and an optional TOML file, all with the same names, parsed into raw
//! [`Args`] and validated once into a [`Config`] that cannot hold invalid
//! values. Nothing else in the server reads flags or the environment.
//!
//! Precedence: defaults < file < environment < flags. Each is a layer of
//! [`Args`], whose fields are `None` where that layer says nothing. Clap
//! already puts flags over the environment; [`Args::load`] layers the file
//! under both, and [`Config::from_args`] the defaults under all three, by
//! one generic function (`layer`) that names no field.
//!
//! # Each default is stated once
//!
//! The defaults are the bottom layer, `defaults()`: the one place where
//! each default value is written. The rest is derived from it:
//! - `--help` shows each of its values after the flag's help text, as
//!   `[default: VALUE]` (`show_defaults`, applied to clap's command), so the
//!   help cannot drift from what the server runs with;
//! - [`Config::from_args`] layers it under the other three, so that every
//!   setting has a value, then validates;
//! - [`Config::default`] is that with nothing given.
//!
//! Why not clap's own `default_value_t`: a flag with a clap default always
//! has a value, so a setting the file gives could no longer be told from
//! one nobody gave, and the file could not sit between the defaults and
//! the environment without a second, per-field merge.
//!
//! A setting with no default value (`--max-replays`, derived from
//! `--database-connections`; `--workers`, one per core; the `--inject-*`
//! test switches, off) says its default in words in its help text. A test
//! reads every default that `--help` shows and checks it against the
//! [`Config`] the server runs with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::auth::admin::AdminToken;
use crate::auth::denylist::{Denylist, DenylistFile};
use crate::auth::jwt::{JwtOptions, Verifier};
use crate::auth::{ReadRule, Secret};
use crate::cors::Cors;
use crate::logging::LogFormat;
use crate::queue;
use crate::retention::{Retention, RetentionRule};
use crate::source::Stall;
use crate::source::topic::OverflowPolicy;
use crate::store::{self, SqliteDurability};
use crate::tls::TlsFiles;
use crate::writer::BatchLimits;

/// A duration written the human way: `250ms`, `15s`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s).map(Self)
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = humantime::DurationError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<HumanDuration> for String {
    fn from(d: HumanDuration) -> Self {
        humantime::format_duration(d.0).to_string()
    }
}

/// The reference streaming server of streamgauge: SSE and WebSocket streams
/// with backpressure-aware batching.
///
/// Every flag also reads the environment variable `STREAMGAUGE_<FLAG>`, and
/// the file given by `--config` may set any of them (same names, e.g.
/// `max-batch = 64`, `write-timeout = "10s"`).
#[derive(Debug, Default, Parser, Serialize, Deserialize)]
#[command(name = "streamgauge-server", version, mut_args = show_defaults())]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port
    #[arg(long, env = "STREAMGAUGE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// TOML file with any of these settings
    #[arg(long, env = "STREAMGAUGE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Database: `sqlite:PATH` (created and migrated on start) or `postgres://…`
    #[arg(
        long,
        env = "STREAMGAUGE_DATABASE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database: Option<String>,

    /// Most database connections
    #[arg(long, env = "STREAMGAUGE_DATABASE_CONNECTIONS", value_name = "N")]
    pub database_connections: Option<u32>,

    /// Most replays streaming at once; each holds a database connection for its whole stream, so this must stay below --database-connections. Over it SSE gets 503 and WebSocket close 1013 [default: three quarters of --database-connections, at least 1]
    #[arg(long, env = "STREAMGAUGE_MAX_REPLAYS", value_name = "N")]
    pub max_replays: Option<usize>,

    /// Trades `GET /api/trades/{wallet}` answers when the request gives no `limit`; a wallet holding more gets 413, naming the replay stream to use instead
    #[arg(long, env = "STREAMGAUGE_TRADES_LIMIT", value_name = "N")]
    pub trades_limit: Option<u64>,

    /// Highest `limit` a `GET /api/trades/{wallet}` may ask for; over it 400
    #[arg(long, env = "STREAMGAUGE_MAX_TRADES_LIMIT", value_name = "N")]
    pub max_trades_limit: Option<u64>,

    /// Most trades one `POST /api/trades/{wallet}/seed` may add; over it 400
    #[arg(long, env = "STREAMGAUGE_MAX_SEED", value_name = "N")]
    pub max_seed: Option<u64>,

    /// Trades a seed commits per transaction: on SQLite a publish waits behind a seed for at most one such transaction
    #[arg(long, env = "STREAMGAUGE_SEED_CHUNK", value_name = "N")]
    pub seed_chunk: Option<u64>,

    /// SQLite commits: `full` fsyncs each (survives power loss), `normal` survives a process crash
    #[arg(long, env = "STREAMGAUGE_SQLITE_DURABILITY", value_name = "MODE")]
    pub sqlite_durability: Option<SqliteDurability>,

    /// A token that may publish (repeatable; or STREAMGAUGE_PUBLISH_TOKEN, comma-separated); with none, publishing is open
    #[arg(long, value_name = "TOKEN")]
    pub publish_token: Option<Vec<Secret>>,

    /// A read rule `PATTERN=TOKEN` (repeatable; or STREAMGAUGE_READ_TOKEN, comma-separated): topics matching PATTERN (`*` = any run) need TOKEN to be read
    #[arg(long, value_name = "RULE")]
    pub read_token: Option<Vec<Secret>>,

    /// An admin token `LABEL=TOKEN` (repeatable; or STREAMGAUGE_ADMIN_TOKEN, comma-separated): it opens the admin API (`/admin/…`, which does not exist without one) and, once any is set, is what seeding datasets takes; logs name the LABEL, never the token
    #[arg(long, value_name = "LABEL=TOKEN")]
    pub admin_token: Option<Vec<Secret>>,

    /// JWTs: an HS256 secret file (at least 32 bytes), or a PEM public key (RSA: RS256, EC P-256: ES256, Ed25519: EdDSA); with JWTs on, every topic read and publish needs a credential [default: off]
    #[arg(long, env = "STREAMGAUGE_JWT_KEY", value_name = "FILE")]
    pub jwt_key: Option<PathBuf>,

    /// JWTs: a JWKS document whose keys are picked by the token's `kid`
    #[arg(long, env = "STREAMGAUGE_JWKS_FILE", value_name = "FILE")]
    pub jwks_file: Option<PathBuf>,

    /// Clock skew accepted on a JWT's `exp` and `nbf`
    #[arg(long, env = "STREAMGAUGE_JWT_LEEWAY", value_name = "DURATION")]
    pub jwt_leeway: Option<HumanDuration>,

    /// The `iss` a JWT must carry
    #[arg(long, env = "STREAMGAUGE_JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,

    /// An `aud` a JWT must carry
    #[arg(long, env = "STREAMGAUGE_JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,

    /// A cookie whose value is taken as a subscription's token when no header or `token` parameter gives one
    #[arg(long, env = "STREAMGAUGE_JWT_COOKIE", value_name = "NAME")]
    pub jwt_cookie: Option<String>,

    /// A file of revoked JWT subjects (`sub`) and ids (`jti`), one per line; re-read when it changes and at SIGHUP, and live streams of a listed token end
    #[arg(long, env = "STREAMGAUGE_JWT_DENYLIST", value_name = "FILE")]
    pub jwt_denylist: Option<PathBuf>,

    /// Largest publish body, bytes; larger is 413
    #[arg(long, env = "STREAMGAUGE_MAX_PUBLISH_BYTES", value_name = "BYTES")]
    pub max_publish_bytes: Option<usize>,

    /// Publishes waiting to be committed before new ones get 503
    #[arg(long, env = "STREAMGAUGE_PUBLISH_QUEUE", value_name = "N")]
    pub publish_queue: Option<usize>,

    /// Events kept per topic (the newest)
    #[arg(long, env = "STREAMGAUGE_RETENTION_EVENTS", value_name = "N")]
    pub retention_events: Option<u64>,

    /// Oldest event kept, by publish time
    #[arg(long, env = "STREAMGAUGE_RETENTION_AGE", value_name = "DURATION")]
    pub retention_age: Option<HumanDuration>,

    /// How often retention runs
    #[arg(long, env = "STREAMGAUGE_RETENTION_INTERVAL", value_name = "DURATION")]
    pub retention_interval: Option<HumanDuration>,

    /// A retention rule `PATTERN=events:N,age:DURATION` for the topics matching PATTERN (`*` = any run), 0 = unlimited, a bound left out = the global one (repeatable, first match wins; e.g. `audit.*=events:0,age:365d`)
    #[arg(long, value_name = "RULE")]
    pub retention: Option<Vec<String>>,

    /// Most topics that may exist; a publish that would create one more is refused (429)
    #[arg(long, env = "STREAMGAUGE_MAX_TOPICS", value_name = "N")]
    pub max_topics: Option<u64>,

    /// A topic with no event left, no publish and no live subscriber (on any node) for this long is removed; a later publish starts it again at seq 1; 0s: never
    #[arg(long, env = "STREAMGAUGE_TOPIC_IDLE_EXPIRY", value_name = "DURATION")]
    pub topic_idle_expiry: Option<HumanDuration>,
    /// How long a publish's idempotency key is honoured: a retry with the key within it gets the first publish's seq and stores nothing; older keys are deleted at each --retention-interval
    #[arg(long, env = "STREAMGAUGE_IDEMPOTENCY_WINDOW", value_name = "DURATION")]
    pub idempotency_window: Option<HumanDuration>,

    /// PostgreSQL cluster nodes: how often to compare the store's heads of topics with local subscribers with what was delivered, and re-read what a lost notification left behind; 0s turns it off
    #[arg(long, env = "STREAMGAUGE_CLUSTER_POLL", value_name = "DURATION")]
    pub cluster_poll: Option<HumanDuration>,

    /// A topic subscriber whose queue overflows: `catch-up` reads the store, `disconnect` closes it
    #[arg(long, env = "STREAMGAUGE_OVERFLOW", value_name = "POLICY")]
    pub overflow: Option<OverflowPolicy>,

    /// Log filter, in `tracing` syntax (e.g. `info`, `streamgauge_server=debug`)
    #[arg(long, env = "STREAMGAUGE_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Log lines as `text` or `json` (one object per line, with the
    /// `tracing` fields)
    #[arg(long, env = "STREAMGAUGE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// One log line per request or stream (target `streamgauge::access`):
    /// client, method, path, status, duration, bytes and why it ended
    #[arg(
        long,
        env = "STREAMGAUGE_ACCESS_LOG",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub access_log: Option<bool>,

    /// Once a burst of connections has closed (open connections down to
    /// half their peak), hand the memory it freed back to the system
    /// (glibc's malloc_trim); off: the allocator keeps it for reuse
    #[arg(
        long,
        env = "STREAMGAUGE_MALLOC_TRIM",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub malloc_trim: Option<bool>,

    /// Runtime worker threads [default: one per core]
    #[arg(long, env = "STREAMGAUGE_WORKERS", value_name = "N")]
    pub workers: Option<usize>,

    /// Most streams open at once; over it SSE gets 503 and WebSocket close 1013
    #[arg(long, env = "STREAMGAUGE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most events waiting in one connection's queue
    #[arg(long, env = "STREAMGAUGE_QUEUE_EVENTS", value_name = "N")]
    pub queue_events: Option<usize>,

    /// Most bytes waiting in one connection's queue
    #[arg(long, env = "STREAMGAUGE_QUEUE_BYTES", value_name = "BYTES")]
    pub queue_bytes: Option<usize>,

    /// Most events written per batch (one flush); 1 disables batching
    #[arg(long, env = "STREAMGAUGE_MAX_BATCH", value_name = "N")]
    pub max_batch: Option<usize>,

    /// Most bytes written per batch
    #[arg(long, env = "STREAMGAUGE_MAX_BATCH_BYTES", value_name = "BYTES")]
    pub max_batch_bytes: Option<usize>,

    /// Keep-alive interval: SSE comment on an idle stream, WebSocket ping
    #[arg(long, env = "STREAMGAUGE_KEEPALIVE_INTERVAL", value_name = "DURATION")]
    pub keepalive_interval: Option<HumanDuration>,

    /// A WebSocket peer silent for this long (no pong) is closed
    #[arg(long, env = "STREAMGAUGE_PONG_TIMEOUT", value_name = "DURATION")]
    pub pong_timeout: Option<HumanDuration>,

    /// A connection whose writes make no progress for this long is dropped
    #[arg(long, env = "STREAMGAUGE_WRITE_TIMEOUT", value_name = "DURATION")]
    pub write_timeout: Option<HumanDuration>,

    /// Most TCP connections open at once from one peer address; over it a
    /// connection is answered 429 with Retry-After
    #[arg(long, env = "STREAMGAUGE_MAX_CONNECTIONS_PER_PEER", value_name = "N")]
    pub max_connections_per_peer: Option<usize>,

    /// A connection whose first request head is not complete this long
    /// after it was accepted is closed (slowloris)
    #[arg(long, env = "STREAMGAUGE_HEADER_TIMEOUT", value_name = "DURATION")]
    pub header_timeout: Option<HumanDuration>,

    /// An HTTP connection with no request in flight (an idle HTTP/1.1
    /// keep-alive connection, an HTTP/2 connection without streams) is
    /// closed after this long
    #[arg(long, env = "STREAMGAUGE_KEEPALIVE_TIMEOUT", value_name = "DURATION")]
    pub keepalive_timeout: Option<HumanDuration>,

    /// A request body must have arrived whole this long after its head;
    /// otherwise the request is answered 408 and its connection closed
    #[arg(long, env = "STREAMGAUGE_BODY_TIMEOUT", value_name = "DURATION")]
    pub body_timeout: Option<HumanDuration>,

    /// Most streams open at once on one HTTP/2 connection
    #[arg(long, env = "STREAMGAUGE_MAX_CONCURRENT_STREAMS", value_name = "N")]
    pub max_concurrent_streams: Option<u32>,

    /// Most streams one HTTP/2 connection may open in a second (as many at
    /// once); past it the stream is answered 429 and the connection closed
    #[arg(long, env = "STREAMGAUGE_MAX_STREAM_RATE", value_name = "N")]
    pub max_stream_rate: Option<u32>,

    /// PEM file of the TLS certificate chain; with --tls-key the server
    /// speaks HTTPS (HTTP/2 and HTTP/1.1, by ALPN) and SIGHUP reloads both
    /// files
    #[arg(long, env = "STREAMGAUGE_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file of the TLS private key (PKCS#8, PKCS#1 or SEC1)
    #[arg(long, env = "STREAMGAUGE_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// An origin whose pages may read this server's answers (CORS;
    /// repeatable, or comma-separated): `https://app.example`, or `*` for
    /// any origin (then without credentials); none: CORS is off
    #[arg(
        long,
        env = "STREAMGAUGE_CORS_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub cors_origin: Option<Vec<String>>,

    /// A proxy (address or CIDR block; repeatable, or comma-separated)
    /// trusted to say who its client is, by X-Forwarded-For or, with
    /// --proxy-protocol, a PROXY protocol header; none: every peer is the
    /// client
    #[arg(
        long,
        env = "STREAMGAUGE_TRUSTED_PROXY",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxy: Option<Vec<crate::proxy::Cidr>>,

    /// Trusted proxies open each connection with a PROXY protocol header
    /// (v1 or v2) instead of sending X-Forwarded-For
    #[arg(
        long,
        env = "STREAMGAUGE_PROXY_PROTOCOL",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub proxy_protocol: Option<bool>,

    /// How long a graceful shutdown may take before open streams are abandoned
    #[arg(long, env = "STREAMGAUGE_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<HumanDuration>,

    /// `Retry-After` sent with 503 at the connection limit
    #[arg(long, env = "STREAMGAUGE_RETRY_AFTER", value_name = "DURATION")]
    pub retry_after: Option<HumanDuration>,

    /// Highest `rate` (and `tps`) a client may ask for, events/s
    #[arg(long, env = "STREAMGAUGE_MAX_RATE", value_name = "N")]
    pub max_rate: Option<u64>,

    /// Highest ticker `size` a client may ask for, bytes
    #[arg(long, env = "STREAMGAUGE_MAX_SIZE", value_name = "BYTES")]
    pub max_size: Option<usize>,

    /// For testing measurements only: wait this long before writing each
    /// batch, a server slowed on purpose [default: off]
    #[arg(long, env = "STREAMGAUGE_INJECT_DELAY", value_name = "DURATION")]
    pub inject_delay: Option<HumanDuration>,

    /// For testing measurements only: after every EVERY events of a ticker
    /// or token stream, its pacer blocks the runtime worker running it for
    /// DURATION, a server that stalls on purpose [default: off]
    #[arg(
        long,
        env = "STREAMGAUGE_INJECT_PACER_STALL",
        value_name = "EVERY:DURATION"
    )]
    pub inject_pacer_stall: Option<String>,

    /// For testing leak detection only: leak this many bytes of heap for
    /// every stream opened, a server that leaks on purpose [default: off]
    #[arg(long, env = "STREAMGAUGE_INJECT_LEAK", value_name = "BYTES")]
    pub inject_leak: Option<usize>,

    /// For testing crash recovery only: the process kills itself (SIGKILL)
    /// right after its first publish commit, before answering [default: off]
    #[arg(
        long,
        env = "STREAMGAUGE_INJECT_EXIT_AFTER_COMMIT",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub inject_exit_after_commit: Option<bool>,

    /// Where a build with the `dhat-heap` feature writes its DHAT heap
    /// profile on graceful shutdown
    #[arg(long, env = "STREAMGAUGE_HEAP_PROFILE", value_name = "PATH")]
    pub heap_profile: Option<PathBuf>,
}

/// The bottom layer, under the file, the environment and the flags: the one
/// place where each default is stated. `--help` shows these values, and
/// [`Config::from_args`] fills every setting not given from them.
///
/// `None` marks a setting with no default value; the comment beside it
/// says what happens when nobody gives it.
fn defaults() -> Args {
    let seconds = |s| Some(HumanDuration(Duration::from_secs(s)));
    Args {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
        // No config file.
        config: None,
        database: Some("sqlite://streamgauge.db".to_owned()),
        database_connections: Some(16),
        // Derived from the pool: `default_max_replays`.
        max_replays: None,
        trades_limit: Some(10_000),
        max_trades_limit: Some(100_000),
        max_seed: Some(1_000_000),
        seed_chunk: Some(10_000),
        sqlite_durability: Some(SqliteDurability::Full),
        // None: publishing and reading are open.
        publish_token: None,
        read_token: None,
        admin_token: None,
        // JWTs are off unless a key or a JWKS is given.
        jwt_key: None,
        jwks_file: None,
        jwt_leeway: seconds(30),
        jwt_issuer: None,
        jwt_audience: None,
        jwt_cookie: None,
        jwt_denylist: None,
        max_publish_bytes: Some(64 << 10),
        publish_queue: Some(8192),
        retention_events: Some(1_000_000),
        retention_age: seconds(7 * 24 * 3600),
        retention_interval: seconds(10),
        retention: None,
        max_topics: Some(100_000),
        topic_idle_expiry: seconds(7 * 24 * 3600),
        idempotency_window: seconds(24 * 3600),
        cluster_poll: seconds(1),
        overflow: Some(OverflowPolicy::CatchUp),
        log: Some("info".to_owned()),
        log_format: Some(LogFormat::Text),
        access_log: Some(false),
        malloc_trim: Some(true),
        // One per core: the runtime's own default.
        workers: None,
        max_connections: Some(10_000),
        queue_events: Some(1024),
        queue_bytes: Some(1 << 20),
        max_batch: Some(256),
        max_batch_bytes: Some(64 << 10),
        keepalive_interval: seconds(15),
        pong_timeout: seconds(45),
        write_timeout: seconds(30),
        max_connections_per_peer: Some(4096),
        header_timeout: seconds(10),
        keepalive_timeout: seconds(60),
        body_timeout: seconds(30),
        max_concurrent_streams: Some(100),
        max_stream_rate: Some(100),
        // None: plain HTTP, CORS off, no proxy trusted.
        tls_cert: None,
        tls_key: None,
        cors_origin: None,
        trusted_proxy: None,
        proxy_protocol: Some(false),
        shutdown_timeout: seconds(10),
        retry_after: seconds(1),
        max_rate: Some(1_000_000),
        max_size: Some(64 << 10),
        // Off: the server is neither slowed nor stalling nor leaking nor
        // crashing.
        inject_delay: None,
        inject_pacer_stall: None,
        inject_leak: None,
        inject_exit_after_commit: None,
        heap_profile: Some(PathBuf::from("dhat-heap.json")),
    }
}

/// Appends `[default: VALUE]` to the help text of each flag that
/// [`defaults`] gives a value, written as the config file would write it
/// (`15s`, `catch-up`), the way clap shows a default of its own.
fn show_defaults() -> impl FnMut(clap::Arg) -> clap::Arg {
    let defaults = serde_json::to_value(defaults()).expect("Args serialize");
    move |arg| {
        let shown = match arg.get_long().and_then(|flag| defaults.get(flag)) {
            None | Some(serde_json::Value::Null) => return arg,
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(value) => value.to_string(),
        };
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        arg.help(format!("{help} [default: {shown}]"))
    }
}

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings. Said without
    /// the offending line, which may hold a token, and without any string
    /// value the message quotes.
    #[error("config file {at}: {message}")]
    Parse {
        /// The file, and the line and column of the error.
        at: FilePosition,
        /// What is wrong, with quoted string values hidden.
        message: String,
    },
    /// A setting is out of its range.
    #[error("invalid `{name}`: {reason}")]
    Invalid {
        /// The setting's flag name.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Args {
    /// Layers the config file (if any) under these arguments and validates
    /// the result.
    ///
    /// # Errors
    ///
    /// An unreadable or invalid file (with its path, line and column), or a
    /// setting out of range.
    pub fn load(mut self) -> Result<Config, Error> {
        self.read_token_lists_from_env()?;
        let merged = match &self.config {
            Some(path) => layer(read_file(path)?, self),
            None => self,
        };
        Config::from_args(merged)
    }
}

impl Args {
    /// Fills the token lists not given as flags from their environment
    /// variables, split on commas. Done here rather than by clap, whose
    /// delimiter would also split a flag's value: a token holding a comma
    /// would turn into two weaker tokens.
    fn read_token_lists_from_env(&mut self) -> Result<(), Error> {
        for (list, name, flag) in [
            (
                &mut self.publish_token,
                "STREAMGAUGE_PUBLISH_TOKEN",
                "publish-token",
            ),
            (&mut self.read_token, "STREAMGAUGE_READ_TOKEN", "read-token"),
            (
                &mut self.admin_token,
                "STREAMGAUGE_ADMIN_TOKEN",
                "admin-token",
            ),
        ] {
            if list.is_some() {
                continue;
            }
            let Ok(value) = std::env::var(name) else {
                continue;
            };
            let tokens = value
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<Secret>, _>>()
                .map_err(|reason: String| invalid(flag, &format!("{name}: {reason}")))?;
            *list = Some(tokens);
        }
        Ok(())
    }
}

/// Each of `secrets` (the flag `flag`'s values) parsed as a rule holding a
/// token. A malformed one is reported without its text: it holds a token.
fn parse_secrets<T: FromStr<Err = String>>(
    flag: &'static str,
    secrets: Option<Vec<Secret>>,
) -> Result<Vec<T>, Error> {
    secrets
        .unwrap_or_default()
        .iter()
        .map(|secret| secret.expose().parse())
        .collect::<Result<_, String>>()
        .map_err(|reason| invalid(flag, &reason))
}

fn read_file(path: &Path) -> Result<Args, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|error| Error::Parse {
        at: FilePosition {
            path: path.to_owned(),
            line_column: error.span().map(|span| line_column(&text, span.start)),
        },
        message: hide_quoted_strings(error.message()),
    })
}

/// A place in a config file: `FILE:LINE:COLUMN`, or `FILE` when the parser
/// gave no position.
#[derive(Debug)]
pub struct FilePosition {
    /// The file.
    pub path: PathBuf,
    /// 1-based line and column (in characters), when known.
    pub line_column: Option<(usize, usize)>,
}

impl std::fmt::Display for FilePosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        match self.line_column {
            Some((line, column)) => write!(f, ":{line}:{column}"),
            None => Ok(()),
        }
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// `message` with every double-quoted string replaced by `"…"`: serde
/// quotes a string value of the wrong type (`invalid type: string "…",
/// expected a sequence`), and that value may be a token. Keys and enum
/// variants, quoted with backticks, stay.
fn hide_quoted_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        // Skip to the closing quote, over escapes (`Debug` escapes quotes).
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => break,
                _ => {}
            }
        }
        out.push_str("…\"");
    }
    out
}

/// `over`'s settings where given, `base`'s elsewhere.
fn layer(base: Args, over: Args) -> Args {
    // Round-trips through JSON so that every field is layered without being
    // named here; both values serialize from the same plain struct.
    let mut merged = serde_json::to_value(base).expect("Args serialize");
    let over = serde_json::to_value(over).expect("Args serialize");
    if let (Some(merged), Some(over)) = (merged.as_object_mut(), over.as_object()) {
        for (key, value) in over {
            if !value.is_null() {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    serde_json::from_value(merged).expect("layered Args deserialize")
}

/// The bounds of the trades dataset's endpoints (docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeLimits {
    /// Trades `GET /api/trades/{wallet}` answers without a `limit`.
    pub default_limit: u64,
    /// Highest `limit` a request may give; at least `default_limit`.
    pub max_limit: u64,
    /// Most trades one seed may add.
    pub max_seed: u64,
    /// Trades a seed commits per transaction.
    pub seed_chunk: u64,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The database.
    pub store: store::Options,
    /// Most replays streaming at once (each holds a database connection).
    pub max_replays: usize,
    /// Bounds of the trades dataset's endpoints.
    pub trades: TradeLimits,
    /// Tokens that may publish; none means publishing is open.
    pub publish_tokens: Vec<Secret>,
    /// Topics that need a token to be read.
    pub read_rules: Vec<ReadRule>,
    /// The admin tokens; none: no admin API.
    pub admin_tokens: Vec<AdminToken>,
    /// The JWT keys; `None`: JWTs are off.
    pub jwt: Option<Arc<Verifier>>,
    /// The cookie a subscription's token may come in.
    pub jwt_cookie: Option<String>,
    /// Revoked subjects and token ids.
    pub jwt_denylist: Option<DenylistFile>,
    /// Largest publish body, bytes.
    pub max_publish_bytes: usize,
    /// Publishes waiting to be committed before new ones are refused.
    pub publish_queue: usize,
    /// How long topic events are kept, unless a rule says otherwise.
    pub retention: Retention,
    /// Retention by topic pattern, first match wins.
    pub retention_rules: Vec<RetentionRule>,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Most topics that may exist.
    pub max_topics: u64,
    /// How long a topic may be idle before it is removed; `None`: never.
    pub topic_idle_expiry: Option<Duration>,
    /// How long a publish's idempotency key is honoured.
    pub idempotency_window: Duration,
    /// How often a cluster node's safety poll runs; `None`: never.
    pub cluster_poll: Option<Duration>,
    /// What happens to a topic subscriber whose queue overflows.
    pub overflow: OverflowPolicy,
    /// Log filter.
    pub log: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Whether every request and stream gets an access-log line.
    pub access_log: bool,
    /// Whether the memory a burst freed is handed back to the system.
    pub malloc_trim: bool,
    /// Runtime worker threads; `None` means one per core.
    pub workers: Option<usize>,
    /// Most streams open at once.
    pub max_connections: usize,
    /// Bounds of each connection's queue.
    pub queue: queue::Limits,
    /// Bounds of each batch.
    pub batch: BatchLimits,
    /// Keep-alive interval.
    pub keepalive_interval: Duration,
    /// Silence after which a WebSocket peer is closed.
    pub pong_timeout: Duration,
    /// Time a write may make no progress before its connection is dropped.
    pub write_timeout: Duration,
    /// Time a request head may take: the first from accept (TLS handshake
    /// included), each later one from its first byte.
    pub header_timeout: Duration,
    /// Time an HTTP connection may stay with no request in flight.
    pub keepalive_timeout: Duration,
    /// Time a request body has to arrive whole after its head.
    pub body_timeout: Duration,
    /// Most streams at once on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Most streams one HTTP/2 connection may open per second.
    pub max_stream_rate: u32,
    /// The certificate and key to serve HTTPS with; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Which origins' pages may read answers (CORS).
    pub cors: Cors,
    /// Peers trusted to say who their client is.
    pub trusted_proxies: Vec<crate::proxy::Cidr>,
    /// Whether trusted proxies send a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Most TCP connections open at once from one peer address.
    pub max_connections_per_peer: usize,
    /// Deadline of a graceful shutdown.
    pub shutdown_timeout: Duration,
    /// `Retry-After` at the connection limit.
    pub retry_after: Duration,
    /// Highest rate a client may ask for, events/s.
    pub max_rate: u64,
    /// Highest ticker `size` a client may ask for, bytes.
    pub max_size: usize,
    /// For testing measurements: a wait before each batch is written.
    pub inject_delay: Option<Duration>,
    /// For testing measurements: the pacer of ticker and token streams
    /// blocks its thread now and then.
    pub inject_pacer_stall: Option<Stall>,
    /// For testing leak detection: heap bytes leaked per stream opened.
    pub inject_leak: Option<usize>,
    /// For testing crash recovery: SIGKILL right after a publish commit.
    pub inject_exit_after_commit: bool,
    /// Where the DHAT heap profile goes (`dhat-heap` feature only).
    pub heap_profile: PathBuf,
}

impl Default for Config {
    /// The configuration given nothing: the defaults, validated.
    fn default() -> Self {
        Self::from_args(Args::default()).expect("the defaults are valid")
    }
}

impl Config {
    /// Validates `args` layered over the defaults.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the first setting out of range.
    pub fn from_args(args: Args) -> Result<Self, Error> {
        // Naming every field (no `..`): a new setting cannot be forgotten here.
        let Args {
            listen: Some(listen),
            config: _,
            database: Some(url),
            database_connections: Some(database_connections),
            max_replays,
            trades_limit: Some(trades_limit),
            max_trades_limit: Some(max_trades_limit),
            max_seed: Some(max_seed),
            seed_chunk: Some(seed_chunk),
            sqlite_durability: Some(sqlite_durability),
            publish_token,
            read_token,
            admin_token,
            jwt_key,
            jwks_file,
            jwt_leeway: Some(HumanDuration(jwt_leeway)),
            jwt_issuer,
            jwt_audience,
            jwt_cookie,
            jwt_denylist,
            max_publish_bytes: Some(max_publish_bytes),
            publish_queue: Some(publish_queue),
            retention_events: Some(retention_events),
            retention_age: Some(HumanDuration(retention_age)),
            retention_interval: Some(HumanDuration(retention_interval)),
            retention: retention_rules,
            max_topics: Some(max_topics),
            topic_idle_expiry: Some(HumanDuration(topic_idle_expiry)),
            idempotency_window: Some(HumanDuration(idempotency_window)),
            cluster_poll: Some(HumanDuration(cluster_poll)),
            overflow: Some(overflow),
            log: Some(log),
            log_format: Some(log_format),
            access_log: Some(access_log),
            malloc_trim: Some(malloc_trim),
            workers,
            max_connections: Some(max_connections),
            queue_events: Some(queue_events),
            queue_bytes: Some(queue_bytes),
            max_batch: Some(max_batch),
            max_batch_bytes: Some(max_batch_bytes),
            keepalive_interval: Some(HumanDuration(keepalive_interval)),
            pong_timeout: Some(HumanDuration(pong_timeout)),
            write_timeout: Some(HumanDuration(write_timeout)),
            max_connections_per_peer: Some(max_connections_per_peer),
            header_timeout: Some(HumanDuration(header_timeout)),
            keepalive_timeout: Some(HumanDuration(keepalive_timeout)),
            body_timeout: Some(HumanDuration(body_timeout)),
            max_concurrent_streams: Some(max_concurrent_streams),
            max_stream_rate: Some(max_stream_rate),
            tls_cert,
            tls_key,
            cors_origin,
            trusted_proxy,
            proxy_protocol: Some(proxy_protocol),
            shutdown_timeout: Some(HumanDuration(shutdown_timeout)),
            retry_after: Some(HumanDuration(retry_after)),
            max_rate: Some(max_rate),
            max_size: Some(max_size),
            inject_delay,
            inject_pacer_stall,
            inject_leak,
            inject_exit_after_commit,
            heap_profile: Some(heap_profile),
        } = layer(defaults(), args)
        else {
            unreachable!("`defaults` gives a value to every setting matched with `Some` here");
        };
        let config = Self {
            listen,
            store: store::Options {
                url,
                max_connections: database_connections,
                sqlite_durability,
            },
            max_replays: max_replays.unwrap_or_else(|| default_max_replays(database_connections)),
            trades: TradeLimits {
                default_limit: trades_limit,
                max_limit: max_trades_limit,
                max_seed,
                seed_chunk,
            },
            publish_tokens: publish_token.unwrap_or_default(),
            read_rules: parse_secrets("read-token", read_token)?,
            admin_tokens: parse_secrets("admin-token", admin_token)?,
            jwt: load_jwt(&JwtOptions {
                key: jwt_key,
                jwks: jwks_file,
                leeway: jwt_leeway,
                issuer: jwt_issuer,
                audience: jwt_audience,
            })?,
            jwt_cookie: jwt_cookie.filter(|name| !name.is_empty()),
            jwt_denylist: jwt_denylist
                .map(|path| {
                    Denylist::read(&path)
                        .map(|initial| DenylistFile { path, initial })
                        .map_err(|e| invalid("jwt-denylist", &e))
                })
                .transpose()?,
            max_publish_bytes,
            publish_queue,
            retention: Retention {
                max_events: retention_events,
                max_age: retention_age,
            },
            retention_rules: retention_rules
                .unwrap_or_default()
                .iter()
                .map(|rule| rule.parse())
                .collect::<Result<_, String>>()
                .map_err(|reason| invalid("retention", &reason))?,
            retention_interval,
            max_topics,
            topic_idle_expiry: (!topic_idle_expiry.is_zero()).then_some(topic_idle_expiry),
            idempotency_window,
            cluster_poll: Some(cluster_poll).filter(|poll| !poll.is_zero()),
            overflow,
            log,
            log_format,
            access_log,
            malloc_trim,
            workers,
            max_connections,
            queue: queue::Limits {
                max_events: queue_events,
                max_bytes: queue_bytes,
            },
            batch: BatchLimits {
                max_events: max_batch,
                max_bytes: max_batch_bytes,
            },
            keepalive_interval,
            pong_timeout,
            write_timeout,
            header_timeout,
            keepalive_timeout,
            body_timeout,
            max_concurrent_streams,
            max_stream_rate,
            tls: TlsFiles::pair(tls_cert, tls_key)?,
            cors: Cors::parse(cors_origin.unwrap_or_default())?,
            trusted_proxies: trusted_proxy.unwrap_or_default(),
            proxy_protocol,
            max_connections_per_peer,
            shutdown_timeout,
            retry_after,
            max_rate,
            max_size,
            inject_delay: inject_delay.map(|h| h.0).filter(|d| !d.is_zero()),
            inject_pacer_stall: inject_pacer_stall
                .map(|stall| stall.parse::<Stall>())
                .transpose()
                .map_err(|reason| invalid("inject-pacer-stall", &reason))?,
            inject_leak: inject_leak.filter(|&bytes| bytes > 0),
            inject_exit_after_commit: inject_exit_after_commit.unwrap_or(false),
            heap_profile,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Error> {
        let positive = [
            ("workers", self.workers.unwrap_or(1)),
            ("max-connections", self.max_connections),
            ("max-connections-per-peer", self.max_connections_per_peer),
            (
                "max-concurrent-streams",
                self.max_concurrent_streams as usize,
            ),
            ("max-stream-rate", self.max_stream_rate as usize),
            ("queue-events", self.queue.max_events),
            ("queue-bytes", self.queue.max_bytes),
            ("max-batch", self.batch.max_events),
            ("max-batch-bytes", self.batch.max_bytes),
            ("database-connections", self.store.max_connections as usize),
            ("max-replays", self.max_replays),
            ("trades-limit", saturating_usize(self.trades.default_limit)),
            ("max-trades-limit", saturating_usize(self.trades.max_limit)),
            ("max-seed", saturating_usize(self.trades.max_seed)),
            ("seed-chunk", saturating_usize(self.trades.seed_chunk)),
            ("max-publish-bytes", self.max_publish_bytes),
            ("publish-queue", self.publish_queue),
            ("max-topics", saturating_usize(self.max_topics)),
            (
                "retention-events",
                saturating_usize(self.retention.max_events),
            ),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        let durations = [
            ("keepalive-interval", self.keepalive_interval),
            ("pong-timeout", self.pong_timeout),
            ("write-timeout", self.write_timeout),
            ("header-timeout", self.header_timeout),
            ("keepalive-timeout", self.keepalive_timeout),
            ("body-timeout", self.body_timeout),
            ("retention-interval", self.retention_interval),
            ("idempotency-window", self.idempotency_window),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                return Err(invalid(name, "must be longer than zero"));
            }
        }
        // Each node notes its watched topics at every retention run: an
        // expiry shorter than two runs could remove a topic one is serving.
        if let Some(expiry) = self.topic_idle_expiry
            && expiry < 2 * self.retention_interval
        {
            return Err(invalid(
                "topic-idle-expiry",
                "must be at least twice --retention-interval (or 0s: never)",
            ));
        }
        if self.pong_timeout <= self.keepalive_interval {
            return Err(invalid(
                "pong-timeout",
                "must be longer than --keepalive-interval, or peers are closed before they are pinged",
            ));
        }
        // A batch is one write buffer (the WebSocket's too, which must stay
        // below tungstenite's unbounded maximum): bounded like any buffer.
        if self.batch.max_bytes > MAX_BATCH_BYTES {
            return Err(invalid(
                "max-batch-bytes",
                &format!("must be at most {MAX_BATCH_BYTES} (1 GiB)"),
            ));
        }
        // A replay holds a connection for its whole stream: replays alone
        // must never take the whole pool from publishes and subscriptions.
        if self.max_replays >= self.store.max_connections as usize {
            return Err(invalid(
                "max-replays",
                &format!(
                    "{} must be below --database-connections ({}): each replay holds a database connection for its whole stream, and publishes and subscriptions need one beside them",
                    self.max_replays, self.store.max_connections
                ),
            ));
        }
        if self.trades.default_limit > self.trades.max_limit {
            return Err(invalid(
                "trades-limit",
                &format!(
                    "{} must be at most --max-trades-limit ({})",
                    self.trades.default_limit, self.trades.max_limit
                ),
            ));
        }
        if self.max_connections > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(invalid(
                "max-connections",
                "is larger than any server can hold",
            ));
        }
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return Err(invalid(
                "proxy-protocol",
                "needs --trusted-proxy: only a trusted proxy may say who the client is",
            ));
        }
        if let Err(e) = store::Backend::of(&self.store.url) {
            return Err(invalid("database", &e.to_string()));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(invalid("log", &e.to_string()));
        }
        Ok(())
    }
}

/// Replays admitted at once by default: three quarters of the database
/// connections, rounded down (at least one), leaving the rest to the one
/// publish writer, subscribers' catch-up reads and retention, which hold
/// a connection only for one statement or transaction at a time. With the
/// default pool (16): 12 replays, the `replay-5k` preset's 10 clients fit.
fn default_max_replays(database_connections: u32) -> usize {
    (database_connections as usize * 3 / 4).max(1)
}

/// `n` as a `usize`, `usize::MAX` where it does not fit: for the check
/// that a count is at least 1.
fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The largest batch a writer may build, bytes.
const MAX_BATCH_BYTES: usize = 1 << 30;

/// The JWT keys `options` name; a file that cannot be used is named with
/// its flag.
fn load_jwt(options: &JwtOptions) -> Result<Option<Arc<Verifier>>, Error> {
    Verifier::load(options)
        .map(|v| v.map(Arc::new))
        .map_err(|e| invalid(e.flag, &e.to_string()))
}

fn invalid(name: &'static str, reason: &str) -> Error {
    Error::Invalid {
        name,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(flags: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("streamgauge-server").chain(flags.iter().copied()))
            .unwrap()
    }

    fn config_file(text: &str) -> tempfile_path::TempFile {
        tempfile_path::TempFile::new(text)
    }

    /// A file in the system temp dir, removed on drop.
    mod tempfile_path {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicU32, Ordering};

        pub(super) struct TempFile(pub(super) PathBuf);

        impl TempFile {
            pub(super) fn new(text: &str) -> Self {
                static N: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "streamgauge-config-{}-{}.toml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&path, text).unwrap();
                Self(path)
            }
        }

        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Args::default().load().unwrap(), Config::default());
    }

    /// Every default that `--help` shows is the one the server runs with:
    /// a value, given as its flag, leaves [`Config::default`] as it is; a
    /// default said in words holds in [`Config::default`]. A flag shows
    /// exactly one default unless it has none.
    #[test]
    fn help_shows_the_defaults_the_server_runs_with() {
        let d = Config::default();
        let said_in_words = [
            (
                "max-replays",
                "three quarters of --database-connections, at least 1",
                d.max_replays == (d.store.max_connections as usize * 3 / 4).max(1),
            ),
            ("workers", "one per core", d.workers.is_none()),
            ("inject-delay", "off", d.inject_delay.is_none()),
            ("inject-pacer-stall", "off", d.inject_pacer_stall.is_none()),
            ("inject-leak", "off", d.inject_leak.is_none()),
            (
                "inject-exit-after-commit",
                "off",
                !d.inject_exit_after_commit,
            ),
            ("jwt-key", "off", d.jwt.is_none()),
        ];
        let without_default = [
            "config",
            "publish-token",
            "read-token",
            "admin-token",
            "retention",
            "jwks-file",
            "jwt-issuer",
            "jwt-audience",
            "jwt-cookie",
            "jwt-denylist",
            "tls-cert",
            "tls-key",
            "cors-origin",
            "trusted-proxy",
            "help",
            "version",
        ];
        let help = Args::try_parse_from(["streamgauge-server", "--help"])
            .unwrap_err()
            .to_string();
        let mut in_words = 0;
        for (flag, text) in help_by_flag(&help) {
            let shown: Vec<&str> = text
                .split("[default: ")
                .skip(1)
                .map(|rest| rest.split_once(']').expect("a closing `]`").0)
                .collect();
            let &[shown] = shown.as_slice() else {
                assert!(
                    shown.is_empty() && without_default.contains(&flag),
                    "--{flag} shows {shown:?}"
                );
                continue;
            };
            if let Some((_, words, holds)) = said_in_words.iter().find(|(f, ..)| *f == flag) {
                assert_eq!(shown, *words, "--{flag}");
                assert!(holds, "--{flag}: the default is not {shown:?}");
                in_words += 1;
            } else {
                let given = args(&[&format!("--{flag}"), shown]).load().unwrap();
                assert_eq!(given, d, "--{flag} {shown} is not the default");
            }
        }
        assert_eq!(in_words, said_in_words.len(), "{help}");
    }

    /// `--help` cut into each flag's long name and the text under it. A
    /// flag's own line is indented less than its text and starts with `-`
    /// (`      --max-batch <N>`, `  -h, --help`).
    fn help_by_flag(help: &str) -> Vec<(&str, String)> {
        let mut flags: Vec<(&str, String)> = Vec::new();
        for line in help.lines() {
            let text = line.trim_start();
            let own_line = line.len() - text.len() < 10 && text.starts_with('-');
            match text.split_once("--") {
                Some((_, name)) if own_line => {
                    let name = name.split([' ', '<']).next().unwrap_or_default();
                    flags.push((name, String::new()));
                }
                _ => {
                    if let Some((_, under)) = flags.last_mut() {
                        under.push_str(line);
                        under.push('\n');
                    }
                }
            }
        }
        flags
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let file =
            config_file("max-batch = 8\nwrite-timeout = \"250ms\"\nlisten = \"127.0.0.1:0\"\n");
        let path = file.0.to_str().unwrap();
        let config = args(&["--config", path, "--max-batch", "4"])
            .load()
            .unwrap();
        assert_eq!(config.batch.max_events, 4);
        assert_eq!(config.write_timeout, Duration::from_millis(250));
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.queue, Config::default().queue);
    }

    #[test]
    fn a_bad_file_names_the_file_the_line_and_the_key() {
        let file = config_file("max-batch = 8\nmax-bacth = 9\n");
        let err = args(&["--config", file.0.to_str().unwrap()])
            .load()
            .unwrap_err()
            .to_string();
        let at = format!("{}:2:1: ", file.0.display());
        assert!(err.contains(&at), "{err}");
        assert!(err.contains("max-bacth"), "{err}");
    }

    #[test]
    fn a_bad_file_never_echoes_a_token() {
        for (text, line_column) in [
            ("publish-token = [\"TOPSECRET77\", 5]\n", "1:33"),
            ("max-batch = 8\npublish-token = \"TOPSECRET77\"\n", "2:17"),
            ("read-token = [\"private.*=TOPSECRET77\", [1]]\n", "1:40"),
            ("publish-token = [\"TOPSECRET77\n", "1:30"),
            ("publish-token = [TOPSECRET77]\n", "1:18"),
            ("publish-token = TOPSECRET77\n", "1:17"),
        ] {
            let file = config_file(text);
            let err = args(&["--config", file.0.to_str().unwrap()])
                .load()
                .unwrap_err()
                .to_string();
            let at = format!("{}:{line_column}: ", file.0.display());
            assert!(err.contains(&at), "{text:?}: {err}");
            assert!(
                !err.contains("TOPSECRET"),
                "{text:?}: a token leaked: {err}"
            );
        }
    }

    #[test]
    fn quoted_strings_are_hidden_and_backquoted_names_kept() {
        assert_eq!(
            hide_quoted_strings(r#"invalid type: string "a \"b\" c", expected `x`"#),
            "invalid type: string \"…\", expected `x`"
        );
        assert_eq!(
            hide_quoted_strings("unterminated \"abc"),
            "unterminated \"…\""
        );
        assert_eq!(line_column("ab\ncdé\nf", 8), (3, 1));
        assert_eq!(line_column("ab\ncdé\nf", 5), (2, 3));
    }

    #[test]
    fn a_missing_file_says_which() {
        let err = args(&["--config", "/nonexistent/streamgauge.toml"])
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/streamgauge.toml"));
    }

    #[test]
    fn out_of_range_settings_are_named() {
        let err = args(&["--max-batch", "0"]).load().unwrap_err().to_string();
        assert_eq!(err, "invalid `max-batch`: must be at least 1");
        let err = args(&["--write-timeout", "0s"])
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid `write-timeout`"), "{err}");
        let err = args(&["--pong-timeout", "10s", "--keepalive-interval", "15s"])
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid `pong-timeout`"), "{err}");
        let err = args(&["--log", "not a [filter"])
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid `log`"), "{err}");
        // Found by the heap test: tungstenite panicked on a write buffer
        // as large as its maximum.
        let err = args(&["--max-batch-bytes", &usize::MAX.to_string()])
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid `max-batch-bytes`: must be at most"),
            "{err}"
        );
    }

    #[test]
    fn replays_default_to_three_quarters_of_the_pool_and_must_leave_some_of_it() {
        assert_eq!(Config::default().max_replays, 12);
        let config = args(&["--database-connections", "40"]).load().unwrap();
        assert_eq!(config.max_replays, 30);
        for connections in 2u32..=3 {
            let config = args(&["--database-connections", &connections.to_string()])
                .load()
                .unwrap();
            assert_eq!(config.max_replays, connections as usize - 1);
        }
        let config = args(&["--max-replays", "15"]).load().unwrap();
        assert_eq!(config.max_replays, 15);
        let err = args(&["--max-replays", "16"])
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid `max-replays`: 16 must be below --database-connections (16)"),
            "{err}"
        );
        let err = args(&["--database-connections", "1"])
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid `max-replays`: 1 must be below"),
            "{err}"
        );
        let err = args(&["--max-replays", "0"])
            .load()
            .unwrap_err()
            .to_string();
        assert_eq!(err, "invalid `max-replays`: must be at least 1");
    }

    #[test]
    fn topic_operations_parse_and_bad_ones_are_named() {
        let config = args(&[
            "--retention",
            "audit.*=events:0,age:365d",
            "--retention",
            "chat.*=events:10",
            "--admin-token",
            "ops-alice=s3cret",
            "--max-topics",
            "50",
            "--topic-idle-expiry",
            "0s",
        ])
        .load()
        .unwrap();
        assert_eq!(config.retention_rules.len(), 2);
        assert_eq!(config.admin_tokens.len(), 1);
        assert_eq!((config.max_topics, config.topic_idle_expiry), (50, None));
        assert_eq!(
            Config::default().topic_idle_expiry,
            Some(Duration::from_secs(7 * 86_400))
        );
        for (flags, says) in [
            (
                &["--retention", "audit"][..],
                "invalid `retention`: \"audit\" is not PATTERN=",
            ),
            (
                &["--admin-token", "s3cret"],
                "invalid `admin-token`: expected LABEL=TOKEN",
            ),
            (
                &["--max-topics", "0"],
                "invalid `max-topics`: must be at least 1",
            ),
            (
                &["--topic-idle-expiry", "15s"],
                "invalid `topic-idle-expiry`: must be at least twice --retention-interval",
            ),
        ] {
            let err = args(flags).load().unwrap_err().to_string();
            assert!(err.starts_with(says), "{flags:?}: {err}");
            assert!(!err.contains("s3cret"), "a token leaked: {err}");
        }
    }

    #[test]
    fn trade_limits_are_positive_and_the_default_limit_within_the_maximum() {
        let config = args(&["--trades-limit", "50", "--max-trades-limit", "50"])
            .load()
            .unwrap();
        assert_eq!(
            (config.trades.default_limit, config.trades.max_limit),
            (50, 50)
        );
        let err = args(&["--trades-limit", "200001", "--max-trades-limit", "200000"])
            .load()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid `trades-limit`: 200001 must be at most --max-trades-limit (200000)"
        );
        for flag in [
            "--trades-limit",
            "--max-trades-limit",
            "--max-seed",
            "--seed-chunk",
        ] {
            let err = args(&[flag, "0"]).load().unwrap_err().to_string();
            assert_eq!(err, format!("invalid `{}`: must be at least 1", &flag[2..]));
        }
    }

    #[test]
    fn tokens_rules_and_policies_parse_from_flags_and_files() {
        let file = config_file(
            "publish-token = [\"f1\"]\nread-token = [\"private.*=r1\"]\noverflow = \"disconnect\"\n",
        );
        let config = args(&["--config", file.0.to_str().unwrap()])
            .load()
            .unwrap();
        assert_eq!(config.publish_tokens, vec!["f1".parse().unwrap()]);
        assert_eq!(config.read_rules, vec!["private.*=r1".parse().unwrap()]);
        assert_eq!(config.overflow, OverflowPolicy::Disconnect);

        let one = args(&["--publish-token", "ab,cd"]).load().unwrap();
        assert_eq!(
            one.publish_tokens,
            vec!["ab,cd".parse().unwrap()],
            "a flag's value is one token"
        );
        let err = args(&["--read-token", "no-pattern-s3cret"])
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid `read-token`") && !err.contains("s3cret"),
            "{err}"
        );

        let config = args(&[
            "--publish-token",
            "a",
            "--publish-token",
            "b",
            "--sqlite-durability",
            "normal",
        ])
        .load()
        .unwrap();
        assert_eq!(config.publish_tokens.len(), 2);
        assert_eq!(config.store.sqlite_durability, SqliteDurability::Normal);
        assert!(
            !format!("{config:?}").contains("\"a\""),
            "tokens must not print"
        );
    }

    #[test]
    fn the_cluster_poll_is_on_by_default_and_zero_turns_it_off() {
        assert_eq!(Config::default().cluster_poll, Some(Duration::from_secs(1)));
        let config = args(&["--cluster-poll", "250ms"]).load().unwrap();
        assert_eq!(config.cluster_poll, Some(Duration::from_millis(250)));
        let config = args(&["--cluster-poll", "0s"]).load().unwrap();
        assert_eq!(config.cluster_poll, None);
    }

    #[test]
    fn the_idempotency_window_is_a_day_by_default_set_by_flag_or_file_and_never_zero() {
        assert_eq!(
            Config::default().idempotency_window,
            Duration::from_secs(24 * 3600)
        );
        let config = args(&["--idempotency-window", "90m"]).load().unwrap();
        assert_eq!(config.idempotency_window, Duration::from_secs(90 * 60));
        let file = config_file("idempotency-window = \"2h\"\n");
        let config = args(&["--config", file.0.to_str().unwrap()])
            .load()
            .unwrap();
        assert_eq!(config.idempotency_window, Duration::from_secs(2 * 3600));
        let err = args(&["--idempotency-window", "0s"])
            .load()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid `idempotency-window`: must be longer than zero"
        );
    }

    #[test]
    fn the_exit_after_commit_fault_is_off_unless_asked_for() {
        assert!(!Config::default().inject_exit_after_commit);
        for (flags, on) in [
            (&["--inject-exit-after-commit"][..], true),
            (&["--inject-exit-after-commit", "false"], false),
        ] {
            assert_eq!(args(flags).load().unwrap().inject_exit_after_commit, on);
        }
    }

    #[test]
    fn the_pacer_stall_is_every_colon_duration_and_named_when_wrong() {
        let stall = args(&["--inject-pacer-stall", "100:250ms"])
            .load()
            .unwrap()
            .inject_pacer_stall;
        assert_eq!(
            stall,
            Some(Stall {
                every: 100,
                duration: Duration::from_millis(250)
            })
        );
        let err = args(&["--inject-pacer-stall", "250ms"])
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid `inject-pacer-stall`"), "{err}");
    }

    #[test]
    fn an_unsupported_database_is_named() {
        let err = args(&["--database", "mysql://u:pw@h/db"])
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid `database`"), "{err}");
        assert!(!err.contains("pw"), "the password leaked: {err}");
    }

    #[test]
    fn unparsable_flags_are_refused_by_clap() {
        let err =
            Args::try_parse_from(["streamgauge-server", "--pong-timeout", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--pong-timeout"));
    }
}
