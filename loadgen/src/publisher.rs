//! Topic publishers on an open-model schedule: publish `k` is due at
//! `start + k / rate` whatever happened to the others, so a server that
//! stalls cannot hide behind coordinated omission. Each publish carries its
//! intended send time (`data.sent_us`), and its latency is measured from
//! that time, not from when it actually went out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use crate::client::{micros, now_micros};
use crate::metrics::{ErrorKind, Recorder, Sample};

/// Most publishes in flight at once. A schedule that needs more is one the
/// server is not keeping up with: the publish is counted as a timeout.
const MAX_IN_FLIGHT: usize = 512;

/// How long publishes still in flight may take once the run ends.
const DRAIN: Duration = Duration::from_secs(5);

/// The outcome of one publish: when it was due, and what came back.
type Outcome = (Instant, Result<reqwest::StatusCode, reqwest::Error>);

/// Publishes to `url` at `rate` per second, `size` bytes of padding each,
/// until `cancel`.
pub async fn run(
    http: reqwest::Client,
    url: String,
    rate: u64,
    size: usize,
    mut recorder: Recorder,
    cancel: CancellationToken,
) {
    let start = Instant::now();
    let start_wall = now_micros();
    let pad = "x".repeat(size);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    for k in 0u64.. {
        let due = start + Duration::from_secs_f64(k as f64 / rate as f64);
        tokio::select! {
            () = cancel.cancelled() => break,
            () = sleep_until(due.into()) => {}
        }
        while let Some(done) = tasks.try_join_next() {
            record(&mut recorder, done);
        }
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            recorder.error(ErrorKind::Timeout);
            continue;
        };
        let sent_us = start_wall + micros(due - start);
        let body = format!(r#"{{"sent_us":{sent_us},"k":{k},"pad":"{pad}"}}"#);
        let request = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        tasks.spawn(async move {
            let result = request.send().await.map(|response| response.status());
            drop(permit);
            (due, result)
        });
    }
    let deadline = tokio::time::Instant::now() + DRAIN;
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        record(&mut recorder, done);
    }
    recorder.flush();
}

fn record(recorder: &mut Recorder, done: Result<Outcome, tokio::task::JoinError>) {
    let Ok((due, result)) = done else {
        return;
    };
    match result {
        Ok(status) if status == reqwest::StatusCode::CREATED => {
            recorder.sample(Sample::Publish, micros(due.elapsed()));
            recorder.count(|c| c.published += 1);
        }
        Ok(_) => recorder.error(ErrorKind::HttpStatus),
        Err(e) if e.is_timeout() => recorder.error(ErrorKind::Timeout),
        Err(_) => recorder.error(ErrorKind::Connect),
    }
}
