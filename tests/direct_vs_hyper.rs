//! The hand-written HTTP/1.1 path (`server/src/direct.rs`) held against
//! hyper on the same bytes (issue 25).
//!
//! The server answers a connection's first head itself only when its
//! first read holds all of it; hyper gets everything else, with the bytes
//! read. So the same bytes go to the direct path when written at once, and
//! to hyper when the first read is cut short: the test writes a first
//! piece, waits until the server has taken it (it answered, or counted the
//! connection open in `streamgauge_http_connections_open`, which both
//! paths do once they have it), then writes the rest. (A first piece that
//! may begin HTTP/2's preface makes the server read on without a sign:
//! the rest follows it at once.) Requests generated
//! from a fixed seed (valid, malformed, pipelined), each sent whole and cut
//! at a byte (at every byte, for a few), must get the same class of first
//! answer; and no request may run unanswered or twice: the streams the
//! server starts (`streamgauge_connections_opened_total`) and the
//! publishes it commits (`streamgauge_events_published_total`) are the
//! streams and the `201`s the client read, never more publishes than it
//! sent.

use futures_util::FutureExt as _;
use streamgauge_server::direct::H2_PREFACE;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::support::{Metrics, TestServer, config, within};

/// A stream the server ends by itself: its answer's class is "a stream
/// started", and a keep-alive connection goes on after it.
const STREAM: &str = "/sse/ticker?rate=0&count=2&size=1";

/// Where the publishes go.
const PUBLISH: &str = "/topics/pipelined/events";

/// The seed of the generated requests.
const SEED: u64 = 25;

/// Generated requests, each sent whole, cut after its first byte and cut
/// at a byte drawn from the seed.
const GENERATED: usize = 48;

/// The class of the first answer on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `200` with an event stream: a stream started.
    Stream,
    /// Any other status.
    Status(u16),
    /// Bytes that are not an HTTP/1.1 answer.
    NotHttp1,
    /// The connection ended without an answer.
    Closed,
}

/// Bytes to send on one connection.
#[derive(Debug)]
struct Case {
    bytes: Vec<u8>,
    /// How many requests (or attempts at one) the bytes hold: the most
    /// answers to wait for.
    requests: usize,
    /// How many of them are publishes.
    publishes: u64,
}

impl Case {
    fn new<S: AsRef<str>>(requests: &[S], publishes: u64) -> Self {
        Self {
            bytes: requests.iter().flat_map(|r| r.as_ref().bytes()).collect(),
            requests: requests.len(),
            publishes,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// What one connection got back.
#[derive(Debug)]
struct Outcome {
    first: Class,
    /// Whether the first answer said `Connection: close`, as the direct
    /// path's always do (hyper's only when it closes after).
    closes: bool,
    /// Streams started, as the answers read say.
    streams: u64,
    /// `201` answers read: publishes acknowledged.
    acknowledged: u64,
}

/// A server, and one keep-alive connection of the test's own that reads
/// its `/metrics` (the only connection open between two sends).
struct Probe {
    server: TestServer,
    metrics: Mutex<Conn>,
}

fn open(metrics: &Metrics) -> f64 {
    metrics.get("streamgauge_http_connections_open{protocol=\"http1\"}")
}

/// What the server ran: streams it started, publishes it committed.
fn ran(metrics: &Metrics) -> (u64, u64) {
    let streams = metrics.of("streamgauge_connections_opened_total", "sse");
    let publishes = metrics.get("streamgauge_events_published_total");
    (streams as u64, publishes as u64)
}

impl Probe {
    async fn start() -> Self {
        let server = TestServer::start(config()).await;
        let metrics = Mutex::new(Conn::to(&server).await);
        Self { server, metrics }
    }

    /// The server's metrics now, read over the probe's own connection.
    async fn scrape(&self) -> Metrics {
        let mut conn = self.metrics.lock().await;
        conn.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("asking for /metrics");
        let (head, body) = conn.answer().await.expect("the /metrics answer");
        assert!(head.starts_with("http/1.1 200 "), "{head}");
        Metrics::parse(String::from_utf8(body).expect("UTF-8 metrics"))
    }

    /// The metrics once every connection but the probe's own has closed.
    async fn settled(&self) -> Metrics {
        within("the server to close the test's connections", async {
            loop {
                let metrics = self.scrape().await;
                if open(&metrics) == 1.0 {
                    return metrics;
                }
            }
        })
        .await
    }

    /// Waits until the server has read what `conn` sent so far: it
    /// answered, or counted the connection open (each path does once it
    /// has taken the first read).
    async fn taken(&self, conn: &Conn) {
        within("the server to take the first piece", async {
            while conn.stream.readable().now_or_never().is_none() {
                if open(&self.scrape().await) > 1.0 {
                    return;
                }
            }
        })
        .await;
    }

    /// Sends `case` on a new connection, its first `cut` bytes taken by the
    /// server before the rest is written (all at once when `cut` is the
    /// whole), and reads what comes back.
    async fn send(&self, case: &Case, cut: usize) -> Outcome {
        let before = self.settled().await;
        let mut conn = Conn::to(&self.server).await;
        let (first, rest) = case.bytes.split_at(cut);
        conn.write(first).await.expect("the first piece");
        if !rest.is_empty() {
            // A first piece that may begin HTTP/2's preface makes the
            // server read on, with no sign of it: the rest follows then.
            if !H2_PREFACE.starts_with(first) {
                self.taken(&conn).await;
            }
            // The server may have answered and closed already.
            let _ = conn.write(rest).await;
        }
        let answers = within("the answers", conn.answers(case.requests)).await;
        drop(conn);
        let after = self.settled().await;
        let count = |class| answers.iter().filter(|a| a.class == class).count() as u64;
        let outcome = Outcome {
            first: answers.first().map_or(Class::Closed, |a| a.class),
            closes: answers.first().is_some_and(|a| a.closes),
            streams: count(Class::Stream),
            acknowledged: count(Class::Status(201)),
        };
        let (before, after) = (ran(&before), ran(&after));
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (outcome.streams, outcome.acknowledged),
            "a stream or a publish ran unanswered, or twice (cut at {cut}): {:?}",
            case.text()
        );
        assert!(outcome.acknowledged <= case.publishes, "{:?}", case.text());
        outcome
    }

    /// Sends `case` cut at `cut` (as [`Probe::send`]), and checks that its
    /// first answer is of the class `whole` got.
    async fn send_like(&self, case: &Case, cut: usize, whole: &Outcome) -> Outcome {
        let outcome = self.send(case, cut).await;
        assert_eq!(
            outcome.first,
            whole.first,
            "cut at {cut}: {:?}",
            case.text()
        );
        outcome
    }
}

/// What one answer's head says.
#[derive(Debug)]
struct Answer {
    class: Class,
    closes: bool,
}

impl Answer {
    /// The answer whose head (lowercase) is `head`.
    fn of(head: &str) -> Self {
        let status = head
            .strip_prefix("http/1.1 ")
            .or_else(|| head.strip_prefix("http/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok());
        let class = match status {
            None => Class::NotHttp1,
            Some(200) if head.contains("content-type: text/event-stream") => Class::Stream,
            Some(status) => Class::Status(status),
        };
        Self {
            class,
            closes: head.contains("connection: close\r\n"),
        }
    }
}

/// A connection to the server, read answer by answer.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet taken.
    buf: Vec<u8>,
}

impl Conn {
    async fn to(server: &TestServer) -> Self {
        let stream = within("a connection", TcpStream::connect(server.addr))
            .await
            .expect("connecting");
        stream.set_nodelay(true).expect("no Nagle");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Up to `most` answers, until the connection ends (or is reset) or
    /// what comes is not HTTP/1.
    async fn answers(&mut self, most: usize) -> Vec<Answer> {
        let mut answers = Vec::new();
        while answers.len() < most {
            match self.answer().await {
                Some((head, _)) => {
                    let answer = Answer::of(&head);
                    let last = answer.class == Class::NotHttp1;
                    answers.push(answer);
                    if last {
                        break;
                    }
                }
                None => {
                    if !self.buf.is_empty() {
                        answers.push(Answer::of(""));
                    }
                    break;
                }
            }
        }
        answers
    }

    /// The next answer: its head (lowercase) and its body; `None` when the
    /// connection ends first.
    async fn answer(&mut self) -> Option<(String, Vec<u8>)> {
        let head = self.through(b"\r\n\r\n").await?;
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        if !head.starts_with("http/1.") {
            return Some((head, Vec::new()));
        }
        let body = if head.contains("transfer-encoding: chunked") {
            self.chunks().await?
        } else {
            match head
                .split("\r\n")
                .find_map(|line| line.strip_prefix("content-length: "))
            {
                Some(n) => self.exactly(n.trim().parse().ok()?).await?,
                // Delimited by the close.
                None => {
                    while self.fill().await {}
                    std::mem::take(&mut self.buf)
                }
            }
        };
        Some((head, body))
    }

    /// Reads more; `false` once the connection has ended (or was reset).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk).await {
            Ok(n) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// Everything through `delimiter`; `None` if it never comes.
    async fn through(&mut self, delimiter: &[u8]) -> Option<Vec<u8>> {
        loop {
            let found = self
                .buf
                .windows(delimiter.len())
                .position(|w| w == delimiter);
            if let Some(at) = found {
                return Some(self.buf.drain(..at + delimiter.len()).collect());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next `n` bytes; `None` if they never come.
    async fn exactly(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// A chunked body's payload, through its last chunk.
    async fn chunks(&mut self) -> Option<Vec<u8>> {
        let mut payload = Vec::new();
        loop {
            let line = self.through(b"\r\n").await?;
            let size = std::str::from_utf8(&line[..line.len() - 2]).ok()?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                self.through(b"\r\n").await?;
                return Some(payload);
            }
            let chunk = self.exactly(size + 2).await?;
            payload.extend_from_slice(&chunk[..size]);
        }
    }
}

/// A request drawn from `rng`: a head (valid or not, for a stream or not,
/// lines ending in CRLF or LF) and perhaps a second request pipelined
/// behind it. Never both `Content-Length` and `Transfer-Encoding`: the
/// two paths answer those differently, as
/// `both_lengths_are_refused_or_read_by_the_transfer_coding` shows.
fn generated(rng: &mut fastrand::Rng) -> Case {
    let (line, publishes) = match rng.u8(..10) {
        0..=3 => (format!("GET {STREAM} HTTP/1.1"), 0),
        4 => (
            "GET /sse/ticker?rate=0&count=2&bogus=1 HTTP/1.1".to_owned(),
            0,
        ),
        5 => ("GET /sse/nope HTTP/1.1".to_owned(), 0),
        6 => (format!("POST {PUBLISH} HTTP/1.1"), 1),
        7 => (format!("GET {STREAM} HTTP/1.0"), 0),
        8 => (format!("get {STREAM} HTTP/1.1"), 0),
        _ => (
            rng.choice([
                format!("GET {STREAM} HTTP/1.2"),
                format!("GET {STREAM}\x7f HTTP/1.1"),
                "GET /sse/ti cker HTTP/1.1".to_owned(),
            ])
            .expect("a choice"),
            0,
        ),
    };
    let mut headers = vec!["Host: x".to_owned()];
    let mut body = String::new();
    if publishes > 0 {
        headers.push("Content-Length: 7".to_owned());
        body.push_str(r#"{"a":1}"#);
    }
    for _ in 0..rng.usize(..3) {
        let header = match rng.u8(..10) {
            0 => "Accept: text/event-stream",
            1 => "Last-Event-ID: 5",
            2 => "Connection: keep-alive",
            3 => "Bad Header: x",
            4 => "X-Control: a\x01b",
            5 => "X-Folded: a\r\n b",
            6 if publishes == 0 => "Content-Length: 0",
            7 if publishes == 0 => "Content-Length: 1\r\nContent-Length: 2",
            8 if publishes == 0 => "Content-Length: x",
            _ => "X-Padding: 0123456789abcdef",
        };
        headers.push(header.to_owned());
    }
    let eol = if rng.u8(..4) == 0 { "\n" } else { "\r\n" };
    let mut head = String::new();
    if rng.u8(..8) == 0 {
        head.push_str(eol);
    }
    head.push_str(&line);
    head.push_str(eol);
    for header in &headers {
        head.push_str(&header.replace("\r\n", eol));
        head.push_str(eol);
    }
    head.push_str(eol);
    head.push_str(&body);
    match rng.u8(..4) {
        0 => Case::new(&[&head, &publish()], publishes + 1),
        1 => Case::new(
            &[&head, &format!("GET {STREAM} HTTP/1.1\r\n\r\n")],
            publishes,
        ),
        2 => Case::new(&[&head, "XYZ\r\n\r\n"], publishes),
        _ => Case::new(&[&head], publishes),
    }
}

/// A publish of `{}`.
fn publish() -> String {
    format!("POST {PUBLISH} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_the_same_class_of_answer_from_either_path() {
    let probe = Probe::start().await;
    let mut rng = fastrand::Rng::with_seed(SEED);
    for _ in 0..GENERATED {
        let case = generated(&mut rng);
        let len = case.bytes.len();
        let whole = probe.send(&case, len).await;
        for cut in [1, rng.usize(1..len)] {
            probe.send_like(&case, cut, &whole).await;
        }
    }
    probe.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_at_every_byte_gets_the_same_answer() {
    let probe = Probe::start().await;
    let stream = format!("GET {STREAM} HTTP/1.1\r\nHost: x\r\n\r\n");
    let conflicting = "GET /sse/ticker HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    let publish_first = format!("POST {PUBLISH} HTTP/1.1\r\nContent-Length: 2\r\n\r\n{{}}");
    let version = "GET /sse/ticker HTTP/1.2\r\n\r\n";
    for (case, head) in [
        // A stream with another pipelined behind it.
        (Case::new(&[&stream, &stream], 0), stream.len()),
        (Case::new(&[conflicting], 0), conflicting.len()),
        (Case::new(&[version], 0), version.len()),
        (Case::new(&[&publish_first], 1), publish_first.len()),
    ] {
        let whole = probe.send(&case, case.bytes.len()).await;
        for cut in 1..case.bytes.len() {
            let outcome = probe.send_like(&case, cut, &whole).await;
            if whole.first == Class::Stream {
                // The head whole in the first read: the direct path, whose
                // stream closes its connection and runs nothing after it;
                // cut short: hyper, which runs the second stream once the
                // first has ended.
                let direct = cut >= head;
                assert_eq!(outcome.closes, direct, "cut at {cut}");
                assert_eq!(outcome.streams, if direct { 1 } else { 2 }, "cut at {cut}");
            }
        }
    }
    probe.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_lengths_are_refused_or_read_by_the_transfer_coding() {
    // The one difference between the paths, which RFC 9112 (section 6.1)
    // allows: a head with both `Content-Length` and `Transfer-Encoding` is
    // refused by the direct path, and read by its transfer coding by
    // hyper, which then closes the connection. Either way, the request
    // the transfer coding frames after it (which a proxy that went by the
    // length would take for the body) never runs.
    let probe = Probe::start().await;
    let smuggled = publish();
    let both = format!(
        "POST {PUBLISH} HTTP/1.1\r\nContent-Length: {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n",
        "2\r\n{}\r\n0\r\n\r\n".len() + smuggled.len()
    );
    let case = Case::new(&[both.as_str(), &smuggled], 2);
    let direct = probe.send(&case, case.bytes.len()).await;
    assert_eq!((direct.first, direct.acknowledged), (Class::Status(400), 0));
    // Cut inside the method: hyper reads the head.
    let hyper = probe.send(&case, "POST ".len()).await;
    assert_eq!((hyper.first, hyper.acknowledged), (Class::Status(201), 1));
    assert!(hyper.closes, "hyper keeps the connection open");
    probe.server.stop().await;
}
