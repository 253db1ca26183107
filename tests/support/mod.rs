//! Test harness: the in-process server, clients for both transports, and
//! `/metrics` reading with bounded waits.

/// Runs each listed `async fn(Backend)` as one test per database.
macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::support::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::support::Backend::Postgres).await;
                }
            )*
        }
    };
}

pub mod browser;
pub mod buffers;
pub mod client;
pub mod cluster;
pub mod db;
pub mod metrics;
pub mod postgres;
pub mod raw_sse;
pub mod raw_ws;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use streamgauge_server::{Config, Shutdown, Store, Tls, run};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite;

pub use self::client::{Client, End, Item, Transport};
pub use self::db::{Backend, Database};
pub use self::metrics::Metrics;

/// The longest any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test with `what` if it takes over [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// A configuration for tests: a free loopback port and the defaults.
pub fn config() -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    }
}

/// A server running in this process until dropped or stopped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    handle: Option<JoinHandle<()>>,
    http: reqwest::Client,
    /// A client of the server's HTTPS, when it serves HTTPS.
    tls: Option<tokio_rustls::TlsConnector>,
    /// The database it made for itself, if it did.
    _database: Option<Database>,
}

impl TestServer {
    /// Starts a server with `config` on a free loopback port, over a fresh
    /// SQLite database of its own.
    pub async fn start(config: Config) -> Self {
        let database = Database::fresh(Backend::Sqlite).await;
        let mut server = Self::start_on(config, &database).await;
        server._database = Some(database);
        server
    }

    /// Starts a server with `config` serving HTTPS with `cert`, on a free
    /// loopback port, over a fresh SQLite database of its own.
    pub async fn start_tls(mut config: Config, cert: &tls::TestCert) -> Self {
        config.tls = Some(cert.files.clone());
        let mut server = Self::start(config).await;
        server.tls = Some(cert.client(&[b"http/1.1"]));
        server
    }

    /// Starts a server with `config` on a free loopback port over `database`.
    pub async fn start_on(mut config: Config, database: &Database) -> Self {
        config.store.url = database.url().to_owned();
        Self::start_with(config).await
    }

    /// Starts a server with `config` (its database included) on a free
    /// loopback port.
    pub async fn start_with(config: Config) -> Self {
        let tls = config
            .tls
            .as_ref()
            .map(|files| Tls::load(files).expect("loading the test certificate"));
        Self::start_with_tls(config, tls).await
    }

    /// Starts a server with `config` (its database included) on a free
    /// loopback port, serving HTTPS with `tls` when given.
    pub async fn start_with_tls(config: Config, tls: Option<Tls>) -> Self {
        let store = within("the store to open", Store::open(&config.store))
            .await
            .expect("opening the test database");
        let listener = TcpListener::bind(config.listen)
            .await
            .expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let shutdown = Shutdown::new();
        let handle = tokio::spawn(run(listener, config, store, tls, shutdown.clone()));
        Self {
            addr,
            shutdown,
            handle: Some(handle),
            http: http_client(),
            tls: None,
            _database: None,
        }
    }
    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET {path}`: the response, whatever its status.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        let request = self.http.get(self.url(path)).send();
        within(&format!("GET {path}"), request).await.expect("GET")
    }

    /// `GET {path}`, its body as JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.get(path).await.json().await.expect("a JSON answer")
    }

    /// A plain HTTP client for control requests.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Opens a stream on `transport` at `/{sse|ws}/{path}`.
    pub async fn open(&self, transport: Transport, path: &str) -> Client {
        Client::open(self.addr, transport, path, &[]).await
    }

    /// Opens a stream with extra request headers.
    pub async fn open_with(
        &self,
        transport: Transport,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Client {
        Client::open(self.addr, transport, path, headers).await
    }

    /// A WebSocket handshake on `path` (`/ws/…`) that the server refuses
    /// before upgrading: its status and JSON answer.
    pub async fn ws_refusal(&self, path: &str) -> (u16, Value) {
        let url = format!("ws://{}{path}", self.addr);
        match within("a WebSocket handshake", connect_async(&url)).await {
            Err(tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                let answer = serde_json::from_slice(body)
                    .unwrap_or_else(|e| panic!("{path}: the answer is not JSON ({e})"));
                (response.status().as_u16(), answer)
            }
            other => panic!("{path}: expected a refusal, got {other:?}"),
        }
    }

    /// `POST /topics/{topic}/events` with `body` (and a bearer `token`):
    /// the status and the JSON answer.
    pub async fn try_publish(
        &self,
        topic: &str,
        body: impl Into<reqwest::Body>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.url(&format!("/topics/{topic}/events")))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = within("a publish", request.send()).await.expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    /// `POST /api/trades/{wallet}/seed?count={count}` (with a bearer
    /// `token`): the status and the JSON answer.
    pub async fn seed_trades(&self, wallet: &str, count: u64, token: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.url(&format!("/api/trades/{wallet}/seed?count={count}")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = within("seeding trades", request.send())
            .await
            .expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    /// Publishes `body` to `topic`, expecting 201; returns the seq.
    pub async fn publish(&self, topic: &str, body: &Value) -> u64 {
        let (status, answer) = self.try_publish(topic, body.to_string(), None).await;
        assert_eq!(status, 201, "publish to {topic}: {answer}");
        answer["seq"].as_u64().expect("a seq")
    }

    /// The server's metrics now (over HTTPS when it serves HTTPS).
    pub async fn metrics(&self) -> Metrics {
        match &self.tls {
            None => Metrics::read(self.get("/metrics").await).await,
            Some(connector) => {
                let (status, body) = tls::get_text(connector, self.addr, "/metrics").await;
                assert_eq!(status, 200, "{body}");
                Metrics::parse(body)
            }
        }
    }

    /// Polls `/metrics` until `ready` holds, failing after [`WAIT`] with
    /// `what` and the last scrape.
    pub async fn wait_for(&self, what: &str, ready: impl Fn(&Metrics) -> bool) -> Metrics {
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            poll.tick().await;
            let metrics = self.metrics().await;
            if ready(&metrics) {
                return metrics;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what}; last metrics:\n{metrics}"
            );
        }
    }

    /// Waits until `/readyz` answers 200 (a cluster node's listener is up
    /// and resynced).
    pub async fn ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        loop {
            poll.tick().await;
            let response = self.get("/readyz").await;
            if response.status() == 200 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not ready after {WAIT:?}: {}",
                response.text().await.unwrap_or_default()
            );
        }
    }

    /// Asserts that the server sheds `stream` (`ticker`, `replay/w`, …)
    /// as over capacity: SSE `503` with `Retry-After: 1` and a JSON error
    /// containing `error`; WebSocket upgraded, then closed 1013.
    pub async fn assert_sheds(&self, stream: &str, error: &str) {
        let response = self.get(&format!("/sse/{stream}")).await;
        assert_eq!(response.status(), 503, "{stream}");
        assert_eq!(response.headers()["retry-after"], "1");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(error), "{body}");
        let mut shed = self.open(Transport::Ws, stream).await;
        assert_eq!(shed.next().await, Item::End(End::Close(1013)));
    }

    /// Waits until the server has no stream open, on either transport.
    pub async fn all_closed(&self) {
        self.wait_for("every stream to close", |m| {
            Transport::BOTH
                .iter()
                .all(|t| m.of("streamgauge_connections_open", t.label()) == 0.0)
        })
        .await;
    }

    /// Triggers the shutdown and waits for `run` to return (panicking if
    /// it panicked or overran the test's patience).
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        let handle = self.handle.take().expect("stopped once");
        within("the server to shut down", handle)
            .await
            .expect("server task")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// A reqwest client that talks to loopback directly (no proxy).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("building the HTTP client")
}

/// The wall clock in µs since the Unix epoch, as the server stamps `ts`.
pub fn now_micros() -> u64 {
    streamgauge_server::protocol::now_micros()
}
