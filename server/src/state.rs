//! The state shared by every handler: configuration, metrics, the live
//! connections, the store, the hub, the publisher, the cluster node, the
//! access rules and the shutdown handle. Cheap to clone (`Arc` fields and
//! handles).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinHandle;

use crate::admission::{Admission, OverCapacity};
use crate::auth::{Auth, denylist};
use crate::cluster::{self, Node};
use crate::config::Config;
use crate::connections::{BatchCounts, Connections};
use crate::error::ApiError;
use crate::health::Health;
use crate::hub::Hub;
use crate::metrics::{DatasetBound, Metrics, SlowConsumerAction, TransportKind};
use crate::protocol::Name;
use crate::publish::{self, Publisher};
use crate::pulse::Pulse;
use crate::session::{Session, Settings};
use crate::shutdown::Shutdown;
use crate::source::replay::Replay;
use crate::source::topic::{OverflowPolicy, Topic, TopicContext};
use crate::store::{self, Backend, Store};

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The open streams and the connection limit.
    pub connections: Arc<Connections>,
    /// The replay limit: a replay holds a database connection for its
    /// whole stream, so only so many may run at once.
    pub replays: Admission,
    /// Topic events and the replay dataset.
    pub store: Store,
    /// Live topic subscribers.
    pub hub: Arc<Hub>,
    /// Hands publishes to the single writer.
    pub publisher: Publisher,
    /// The database's health, as the last probe or commit saw it.
    pub health: Arc<Health>,
    /// This server as a node of a cluster (PostgreSQL); `None` on SQLite.
    pub cluster: Option<Arc<Node>>,
    /// Who may publish and read.
    pub auth: Arc<Auth>,
    /// The shutdown handle every stream watches.
    pub shutdown: Shutdown,
    /// The session settings of each transport's streams, indexed by
    /// [`TransportKind`] (in [`TransportKind::ALL`] order).
    sessions: [Arc<Settings>; 2],
    /// What every topic subscription shares.
    topics: Arc<TopicContext>,
}

impl AppState {
    /// State for a server running with `config` over `store` until
    /// `shutdown`; also starts the publish writer, which ends once every
    /// clone of this state is dropped (await the handle to know), and on
    /// PostgreSQL the cluster node's tasks (named after `config.listen`),
    /// which end with the shutdown.
    pub fn start(config: Config, store: Store, shutdown: Shutdown) -> (Self, JoinHandle<()>) {
        let metrics = Arc::new(Metrics::new());
        let (store, hub, cluster) = match store.backend() {
            Backend::Sqlite => (store, Arc::new(Hub::new()), None),
            Backend::Postgres => {
                let name = cluster::node_name(config.listen);
                let store = store.with_origin(&name);
                let (reads, requests) = mpsc::unbounded_channel();
                let hub = Arc::new(Hub::clustered(reads));
                let node = cluster::start(cluster::Parts {
                    store: store.clone(),
                    hub: Arc::clone(&hub),
                    reads: requests,
                    metrics: metrics.cluster().clone(),
                    poll: config.cluster_poll,
                    name,
                    shutdown: shutdown.clone(),
                });
                (store, hub, node)
            }
        };
        let health = Arc::new(Health::new(
            metrics.database_up(),
            metrics.topics().publish_failures("database_down"),
        ));
        tokio::spawn(crate::health::probe(
            store.clone(),
            Arc::clone(&health),
            shutdown.token().clone(),
        ));
        let (publisher, writer) = Publisher::start(
            store.clone(),
            Arc::clone(&hub),
            Arc::clone(&health),
            metrics.topics().clone(),
            publish::Options {
                capacity: config.publish_queue,
                max_body: config.max_publish_bytes,
                key_window: config.idempotency_window,
                max_topics: config.max_topics,
                exit_after_commit: config.inject_exit_after_commit,
            },
        );
        let admission = Admission::new(config.max_connections);
        // One keep-alive tick for every stream of the server.
        let pulse = Pulse::start(config.keepalive_interval, shutdown.token().clone());
        let sessions = TransportKind::ALL.map(|kind| {
            Arc::new(Settings {
                pulse: pulse.clone(),
                metrics: metrics.transport(kind).clone(),
                inject_delay: config.inject_delay,
            })
        });
        let topics = Arc::new(TopicContext {
            store: store.clone(),
            hub: Arc::clone(&hub),
            metrics: metrics.topics().clone(),
            catch_ups: metrics.slow_consumers(SlowConsumerAction::CatchUp),
        });
        let state = Self {
            connections: Arc::new(Connections::new(admission, Arc::clone(&metrics))),
            replays: Admission::counting(config.max_replays, "replays"),
            auth: Arc::new(
                Auth::new(
                    &config.publish_tokens,
                    &config.read_rules,
                    config.jwt.clone(),
                    match &config.jwt_denylist {
                        Some(file) => denylist::watch_file(file.clone(), shutdown.token().clone()),
                        None => denylist::fixed(denylist::Denylist::default()),
                    },
                )
                .with_admin(&config.admin_tokens),
            ),
            config: Arc::new(config),
            metrics,
            store,
            hub,
            publisher,
            health,
            cluster,
            shutdown,
            sessions,
            topics,
        };
        (state, writer)
    }

    /// The session of a new stream on `transport`, counting its batches in
    /// `batches`.
    pub fn session(&self, transport: TransportKind, batches: Arc<BatchCounts>) -> Session {
        if let Some(bytes) = self.config.inject_leak {
            crate::heap::leak(bytes);
        }
        Session {
            settings: Arc::clone(&self.sessions[transport as usize]),
            batches,
            lease: None,
        }
    }

    /// A subscription to `topic`.
    pub fn topic_source(&self, topic: Name, since: u64, policy: OverflowPolicy) -> Topic {
        Topic {
            name: topic,
            since,
            policy,
            context: Arc::clone(&self.topics),
        }
    }

    /// A replay of `wallet`'s trades after `after`, at `rate` per second,
    /// holding one of the replay limit's permits for its whole life.
    ///
    /// # Errors
    ///
    /// [`OverCapacity`] when `--max-replays` replays are running.
    pub fn replay_source(
        &self,
        wallet: Name,
        after: u64,
        rate: u64,
    ) -> Result<Replay, OverCapacity> {
        Ok(Replay {
            wallet,
            after,
            rate,
            store: self.store.clone(),
            rows_read: self.metrics.topics().replay_rows.clone(),
            permit: self.replay_permit()?,
        })
    }

    /// One of the replay limit's permits, for a replay or another read of
    /// the dataset that holds a database connection meanwhile.
    ///
    /// # Errors
    ///
    /// [`OverCapacity`] (counted) when `--max-replays` are held.
    pub fn replay_permit(&self) -> Result<OwnedSemaphorePermit, OverCapacity> {
        self.replays
            .try_admit()
            .inspect_err(|_| self.metrics.datasets().refused(DatasetBound::MaxReplays))
    }

    /// A request shed at `limit`: a retryable 503.
    pub fn over_capacity(&self, limit: OverCapacity) -> ApiError {
        ApiError::OverCapacity {
            limit,
            retry_after: self.config.retry_after,
        }
    }

    /// Logs a store failure and turns it into a retryable 503.
    pub fn storage_error(&self, error: &store::Error) -> ApiError {
        tracing::error!(%error, "store failure");
        ApiError::Unavailable {
            reason: "storage unavailable".to_owned(),
            retry_after: self.config.retry_after,
        }
    }
}
