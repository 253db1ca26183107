//! Worker processes (`--workers`): the binary re-executes itself, each
//! worker runs its share of the clients against the real server, and the
//! parent's summary holds exactly what they all measured; a worker that
//! dies fails the run at once, with the reason.
//!
//! Test with `cargo test -p streamgauge-loadgen --test workers`.

mod support;

use support::{WAIT, assert_exit, out_dir, read_json, server, spawn, wait_for};
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// The sample `name{transport="…"}` of each transport, SSE then WebSocket.
fn per_transport(metrics: &str, name: &str) -> (u64, u64) {
    let value = |transport: &str| {
        let key = format!("{name}{{transport=\"{transport}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&key))
            .map_or(0, |v| v.trim().parse().expect("a count"))
    };
    (value("sse"), value("ws"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_run_the_clients_of_one_and_their_figures_add_up() {
    let out = out_dir("workers");
    let (_server, addr) = server(&out.join("server"), &[]).await;
    let url = format!("http://{addr}");
    let results = out.join("results");
    let run = spawn(&[
        "run",
        "--url",
        &url,
        "--workers",
        "3",
        "--transport",
        "mixed",
        "--clients",
        "9",
        "--duration",
        "3s",
        "--rate",
        "20",
        "--no-default-thresholds",
        "--threshold",
        "gaps==0",
        "--no-history",
        "--out",
        results.to_str().unwrap(),
    ]);
    // Clients 0..9 across the workers: the even ones (0, 2, 4, 6, 8) on
    // SSE, the odd ones on WebSocket, all at once.
    wait_for(addr, "9 streams open, 5 SSE and 4 WebSocket", |m| {
        per_transport(m, "streamgauge_connections_open") == (5, 4)
    })
    .await;
    let output = tokio::time::timeout(WAIT, run.wait_with_output())
        .await
        .expect("the run ends")
        .unwrap();
    assert_exit(&output, 0);
    // No client ran twice, none in two workers: each of the 9 opened its
    // stream once (a steady ticker run, no churn).
    let metrics = wait_for(addr, "the metrics", |_| true).await;
    assert_eq!(
        per_transport(&metrics, "streamgauge_connections_opened_total"),
        (5, 4),
        "{metrics}"
    );

    let summary = read_json(&results.join("summary.json"));
    assert_eq!(summary["loadgen_workers"], 3, "{summary}");
    assert_eq!(summary["transports"], serde_json::json!(["sse", "ws"]));
    // Every worker's measurements reached the summary: 9 connections made.
    assert_eq!(
        (
            summary["counts"]["connects"].as_u64(),
            summary["counts"]["connected"].as_u64()
        ),
        (Some(9), Some(9)),
        "{summary}"
    );
    assert_eq!(
        (summary["gaps"].as_u64(), summary["dups"].as_u64()),
        (Some(0), Some(0))
    );
    for (kind, count) in summary["errors"].as_object().unwrap() {
        assert_eq!(count, 0, "errors.{kind}: {summary}");
    }
    assert!(summary["events"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["bounded_by"].as_array().unwrap().is_empty());
    let timeline = summary["timeline"].as_array().unwrap();
    assert!(timeline.len() >= 3, "{timeline:?}");
    for row in timeline {
        assert!(row["events_per_s"].as_f64().unwrap() > 0.0, "{row}");
        assert_eq!(row["clients"], 9, "{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_fails_the_run_at_once_with_the_reason() {
    let out = out_dir("worker-dies");
    // A minute of load: the run must end long before it, on the worker's
    // death, not on its own.
    let mut run = spawn(&[
        "run",
        "--workers",
        "2",
        "--clients",
        "2",
        "--duration",
        "60s",
        "--no-history",
        "--log",
        "streamgauge_loadgen=info",
        "--out",
        out.to_str().unwrap(),
    ]);
    let mut stderr = BufReader::new(run.stderr.take().unwrap()).lines();
    let pid = tokio::time::timeout(WAIT, async {
        loop {
            let line = stderr.next_line().await.unwrap().expect("a worker's pid");
            if let Some((_, pid)) = line.split_once("worker 2 of 2: pid ") {
                let digits: String = pid.chars().take_while(char::is_ascii_digit).collect();
                return digits.parse::<i32>().unwrap();
            }
        }
    })
    .await
    .expect("the parent names its workers");
    // SAFETY: kill has no memory-safety preconditions; the pid is the
    // worker's, alive until the parent (which has not exited) reaps it.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let rest = tokio::time::timeout(WAIT, async {
        let mut rest = String::new();
        while let Some(line) = stderr.next_line().await.unwrap() {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    })
    .await
    .expect("the run ends on the worker's death");
    let status = tokio::time::timeout(WAIT, run.wait())
        .await
        .expect("the run exits")
        .unwrap();
    assert_eq!(status.code(), Some(2), "{rest}");
    // Its output ended (or, had the parent been writing to it, its stdin
    // broke): either way the worker is named, and how it ended.
    let worker = format!("load generator worker 2 of 2 (pid {pid}) failed: ");
    assert!(rest.contains(&worker), "{rest}");
    assert!(rest.contains("(it exited: signal: 9 (SIGKILL))"), "{rest}");
}

#[test]
fn a_phase_with_its_own_rate_switches_every_worker_client() {
    let out = out_dir("workers-rate");
    let file = out.with_extension("toml");
    std::fs::write(
        &file,
        "rate = 2\n\n\
         [[phase]]\nkind = \"steady\"\nduration = \"1s\"\nclients = 4\n\n\
         [[phase]]\nkind = \"steady\"\nduration = \"1500ms\"\nclients = 4\nrate = 200\n",
    )
    .unwrap();
    let output = support::loadgen(&[
        "run",
        "--scenario",
        file.to_str().unwrap(),
        "--workers",
        "2",
        "--no-default-thresholds",
        "--no-history",
        "--out",
        out.to_str().unwrap(),
    ]);
    support::assert_exit(&output, 0);
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["loadgen_workers"], 2, "{summary}");
    assert_eq!(
        (summary["gaps"].as_u64(), summary["dups"].as_u64()),
        (Some(0), Some(0))
    );
    let events = |phase: usize| summary["phases"][phase]["events"].as_u64().unwrap();
    // 4 clients: about 8 events in the first phase at 2/s, about 1,200 in
    // the second at 200/s; without the switch, about 12. A factor of 20
    // leaves room for timing and none for a missed switch.
    assert!(
        events(1) > 20 * events(0).max(1),
        "phases {}: the second phase's rate was not applied in the workers",
        summary["phases"]
    );
}
