//! Topic publishers on an open-model schedule: each publish is due one
//! interval (1 / the rate in effect) after the one before, whatever happened
//! to the others, so a server that stalls cannot hide behind coordinated
//! omission. The rate may change between phases. Each publish carries its
//! intended send time (`data.sent_us`), and its latency is measured from
//! that time to its `201`, not from when it actually went out. Over several
//! server nodes, publish `k` goes to node `k` modulo their number and says
//! so (`data.node`), so that subscribers tell same-node deliveries from
//! cross-node ones; each node's publishes are recorded as that node's. A publish the
//! schedule wanted but could not send (too many already in flight) counts
//! as a timeout: the server did not keep up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use crate::client::{micros, now_micros};
use crate::metrics::{ErrorKind, Recorder, Sample};

/// Most publishes in flight at once.
const MAX_IN_FLIGHT: usize = 512;

/// How long publishes still in flight may take once the run ends; those
/// that take longer count as timeouts.
const DRAIN: Duration = Duration::from_secs(5);

/// The acknowledged publishes: each `seq` and when its `201` came.
#[derive(Debug, Default)]
pub struct Acks(Mutex<Vec<(Instant, u64)>>);

impl Acks {
    fn push(&self, seq: u64) {
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
    /// `503` or `429`: the server shed it, nothing was stored. The open
    /// model goes on at its rate: that is the offered load.
    Shed,
    /// Any other answer, or none.
    Failed(ErrorKind),
}

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct Publishing {
    /// `POST` URL of the topic's events on each server node (at least one).
    pub urls: Vec<String>,
    /// Publishes per second, now: the runner changes it between phases
    /// (0: none until it rises).
    pub rate: watch::Receiver<u64>,
    /// Padding bytes per publish.
    pub size: usize,
    /// Bearer token, if the server wants one.
    pub token: Option<String>,
}

/// Publishes as `publishing` says until `cancel`, recording each node's
/// publishes into its recorder of `recorders` (one per URL) and
/// acknowledged seqs into `acks`.
pub async fn run(
    http: reqwest::Client,
    publishing: Publishing,
    acks: Arc<Acks>,
    mut recorders: Vec<Recorder>,
    cancel: CancellationToken,
) {
    let nodes = publishing.urls.len();
    let start = Instant::now();
    let start_wall = now_micros();
    let pad = "x".repeat(publishing.size);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks: JoinSet<(usize, Outcome)> = JoinSet::new();
    let mut rates = publishing.rate;
    let mut due = start;
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
        tokio::select! {
            () = cancel.cancelled() => break,
            () = sleep_until(due.into()) => {}
        }
        while let Some(done) = tasks.try_join_next() {
            record(&mut recorders, &acks, done);
        }
        // Counts reach the timeline (and their phase) within a tick.
        let now = Instant::now();
        recorders.iter_mut().for_each(|r| r.flush_if_due(now));
        let node = (k % nodes as u64) as usize;
        let recorder = &mut recorders[node];
        recorder.count(|c| c.publishes += 1);
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            recorder.error(ErrorKind::Timeout);
            continue;
        };
        let sent_us = start_wall + micros(due - start);
        let body = if nodes > 1 {
            format!(r#"{{"sent_us":{sent_us},"k":{k},"node":{node},"pad":"{pad}"}}"#)
        } else {
            format!(r#"{{"sent_us":{sent_us},"k":{k},"pad":"{pad}"}}"#)
        };
        let mut request = http
            .post(&publishing.urls[node])
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = &publishing.token {
            request = request.bearer_auth(token);
        }
        tasks.spawn(async move {
            let outcome = publish(request, due).await;
            drop(permit);
            (node, outcome)
        });
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

/// Sends one publish due at `due`, measuring when its answer came.
async fn publish(request: reqwest::RequestBuilder, due: Instant) -> Outcome {
    #[derive(serde::Deserialize)]
    struct Created {
        seq: u64,
    }
    match request.send().await {
        Ok(response) if response.status() == reqwest::StatusCode::CREATED => {
            let latency = due.elapsed();
            match response.json::<Created>().await {
                Ok(created) => Outcome::Acked {
                    seq: created.seq,
                    latency,
                },
                Err(_) => Outcome::Failed(ErrorKind::Protocol),
            }
        }
        Ok(response)
            if matches!(
                response.status(),
                reqwest::StatusCode::SERVICE_UNAVAILABLE | reqwest::StatusCode::TOO_MANY_REQUESTS
            ) =>
        {
            Outcome::Shed
        }
        Ok(_) => Outcome::Failed(ErrorKind::HttpStatus),
        Err(e) if e.is_timeout() => Outcome::Failed(ErrorKind::Timeout),
        Err(_) => Outcome::Failed(ErrorKind::Connect),
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
        Outcome::Shed => recorder.count(|c| c.publishes_shed += 1),
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
