//! Several servers (nodes) in this process on one PostgreSQL database, and
//! what a test does to that database from outside: end a node's listening
//! connection, refuse new connections. Also a subscriber that resumes on
//! its own when its stream ends, as a client behind a load balancer does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use sqlx::{Executor, PgConnection};
use streamgauge_server::Config;
use tokio::sync::watch;

use super::{Client, Database, Item, TestServer, Transport, WAIT, postgres};

/// Servers sharing one fresh PostgreSQL database.
pub struct Nodes {
    /// The servers, each ready.
    pub nodes: Vec<TestServer>,
    /// Their database.
    pub database: Database,
}

impl Nodes {
    /// `n` servers with `config` on a fresh PostgreSQL database, each ready
    /// (its listener up).
    pub async fn start(n: usize, config: Config) -> Self {
        let database = Database::fresh(super::Backend::Postgres).await;
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(TestServer::start_on(config.clone(), &database).await);
        }
        for node in &nodes {
            node.ready().await;
        }
        Self { nodes, database }
    }

    /// The database's name on the test server.
    pub fn database_name(&self) -> &str {
        self.database
            .postgres_name()
            .expect("nodes run on PostgreSQL")
    }
}

/// Ends the listening connection of the node serving on `addr` (found by
/// its `application_name`); returns how many connections were ended.
pub async fn terminate_listener(admin: &mut PgConnection, addr: SocketAddr) -> i64 {
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name LIKE 'streamgauge-listener %:' || $1",
    )
    .bind(addr.port().to_string())
    .fetch_one(admin)
    .await
    .expect("terminating a listener")
}

/// Lets new connections into `database`, or not (those open stay).
pub async fn allow_connections(admin: &mut PgConnection, database: &str, allow: bool) {
    // The name is a test database's, made of a pid and a counter.
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS {allow}"
        )))
        .await
        .expect("ALTER DATABASE … ALLOW_CONNECTIONS");
}

/// A connection to the test PostgreSQL server, as its superuser.
pub async fn admin() -> PgConnection {
    postgres::admin().await
}

/// The seq of an event.
pub fn seq(event: &Value) -> u64 {
    event["seq"].as_u64().expect("a seq")
}

/// Subscribes to `topic` on `addr` over `transport` from the start and
/// reads until it has seq `last` (sent on `through` once known), resuming
/// after the last seq received whenever its stream ends (an end notice, a
/// close, a broken connection), retrying refused resumes; fails on a gap
/// notice. Returns every event, in the order received.
pub async fn resuming_subscriber(
    addr: SocketAddr,
    transport: Transport,
    topic: String,
    mut through: watch::Receiver<Option<u64>>,
) -> Vec<Value> {
    let mut events: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + 3 * WAIT;
    let mut retry = tokio::time::interval(Duration::from_millis(50));
    loop {
        let since = events.last().map_or(0, seq);
        let path = format!("topics/{topic}?since={since}");
        let mut client = match Client::try_open(addr, transport, &path, &[]).await {
            Ok(client) => client,
            Err(refused) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{transport:?}: could not resume after {since}: {refused}"
                );
                retry.tick().await;
                continue;
            }
        };
        loop {
            if let Some(last) = *through.borrow_and_update()
                && events.last().map_or(0, seq) >= last
            {
                return events;
            }
            let item = tokio::select! {
                item = client.next() => item,
                changed = through.changed() => {
                    changed.expect("the test knows the last seq");
                    continue;
                }
            };
            match item {
                Item::Event(event) => events.push(event),
                Item::KeepAlive => {}
                Item::End(_) => break,
                other => panic!("{transport:?}: expected an event, got {other:?}"),
            }
        }
    }
}

/// Asserts that `events` are seqs `1..=last`, each once, in order, each
/// with the body the publisher was acknowledged for (`acked`: seq → body).
pub fn assert_every_event_once_in_order(
    what: &str,
    events: &[Value],
    last: u64,
    acked: &BTreeMap<u64, Value>,
) {
    let seqs: Vec<u64> = events.iter().map(seq).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "{what}");
    for event in events {
        if let Some(body) = acked.get(&seq(event)) {
            assert_eq!(&event["data"], body, "{what}: seq {}", seq(event));
        }
    }
}
