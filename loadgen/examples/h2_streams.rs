//! HTTP/2 clients of the server's SSE streams, for the HTTP/2 figures in
//! docs/performance.md: the load generator speaks HTTP/1.1 only (its TLS
//! client offers `http/1.1` by ALPN), so this takes what it cannot.
//!
//! ```text
//! cargo run --release -p streamgauge-loadgen --example h2_streams -- idle URL STREAMS [CA_PEM]
//! cargo run --release -p streamgauge-loadgen --example h2_streams -- latency URL CLIENTS RATE SECONDS ROUNDS [CA_PEM]
//! ```
//!
//! - `idle` opens STREAMS streams of `/sse/topics/idle` over HTTP/2, at
//!   most [`STREAMS_PER_CONNECTION`] on one connection, prints
//!   `ready STREAMS` and holds them until its stdin closes (for the
//!   server's heap and RSS per idle stream).
//! - `latency` runs ROUNDS rounds, each SECONDS of CLIENTS streams of
//!   `/sse/ticker?rate=RATE` over HTTP/1.1 (a connection each), then as
//!   long over HTTP/2 (every stream on one connection), and prints each
//!   phase's delivery latency (receipt − the event's `ts`) percentiles.
//!   One process, one clock, the same parser on both protocols.
//!
//! `URL` is `http://HOST:PORT` (HTTP/2 with prior knowledge, h2c) or
//! `https://HOST:PORT` (ALPN), verified against `CA_PEM`. Events are
//! parsed with the load generator's own SSE parser and envelope, over
//! its TLS configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use streamgauge_loadgen::client::sse_parser::SseParser;
use streamgauge_loadgen::client::tls::Connector;
use streamgauge_loadgen::client::{envelope, now_micros};
use streamgauge_loadgen::scenario::target::Trust;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Streams opened on one HTTP/2 connection, at most: the server's default
/// `--max-concurrent-streams`, and what browsers open.
const STREAMS_PER_CONNECTION: usize = 100;

/// How long a connection, a handshake or a response head may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the command line says to do.
enum Command {
    /// Hold this many idle streams.
    Idle { streams: usize },
    /// Measure delivery latency over HTTP/1.1 and HTTP/2 in turn.
    Latency {
        clients: usize,
        rate: u64,
        seconds: u64,
        rounds: usize,
    },
}

/// The server streams come from.
struct Target {
    addr: SocketAddr,
    /// TLS configurations offering HTTP/1.1 and HTTP/2, for `https://`.
    tls: Option<[tokio_rustls::TlsConnector; 2]>,
}

/// An HTTP protocol version.
#[derive(Clone, Copy, Debug)]
enum Version {
    Http1,
    Http2,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, target) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!(
                "h2_streams: {e:#}\nusage: see the module docs (loadgen/examples/h2_streams.rs)"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let outcome = runtime
        .context("a runtime")
        .and_then(|runtime| runtime.block_on(run(command, target)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("h2_streams: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command and target `args` name.
fn parse(args: &[String]) -> Result<(Command, Target)> {
    let number = |name: &str, value: &str| -> Result<u64> {
        value
            .parse()
            .with_context(|| format!("{name}: {value:?} is not a number"))
    };
    let (command, url, ca) = match args {
        [mode, url, streams, rest @ ..] if mode == "idle" && rest.len() <= 1 => {
            let streams = number("STREAMS", streams)? as usize;
            (Command::Idle { streams }, url, rest.first())
        }
        [mode, url, clients, rate, seconds, rounds, rest @ ..]
            if mode == "latency" && rest.len() <= 1 =>
        {
            let command = Command::Latency {
                clients: number("CLIENTS", clients)? as usize,
                rate: number("RATE", rate)?,
                seconds: number("SECONDS", seconds)?,
                rounds: number("ROUNDS", rounds)? as usize,
            };
            (command, url, rest.first())
        }
        _ => bail!(
            "expected `idle URL STREAMS [CA_PEM]` or `latency URL CLIENTS RATE SECONDS ROUNDS [CA_PEM]`"
        ),
    };
    Ok((command, Target::parse(url, ca.map(PathBuf::from))?))
}

impl Target {
    /// `http://HOST:PORT`, or `https://HOST:PORT` verified against `ca`.
    fn parse(url: &str, ca: Option<PathBuf>) -> Result<Self> {
        let (secure, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            bail!("URL {url:?}: http://HOST:PORT or https://HOST:PORT");
        };
        let addr = rest
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("URL {url:?}: HOST:PORT, an IP address and a port"))?;
        let tls = match (secure, ca) {
            (false, _) => None,
            (true, None) => bail!("URL {url:?}: https:// needs CA_PEM"),
            (true, Some(ca)) => {
                let connector = Connector::new(&Trust::CaCert(ca))?;
                let offering = |alpn: &[u8]| {
                    let mut config = (*connector.config()).clone();
                    config.alpn_protocols = vec![alpn.to_vec()];
                    tokio_rustls::TlsConnector::from(Arc::new(config))
                };
                Some([offering(b"http/1.1"), offering(b"h2")])
            }
        };
        Ok(Self { addr, tls })
    }

    /// A connection speaking `version`: TCP, and TLS for `https://`.
    async fn connect(&self, version: Version) -> Result<Box<dyn Io>> {
        let tcp = within("connecting", TcpStream::connect(self.addr))
            .await?
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
        let connector = &tls[matches!(version, Version::Http2) as usize];
        let stream = within("the TLS handshake", connector.connect(name, tcp))
            .await?
            .with_context(|| format!("the TLS handshake with {}", self.addr))?;
        Ok(Box::new(stream))
    }

    /// `count` streams of `path` over `version`: over HTTP/1.1 a
    /// connection each, over HTTP/2 up to [`STREAMS_PER_CONNECTION`] on
    /// each connection.
    async fn open(&self, version: Version, path: &str, count: usize) -> Result<Vec<Incoming>> {
        let mut bodies = Vec::with_capacity(count);
        match version {
            Version::Http1 => {
                for _ in 0..count {
                    let (mut sender, conn) =
                        http1::handshake(TokioIo::new(self.connect(version).await?)).await?;
                    tokio::spawn(conn);
                    bodies.push(get(path, |r| sender.send_request(r)).await?);
                }
            }
            Version::Http2 => {
                for chunk in 0..count.div_ceil(STREAMS_PER_CONNECTION) {
                    let io = TokioIo::new(self.connect(version).await?);
                    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                    tokio::spawn(conn);
                    let here = (count - chunk * STREAMS_PER_CONNECTION).min(STREAMS_PER_CONNECTION);
                    for _ in 0..here {
                        bodies.push(get(path, |r| sender.send_request(r)).await?);
                    }
                }
            }
        }
        Ok(bodies)
    }
}

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// `GET {path}` sent by `send` (either protocol's sender): the body of
/// its `200`.
async fn get<F>(path: &str, send: impl FnOnce(Request<Empty<Bytes>>) -> F) -> Result<Incoming>
where
    F: Future<Output = hyper::Result<Response<Incoming>>>,
{
    let request = Request::get(format!("http://127.0.0.1{path}"))
        .header(hyper::header::HOST, "127.0.0.1")
        .body(Empty::new())?;
    let response = within(&format!("GET {path}"), send(request)).await??;
    if response.status() != hyper::StatusCode::OK {
        bail!("GET {path}: {}", response.status());
    }
    Ok(response.into_body())
}

/// `what`, within [`CONNECT_TIMEOUT`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(CONNECT_TIMEOUT, future)
        .await
        .with_context(|| format!("{what}: no answer within {CONNECT_TIMEOUT:?}"))
}

async fn run(command: Command, target: Target) -> Result<()> {
    match command {
        Command::Idle { streams } => idle(&target, streams).await,
        Command::Latency {
            clients,
            rate,
            seconds,
            rounds,
        } => {
            let path = format!("/sse/ticker?rate={rate}&size=32");
            let length = Duration::from_secs(seconds);
            for round in 1..=rounds {
                for version in [Version::Http1, Version::Http2] {
                    let latencies = phase(&target, version, &path, clients, length).await?;
                    report(round, version, &latencies);
                }
            }
            Ok(())
        }
    }
}

/// Holds `streams` idle HTTP/2 streams until stdin closes.
#[expect(clippy::print_stdout, reason = "the readiness line")]
async fn idle(target: &Target, streams: usize) -> Result<()> {
    let held = target
        .open(Version::Http2, "/sse/topics/idle", streams)
        .await?;
    println!("ready {}", held.len());
    let mut rest = Vec::new();
    tokio::io::stdin().read_to_end(&mut rest).await?;
    drop(held);
    Ok(())
}

/// `clients` streams of `path` over `version`, each read from the moment
/// it opens (so that none waits in its socket while the others open),
/// for `length` once all are open: the delivery latencies (µs) of the
/// events the server sent since then, sorted.
async fn phase(
    target: &Target,
    version: Version,
    path: &str,
    clients: usize,
    length: Duration,
) -> Result<Vec<u64>> {
    let (open, opened) = tokio::sync::watch::channel(None);
    let mut readers = Vec::with_capacity(clients);
    for body in target.open(version, path, clients).await? {
        readers.push(tokio::spawn(latencies(body, opened.clone())));
    }
    let from = now_micros();
    open.send_replace(Some((from, Instant::now() + length)));
    let mut all = Vec::new();
    for reader in readers {
        all.extend(reader.await??);
    }
    all.sort_unstable();
    Ok(all)
}

/// Reads `body` until the end `window` names (once all streams are
/// open): receipt − `ts` of each event sent from its start (µs).
async fn latencies(
    mut body: Incoming,
    mut window: tokio::sync::watch::Receiver<Option<(u64, Instant)>>,
) -> Result<Vec<u64>> {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    let mut bounds = None;
    loop {
        let frame = match bounds {
            Some((_, until)) => match tokio::time::timeout_at(until, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => return Ok(out),
            },
            None => tokio::select! {
                frame = body.frame() => frame,
                changed = window.changed() => {
                    changed?;
                    bounds = *window.borrow();
                    continue;
                }
            },
        };
        let Some(frame) = frame.transpose()? else {
            bail!("a stream ended before the phase did");
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let received = now_micros();
        parser.feed(&data);
        while let Some(event) = parser.next_event() {
            let ts = envelope::parse(event.data)?.ts;
            if let (Some(ts), Some((from, _))) = (ts, bounds)
                && ts >= from
            {
                out.push(received.saturating_sub(ts));
            }
        }
    }
}

/// Prints a phase's percentiles.
#[expect(clippy::print_stdout, reason = "the example's report")]
fn report(round: usize, version: Version, sorted: &[u64]) {
    let at = |q: f64| {
        let last = sorted.len().saturating_sub(1);
        sorted
            .get((last as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "round {round} {version:?}: {} events, latency µs p50 {} p90 {} p99 {} p99.9 {} max {}",
        sorted.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        sorted.last().copied().unwrap_or(0),
    );
}
