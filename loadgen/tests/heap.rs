//! Leak hunting end to end: a server built with its `dhat-heap` feature,
//! measured by the binary under churn (topic subscribers leaving and
//! resuming, about a hundred streams opened a second), with a phase of no
//! client after the warm-up and another at the end. The live heap at those
//! two moments, over the streams opened between them, is what each stream
//! kept: a clean build keeps next to nothing and passes
//! `heap.retained_per_stream`; the same build leaking on purpose
//! (`--inject-leak`, 1 KiB per stream opened) is found keeping about that
//! and fails it. While streams come and go, what they hold in flight swings
//! the live heap by far more than such a leak adds in the same seconds, so
//! the heap's growth over time cannot tell them apart (docs/loadgen.md,
//! "Memory"). The server writes its DHAT profile when the run stops it.
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

/// The threshold both runs are held to: far above what a clean server
/// keeps per stream, half the leak's 1 KiB.
const RETAINED: &str = "heap.retained_per_stream<512B";

/// The leak injected, bytes per stream opened.
const LEAK: &str = "--server-arg=--inject-leak=1024";

/// Churn, 8 s: 2.5 s of warm-up (what grows to a high-water mark and
/// stays there, such as the runtime's table of sockets, grows then), 1.5 s
/// with no client and no publish, 2.5 s of churn, another 1.5 s with no
/// client. The server has time to close what the streams left before each
/// quiet phase's last sample.
const SCENARIO: &str = r#"
name = "churn-quiet"
stream = "topic"
churn = 2.0
publish-rate = 100

[[phase]]
kind = "steady"
name = "warm-up"
duration = "2500ms"
clients = 50

[[phase]]
kind = "steady"
name = "quiet"
duration = "1500ms"
clients = 0
publish-rate = 0

[[phase]]
kind = "steady"
name = "churn"
duration = "2500ms"
clients = 50

[[phase]]
kind = "steady"
name = "quiet"
duration = "1500ms"
clients = 0
publish-rate = 0
"#;

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
    std::fs::create_dir_all(out).expect("creating the output directory");
    let scenario = out.join("churn-quiet.toml");
    std::fs::write(&scenario, SCENARIO).expect("writing the scenario");
    let profile = format!(
        "--server-arg=--heap-profile={}",
        out.join("dhat-heap.json").display()
    );
    let mut args = vec![
        "run",
        "--scenario",
        scenario.to_str().unwrap(),
        "--server-bin",
        server.to_str().unwrap(),
        &profile,
        "--threshold",
        RETAINED,
        "--no-default-thresholds",
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

/// What each stream opened kept, bytes per stream.
fn retained(figures: &Value) -> f64 {
    figures["retained_per_stream"]
        .as_f64()
        .unwrap_or_else(|| panic!("no retention figure: {figures}"))
}

#[test]
fn a_build_leaking_1_kib_per_stream_is_found_and_a_clean_one_is_not() {
    let server = dhat_server();

    let clean = out_dir("heap-clean");
    assert_exit(&churn(&server, &clean, ""), 0);
    let summary = read_json(&clean.join("summary.json"));
    let figures = heap(&summary);
    assert!(retained(figures) < 512.0, "{}", summary["memory"]);
    assert!(summary["server"]["heap_bytes"]["peak"].as_u64().unwrap() > 0);
    assert!(summary["counts"]["connects"].as_u64().unwrap() >= 100);
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
    assert_exit(&churn(&server, &leaking, LEAK), 1);
    let summary = read_json(&leaking.join("summary.json"));
    let figures = heap(&summary);
    assert!(retained(figures) > 512.0, "{}", summary["memory"]);
    let broken = summary["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["expr"] == RETAINED)
        .unwrap();
    assert_eq!(broken["ok"], false);
    let statement = summary["memory"]["statement"].as_str().unwrap();
    assert!(statement.contains("per stream opened"), "{statement}");
    assert!(read(&leaking.join("report.md")).contains("kept per stream opened"));
}
