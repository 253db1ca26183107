//! The live view of a run: `--dashboard` in headless Chromium (the page
//! shows samples as the run goes, then the verdict, held until SIGTERM;
//! `/metrics` scraped during and after the run), and `--samples-jsonl`
//! (one line per second, each saying its run). Every wait is on the load
//! generator's own output, the page's DOM or its events, each bounded.

mod support;

#[path = "../../tests/support/browser.rs"]
mod browser;

use std::path::Path;

use fantoccini::Client;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::ChildStderr;
use tokio::sync::mpsc;

use self::browser::Driver;
use self::support::{WAIT, out_dir, read, read_json, spawn};

/// A warning that breaks: the page must show it among the verdict's.
const BROKEN: &str = "events_per_s>1000000000";

/// The load generator's stderr, line by line, as it comes.
fn lines(stderr: ChildStderr) -> mpsc::UnboundedReceiver<String> {
    // Unbounded: a few lines (the readiness line, warnings, the hold line).
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("loadgen: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The rest of the first line of `stderr` that starts with `prefix`.
async fn line_after(stderr: &mut mpsc::UnboundedReceiver<String>, prefix: &str) -> String {
    let found = async {
        while let Some(line) = stderr.recv().await {
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
        panic!("the load generator ended before saying {prefix:?}");
    };
    tokio::time::timeout(WAIT, found)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {prefix:?} on stderr"))
}

/// Waits, at each change of the page's DOM, until the JavaScript
/// expression `condition` is truthy; its value.
async fn until(browser: &Client, what: &str, condition: &str) -> Value {
    let script = format!(
        "const done = arguments[arguments.length - 1];
         const check = () => {{
             const found = {condition};
             if (found) {{ observer.disconnect(); done(found); }}
         }};
         const observer = new MutationObserver(check);
         observer.observe(document.body,
             {{ subtree: true, childList: true, characterData: true, attributes: true }});
         check();"
    );
    tokio::time::timeout(WAIT, browser.execute_async(&script, vec![]))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
}

/// The dashboard's `/metrics`, checked to have the load generator's
/// figures under their documented names; its events counter.
async fn events_counted(dashboard: &str) -> f64 {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = http
        .get(format!("{dashboard}metrics"))
        .timeout(WAIT)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.expect("the metrics");
    for name in [
        "# TYPE streamgauge_loadgen_events_total counter",
        "streamgauge_loadgen_errors_total{kind=\"timeout\"} ",
        "streamgauge_loadgen_clients ",
        "streamgauge_loadgen_run_info{",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
    ] {
        assert!(text.contains(name), "{name} in:\n{text}");
    }
    (text.lines())
        .find_map(|line| line.strip_prefix("streamgauge_loadgen_events_total "))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no events counter in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_run_live_then_its_verdict_until_sigterm() {
    let out = out_dir("dashboard");
    let driver = Driver::start().await;
    let threshold = format!("warn:{BROKEN}");
    let mut loadgen = spawn(&[
        "run",
        "--clients",
        "2",
        "--duration",
        "5s",
        "--no-history",
        "--no-default-thresholds",
        "--threshold",
        &threshold,
        "--dashboard",
        "127.0.0.1:0",
        "--dashboard-hold",
        "--out",
        out.to_str().unwrap(),
    ]);
    let mut stderr = lines(loadgen.stderr.take().unwrap());
    let dashboard = line_after(&mut stderr, "dashboard on ").await;
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let browser = driver.browser(profile.path(), &[]).await;
    browser
        .goto(&dashboard)
        .await
        .expect("loading the dashboard");

    let eps = until(
        &browser,
        "a sample with events",
        "Number(document.getElementById('now-eps').textContent) > 0 \
         && document.getElementById('now-eps').textContent",
    )
    .await;
    eprintln!("the page shows {eps} events/s");
    assert!(events_counted(&dashboard).await > 0.0, "during the run");

    line_after(&mut stderr, "dashboard held on ").await;
    let verdict = until(
        &browser,
        "the verdict",
        "document.getElementById('verdict').dataset.verdict \
         && document.getElementById('verdict').textContent",
    )
    .await;
    let verdict = verdict.as_str().expect("the verdict's text");
    assert!(verdict.contains("verdict: warn"), "{verdict}");
    assert!(verdict.contains(BROKEN), "{verdict}");
    let charts = until(
        &browser,
        "the charts",
        "document.querySelectorAll('#charts svg path.series').length",
    )
    .await;
    assert!(charts.as_u64() >= Some(8), "{charts}");
    let after = events_counted(&dashboard).await;
    let summary = read_json(&out.join("summary.json"));
    assert!(after > 0.0, "after the run");
    assert!(
        after <= summary["events"].as_f64().unwrap(),
        "the rows' events are the run's: {after} {summary}"
    );
    let png = browser.screenshot().await.expect("a screenshot");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&shot, png).expect("saving the screenshot");
    eprintln!("dashboard: screenshot at {}", shot.display());
    browser.close().await.expect("closing the browser");

    let pid = loadgen.id().expect("the load generator runs");
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(WAIT, loadgen.wait())
        .await
        .expect("the load generator stops on SIGTERM")
        .expect("its exit status");
    assert_eq!(status.code(), Some(0), "a warning exits 0: {status}");
}

#[test]
fn samples_jsonl_writes_a_line_per_second_each_saying_its_run() {
    let out = out_dir("samples");
    let samples = out.join("samples.jsonl");
    std::fs::create_dir_all(&out).unwrap();
    let output = support::loadgen(&[
        "run",
        "--clients",
        "2",
        "--duration",
        "3s",
        "--no-history",
        "--no-default-thresholds",
        "--samples-jsonl",
        samples.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    support::assert_exit(&output, 0);
    let summary = read_json(&out.join("summary.json"));
    let lines: Vec<Value> = (read(&samples).lines())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines.len() >= 3, "a line per second of 3 s: {lines:?}");
    let mut last = -1.0;
    for line in &lines {
        assert_eq!(line["run_id"], summary["run_id"], "{line}");
        assert_eq!(line["scenario"], summary["scenario"], "{line}");
        assert_eq!(line["transport"], "sse", "{line}");
        assert_eq!(line["repeat"], 1, "{line}");
        let t_s = line["t_s"].as_f64().expect("t_s");
        assert!(t_s > last, "t_s grows: {lines:?}");
        last = t_s;
        assert!(line["events_per_s"].is_number(), "{line}");
    }
    let events: f64 = (lines.iter())
        .map(|line| line["events_per_s"].as_f64().unwrap())
        .sum();
    assert!(events > 0.0, "events came: {lines:?}");
}

#[test]
fn a_samples_file_that_cannot_be_created_is_a_usage_error_naming_it() {
    let out = out_dir("samples-bad");
    let samples = out.join("no-such-dir").join("samples.jsonl");
    let output = support::loadgen(&[
        "run",
        "--clients",
        "1",
        "--duration",
        "1s",
        "--no-history",
        "--samples-jsonl",
        samples.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    support::assert_exit(&output, 2);
    let stderr = support::text(&output.stderr);
    assert!(
        stderr.contains("--samples-jsonl") && stderr.contains("no-such-dir"),
        "{stderr}"
    );
}
