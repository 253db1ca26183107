//! Topic publishers on an open-model schedule: each publish is due one
//! interval (1 / the rate in effect) after the one before, whatever happened
//! to the others, so a server that stalls cannot hide behind coordinated
//! omission. The rate may change between phases. Each publish carries its
//! intended send time (`data.sent_us`), and its latency is measured from
//! that time to its `201`, not from when it actually went out; so that it
//! goes out as close to that time as the machine allows, a publish waits
//! for its due time on the [`metronome`], not on tokio's 1 ms timer. Over
//! several
//! server nodes, publish `k` goes to node `k` modulo their number and says
//! so (`data.node`), so that subscribers tell same-node deliveries from
//! cross-node ones; each node's publishes are recorded as that node's. A publish the
//! schedule wanted but could not send (too many already in flight) counts
//! as a timeout: the server did not keep up.
//!
//! A foreign target is published to as its `[target]` says ([`Destination`]):
//! an HTTP request per publish (any 2xx acknowledges it) or a text frame on
//! a WebSocket of the publisher's own, each carrying the load generator's
//! own sequence number and intended send time where the templates put
//! `{{seq}}` and `{{ts_us}}`, which subscribers find again through their
//! pointers.
//!
//! On a run over several agents, each agent's publisher keeps the whole
//! schedule but sends only its own publishes (`client::Agent`: publish `k`
//! by agent `k` modulo their number), saying so (`data.agent`), so that
//! subscribers measure end-to-end latency only from their own machine's
//! clock.
//!
//! With per-user tokens, the publisher holds a token of its own
//! (`publisher-0`, allowed to publish to the topic), renewed when due
//! before a publish goes out; a publish refused `401`/`403` counts its
//! reason.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::metronome::Metronome;
use self::websocket::FrameSender;
use crate::client::jwt::Credential;
use crate::client::pool::Pool;
use crate::client::request::{PUBLISH_DEFAULTS, Request, path_of};
use crate::client::tls::Connector;
use crate::client::{Agent, Target, micros, now_micros};
use crate::metrics::auth::Refusal;
use crate::metrics::{ErrorKind, Recorder, Sample};
use crate::scenario::target::{Publish, TargetSpec};
use crate::scenario::template::{Template, Values};

pub mod metronome;
pub mod websocket;

/// Most publishes in flight at once.
const MAX_IN_FLIGHT: usize = 512;

/// How long publishes still in flight may take once the run ends; those
/// that take longer count as timeouts.
const DRAIN: Duration = Duration::from_secs(5);

/// The acknowledged publishes: each `seq` and when its `201` came.
#[derive(Debug, Default)]
pub struct Acks(Mutex<Vec<(Instant, u64)>>);

impl Acks {
    /// Notes that `seq` was acknowledged now.
    pub fn push(&self, seq: u64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((Instant::now(), seq));
    }

    /// The highest seq acknowledged at or before `at` (0 if none): what a
    /// subscriber that kept up must hold by then.
    pub fn settled_by(&self, at: Instant) -> u64 {
        let acks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        acks.iter()
            .filter(|(when, _)| *when <= at)
            .map(|&(_, seq)| seq)
            .max()
            .unwrap_or(0)
    }
}

/// What one publish came to.
enum Outcome {
    /// `201` with this seq, after this long from its due time.
    Acked { seq: u64, latency: Duration },
    /// Written to the publisher's WebSocket: sent with this (the load
    /// generator's own) seq, with no answer to time.
    Written { seq: u64 },
    /// `503` or `429`: the server shed it, nothing was stored. The open
    /// model goes on at its rate: that is the offered load.
    Shed,
    /// `401` or `403`: the credential was refused, for this reason.
    Refused(Refusal),
    /// Any other answer, or none.
    Failed(ErrorKind),
}

/// Where publishes go, and what they are.
#[derive(Debug, Clone)]
pub enum Destination {
    /// This project's topics: `POST` to each node's events URL (at least
    /// one), answered `201` with the event's `seq`.
    Topics {
        /// The topic's events URL on each node.
        urls: Vec<String>,
    },
    /// A foreign target's HTTP endpoint.
    Http {
        /// Connections to its server.
        pool: Arc<Pool>,
        /// The path, its topic put in.
        path: String,
        /// The method.
        method: String,
        /// Header templates.
        headers: Vec<(String, Template)>,
        /// The body template.
        body: Template,
        /// What `{{topic}}` is.
        topic: String,
    },
    /// Frames on a WebSocket of the publisher's own.
    WebSocket {
        /// Where the frames go (a task that holds the socket).
        frames: FrameSender,
        /// The frame template.
        frame: Template,
        /// What `{{topic}}` is.
        topic: String,
    },
}

impl Destination {
    /// The nodes publishes are spread over.
    fn nodes(&self) -> usize {
        match self {
            Destination::Topics { urls } => urls.len(),
            Destination::Http { .. } | Destination::WebSocket { .. } => 1,
        }
    }
}

/// Where a foreign target's publishes go, as `spec` says, on topic
/// `topic`; `server` is the target's server (a `/path` is on it). A
/// WebSocket's task is spawned into `tasks` and ends with `cancel`; it
/// opens as a subscriber's would, `token` wherever the target says
/// `{token}`.
///
/// # Errors
///
/// The publish URL's server does not resolve, or TLS cannot be set up.
pub async fn foreign(
    spec: &TargetSpec,
    topic: &str,
    token: Option<&str>,
    server: &Arc<Target>,
    cancel: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Destination> {
    let values = Values {
        topic,
        client: "publisher",
        token: token.unwrap_or_default(),
        ..Values::default()
    };
    let tls = spec.trust.as_ref().map(Connector::new).transpose()?;
    match spec.publish.as_ref() {
        Some(Publish::Http {
            url,
            method,
            headers,
            body,
        }) => {
            let (target, path) = locate(url, &values, server).await?;
            Ok(Destination::Http {
                pool: Arc::new(Pool::new(target, tls)),
                path,
                method: method.clone(),
                headers: headers.clone(),
                body: body.clone(),
                topic: topic.to_owned(),
            })
        }
        Some(Publish::WebSocket { url, frame }) => {
            let (target, path) = locate(url, &values, server).await?;
            let request = Request {
                headers: (spec.headers.iter())
                    .map(|(name, value)| (name.clone(), value.expand(&values)))
                    .collect(),
                subprotocols: spec.ws_subprotocols.clone(),
                on_open: spec.ws_on_open.iter().map(|f| f.expand(&values)).collect(),
                ..Request::get(path, None)
            };
            let socketed = websocket::Socketed {
                target,
                request,
                tls,
            };
            let (frames, task) = websocket::start(socketed, cancel);
            tasks.spawn(task);
            Ok(Destination::WebSocket {
                frames,
                frame: frame.clone(),
                topic: topic.to_owned(),
            })
        }
        None => anyhow::bail!("the target does not say how to publish"),
    }
}

/// The server and path of the publish URL `url` with `values`: a `/path`
/// on `server`, or the server an absolute URL names.
async fn locate(
    url: &Template,
    values: &Values<'_>,
    server: &Arc<Target>,
) -> anyhow::Result<(Arc<Target>, String)> {
    let expanded = url.expand(values);
    let path = path_of(&expanded);
    if expanded.starts_with('/') {
        return Ok((Arc::clone(server), path));
    }
    Ok((Arc::new(Target::of_url(&expanded).await?), path))
}

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct Publishing {
    /// Where publishes go.
    pub to: Destination,
    /// Publishes per second, now: the runner changes it between phases
    /// (0: none until it rises).
    pub rate: watch::Receiver<u64>,
    /// Padding bytes per publish.
    pub size: usize,
    /// Bearer token, if the server wants one (when no token is minted).
    pub token: Option<String>,
    /// The publisher's own token (per-user tokens), renewed when due.
    pub credential: Option<Credential>,
    /// On a run over several agents, this one: only its own publishes are
    /// sent.
    pub agent: Option<Agent>,
}

impl Publishing {
    /// The bearer token a publish carries now: the publisher's own, or the
    /// static one.
    fn bearer(&self) -> Option<&str> {
        (self.credential.as_ref())
            .map(Credential::token)
            .or(self.token.as_deref())
    }
}

/// Publishes as `publishing` says until `cancel`, recording each node's
/// publishes into its recorder of `recorders` (one per URL) and
/// acknowledged seqs into `acks`, with `http`.
///
/// It runs on the clients' runtime. A runtime of its own, on a thread of
/// its own, measured no better at 200 subscribers (within the noise), and
/// under the `overload` preset's twenty-fold publishes its busy third
/// thread on two cores delayed the subscribers' reads: delivery latency
/// p95 44–107 ms against 31–35 ms (3 runs each, same server).
pub async fn run(
    http: reqwest::Client,
    mut publishing: Publishing,
    acks: Arc<Acks>,
    mut recorders: Vec<Recorder>,
    cancel: CancellationToken,
) {
    let nodes = publishing.to.nodes();
    let start = Instant::now();
    let start_wall = now_micros();
    let pad = "x".repeat(publishing.size);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks: JoinSet<(usize, Outcome)> = JoinSet::new();
    let mut rates = publishing.rate.clone();
    let mut due = start;
    let clock = Metronome::start();
    for k in 0u64.. {
        let rate = *rates.borrow();
        if rate == 0 {
            // A quiet phase: nothing is due until the rate rises again.
            if !risen(&mut rates, &mut tasks, &mut recorders, &acks, &cancel).await {
                break;
            }
            due = Instant::now();
        } else if k > 0 {
            due += Duration::from_secs_f64(1.0 / rate as f64);
        }
        if publishing.agent.is_some_and(|agent| !agent.sent(k + 1)) {
            continue;
        }
        // The bookkeeping before the publish is due, not between its due
        // time and its going out.
        while let Some(done) = tasks.try_join_next() {
            record(&mut recorders, &acks, done);
        }
        // Counts reach the timeline (and their phase) within a tick.
        let now = Instant::now();
        recorders.iter_mut().for_each(|r| r.flush_if_due(now));
        if let Some(credential) = &mut publishing.credential {
            credential.renew_if_due(now);
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = clock.until(due) => {}
        }
        let node = (k % nodes as u64) as usize;
        let recorder = &mut recorders[node];
        recorder.count(|c| c.publishes += 1);
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            recorder.error(ErrorKind::Timeout);
            continue;
        };
        let sent_us = start_wall + micros(due - start);
        let send = Send {
            k,
            node,
            nodes,
            sent_us,
            pad: &pad,
            agent: publishing.agent.map(|a| a.index),
        };
        let outcome = send.start(&http, &publishing);
        tasks.spawn(async move {
            let outcome = outcome.finish(due).await;
            drop(permit);
            (node, outcome)
        });
        // The request is written before the next publish's bookkeeping.
        tokio::task::yield_now().await;
    }
    let deadline = tokio::time::Instant::now() + DRAIN;
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        record(&mut recorders, &acks, done);
    }
    // Publishes still unanswered: counted against the first node, as their
    // own is unknown once the tasks are dropped.
    for _ in 0..tasks.len() {
        recorders[0].error(ErrorKind::Timeout);
    }
    recorders.iter_mut().for_each(Recorder::flush);
}

/// Waits until the publish rate rises above 0, recording the publishes
/// still in flight as they are answered; false if the run ends first.
async fn risen(
    rates: &mut watch::Receiver<u64>,
    tasks: &mut JoinSet<(usize, Outcome)>,
    recorders: &mut [Recorder],
    acks: &Acks,
    cancel: &CancellationToken,
) -> bool {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return false,
            risen = rates.wait_for(|&rate| rate > 0) => return risen.is_ok(),
            Some(done) = tasks.join_next() => {
                record(recorders, acks, done);
                let now = Instant::now();
                recorders.iter_mut().for_each(|r| r.flush_if_due(now));
            }
        }
    }
}

/// Publish `k` (to `node` of `nodes`), meant to be sent at `sent_us` (µs
/// since the Unix epoch), padded with `pad`.
struct Send<'a> {
    k: u64,
    node: usize,
    nodes: usize,
    sent_us: u64,
    pad: &'a str,
    agent: Option<u32>,
}

/// A publish under way.
enum Sending {
    /// A request to this project's topic: `201` with its `seq` (boxed:
    /// the builder is several times the others' size).
    Topic(Box<reqwest::RequestBuilder>),
    /// A request to a foreign endpoint (its bytes, over the pool's
    /// connections): any 2xx acknowledges `seq`.
    Http(Arc<Pool>, String, u64),
    /// A frame handed to the WebSocket's task, which says when it is out.
    Frame(Result<tokio::sync::oneshot::Receiver<bool>, ErrorKind>, u64),
}

impl Send<'_> {
    /// Starts the publish as `publishing` says.
    fn start(&self, http: &reqwest::Client, publishing: &Publishing) -> Sending {
        let (k, sent_us, pad) = (self.k, self.sent_us, self.pad);
        // The load generator's own sequence number, from 1.
        let seq = k + 1;
        let values = Values {
            topic: "",
            client: "publisher",
            seq,
            ts_us: sent_us,
            pad,
            ..Values::default()
        };
        match &publishing.to {
            Destination::Topics { urls } => {
                let node = self.node;
                // One allocation a publish: the optional keys are written
                // into the body, not formatted apart first.
                let mut body = String::with_capacity(80 + pad.len());
                let _ = write!(body, r#"{{"sent_us":{sent_us},"k":{k}"#);
                if self.nodes > 1 {
                    let _ = write!(body, r#","node":{node}"#);
                }
                if let Some(agent) = self.agent {
                    let _ = write!(body, r#","agent":{agent}"#);
                }
                let _ = write!(body, r#","pad":"{pad}"}}"#);
                let mut request = http
                    .post(&urls[node])
                    .header("content-type", "application/json")
                    .body(body);
                if let Some(token) = publishing.bearer() {
                    request = request.bearer_auth(token);
                }
                Sending::Topic(Box::new(request))
            }
            Destination::Http {
                pool,
                path,
                method,
                headers,
                body,
                topic,
            } => {
                let values = Values { topic, ..values };
                let request = Request {
                    method: method.clone(),
                    headers: (headers.iter())
                        .map(|(name, value)| (name.clone(), value.expand(&values)))
                        .collect(),
                    body: Some(body.expand(&values)),
                    ..Request::get(path.as_str(), None)
                };
                let bytes = request.head(pool.authority(), false, PUBLISH_DEFAULTS);
                Sending::Http(Arc::clone(pool), bytes, seq)
            }
            Destination::WebSocket {
                frames,
                frame,
                topic,
            } => {
                let text = frame.expand(&Values { topic, ..values });
                Sending::Frame(frames.send(text), seq)
            }
        }
    }
}

impl Sending {
    /// Waits for the publish's answer; its latency counts from `due`.
    async fn finish(self, due: Instant) -> Outcome {
        #[derive(serde::Deserialize)]
        struct Created {
            seq: u64,
        }
        let request = match self {
            Sending::Frame(Err(kind), _) => return Outcome::Failed(kind),
            Sending::Frame(Ok(sent), seq) => {
                return match sent.await {
                    Ok(true) => Outcome::Written { seq },
                    _ => Outcome::Failed(ErrorKind::Closed),
                };
            }
            Sending::Http(pool, bytes, seq) => {
                return match pool.send(bytes.as_bytes()).await {
                    Ok(429 | 503) => Outcome::Shed,
                    Ok(200..=299) => Outcome::Acked {
                        seq,
                        latency: due.elapsed(),
                    },
                    Ok(_) => Outcome::Failed(ErrorKind::HttpStatus),
                    Err(e) => Outcome::Failed(e.kind()),
                };
            }
            Sending::Topic(request) => *request,
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return Outcome::Failed(ErrorKind::Timeout),
            Err(_) => return Outcome::Failed(ErrorKind::Connect),
        };
        let latency = due.elapsed();
        match response.status() {
            reqwest::StatusCode::SERVICE_UNAVAILABLE | reqwest::StatusCode::TOO_MANY_REQUESTS => {
                Outcome::Shed
            }
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => Outcome::Refused(
                Refusal::of_body(&response.bytes().await.unwrap_or_default()),
            ),
            reqwest::StatusCode::CREATED => match response.json::<Created>().await {
                Ok(created) => Outcome::Acked {
                    seq: created.seq,
                    latency,
                },
                Err(_) => Outcome::Failed(ErrorKind::Protocol),
            },
            _ => Outcome::Failed(ErrorKind::HttpStatus),
        }
    }
}

/// Records what a publish came to, into its node's recorder of
/// `recorders`.
fn record(
    recorders: &mut [Recorder],
    acks: &Acks,
    done: Result<(usize, Outcome), tokio::task::JoinError>,
) {
    let Ok((node, outcome)) = done else {
        recorders[0].error(ErrorKind::Protocol);
        return;
    };
    let recorder = &mut recorders[node];
    match outcome {
        Outcome::Acked { seq, latency } => {
            acks.push(seq);
            recorder.sample(Sample::Publish, micros(latency));
            recorder.count(|c| c.published += 1);
        }
        Outcome::Written { seq } => {
            acks.push(seq);
            recorder.count(|c| c.published += 1);
        }
        Outcome::Shed => recorder.count(|c| c.publishes_shed += 1),
        Outcome::Refused(reason) => {
            recorder.error(ErrorKind::HttpStatus);
            recorder.count(|c| c.auth.refused(reason));
        }
        Outcome::Failed(kind) => recorder.error(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_is_the_highest_seq_acknowledged_by_then() {
        let acks = Acks::default();
        assert_eq!(acks.settled_by(Instant::now()), 0);
        acks.push(3);
        acks.push(2);
        let between = Instant::now();
        acks.0
            .lock()
            .unwrap()
            .push((between + Duration::from_secs(1), 9));
        assert_eq!(acks.settled_by(between), 3);
        assert_eq!(acks.settled_by(between + Duration::from_secs(2)), 9);
    }
}
