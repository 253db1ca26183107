//! The live view of an invocation while it runs: `--dashboard ADDR` (a
//! page with live charts, fed by SSE, and `/metrics` for Prometheus) and
//! `--samples-jsonl PATH` (one JSON line per row). It is told what the
//! runner measures, row by row ([`Watcher`], a
//! [`Watch`](crate::metrics::timeline::Watch)), and each run's verdict;
//! it never measures or judges anything itself.
//!
//! - `event`: the events and their JSON (docs/cli.md lists them);
//! - `feed`: every event so far, for the pages;
//! - `server`: the page, the SSE stream and `/metrics`;
//! - `figures`: what `/metrics` shows;
//! - `samples`: the samples file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use self::event::{Done, Event, Kind, PhaseBegins, RunLabel, RunVerdict, Sample, Started};
use self::feed::Feed;
use self::figures::Figures;
use self::samples::Samples;
use self::server::Server;
use crate::metrics::Stats;
use crate::metrics::timeline::{Row, Watch};
use crate::scenario::Scenario;
use crate::summary::verdict::Verdict;
use crate::summary::{Report, Summary};

pub mod event;
mod feed;
mod figures;
mod samples;
mod server;

/// What to show live, as the command line asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Serve the dashboard at this address (port 0: any free one).
    pub dashboard: Option<SocketAddr>,
    /// Keep the dashboard up after the invocation until Ctrl-C (SIGINT)
    /// or SIGTERM.
    pub hold: bool,
    /// Write the samples file here.
    pub samples: Option<PathBuf>,
}

/// What the dashboard's server shows: its feed and its figures.
#[derive(Debug)]
struct Dashboard {
    feed: Arc<Feed>,
    figures: Figures,
}

/// Where rows and verdicts go: the dashboard and the samples file.
#[derive(Debug)]
struct Outlets {
    dashboard: Option<Dashboard>,
    samples: Option<Samples>,
}

impl Outlets {
    /// Adds an event to the dashboard's feed.
    fn publish(&self, event: impl FnOnce() -> Event) {
        if let Some(dashboard) = &self.dashboard {
            dashboard.feed.push(event());
        }
    }
}

/// The live view of one invocation, from [`Live::start`] to
/// [`Live::finish`].
#[derive(Debug)]
pub struct Live {
    /// Shared with each run's [`Watcher`].
    outlets: Arc<Outlets>,
    /// The dashboard's server.
    server: Option<Server>,
    /// `--dashboard-hold`.
    hold: bool,
    /// The invocation's verdict and every run's, once it has judged them
    /// for the last time.
    judged: Mutex<Option<(Verdict, Vec<RunVerdict>)>>,
}

impl Live {
    /// Starts what `options` ask for: binds the dashboard (and says where
    /// on stderr: `dashboard on http://ADDR/`), creates the samples file.
    ///
    /// # Errors
    ///
    /// The address cannot be bound, or the file cannot be created.
    pub async fn start(options: &Options) -> anyhow::Result<Self> {
        let samples = options
            .samples
            .as_deref()
            .map(Samples::create)
            .transpose()?;
        let (dashboard, server) = match options.dashboard {
            Some(addr) => {
                let feed = Arc::new(Feed::new());
                let figures = Figures::default();
                let server = Server::start(addr, Arc::clone(&feed), figures.clone()).await?;
                eprintln!("dashboard on http://{}/", server.addr);
                (Some(Dashboard { feed, figures }), Some(server))
            }
            None => (None, None),
        };
        Ok(Self {
            outlets: Arc::new(Outlets { dashboard, samples }),
            server,
            hold: options.hold,
            judged: Mutex::new(None),
        })
    }

    /// The watcher of the run `run` of `scenario`, which is starting; none
    /// when nothing is shown live.
    pub fn watch(&self, run: RunLabel, scenario: &Scenario) -> Option<Watcher> {
        let outlets = &self.outlets;
        if outlets.dashboard.is_none() && outlets.samples.is_none() {
            return None;
        }
        outlets.publish(|| Event::of(Kind::Run, &Started::of(run.clone(), scenario)));
        Some(Watcher {
            outlets: Arc::clone(outlets),
            run,
            phase: Mutex::new(None),
        })
    }

    /// The verdict of the run `summary` describes, as it ends.
    pub fn verdict(&self, summary: &Summary) {
        (self.outlets).publish(|| Event::of(Kind::Verdict, &RunVerdict::of(summary)));
    }

    /// Every run judged for the last time (against the baseline, if any).
    pub fn judged(&self, report: &Report) {
        let runs = report.summaries().map(RunVerdict::of).collect();
        *self.judged.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((report.verdict(), runs));
    }

    /// Ends the live view of an invocation that ended with `error` (if it
    /// failed): says it is done, holds the dashboard until Ctrl-C or
    /// SIGTERM if asked (unless `cancel` already stopped the invocation),
    /// then stops it.
    ///
    /// # Errors
    ///
    /// A line of the samples file could not be written.
    pub async fn finish(
        self,
        error: Option<&anyhow::Error>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let judged = self
            .judged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let held = self.hold && !cancel.is_cancelled() && self.server.is_some();
        let (verdict, runs) = judged.map_or((None, Vec::new()), |(v, runs)| (Some(v), runs));
        let done = Done {
            verdict: verdict.filter(|_| error.is_none()),
            runs,
            error: error.map(|e| format!("{e:#}")),
            held,
        };
        self.outlets.publish(|| Event::of(Kind::Done, &done));
        if let Some(server) = self.server {
            if held {
                eprintln!("dashboard held on http://{}/ until Ctrl-C", server.addr);
                interrupted(cancel).await;
            }
            server.stop().await;
        }
        (self.outlets.samples.as_ref()).map_or(Ok(()), Samples::finish)
    }
}

/// Waits for Ctrl-C (`cancel`, which `main` cancels on SIGINT) or SIGTERM.
async fn interrupted(cancel: &CancellationToken) {
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                () = cancel.cancelled() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!("SIGTERM cannot be handled ({e}): Ctrl-C stops the dashboard");
            cancel.cancelled().await;
        }
    }
}

/// Watches one run: each row goes to the feed (with a `phase` event when
/// the phase changes), to `/metrics` and to the samples file.
#[derive(Debug)]
pub struct Watcher {
    outlets: Arc<Outlets>,
    run: RunLabel,
    /// The phase of the last row, and when that row ended.
    phase: Mutex<Option<(String, f64)>>,
}

impl Watcher {
    /// The start of `row`'s phase if it begins with `row`: 0 for the first
    /// row, else the end of the last row of the phase before.
    fn phase_begins(&self, row: &Row) -> Option<f64> {
        let mut last = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        let begins = match &*last {
            None => Some(0.0),
            Some((phase, ended)) => (*phase != row.phase).then_some(*ended),
        };
        *last = Some((row.phase.clone(), row.t_s));
        begins
    }
}

impl Watch for Watcher {
    fn row(&self, row: &Row, interval: &Stats) {
        let sample = Sample {
            run: &self.run,
            row,
        };
        // Serialized once, for the samples file and the dashboard alike.
        let event = Event::of(Kind::Sample, &sample);
        if let Some(samples) = &self.outlets.samples {
            samples.write(&event.data);
        }
        let Some(dashboard) = &self.outlets.dashboard else {
            return;
        };
        if let Some(t_s) = self.phase_begins(row) {
            let begins = PhaseBegins {
                run: &self.run,
                phase: &row.phase,
                t_s,
            };
            dashboard.feed.push(Event::of(Kind::Phase, &begins));
        }
        dashboard.feed.push(event);
        dashboard.figures.add(&self.run, row, interval);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use super::*;
    use crate::scenario::Phase;

    fn label(scenario: &str) -> RunLabel {
        RunLabel {
            run_id: "r1".to_owned(),
            scenario: scenario.to_owned(),
            transport: "ws",
            repeat: 1,
        }
    }

    /// The first event `/events` sends a page that saw event `last`.
    async fn resume(addr: SocketAddr, last: usize) -> String {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut response = http
            .get(format!("http://{addr}/events"))
            .header("last-event-id", last.to_string())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("GET /events");
        let mut text = String::new();
        while !text.contains("\n\n") {
            let chunk = response.chunk().await.expect("a chunk").expect("more");
            text.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
        text
    }

    #[tokio::test]
    async fn rows_become_phase_and_sample_events_and_samples_lines_that_say_their_run() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("samples.jsonl");
        let options = Options {
            dashboard: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            hold: false,
            samples: Some(path.clone()),
        };
        let live = Live::start(&options).await.expect("the live view starts");
        let second = Duration::from_secs(2);
        let scenario = Scenario {
            phases: vec![
                Phase::steady("ramp", 1, second),
                Phase::steady("steady", 2, second),
            ],
            ..Scenario::default()
        };
        for name in ["first", "second"] {
            let watcher = live.watch(label(name), &scenario).expect("watched");
            for (t_s, phase) in [(1.0, "ramp"), (2.0, "ramp"), (3.0, "steady")] {
                let row = Row {
                    t_s,
                    phase: phase.to_owned(),
                    ..Row::default()
                };
                watcher.row(&row, &Stats::default());
            }
        }
        let feed = Arc::clone(&live.outlets.dashboard.as_ref().expect("a dashboard").feed);
        let addr = live.server.as_ref().expect("a server").addr;
        let resumed = resume(addr, 10).await;
        assert!(resumed.starts_with("id: 11\nevent: sample\n"), "{resumed}");
        live.finish(None, &CancellationToken::new())
            .await
            .expect("finished");

        let events: Vec<(&str, Value)> = (feed.since(0).iter())
            .map(|(_, e)| (e.kind.as_str(), serde_json::from_str(&e.data).unwrap()))
            .collect();
        let kinds: Vec<&str> = events.iter().map(|(kind, _)| *kind).collect();
        let run = ["run", "phase", "sample", "sample", "phase", "sample"];
        assert_eq!(kinds, [&run[..], &run[..], &["done"]].concat());
        assert_eq!(events[0].1["phases"][1]["start_s"], 2.0);
        let phases: Vec<(&Value, &Value)> = (events.iter())
            .filter(|(kind, _)| *kind == "phase")
            .map(|(_, e)| (&e["phase"], &e["t_s"]))
            .collect();
        assert_eq!(
            phases[..2],
            [
                (&"ramp".into(), &0.0.into()),
                (&"steady".into(), &2.0.into())
            ]
        );
        assert_eq!(events[12].1["verdict"], Value::Null);
        assert_eq!(events[12].1["error"], Value::Null);

        let lines: Vec<Value> = (std::fs::read_to_string(&path).expect("the samples").lines())
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        let runs: Vec<(&Value, &Value)> = (lines.iter())
            .map(|line| (&line["scenario"], &line["t_s"]))
            .collect();
        assert_eq!(runs.len(), 6);
        assert_eq!(runs[2], (&"first".into(), &3.0.into()));
        assert_eq!(runs[3], (&"second".into(), &1.0.into()));
        assert!(
            lines
                .iter()
                .all(|line| line["run_id"] == "r1" && line["transport"] == "ws")
        );
    }
}
