//! Leak hunting end to end: a server built with its `dhat-heap` feature,
//! measured by the binary under the `churn` preset (subscribers leaving
//! and resuming, over and over). The clean build's live heap shows no
//! growth and passes `heap.growth_per_hour`; the same build leaking on
//! purpose (`--inject-leak`, 1 MiB per stream opened) is found growing and
//! fails it. The server writes its DHAT profile when the run stops it.
//!
//! The dhat build goes to its own target directory beside this test's, so
//! the feature never reaches the binaries other tests run.
//!
//! Test with `cargo test -p streamgauge-loadgen --test heap`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{assert_exit, loadgen, out_dir, read, read_json};

/// The threshold both runs are held to: far above what a clean server's
/// noise extrapolates to over a few seconds, far below the leak's 25
/// reconnections a second × 1 MiB.
const GROWTH: &str = "heap.growth_per_hour<2GB";

/// Builds `streamgauge-server` with `--features dhat-heap`; its path.
fn dhat_server() -> PathBuf {
    let target = Path::new(env!("CARGO_BIN_EXE_streamgauge-loadgen"))
        .ancestors()
        .nth(2)
        .expect("the binary sits in TARGET/PROFILE/")
        .join("dhat-heap");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--locked",
            "-p",
            "streamgauge-server",
            "--features",
            "dhat-heap",
            "--bin",
            "streamgauge-server",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building the dhat-heap server failed");
    target.join("debug/streamgauge-server")
}

/// A churn run of the dhat server, with `extra` server flags, into `out`.
fn churn(server: &Path, out: &Path, extra: &str) -> std::process::Output {
    let profile = format!(
        "--server-arg=--heap-profile={}",
        out.join("dhat-heap.json").display()
    );
    let mut args = vec![
        "run",
        "--preset",
        "churn",
        "--duration",
        "8s",
        "--server-bin",
        server.to_str().unwrap(),
        &profile,
        "--threshold",
        GROWTH,
        "--no-history",
        "--out",
        out.to_str().unwrap(),
    ];
    if !extra.is_empty() {
        args.push(extra);
    }
    loadgen(&args)
}

/// The heap figures of a summary.
fn heap(summary: &Value) -> &Value {
    let heap = &summary["memory"]["heap"];
    assert!(heap.is_object(), "no heap figures: {}", summary["memory"]);
    heap
}

#[test]
fn a_leaking_build_is_found_growing_and_a_clean_one_is_not() {
    let server = dhat_server();

    let clean = out_dir("heap-clean");
    assert_exit(&churn(&server, &clean, ""), 0);
    let summary = read_json(&clean.join("summary.json"));
    let figures = heap(&summary);
    assert_eq!(figures["grew"], false, "{}", summary["memory"]);
    assert!(summary["server"]["heap_bytes"]["peak"].as_u64().unwrap() > 0);
    let timeline = read(&clean.join("timeline.csv"));
    let heap_column = timeline
        .lines()
        .next()
        .unwrap()
        .split(',')
        .position(|c| c == "server_heap_bytes");
    let sampled = timeline
        .lines()
        .skip(1)
        .filter(|row| {
            !row.split(',')
                .nth(heap_column.unwrap())
                .unwrap_or("")
                .is_empty()
        })
        .count();
    assert!(sampled >= 5, "{timeline}");
    let profile = read_json(&clean.join("dhat-heap.json"));
    assert_eq!(profile["mode"], "rust-heap");

    let leaking = out_dir("heap-leaking");
    let output = churn(&server, &leaking, "--server-arg=--inject-leak=1048576");
    assert_exit(&output, 1);
    let summary = read_json(&leaking.join("summary.json"));
    let figures = heap(&summary);
    assert_eq!(figures["grew"], true, "{}", summary["memory"]);
    assert!(
        figures["growth_per_hour"].as_f64().unwrap() > 2e9,
        "{figures}"
    );
    let broken = summary["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["expr"] == GROWTH)
        .unwrap();
    assert_eq!(broken["ok"], false);
    let statement = summary["memory"]["statement"].as_str().unwrap();
    assert!(statement.contains("a leak"), "{statement}");
    assert!(read(&leaking.join("report.md")).contains("**Memory.**"));
}
