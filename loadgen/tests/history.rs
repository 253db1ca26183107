//! The run history on SQLite and on PostgreSQL: runs recorded and read back
//! (in order, by label, histograms exactly), the `history` listing and
//! trend, clear errors; and the binary storing runs that `history`,
//! `compare` and `--baseline` then find.
//!
//! PostgreSQL comes from the server tests' support modules (`tests/support/`
//! of the root package), shared by path: `TEST_DATABASE_URL`, or a
//! throwaway cluster this process starts. Without PostgreSQL these tests
//! fail; they are never skipped. The binary runs through this package's
//! own `support`.
//!
//! Test with `cargo test -p streamgauge-loadgen --test history`.

// The shared support modules' helpers are `pub` for the root package's tests.
#![allow(unreachable_pub)]

#[path = "../../tests/support/db.rs"]
mod db;
#[path = "../../tests/support/postgres.rs"]
mod postgres;
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use db::{Backend, Database};
use hdrhistogram::Histogram;
use streamgauge_loadgen::analysis;
use streamgauge_loadgen::cli::{HistoryArgs, HistoryStore};
use streamgauge_loadgen::history::{self, History};
use streamgauge_loadgen::metrics::Stats;
use streamgauge_loadgen::metrics::monitor::CpuSeconds;
use streamgauge_loadgen::metrics::timeline::{Measured, Row};
use streamgauge_loadgen::scenario::{Scenario, Transport};
use streamgauge_loadgen::summary::manifest::{Environment, ServerUnderTest};
use streamgauge_loadgen::summary::{Context, Summary};
use support::{loadgen, read_json, short_run, text};

/// Runs each listed `async fn(Backend)` as one test per database.
macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::Backend::Sqlite).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_both_databases!(
    runs_come_back_in_order_and_labels_name_the_newest,
    histograms_come_back_exactly_and_merge,
    the_listing_and_the_trend_show_every_run,
    a_run_is_recorded_once,
);

/// One run to record.
struct Run {
    run_id: &'static str,
    scenario: &'static str,
    transport: Transport,
    repeat: u32,
    label: Option<&'static str>,
    /// Every latency sample, µs.
    latency_us: u64,
    /// Server CPU, %.
    cpu_pct: f64,
}

impl Run {
    /// Its summary and histograms, as a measurement makes them.
    fn measure(&self) -> (Summary, Stats) {
        let mut stats = Stats::default();
        for i in 0..1_000 {
            stats.latency.record(self.latency_us + i % 50).unwrap();
        }
        stats.connect.record(800).unwrap();
        stats.connect.record(1_200).unwrap();
        stats.counts.events = 1_000 * u64::from(self.repeat);
        stats.counts.connects = 2;
        let scenario = Scenario {
            name: self.scenario.to_owned(),
            transport: self.transport,
            ..Scenario::default()
        };
        let measured = Measured {
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            duration: Duration::from_secs(2),
            totals: stats.clone(),
            timeline: vec![row(self.cpu_pct)],
            phases: Vec::new(),
            target: "http://127.0.0.1:1".to_owned(),
            nodes: Vec::new(),
            cpu_seconds: CpuSeconds::default(),
            workers: 1,
            aborted: None,
            agents: Vec::new(),
            incomplete: false,
        };
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let context = Context {
            run_id: self.run_id.to_owned(),
            environment: Arc::new(Environment::detect(here)),
            server: ServerUnderTest {
                program: "embedded".to_owned(),
                args: Vec::new(),
            },
            label: self.label.map(str::to_owned),
            repeat: self.repeat,
        };
        (analysis::summarize(&scenario, &measured, context), stats)
    }
}

/// One second of a run, with the server's CPU and memory.
fn row(cpu_pct: f64) -> Row {
    Row {
        t_s: 1.0,
        phase: "steady".to_owned(),
        clients: 10,
        events_per_s: 500.0,
        bytes_per_s: 16_000.0,
        latency_p50_us: None,
        latency_p90_us: None,
        latency_p95_us: None,
        latency_p99_us: None,
        latency_p999_us: None,
        latency_max_us: None,
        schedule_lag_p50_us: None,
        schedule_lag_p99_us: None,
        errors: 0,
        server_cpu_pct: Some(cpu_pct),
        server_rss_mb: Some(42.0),
        server_heap_bytes: None,
        loadgen_cpu_pct: None,
        loadgen_rss_mb: None,
        connects: 0,
    }
}

const FIRST: &str = "20261124T100000Z-aaaa";
const SECOND: &str = "20261124T110000Z-bbbb";
const THIRD: &str = "20261124T120000Z-cccc";

/// Three invocations: the first labelled `main` with three runs (sse
/// twice, ws once), the second labelled `main` with one, the third
/// labelled `feature` with one, each slower than the one before.
fn invocations() -> Vec<Run> {
    let run = |run_id, transport, repeat, label, latency_us, cpu_pct| Run {
        run_id,
        scenario: "clients-10",
        transport,
        repeat,
        label: Some(label),
        latency_us,
        cpu_pct,
    };
    vec![
        run(FIRST, Transport::Sse, 1, "main", 1_000, 10.0),
        run(FIRST, Transport::Ws, 1, "main", 900, 11.0),
        run(FIRST, Transport::Sse, 2, "main", 1_100, 12.0),
        run(SECOND, Transport::Sse, 1, "main", 2_000, 20.0),
        run(THIRD, Transport::Sse, 1, "feature", 3_000, 30.0),
    ]
}

/// A fresh history on `backend` holding `runs`, with the summaries and
/// histograms recorded.
async fn recorded(backend: Backend, runs: &[Run]) -> (Database, History, Vec<(Summary, Stats)>) {
    let database = Database::fresh(backend).await;
    let history = History::open(database.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut measured = Vec::new();
    for run in runs {
        let (summary, stats) = run.measure();
        history
            .record(&summary, &stats)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        measured.push((summary, stats));
    }
    (database, history, measured)
}

async fn runs_come_back_in_order_and_labels_name_the_newest(backend: Backend) {
    let (database, history, measured) = recorded(backend, &invocations()).await;
    let first = history.runs(FIRST).await.unwrap();
    let expected: Vec<serde_json::Value> = measured[..3]
        .iter()
        .map(|(summary, _)| serde_json::to_value(summary).unwrap())
        .collect();
    assert_eq!(first, expected, "the whole summaries, in recorded order");
    assert_eq!(history.runs(THIRD).await.unwrap().len(), 1);
    assert!(history.runs("no-such-run").await.unwrap().is_empty());

    assert_eq!(
        history.latest_with_label("main").await.unwrap().as_deref(),
        Some(SECOND)
    );
    assert_eq!(
        history
            .latest_with_label("feature")
            .await
            .unwrap()
            .as_deref(),
        Some(THIRD)
    );
    assert_eq!(history.latest_with_label("nobody").await.unwrap(), None);

    // Reopening finds the same runs and migrates nothing twice.
    let again = History::open(database.url()).await.unwrap();
    assert_eq!(again.runs(FIRST).await.unwrap(), expected);
}

async fn histograms_come_back_exactly_and_merge(backend: Backend) {
    let (_database, history, measured) = recorded(backend, &invocations()).await;
    let (summary, stats) = &measured[2];
    let stored = history
        .histograms(FIRST, "clients-10", "sse", 2)
        .await
        .unwrap();
    let names: Vec<&str> = stored.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "connect",
            "cross_node",
            "end_to_end",
            "first_event",
            "from_publish",
            "inter_token",
            "inter_token_written",
            "latency",
            "publish",
            "publish_overhead",
            "reconnect",
            "resume",
            "same_node",
            "schedule_lag",
            "token_time"
        ]
    );
    let get =
        |name: &str| -> &Histogram<u64> { &stored.iter().find(|(n, _)| n == name).unwrap().1 };
    assert_eq!(get("latency"), &stats.latency);
    assert_eq!(get("connect"), &stats.connect);
    assert!(get("publish").is_empty());
    let latency = summary.latency_us.unwrap();
    assert_eq!(get("latency").len(), 1_000);
    assert_eq!(get("latency").value_at_quantile(0.50), latency.p50);
    assert_eq!(get("latency").value_at_quantile(0.99), latency.p99);
    assert_eq!(get("latency").max(), latency.max);

    // Repetitions merge into one distribution, exactly.
    let (_, other) = &history
        .histograms(SECOND, "clients-10", "sse", 1)
        .await
        .unwrap()
        .into_iter()
        .find(|(name, _)| name == "latency")
        .unwrap();
    let mut merged = get("latency").clone();
    merged.add(other).unwrap();
    let mut expected = stats.latency.clone();
    expected.add(&measured[3].1.latency).unwrap();
    assert_eq!(merged, expected);
    assert!(
        history
            .histograms(FIRST, "clients-10", "sse", 9)
            .await
            .unwrap()
            .is_empty()
    );
}

fn args(
    url: &str,
    scenario: Option<&str>,
    transport: Option<Transport>,
    limit: u32,
) -> HistoryArgs {
    HistoryArgs {
        history: HistoryStore {
            url: url.to_owned(),
        },
        scenario: scenario.map(str::to_owned),
        transport,
        limit,
    }
}

/// The table rows of `text` that name `run_id`.
fn rows_of(text: &str, run_id: &str) -> usize {
    text.lines().filter(|line| line.contains(run_id)).count()
}

/// The rows of `text` for each of the three invocations, oldest first.
fn rows_of_each(text: &str) -> (usize, usize, usize) {
    (
        rows_of(text, FIRST),
        rows_of(text, SECOND),
        rows_of(text, THIRD),
    )
}

async fn the_listing_and_the_trend_show_every_run(backend: Backend) {
    let (database, _history, measured) = recorded(backend, &invocations()).await;
    let url = database.url();

    let listing = history::command(url, &args(url, None, None, 20).filter())
        .await
        .unwrap();
    assert!(listing.starts_with("5 runs, oldest first"), "{listing}");
    assert_eq!(rows_of_each(&listing), (3, 1, 1), "{listing}");
    let first_row = listing.find(FIRST).unwrap();
    assert!(
        first_row < listing.find(THIRD).unwrap(),
        "oldest first: {listing}"
    );
    let started_at = measured[0].0.started_at.as_str();
    for text in ["main", "feature", "clients-10", "sse", "ws", started_at] {
        assert!(listing.contains(text), "{text} in {listing}");
    }
    let versions = &measured[0].0.manifest.environment.versions;
    let commit = &versions
        .git_commit
        .as_ref()
        .expect("tests run in a git checkout")[..10];
    let shown = match versions.git_dirty {
        Some(true) => format!("{commit}+dirty"),
        _ => commit.to_owned(),
    };
    assert!(listing.contains(&shown), "{shown} in {listing}");

    let newest = history::command(url, &args(url, None, None, 2).filter())
        .await
        .unwrap();
    assert_eq!(rows_of_each(&newest), (0, 1, 1), "{newest}");

    let trend = history::command(
        url,
        &args(url, Some("clients-10"), Some(Transport::Sse), 20).filter(),
    )
    .await
    .unwrap();
    assert!(
        trend.starts_with("clients-10 (sse): 4 runs, oldest first"),
        "{trend}"
    );
    assert!(!trend.contains("(ws)"), "{trend}");
    // Latency grows run after run: from the lowest bar to the highest.
    let p99 = trend.lines().find(|l| l.starts_with("p99 ms")).unwrap();
    assert!(p99.contains("▁") && p99.contains("█"), "{p99}");
    let cpu = trend
        .lines()
        .find(|l| l.starts_with("server cpu %"))
        .unwrap();
    assert!(
        cpu.ends_with("▁▂▅█  10.0 → 30.0  (min 10.0, max 30.0)"),
        "{cpu}"
    );
    for figure in ["events/s", "p50 ms", "error rate", "server rss MB"] {
        assert!(
            trend.lines().any(|l| l.starts_with(figure)),
            "{figure} in {trend}"
        );
    }

    let both = history::command(url, &args(url, Some("clients-10"), None, 20).filter())
        .await
        .unwrap();
    assert!(both.contains("clients-10 (sse): 4 runs") && both.contains("clients-10 (ws): 1 run,"));

    let none = history::command(url, &args(url, Some("nope"), None, 20).filter())
        .await
        .unwrap();
    assert!(
        none.starts_with("no runs of nope in the history at"),
        "{none}"
    );
}

async fn a_run_is_recorded_once(backend: Backend) {
    let runs = invocations();
    let (_database, history, measured) = recorded(backend, &runs[..1]).await;
    let (summary, stats) = &measured[0];
    let error = history
        .record(summary, stats)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("run history at "), "{error}");
    assert!(
        error.contains(&format!("recording run {FIRST} (clients-10)")),
        "{error}"
    );
    assert_eq!(history.runs(FIRST).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_history_that_cannot_be_used_says_where_and_why() {
    let message =
        |url: &'static str| async move { History::open(url).await.unwrap_err().to_string() };
    let wrong = message("mysql://h/db").await;
    assert!(
        wrong.starts_with("run history at mysql://h/db: not a usable database URL"),
        "{wrong}"
    );
    let blocked = message("sqlite:///dev/null/history/h.db").await;
    assert!(
        blocked.contains("creating the directory /dev/null/history"),
        "{blocked}"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://u:secret@127.0.0.1:{port}/db");
    let refused = History::open(&url).await.unwrap_err().to_string();
    assert!(
        refused.starts_with(&format!(
            "run history at postgres://u:***@127.0.0.1:{port}/db: connecting:"
        )),
        "{refused}"
    );
    assert!(!refused.contains("secret"), "{refused}");
}

/// `run` twice with a label into a fresh history: `history` lists both,
/// `compare` and `--baseline` find them by label and by run id.
#[test]
fn the_binary_stores_runs_that_history_compare_and_baseline_find() {
    let dir = tempfile::Builder::new()
        .prefix("streamgauge-history-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    // The history's directory does not exist yet: it is created.
    let url = format!("sqlite://{}", dir.path().join("new/h.db").display());
    let mut run_ids = Vec::new();
    for i in 0..2 {
        let out = dir.path().join(format!("run-{i}"));
        let output = short_run(&out, &["--history", &url, "--label", "x"], &[]);
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "{}",
            text(&output.stderr)
        );
        let stderr = text(&output.stderr);
        assert!(!stderr.contains("not stored in the history"), "{stderr}");
        let summary: serde_json::Value = read_json(&out.join("summary.json"));
        run_ids.push(summary["run_id"].as_str().unwrap().to_owned());
    }

    let listed = loadgen(&["history", "--history", &url]);
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    let listing = text(&listed.stdout);
    assert!(listing.starts_with("2 runs, oldest first"), "{listing}");
    for run_id in &run_ids {
        assert_eq!(rows_of(&listing, run_id), 1, "{run_id} in {listing}");
    }

    let compared = loadgen(&["compare", &run_ids[0], "x", "--history", &url]);
    let compared_out = text(&compared.stdout);
    assert!(
        matches!(compared.status.code(), Some(0 | 1 | 3)),
        "{}",
        text(&compared.stderr)
    );
    assert!(
        compared_out.contains(&format!(
            "run {} compared with label x (run {})",
            run_ids[0], run_ids[1]
        )),
        "{compared_out}"
    );

    let out = dir.path().join("run-baseline");
    let judged = short_run(
        &out,
        &["--history", &url, "--no-history", "--baseline", "x"],
        &[],
    );
    assert!(
        matches!(judged.status.code(), Some(0 | 1 | 3)),
        "{}",
        text(&judged.stderr)
    );
    let summary: serde_json::Value = read_json(&out.join("summary.json"));
    assert!(summary["comparison"].is_object(), "{summary}");
    let listed = text(&loadgen(&["history", "--history", &url]).stdout);
    assert!(
        listed.starts_with("2 runs"),
        "--no-history stores nothing: {listed}"
    );
}

/// A history that cannot be written costs the run nothing but a warning.
#[test]
fn a_run_whose_history_cannot_be_written_keeps_its_results() {
    let dir = tempfile::Builder::new()
        .prefix("streamgauge-history-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let out = dir.path().join("run");
    let output = short_run(&out, &["--history", "sqlite:///dev/null/history/h.db"], &[]);
    let stderr = text(&output.stderr);
    assert!(matches!(output.status.code(), Some(0 | 1)), "{stderr}");
    assert!(
        stderr.contains("warning: the runs were not stored in the history")
            && stderr.contains("creating the directory /dev/null/history"),
        "{stderr}"
    );
    for file in ["summary.json", "report.md", "junit.xml"] {
        assert!(out.join(file).is_file(), "{file}");
    }
}
