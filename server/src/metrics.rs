//! Every metric the server exposes on `/metrics`, defined in one place.
//!
//! Hot paths update plain atomics once per batch (never per event); queue
//! depths are read from the live connections when `/metrics` is scraped, so
//! the producers pay nothing for them. The exposition is the Prometheus
//! text format 0.0.4, or OpenMetrics 1.0.0 text for a scraper that asks for
//! it ([`Exposition`]).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::cluster::ListenerState;
use crate::disconnect::Disconnect;
use crate::process::ProcessCollector;
use crate::queue::Depth;
use crate::sequence::Cause;

/// The transport a stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// Server-Sent Events.
    Sse,
    /// WebSocket.
    Ws,
}

impl TransportKind {
    /// Both transports, in label order.
    pub const ALL: [TransportKind; 2] = [TransportKind::Sse, TransportKind::Ws];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            TransportKind::Sse => "sse",
            TransportKind::Ws => "ws",
        }
    }
}

impl EncodeLabelValue for TransportKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.label())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabels {
    transport: TransportKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DisconnectLabels {
    transport: TransportKind,
    reason: Disconnect,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabels {
    action: SlowConsumerAction,
}

/// What the server did about a consumer that could not keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlowConsumerAction {
    /// It fell behind a topic whose overflow policy is `disconnect`, and
    /// was disconnected.
    Disconnect,
    /// It fell behind a topic and switched to catch-up reads from the store
    /// (the overflow policy `catch-up`).
    CatchUp,
    /// Its connection, of any stream, was dropped because a write made no
    /// progress for the write timeout (the peer stopped reading).
    WriteTimeout,
}

impl EncodeLabelValue for SlowConsumerAction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            SlowConsumerAction::Disconnect => "disconnect",
            SlowConsumerAction::CatchUp => "catch_up",
            SlowConsumerAction::WriteTimeout => "write_timeout",
        })
    }
}

/// A short reason label (`busy`, `storage`, `retention`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Why a publish's idempotency key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRefusal {
    /// The key was used within the window for another body (`422`).
    Mismatch,
    /// The key breaks the key rule (`400`).
    Invalid,
}

impl KeyRefusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            KeyRefusal::Mismatch => "mismatch",
            KeyRefusal::Invalid => "invalid",
        }
    }
}

/// The metrics of topic publishing and subscribing.
#[derive(Debug, Clone, Default)]
pub struct TopicMetrics {
    /// Events committed and fanned out.
    pub published: Counter,
    /// Publishes answered with the `seq` their idempotency key was stored
    /// under, storing nothing.
    pub publish_replayed: Counter,
    /// Idempotency keys deleted past the window.
    pub keys_expired: Counter,
    /// Events per group commit.
    pub commit_events: BatchHistogram,
    /// Notifications sent to the other nodes of a cluster (PostgreSQL):
    /// one per commit, not per event.
    pub notifications_sent: Counter,
    /// Events deleted by retention.
    pub retention_deleted: Counter,
    /// Topics removed as idle.
    pub topics_expired: Counter,
    /// Topics deleted through the admin API.
    pub topics_deleted: Counter,
    /// Trade rows read from the store by replay streams.
    pub replay_rows: Counter,
    publish_failures: Family<ReasonLabels, Counter>,
    key_refusals: Family<ReasonLabels, Counter>,
    gaps: Family<ReasonLabels, Counter>,
}

impl TopicMetrics {
    /// Counts `n` publishes refused for `reason` (`busy`, `storage`).
    pub fn publish_failed(&self, reason: &'static str, n: u64) {
        self.publish_failures
            .get_or_create(&ReasonLabels { reason })
            .inc_by(n);
    }

    /// The counter of publishes refused for `reason`.
    pub fn publish_failures(&self, reason: &'static str) -> Counter {
        self.publish_failures
            .get_or_create_owned(&ReasonLabels { reason })
    }

    /// The counter of publishes whose idempotency key was refused for
    /// `why`.
    pub fn key_refusals(&self, why: KeyRefusal) -> Counter {
        self.key_refusals.get_or_create_owned(&ReasonLabels {
            reason: why.label(),
        })
    }

    /// Counts a gap notice sent for `reason`.
    pub fn gap_sent(&self, reason: &'static str) {
        self.gaps.get_or_create(&ReasonLabels { reason }).inc();
    }
}

/// Why a cluster node resynced (`gap`, `reconnect`, `poll`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

/// Where remote events' bodies came from (`notification`, `store`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ViaLabels {
    via: &'static str,
}

/// A cluster listener's state (`listener_down`, `resyncing`, `up`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// The metrics of a cluster node (PostgreSQL); they stay at zero on
/// SQLite, which runs no listener.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetrics {
    /// Notifications received by the listener (this node's own commits'
    /// included).
    pub notifications_received: Counter,
    /// Pages read from the store by the relay, for any reason.
    pub store_reads: Counter,
    resyncs: Family<CauseLabels, Counter>,
    remote_events: Family<ViaLabels, Counter>,
    listener_state: Family<StateLabels, Gauge>,
}

impl ClusterMetrics {
    /// Counts a topic re-read from the store because of `cause`.
    pub fn resynced(&self, cause: Cause) {
        self.resyncs
            .get_or_create(&CauseLabels {
                cause: cause.label(),
            })
            .inc();
    }

    /// Counts `n` events other nodes committed, announced to this node
    /// with their bodies (`via` `notification`) or without (`store`: read
    /// back).
    pub fn remote_events(&self, via: &'static str, n: u64) {
        if n > 0 {
            self.remote_events
                .get_or_create(&ViaLabels { via })
                .inc_by(n);
        }
    }

    /// Sets the listener's state: 1 for `state`, 0 for the others.
    pub fn set_listener_state(&self, state: ListenerState) {
        for each in ListenerState::ALL {
            self.listener_state
                .get_or_create(&StateLabels {
                    state: each.label(),
                })
                .set(i64::from(each == state));
        }
    }
}

/// Why the server closed an HTTP connection, or cut a request, at one of
/// the bounds of a connection's phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// A request head (the first: TLS handshake and PROXY header
    /// included) did not arrive in time.
    HeaderTimeout,
    /// A connection stayed with no request in flight too long.
    KeepaliveTimeout,
    /// A request body did not arrive whole in time (answered 408).
    BodyTimeout,
    /// An HTTP/2 peer did not answer a ping in time.
    PingTimeout,
    /// An HTTP/2 connection opened streams faster than allowed.
    StreamRate,
    /// The client's address was at its connection limit (429).
    PeerLimit,
    /// The TLS handshake failed.
    TlsHandshake,
    /// A trusted proxy's PROXY protocol header was malformed.
    ProxyHeader,
}

impl CloseReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::KeepaliveTimeout => "keepalive_timeout",
            CloseReason::BodyTimeout => "body_timeout",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::StreamRate => "stream_rate",
            CloseReason::PeerLimit => "peer_limit",
            CloseReason::TlsHandshake => "tls_handshake",
            CloseReason::ProxyHeader => "proxy_header",
        }
    }
}

/// The HTTP version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 (and 1.0).
    Http1,
    /// HTTP/2, over TLS (ALPN `h2`) or with prior knowledge (h2c).
    Http2,
}

impl Protocol {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "h2",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

/// The metrics of HTTP connections: how many are open by protocol, which
/// were closed at a bound of their phases, and TLS reloads.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    open: Family<ProtocolLabels, Gauge>,
    closes: Family<ReasonLabels, Counter>,
    tls_reloads: Family<ResultLabels, Counter>,
    refusals: Family<StatusLabels, Counter>,
    watermark: Arc<Watermark>,
}

/// HTTP connections open now, every protocol, and the most open at once
/// since [`ConnectionMetrics::open_and_peak`] was last called: two relaxed
/// atomics a connection, none a request or an event.
#[derive(Debug, Default)]
struct Watermark {
    open: AtomicU64,
    peak: AtomicU64,
}

/// One open HTTP connection in the `http_connections_open` gauge, until
/// dropped.
#[derive(Debug)]
pub struct OpenConnection {
    gauge: Gauge,
    watermark: Arc<Watermark>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
        self.watermark.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionMetrics {
    /// Counts a request the router answered with a client or server error
    /// `status`.
    pub fn refused(&self, status: u16) {
        self.refusals.get_or_create(&StatusLabels { status }).inc();
    }

    /// Counts a connection closed (or a request cut) for `reason`.
    pub fn closed(&self, reason: CloseReason) {
        self.closes
            .get_or_create(&ReasonLabels {
                reason: reason.label(),
            })
            .inc();
    }

    /// Counts a connection open on `protocol` until the guard is dropped.
    pub fn open(&self, protocol: Protocol) -> OpenConnection {
        let gauge = self.open.get_or_create_owned(&ProtocolLabels {
            protocol: protocol.label(),
        });
        gauge.inc();
        let open = self.watermark.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.watermark.peak.fetch_max(open, Ordering::Relaxed);
        OpenConnection {
            gauge,
            watermark: Arc::clone(&self.watermark),
        }
    }

    /// HTTP connections open now (every protocol), and the most open at
    /// once since the last call: a burst that came and went between two
    /// calls is seen.
    pub fn open_and_peak(&self) -> (u64, u64) {
        let open = self.watermark.open.load(Ordering::Relaxed);
        let peak = self.watermark.peak.swap(open, Ordering::Relaxed);
        (open, peak.max(open))
    }

    /// The counter of connections refused at their address's limit.
    pub fn refused_peers(&self) -> Counter {
        self.closes.get_or_create_owned(&ReasonLabels {
            reason: CloseReason::PeerLimit.label(),
        })
    }

    /// Counts a TLS reload, `ok` or `failed`.
    pub fn tls_reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}

/// The metrics of access control: refusals by reason, JWTs accepted, and
/// live refreshes. Subjects are logged, never labels: they are unbounded.
#[derive(Debug, Clone, Default)]
pub struct AuthMetrics {
    refusals: Family<ReasonLabels, Counter>,
    jwt_accepted: Counter,
    refreshes: Family<ResultLabels, Counter>,
}

impl AuthMetrics {
    /// Counts a request refused for `reason`.
    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a request let in by a JWT.
    pub fn jwt_accepted(&self) {
        self.jwt_accepted.inc();
    }

    /// Counts a refresh on a live WebSocket, `accepted` or `refused`.
    pub fn refreshed(&self, accepted: bool) {
        let result = if accepted { "accepted" } else { "refused" };
        self.refreshes.get_or_create(&ResultLabels { result }).inc();
    }
}

/// A bound of the dataset endpoints that refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetBound {
    /// `--max-replays`: a replay stream or `GET /api/trades` found every
    /// replay permit taken (503, WebSocket 1013).
    MaxReplays,
    /// `GET /api/trades` on a wallet holding more trades than its `limit`
    /// (413).
    TradesLimit,
    /// A seed asking for more than `--max-seed` trades (400).
    MaxSeed,
}

impl EncodeLabelValue for DatasetBound {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            DatasetBound::MaxReplays => "max_replays",
            DatasetBound::TradesLimit => "trades_limit",
            DatasetBound::MaxSeed => "max_seed",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BoundLabels {
    reason: DatasetBound,
}

/// The metrics of the trades dataset: trades seeded, and requests its
/// bounds refused.
#[derive(Debug, Clone, Default)]
pub struct DatasetMetrics {
    /// Trades added by seeds, counted as each chunk commits.
    pub seeded: Counter,
    refusals: Family<BoundLabels, Counter>,
}

impl DatasetMetrics {
    /// Counts a request refused at `bound`.
    pub fn refused(&self, bound: DatasetBound) {
        self.refusals
            .get_or_create(&BoundLabels { reason: bound })
            .inc();
    }
}

/// Upper bounds of the batch-size histogram: powers of two up to 1024.
const BATCH_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A histogram of batch sizes (events per flush) with power-of-two buckets.
///
/// Hand-written because prometheus-client's `Histogram` takes a mutex shared
/// by every connection on each observation; this one is a few relaxed
/// atomic adds, once per batch.
#[derive(Debug, Clone, Default)]
pub struct BatchHistogram(Arc<BatchHistogramInner>);

#[derive(Debug, Default)]
struct BatchHistogramInner {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [AtomicU64; BATCH_BUCKETS.len() + 1],
    sum: AtomicU64,
    count: AtomicU64,
}

impl BatchHistogram {
    /// Records one batch of `events` events.
    pub fn observe(&self, events: u64) {
        let bucket = BATCH_BUCKETS.partition_point(|&bound| bound < events);
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.0.sum.fetch_add(events, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
    }
}

impl TypedMetric for BatchHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for BatchHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> std::fmt::Result {
        let buckets: Vec<(f64, u64)> = BATCH_BUCKETS
            .iter()
            .map(|&b| b as f64)
            .chain([f64::INFINITY])
            .zip(&self.0.buckets)
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        encoder.encode_histogram::<NoLabelSet>(
            self.0.sum.load(Ordering::Relaxed) as f64,
            self.0.count.load(Ordering::Relaxed),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The metrics of one transport, cloned into each of its streams.
#[derive(Debug, Clone)]
pub struct TransportMetrics {
    /// Streams open now.
    pub open: Gauge,
    /// Streams accepted since start.
    pub opened: Counter,
    /// Streams refused at the connection limit.
    pub rejected: Counter,
    /// Events written.
    pub events: Counter,
    /// Bytes written (framed).
    pub bytes: Counter,
    /// Events per batch, one observation per flush.
    pub batch_events: BatchHistogram,
    /// Keep-alives sent (SSE comments, WebSocket pings).
    pub keepalives: Counter,
}

impl TransportMetrics {
    /// Records one batch written: `events` events in `bytes` bytes.
    pub fn record_batch(&self, events: usize, bytes: usize) {
        self.events.inc_by(events as u64);
        self.bytes.inc_by(bytes as u64);
        self.batch_events.observe(events as u64);
    }
}

/// The server's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sse: TransportMetrics,
    ws: TransportMetrics,
    disconnects: Family<DisconnectLabels, Counter>,
    slow_consumers: Family<ActionLabels, Counter>,
    queue_events: Family<TransportLabels, Gauge>,
    queue_bytes: Family<TransportLabels, Gauge>,
    topics: TopicMetrics,
    cluster: ClusterMetrics,
    connections: ConnectionMetrics,
    auth: AuthMetrics,
    datasets: DatasetMetrics,
    live_subscribers: Gauge,
    database_up: Gauge,
    memory_trims: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("streamgauge");
        let open = Family::<TransportLabels, Gauge>::default();
        let opened = Family::<TransportLabels, Counter>::default();
        let rejected = Family::<TransportLabels, Counter>::default();
        let events = Family::<TransportLabels, Counter>::default();
        let bytes = Family::<TransportLabels, Counter>::default();
        let batch_events = Family::<TransportLabels, BatchHistogram>::default();
        let keepalives = Family::<TransportLabels, Counter>::default();
        let disconnects = Family::default();
        let slow_consumers = Family::default();
        let queue_events = Family::default();
        let queue_bytes = Family::default();

        registry.register("connections_open", "Streams open now", open.clone());
        registry.register("connections_opened", "Streams accepted", opened.clone());
        registry.register(
            "connections_rejected",
            "Streams refused at the connection limit (SSE 503, WebSocket close 1013)",
            rejected.clone(),
        );
        registry.register("events_sent", "Events written", events.clone());
        registry.register("bytes_sent", "Bytes written, framed", bytes.clone());
        registry.register(
            "batch_events",
            "Events per batch: one observation per flush",
            batch_events.clone(),
        );
        registry.register(
            "keepalives_sent",
            "Keep-alives sent (SSE comments, WebSocket pings)",
            keepalives.clone(),
        );
        registry.register(
            "disconnects",
            "Streams ended, by reason",
            disconnects.clone(),
        );
        registry.register(
            "slow_consumers",
            "Consumers that could not keep up, by what the server did: a topic's \
             overflow policy (catch_up, disconnect) or a write timeout (write_timeout)",
            slow_consumers.clone(),
        );
        registry.register(
            "queue_depth_events",
            "Events waiting in per-connection queues",
            queue_events.clone(),
        );
        registry.register(
            "queue_depth_bytes",
            "Bytes waiting in per-connection queues",
            queue_bytes.clone(),
        );

        let topics = TopicMetrics::default();
        let live_subscribers = Gauge::default();
        registry.register(
            "events_published",
            "Topic events committed and fanned out",
            topics.published.clone(),
        );
        registry.register(
            "publish_commit_events",
            "Topic events stored per group commit: one observation per transaction that stored \
             any (replays store none)",
            topics.commit_events.clone(),
        );
        registry.register(
            "publish_failures",
            "Publishes refused after validation, by reason: busy (the publish queue was full), \
             storage (the commit failed), database_down (refused at once while the database \
             was known to be down), max_topics (it would create a topic beyond --max-topics)",
            topics.publish_failures.clone(),
        );
        registry.register(
            "publish_replayed",
            "Publishes answered with the seq their idempotency key was first stored under, \
             storing nothing",
            topics.publish_replayed.clone(),
        );
        registry.register(
            "publish_key_refusals",
            "Publishes refused for their idempotency key, by reason: mismatch (used within the \
             window for another body: 422), invalid (not 1 to 255 visible ASCII characters: 400)",
            topics.key_refusals.clone(),
        );
        registry.register(
            "idempotency_keys_expired",
            "Idempotency keys deleted once older than --idempotency-window",
            topics.keys_expired.clone(),
        );
        registry.register(
            "gap_notices",
            "Gap notices sent, by reason",
            topics.gaps.clone(),
        );
        registry.register(
            "retention_deleted",
            "Topic events deleted by retention",
            topics.retention_deleted.clone(),
        );
        registry.register(
            "topics_expired",
            "Topics removed after --topic-idle-expiry without events, publishes or subscribers",
            topics.topics_expired.clone(),
        );
        registry.register(
            "topics_deleted",
            "Topics deleted through the admin API",
            topics.topics_deleted.clone(),
        );
        registry.register(
            "replay_rows_read",
            "Trade rows read by replay streams and GET /api/trades",
            topics.replay_rows.clone(),
        );
        let datasets = DatasetMetrics::default();
        registry.register(
            "trades_seeded",
            "Trades added by seeds, counted as each chunk (one transaction) commits",
            datasets.seeded.clone(),
        );
        registry.register(
            "dataset_refusals",
            "Dataset requests refused at a bound, by reason: max_replays (a replay or GET \
             /api/trades over --max-replays), trades_limit (GET /api/trades on a wallet over \
             its limit), max_seed (a seed over --max-seed)",
            datasets.refusals.clone(),
        );
        registry.register(
            "topic_live_subscribers",
            "Topic subscribers receiving the live tail (not catching up)",
            live_subscribers.clone(),
        );

        let cluster = ClusterMetrics::default();
        registry.register(
            "cluster_notifications_sent",
            "Notifications this node's commits sent to the other nodes (PostgreSQL): one per \
             commit, not per event",
            topics.notifications_sent.clone(),
        );
        registry.register(
            "cluster_notifications_received",
            "Notifications received by this node's listener, its own commits' included",
            cluster.notifications_received.clone(),
        );
        registry.register(
            "cluster_resyncs",
            "Topics re-read from the store because notifications were missed, by cause: gap \
             (a notification skipped seqs), reconnect (the listener reconnected), poll (the \
             safety poll found the store ahead)",
            cluster.resyncs.clone(),
        );
        registry.register(
            "cluster_store_reads",
            "Pages of events read from the store to fill holes or fetch bodies too large for a \
             notification",
            cluster.store_reads.clone(),
        );
        registry.register(
            "cluster_remote_events",
            "Events committed by other nodes that this node heard of, by where their bodies \
             came from: notification (carried inline) or store (too large to notify, read back)",
            cluster.remote_events.clone(),
        );
        registry.register(
            "cluster_listener_state",
            "1 for the state this node's listener is in (listener_down, resyncing, up), 0 for \
             the others; all 0 without a cluster (SQLite)",
            cluster.listener_state.clone(),
        );

        let connections = ConnectionMetrics::default();
        registry.register(
            "http_connections_open",
            "HTTP connections open now, by protocol (http1, h2)",
            connections.open.clone(),
        );
        registry.register(
            "http_refusals",
            "Requests the router answered with a 4xx or 5xx status, by status: every \
             refusal at a limit, of a bad request or of a credential",
            connections.refusals.clone(),
        );
        registry.register(
            "connection_closes",
            "Connections closed (or requests cut) at a bound of their phases, by reason: \
             header_timeout, keepalive_timeout, body_timeout, ping_timeout, stream_rate, \
             peer_limit, tls_handshake, proxy_header",
            connections.closes.clone(),
        );
        registry.register(
            "tls_reloads",
            "Reloads of the TLS certificate and key (SIGHUP), by result (ok, failed)",
            connections.tls_reloads.clone(),
        );

        let auth = AuthMetrics::default();
        registry.register(
            "auth_refusals",
            "Requests refused access, by reason (missing, expired, bad_signature, \
             topic_not_allowed, revoked, wrong_token, ...: docs/protocol.md)",
            auth.refusals.clone(),
        );
        registry.register(
            "jwt_accepted",
            "Requests let in by a verified JWT",
            auth.jwt_accepted.clone(),
        );
        registry.register(
            "token_refreshes",
            "Token refreshes on live WebSocket streams, by result (accepted, refused)",
            auth.refreshes.clone(),
        );

        let database_up = Gauge::default();
        registry.register(
            "database_up",
            "1 while the database answers the server's probe, 0 while it is unreachable",
            database_up.clone(),
        );

        let memory_trims = Counter::default();
        registry.register(
            "memory_trims",
            "Times the memory a burst of connections freed was handed back to the system \
             (malloc_trim, --malloc-trim)",
            memory_trims.clone(),
        );

        let for_transport = |transport| {
            let labels = TransportLabels { transport };
            TransportMetrics {
                open: open.get_or_create_owned(&labels),
                opened: opened.get_or_create_owned(&labels),
                rejected: rejected.get_or_create_owned(&labels),
                events: events.get_or_create_owned(&labels),
                bytes: bytes.get_or_create_owned(&labels),
                batch_events: batch_events.get_or_create_owned(&labels),
                keepalives: keepalives.get_or_create_owned(&labels),
            }
        };
        Self {
            sse: for_transport(TransportKind::Sse),
            ws: for_transport(TransportKind::Ws),
            registry: root,
            disconnects,
            slow_consumers,
            queue_events,
            queue_bytes,
            topics,
            cluster,
            connections,
            auth,
            datasets,
            live_subscribers,
            database_up,
            memory_trims,
        }
    }

    /// The gauge of the database's health.
    pub fn database_up(&self) -> Gauge {
        self.database_up.clone()
    }

    /// The counter of trims after bursts.
    pub fn memory_trims(&self) -> Counter {
        self.memory_trims.clone()
    }

    /// The connection metrics.
    pub fn connections(&self) -> &ConnectionMetrics {
        &self.connections
    }

    /// The metrics of access control.
    pub fn auth(&self) -> &AuthMetrics {
        &self.auth
    }

    /// The metrics of the trades dataset.
    pub fn datasets(&self) -> &DatasetMetrics {
        &self.datasets
    }

    /// The topic metrics.
    pub fn topics(&self) -> &TopicMetrics {
        &self.topics
    }

    /// The cluster metrics.
    pub fn cluster(&self) -> &ClusterMetrics {
        &self.cluster
    }

    /// Sets the live topic subscribers gauge (done at scrape time).
    pub fn set_live_subscribers(&self, n: usize) {
        self.live_subscribers
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The metrics of one transport.
    pub fn transport(&self, kind: TransportKind) -> &TransportMetrics {
        match kind {
            TransportKind::Sse => &self.sse,
            TransportKind::Ws => &self.ws,
        }
    }

    /// Counts a stream that ended for `reason`; one that fell behind its
    /// topic also counts as a slow consumer disconnected.
    pub fn record_disconnect(&self, transport: TransportKind, reason: Disconnect) {
        self.disconnects
            .get_or_create(&DisconnectLabels { transport, reason })
            .inc();
        if reason == Disconnect::Lagged {
            self.slow_consumers(SlowConsumerAction::Disconnect).inc();
        }
    }

    /// The counter of slow consumers handled with `action`.
    pub fn slow_consumers(&self, action: SlowConsumerAction) -> Counter {
        self.slow_consumers
            .get_or_create_owned(&ActionLabels { action })
    }

    /// Sets the queue-depth gauges of `transport` (done at scrape time).
    pub fn set_queue_depth(&self, transport: TransportKind, depth: Depth) {
        let labels = TransportLabels { transport };
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.queue_events
            .get_or_create(&labels)
            .set(gauge(depth.events));
        self.queue_bytes
            .get_or_create(&labels)
            .set(gauge(depth.bytes));
    }

    /// Every metric in the text format `exposition`.
    pub fn encode(&self, exposition: Exposition) -> String {
        exposition.encode(&self.registry)
    }
}

/// A text format of the exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// The Prometheus text format 0.0.4, which every scraper reads.
    Prometheus,
    /// OpenMetrics 1.0.0 text, for scrapers that ask for it.
    OpenMetrics,
}

impl Exposition {
    /// Every metric of `registry` in this format (the load generator's
    /// live `/metrics` uses it too).
    pub fn encode(self, registry: &Registry) -> String {
        let mut openmetrics = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut openmetrics, registry)
            .expect("encoding metrics into a String");
        match self {
            Exposition::OpenMetrics => openmetrics,
            Exposition::Prometheus => prometheus_text(&openmetrics),
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition (all
/// prometheus-client writes): no `# EOF` and no `# UNIT`; the `HELP` and
/// `TYPE` of a counter name its `_total` samples and those of an info
/// metric its `_info` samples, typed `gauge`, as 0.0.4 knows no `info`;
/// `unknown` is 0.0.4's `untyped`. Samples are the same in both formats
/// (the registry holds no exemplars, for which 0.0.4 has no place).
fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A family's HELP comes before its TYPE, which says how to name it.
    let mut help = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ').map(|(_, text)| text);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", kind),
                "info" => ("_info", "gauge"),
                "stateset" => ("", "gauge"),
                "unknown" => ("", "untyped"),
                _ => ("", kind),
            };
            if let Some(help) = help.take() {
                // Writing into a String cannot fail.
                let _ = writeln!(out, "# HELP {name}{suffix} {help}");
            }
            let _ = writeln!(out, "# TYPE {name}{suffix} {kind}");
        } else if !line.starts_with("# UNIT ") && line != "# EOF" {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_histogram_buckets_are_cumulative_powers_of_two() {
        let metrics = Metrics::new();
        let sse = metrics.transport(TransportKind::Sse);
        for n in [1, 1, 3, 300, 5000] {
            sse.batch_events.observe(n);
        }
        let text = metrics.encode(Exposition::OpenMetrics);
        for line in [
            "streamgauge_batch_events_bucket{le=\"1.0\",transport=\"sse\"} 2",
            "streamgauge_batch_events_bucket{le=\"4.0\",transport=\"sse\"} 3",
            "streamgauge_batch_events_bucket{le=\"256.0\",transport=\"sse\"} 3",
            "streamgauge_batch_events_bucket{le=\"512.0\",transport=\"sse\"} 4",
            "streamgauge_batch_events_bucket{le=\"+Inf\",transport=\"sse\"} 5",
            "streamgauge_batch_events_count{transport=\"sse\"} 5",
            "streamgauge_batch_events_sum{transport=\"sse\"} 5305.0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn exposition_names_every_family_with_snake_case_labels() {
        let metrics = Metrics::new();
        metrics.record_disconnect(TransportKind::Ws, Disconnect::PeerTimeout);
        metrics.record_disconnect(TransportKind::Sse, Disconnect::Lagged);
        metrics
            .slow_consumers(SlowConsumerAction::WriteTimeout)
            .inc();
        metrics.set_queue_depth(
            TransportKind::Sse,
            Depth {
                events: 3,
                bytes: 99,
            },
        );
        metrics.transport(TransportKind::Ws).record_batch(4, 100);
        let text = metrics.encode(Exposition::OpenMetrics);
        for line in [
            "streamgauge_disconnects_total{transport=\"ws\",reason=\"peer_timeout\"} 1",
            "streamgauge_slow_consumers_total{action=\"disconnect\"} 1",
            "streamgauge_slow_consumers_total{action=\"write_timeout\"} 1",
            "streamgauge_queue_depth_events{transport=\"sse\"} 3",
            "streamgauge_queue_depth_bytes{transport=\"sse\"} 99",
            "streamgauge_events_sent_total{transport=\"ws\"} 4",
            "streamgauge_bytes_sent_total{transport=\"ws\"} 100",
            "streamgauge_connections_open{transport=\"sse\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.contains("process_resident_memory_bytes "));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn cluster_metrics_are_exposed_under_conventional_names() {
        let metrics = Metrics::new();
        let cluster = metrics.cluster();
        cluster.set_listener_state(ListenerState::Resyncing);
        cluster.resynced(Cause::Reconnect);
        cluster.remote_events("store", 3);
        cluster.notifications_received.inc();
        metrics.topics().notifications_sent.inc();
        let text = metrics.encode(Exposition::Prometheus);
        for line in [
            "streamgauge_cluster_listener_state{state=\"resyncing\"} 1",
            "streamgauge_cluster_listener_state{state=\"up\"} 0",
            "streamgauge_cluster_resyncs_total{cause=\"reconnect\"} 1",
            "streamgauge_cluster_remote_events_total{via=\"store\"} 3",
            "streamgauge_cluster_notifications_received_total 1",
            "streamgauge_cluster_notifications_sent_total 1",
            "streamgauge_cluster_store_reads_total 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn prometheus_text_types_the_sample_names_and_drops_what_0_0_4_lacks() {
        let openmetrics = concat!(
            "# HELP a_seconds Time spent.\n",
            "# TYPE a_seconds counter\n",
            "# UNIT a_seconds seconds\n",
            "a_seconds_total{x=\"1\"} 2\n",
            "# HELP build Build.\n",
            "# TYPE build info\n",
            "build_info{version=\"1\"} 1\n",
            "# HELP odd Odd.\n",
            "# TYPE odd unknown\n",
            "odd 1\n",
            "# HELP g A gauge.\n",
            "# TYPE g gauge\n",
            "g 3\n",
            "# HELP h Sizes.\n",
            "# TYPE h histogram\n",
            "h_sum 1.0\n",
            "h_count 1\n",
            "h_bucket{le=\"+Inf\"} 1\n",
            "# EOF\n",
        );
        let expected = concat!(
            "# HELP a_seconds_total Time spent.\n",
            "# TYPE a_seconds_total counter\n",
            "a_seconds_total{x=\"1\"} 2\n",
            "# HELP build_info Build.\n",
            "# TYPE build_info gauge\n",
            "build_info{version=\"1\"} 1\n",
            "# HELP odd Odd.\n",
            "# TYPE odd untyped\n",
            "odd 1\n",
            "# HELP g A gauge.\n",
            "# TYPE g gauge\n",
            "g 3\n",
            "# HELP h Sizes.\n",
            "# TYPE h histogram\n",
            "h_sum 1.0\n",
            "h_count 1\n",
            "h_bucket{le=\"+Inf\"} 1\n",
        );
        assert_eq!(prometheus_text(openmetrics), expected);
    }

    #[test]
    fn both_expositions_hold_the_same_samples() {
        let metrics = Metrics::new();
        metrics.transport(TransportKind::Sse).record_batch(2, 10);
        // Comments differ; process figures (CPU time) move between scrapes.
        let samples = |text: String| -> Vec<String> {
            text.lines()
                .filter(|line| !line.starts_with('#') && !line.starts_with("process_"))
                .map(str::to_owned)
                .collect()
        };
        let prometheus = metrics.encode(Exposition::Prometheus);
        assert!(prometheus.contains("# TYPE streamgauge_events_sent_total counter\n"));
        assert!(!prometheus.contains("# EOF"));
        assert_eq!(
            samples(prometheus),
            samples(metrics.encode(Exposition::OpenMetrics))
        );
    }
}
