//! The streamgauge reference streaming server: Server-Sent Events and
//! WebSocket streams with backpressure-aware batching.
//!
//! Data flows one way, and each step is one module:
//!
//! ```text
//! source ──▶ per-connection queue ──▶ batching writer ──▶ transport (SSE | WebSocket)
//! ```
//!
//! A slow reader stops the transport, the writer stops draining, the
//! bounded queue fills and a pausable source waits: memory per connection is
//! bounded by configuration, and batches grow instead. The wire contract is
//! `docs/protocol.md`; the command line is `docs/cli.md`; the modules below
//! are described step by step in `docs/architecture.md`.
//!
//! # Layout
//!
//! - [`cli`]: the program (the binary's `main`): parse [`config`], set up
//!   tracing, bind, open the store, print `listening on …`, call [`run`].
//! - [`config`]: flags, environment and TOML file into a validated [`Config`].
//! - [`app`]: the router; [`http`]: handlers by endpoint group; [`error`]:
//!   the JSON error of the HTTP edge; [`state`]: what handlers share.
//! - [`source`]: event producers ([`source::ticker`], [`source::tokens`],
//!   [`source::topic`], [`source::replay`]).
//! - [`store`]: topic events and the replay dataset in SQLite or
//!   PostgreSQL; [`retention`] trims it. [`publish`]: the single writer that
//!   group-commits publishes ([`idempotency`]: the key a publish may carry,
//!   so that a retry is not stored twice); [`hub`]: fan-out to live subscribers, each
//!   topic's events put in order by its [`sequence`]; [`cluster`]: several
//!   servers on one PostgreSQL database (each commit notifies the others,
//!   which listen, and read from the store what they missed); [`auth`]:
//!   bearer tokens.
//! - [`queue`]: the bounded per-connection queue, where backpressure lives.
//! - [`writer`]: the batching writer; [`protocol`]: the event envelope and
//!   its framing.
//! - [`transport`]: SSE and WebSocket delivery, keep-alive, close codes;
//!   [`session`]: one stream's loop; [`pulse`]: the keep-alive tick and
//!   the shutdown every stream shares; [`disconnect`]: why a stream ended.
//! - [`admission`] and [`connections`]: the connection limit and the live
//!   streams; [`listener`]: accepted sockets with a write deadline, each
//!   address under its limit ([`peers`]); [`serve`]: the accept loop and
//!   each connection's first steps (a trusted proxy's client,
//!   [`proxy`]; TLS, [`tls`]), handing SSE streams to [`direct`]
//!   (HTTP/1.1 without hyper's buffers) and the rest to hyper ([`conn`]:
//!   HTTP/1.1 and HTTP/2, each phase bounded, [`phase`]); [`scope`]: what a
//!   request holds from its connection; [`cors`]: CORS.
//! - [`shutdown`]: graceful shutdown; [`health`]: the database's health;
//!   [`logging`]: log lines and the access log; [`metrics`]: everything
//!   `/metrics` exposes; [`trim`]: the memory a burst of connections freed,
//!   handed back to the system once it has ended.
//! - `fuzzing` (feature `fuzzing`): the untrusted-input parsers, opened to
//!   the fuzz targets in `fuzz/`.

pub mod admission;
pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod connections;
pub mod cors;
pub mod direct;
pub mod disconnect;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod glob;
pub mod health;
pub mod heap;
pub mod http;
pub mod hub;
pub mod idempotency;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod peers;
pub mod phase;
pub mod process;
pub mod protocol;
pub mod proxy;
pub mod publish;
pub mod pulse;
pub mod queue;
pub mod retention;
pub mod scope;
pub mod sequence;
pub mod serve;
pub mod session;
pub mod shutdown;
pub mod source;
pub mod state;
pub mod store;
pub mod tls;
pub mod topic_limit;
pub mod transport;
pub mod trim;
pub mod writer;

use std::sync::Arc;

use tokio::net::TcpListener;

pub use crate::config::Config;
use crate::metrics::SlowConsumerAction;
pub use crate::shutdown::Shutdown;
use crate::state::AppState;
pub use crate::store::Store;
pub use crate::tls::Tls;

/// The least time given to close the store at shutdown.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Serves on `listener` with `config` over `store` (opened and migrated),
/// over TLS with `tls` when given (loaded from `config.tls`), until
/// `shutdown` is triggered, then drains: stops accepting, ends every
/// stream cleanly (SSE end of body, WebSocket close 1001), commits the
/// publishes already accepted, and closes the store, all within the
/// configured deadline. A drain that overruns its deadline is logged: the
/// streams left are abandoned. On PostgreSQL the server is a cluster node,
/// named after the address it listens on.
pub async fn run(
    listener: TcpListener,
    mut config: Config,
    store: Store,
    tls: Option<Tls>,
    shutdown: Shutdown,
) {
    if let Ok(addr) = listener.local_addr() {
        config.listen = addr;
    }
    let deadline = config.shutdown_timeout;
    let (state, writer) = AppState::start(config, store.clone(), shutdown.clone());
    if state.auth.publishing_is_open() {
        tracing::warn!(
            "no --publish-token configured: anyone who can reach this server may publish"
        );
    }
    let keys = retention::KeyExpiry {
        window: state.config.idempotency_window,
        expired: state.metrics.topics().keys_expired.clone(),
    };
    tokio::spawn(shutdown.track(retention::run(
        retention::Retainer {
            store: store.clone(),
            hub: Arc::clone(&state.hub),
            policy: retention::RetentionPolicy {
                rules: state.config.retention_rules.clone(),
                default: state.config.retention,
            },
            idle_expiry: state.config.topic_idle_expiry,
            deleted: state.metrics.topics().retention_deleted.clone(),
            expired: state.metrics.topics().topics_expired.clone(),
            keys,
        },
        state.config.retention_interval,
        shutdown.token().clone(),
    )));
    let config = Arc::clone(&state.config);
    let metrics = Arc::clone(&state.metrics);
    if config.malloc_trim {
        tokio::spawn(trim::run(
            metrics.connections().clone(),
            metrics.memory_trims(),
            shutdown.token().clone(),
        ));
    }
    if let Some(tls) = &tls {
        let reloads = tls.clone().serve_reloads(metrics.connections().clone());
        tokio::spawn(shutdown.token().clone().run_until_cancelled_owned(reloads));
    }
    let shared = Arc::new(scope::Shared {
        peers: peers::Peers::new(config.max_connections_per_peer),
        trusted: proxy::Trusted::new(config.trusted_proxies.clone()),
        access_log: config.access_log,
        metrics: metrics.connections().clone(),
    });
    let listener = listener::Listener::new(
        listener,
        config.write_timeout,
        Arc::clone(&shared.peers),
        shared.trusted.clone(),
        metrics.slow_consumers(SlowConsumerAction::WriteTimeout),
        metrics.connections().refused_peers(),
    );
    // The accept loop returns once the shutdown has started and every
    // connection it accepted has closed; returning drops the router and its
    // state.
    let serving = tokio::spawn(serve::serve(
        listener,
        Arc::new(serve::Serving {
            router: app::router(state),
            token: shutdown.token().clone(),
            http: conn::Http::new(&config),
            tls,
            proxy_protocol: config.proxy_protocol,
            header_timeout: config.header_timeout,
            shared,
        }),
    ));
    shutdown.token().cancelled().await;
    tracing::info!("shutting down: draining open streams");
    let started = tokio::time::Instant::now();
    let drain = async {
        // The tracked tasks hold the last publishers: once they are done,
        // the writer commits what was queued and ends.
        if serving.await.is_err() {
            tracing::error!("the accept loop panicked");
        }
        shutdown.tracked_tasks_done().await;
        if writer.await.is_err() {
            tracing::error!("the publish writer panicked");
        }
    };
    if tokio::time::timeout(deadline, drain).await.is_err() {
        tracing::warn!(
            ?deadline,
            "shutdown deadline passed; abandoning the streams still open"
        );
    }
    // Closing waits for connections in use: bounded by what is left of the
    // deadline (at least a moment, so idle connections close cleanly).
    let left = deadline.saturating_sub(started.elapsed()).max(CLOSE_GRACE);
    if tokio::time::timeout(left, store.close()).await.is_err() {
        tracing::warn!("the database did not close in time; leaving it");
    }
    tracing::info!("shut down");
}
