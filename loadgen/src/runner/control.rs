//! The control connection between a coordinator and an agent (a load
//! generator on another machine, `streamgauge-loadgen agent`): its
//! messages, and how they cross a TCP connection, bounded.
//!
//! One JSON object per line, at most [`MAX_MESSAGE`] bytes; every read and
//! every write has a time limit; a line that is too long, not JSON, or not
//! the message expected is an error naming the peer, never a panic.
//!
//! The conversation:
//!
//! ```text
//! agent        ── Greeting {protocol, commit, nonce} ──▶ coordinator
//! coordinator  ── Hello {protocol, commit, proof}    ──▶ agent
//! agent        ── Welcome {cores} | Refused ──────────▶ coordinator
//! coordinator  ── Ping ──▶ agent ── Pong {at_us} ──▶   (several times: clock)
//! coordinator  ── Setup ──▶ agent ── Ready ──▶
//! coordinator  ── Start {at_unix_us} ──▶ agent ── Report every second ──▶
//! coordinator  ── Stop {settled} ──▶ agent ── Report, Done ──▶
//! ```
//!
//! The token never crosses the wire: the coordinator proves it knows it
//! with an HMAC-SHA256 of the agent's fresh nonce. An agent refuses a
//! coordinator of another build (protocol version or commit), and the
//! coordinator refuses such an agent; each says why.

use std::time::Duration;

use ring::hmac;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::plan::PublishPlan;
use super::worker::Setup;
use crate::metrics::wire::Encoded;

/// The control protocol's version: a coordinator and an agent must speak
/// the same.
pub const PROTOCOL: u32 = 1;

/// The commit this build was made from (`unknown` outside a git
/// checkout): a coordinator and an agent must be the same build.
pub const COMMIT: &str = env!("STREAMGAUGE_COMMIT");

/// Most bytes one message may have (a report holds each node's encoded
/// histograms: a few KiB each).
pub const MAX_MESSAGE: usize = 8 << 20;

/// How long writing one message may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A message from the coordinator to an agent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToAgent {
    /// Who the coordinator is, and its proof of the token.
    Hello(Hello),
    /// What is the agent's clock now?
    Ping,
    /// What to run (boxed: far larger than the others).
    Setup(Box<AgentSetup>),
    /// The run's clock started at this instant, µs since the Unix epoch on
    /// the coordinator's clock.
    Start {
        /// The instant.
        at_unix_us: u64,
    },
    /// Stop: topic subscribers must hold this seq by now.
    Stop {
        /// The seq.
        settled: u64,
    },
}

/// The coordinator's side of the handshake.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    /// Its control protocol version.
    pub protocol: u32,
    /// Its build's commit.
    pub commit: String,
    /// HMAC-SHA256 of the agent's nonce under the token, hex.
    pub proof: String,
}

/// A message from an agent to the coordinator.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromAgent {
    /// The agent's first words: its build, and a nonce to prove the token
    /// on.
    Greeting {
        /// Its control protocol version.
        protocol: u32,
        /// Its build's commit.
        commit: String,
        /// Fresh random bytes, hex.
        nonce: String,
    },
    /// The coordinator is accepted.
    Welcome {
        /// The agent machine's cores.
        cores: usize,
    },
    /// The coordinator is refused, and why; the agent closes the
    /// connection.
    Refused {
        /// Why.
        reason: String,
    },
    /// The agent's clock when it read the ping, µs since the Unix epoch.
    Pong {
        /// The instant.
        at_us: u64,
    },
    /// Set up: its clients start with the clock.
    Ready,
    /// Measurements since the last report (boxed: far larger than the
    /// others).
    Report(Box<Report>),
    /// Stopped, every measurement sent.
    Done,
    /// The agent failed, and why.
    Failed {
        /// Why.
        why: String,
    },
}

/// What an agent runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentSetup {
    /// Its clients, as a worker process is told them: its share of the
    /// run's clients, its number among the agents (`Load::agent`), and
    /// what to add to its clock to read the coordinator's
    /// (`clock_adjustment_us`).
    pub clients: Setup,
    /// The publishers, if the run publishes: the agent sends its own
    /// publishes.
    pub publish: Option<PublishPlan>,
}

/// One interval report of an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Measurements since the last report, one per server node.
    pub nodes: Vec<Encoded>,
    /// The highest topic seq its publishers have had acknowledged so far
    /// (0: none).
    pub acked: u64,
    /// CPU seconds the agent (and its worker processes) used since the
    /// start.
    pub cpu_seconds: f64,
    /// The agent's resident memory now, bytes (its workers' included).
    pub rss_bytes: u64,
}

/// Why a control connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The peer closed the connection.
    #[error("it closed the connection")]
    Closed,
    /// Nothing arrived in time.
    #[error("it sent nothing for {0:?}")]
    Silent(Duration),
    /// A message over the bytes allowed ([`MAX_MESSAGE`] at most).
    #[error("it sent a message over the bytes allowed")]
    TooLarge,
    /// A line that is not a message of the protocol.
    #[error("it sent {0}, which is not the control protocol: {1}")]
    Garbled(String, String),
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A write did not finish in time.
    #[error("it read nothing for {WRITE_TIMEOUT:?}")]
    Stuck,
}

/// The reading half of a control connection.
#[derive(Debug)]
pub struct Inbox {
    reader: BufReader<OwnedReadHalf>,
    line: Vec<u8>,
}

impl Inbox {
    /// The next message, which must arrive `within`.
    ///
    /// # Errors
    ///
    /// Nothing arrived in time, the connection ended or failed, or what
    /// came is not a message of the protocol.
    ///
    /// Cancel safe: a line read in part is kept for the next call.
    pub async fn next<T: DeserializeOwned>(&mut self, within: Duration) -> Result<T, ControlError> {
        self.next_at_most(within, MAX_MESSAGE).await
    }

    /// [`Inbox::next`], of at most `max` bytes (an unauthenticated peer's
    /// is small).
    ///
    /// # Errors
    ///
    /// As [`Inbox::next`]; a longer message is [`ControlError::TooLarge`].
    pub async fn next_at_most<T: DeserializeOwned>(
        &mut self,
        within: Duration,
        max: usize,
    ) -> Result<T, ControlError> {
        let room = (max + 1).saturating_sub(self.line.len());
        let mut bounded = (&mut self.reader).take(u64::try_from(room).unwrap_or(u64::MAX));
        let read = tokio::time::timeout(within, bounded.read_until(b'\n', &mut self.line)).await;
        match read {
            Err(_) => return Err(ControlError::Silent(within)),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(0)) => return Err(ControlError::Closed),
            Ok(Ok(_)) => {}
        }
        if self.line.last() != Some(&b'\n') {
            return Err(if self.line.len() > max {
                ControlError::TooLarge
            } else {
                ControlError::Closed
            });
        }
        let parsed = serde_json::from_slice(&self.line).map_err(|e| {
            let start = String::from_utf8_lossy(&self.line[..self.line.len().min(80)]);
            ControlError::Garbled(format!("{:?}", start.trim_end()), e.to_string())
        });
        self.line.clear();
        parsed
    }
}

/// The writing half of a control connection.
#[derive(Debug)]
pub struct Outbox {
    writer: OwnedWriteHalf,
}

impl Outbox {
    /// Writes `message`, within [`WRITE_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// The connection failed, or the peer read nothing in time.
    pub async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), ControlError> {
        let mut line = serde_json::to_vec(message).expect("a control message serializes");
        line.push(b'\n');
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            self.writer.write_all(&line).await?;
            self.writer.flush().await
        })
        .await;
        match written {
            Ok(result) => result.map_err(ControlError::from),
            Err(_) => Err(ControlError::Stuck),
        }
    }
}

/// A connection split into its halves.
pub fn split(stream: TcpStream) -> (Inbox, Outbox) {
    // Messages are small and answered at once: Nagle would hold pongs.
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let inbox = Inbox {
        reader: BufReader::new(read),
        line: Vec::new(),
    };
    (inbox, Outbox { writer: write })
}

/// The proof that whoever made it knows `token`: HMAC-SHA256 of `nonce`
/// under it, hex.
pub fn proof(token: &[u8], nonce: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token);
    hex(hmac::sign(&key, nonce.as_bytes()).as_ref())
}

/// Whether `proof` is [`proof`] of `nonce` under `token`, compared in
/// constant time.
pub fn proven(token: &[u8], nonce: &str, proof: &str) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token);
    unhex(proof).is_some_and(|tag| hmac::verify(&key, nonce.as_bytes(), &tag).is_ok())
}

/// `bytes` in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// The bytes `text` (hex) spells, if it does.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// Why a peer of build `protocol`/`commit` cannot work with this one, if
/// it cannot.
pub fn mismatch(protocol: u32, commit: &str) -> Option<String> {
    if protocol != PROTOCOL {
        return Some(format!(
            "it speaks control protocol {protocol}, this build {PROTOCOL}"
        ));
    }
    (commit != COMMIT).then(|| format!("it is build {commit}, this is build {COMMIT}"))
}

/// Reads a token file: its content, surrounding whitespace trimmed.
///
/// # Errors
///
/// The file cannot be read, or holds no token.
pub fn read_token(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading the token file {}: {e}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        token.len() >= 16,
        "the token file {} holds {} characters: a token has at least 16",
        path.display(),
        token.len()
    );
    Ok(token.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn the_proof_shows_the_token_and_nothing_else_passes() {
        let proof = proof(b"sixteen-byte-token", "00ff");
        assert_eq!(proof.len(), 64);
        assert!(proven(b"sixteen-byte-token", "00ff", &proof));
        assert!(!proven(b"another-token-here", "00ff", &proof));
        assert!(!proven(b"sixteen-byte-token", "00fe", &proof));
        for bad in ["", "zz", "0", &proof[..62]] {
            assert!(!proven(b"sixteen-byte-token", "00ff", bad), "{bad:?}");
        }
        assert_eq!(mismatch(PROTOCOL, COMMIT), None);
        assert!(mismatch(PROTOCOL + 1, COMMIT).unwrap().contains("protocol"));
        assert!(mismatch(PROTOCOL, "abc").unwrap().contains("build abc"));
    }

    #[tokio::test]
    async fn bad_input_is_an_error_naming_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sender = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"\"ping\"\n{\"nope\":1}\n").await.unwrap();
            stream
                .write_all(&vec![b'x'; MAX_MESSAGE + 10])
                .await
                .unwrap();
        });
        let (stream, _) = listener.accept().await.unwrap();
        let (mut inbox, _outbox) = split(stream);
        let within = Duration::from_secs(10);
        assert!(matches!(
            inbox.next::<ToAgent>(within).await,
            Ok(ToAgent::Ping)
        ));
        let garbled = inbox.next::<ToAgent>(within).await.unwrap_err();
        assert!(garbled.to_string().contains("nope"), "{garbled}");
        let large = inbox.next::<ToAgent>(within).await.unwrap_err();
        assert!(matches!(large, ControlError::TooLarge), "{large}");
        sender.await.unwrap();
        let silent = inbox.next::<ToAgent>(Duration::from_millis(1)).await;
        assert!(matches!(
            silent,
            Err(ControlError::Silent(_) | ControlError::Closed)
        ));
    }
}
