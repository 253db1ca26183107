//! The merge gate, through the binary: `compare` and `--baseline` flag a
//! server slowed on purpose (the server's test-only `--inject-delay`) and
//! not two runs of the same build; `ab --rounds auto` decides "no
//! regression" on the stable figures of a build against itself
//! (`git:HEAD`, built once into its own worktree, on both sides: the same
//! binary, as RSS counts its code), reports the regression of a slowed one
//! (exit 1), and says "inconclusive" (exit 3) after two rounds.
//!
//! The tests measure, so they run one at a time: each takes the lock first.
//!
//! Test with `cargo test -p streamgauge-loadgen --test gate`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;
use support::{assert_exit, junit_failures, loadgen, out_dir, read, read_json, text};

/// One measurement at a time: they would disturb each other's figures.
static MEASURING: Mutex<()> = Mutex::new(());

/// A light paced load: 5 clients × 100 events/s, each run 2 s.
const LOAD: [&str; 8] = [
    "--clients",
    "5",
    "--rate",
    "100",
    "--duration",
    "2s",
    "--no-default-thresholds",
    "--no-history",
];

/// The delay the slowed server holds every batch back.
const SLOWED: &str = "--server-arg=--inject-delay=20ms";

/// `run` with [`LOAD`], three repeats, into `out`, plus `extra`: each
/// repeat's files in `out/repeat-K/`, each summary with the group's
/// comparison.
fn run_repeated(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run", "--repeat", "3", "--out", out.to_str().unwrap()];
    args.extend(LOAD);
    args.extend(extra);
    loadgen(&args)
}

/// The status of `figure` in a comparison (JSON).
fn status<'a>(comparison: &'a Value, figure: &str) -> &'a str {
    comparison["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["figure"] == figure)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_else(|| panic!("{figure} not in {comparison}"))
}

/// The statuses that are regressions, by figure.
fn regressions(comparison: &Value) -> Vec<String> {
    comparison["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "regression")
        .map(|c| c["figure"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn compare_flags_a_slowed_server_and_not_the_same_build() {
    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let base = out_dir("gate-base");
    assert_exit(&run_repeated(&base, &[]), 0);

    // The same build again, judged at once against the base: no
    // regression, or too few runs to decide (exit 3).
    let same = out_dir("gate-same");
    let output = run_repeated(&same, &["--baseline", base.to_str().unwrap()]);
    let same_code = undecided_or_passed(&output);
    let comparison = &read_json(&same.join("repeat-1/summary.json"))["comparison"];
    assert_eq!(comparison["regressed"], false, "{comparison}");
    assert!(regressions(comparison).is_empty(), "{comparison}");
    let verdict = if same_code == 0 {
        "no_regression"
    } else {
        "inconclusive"
    };
    assert_eq!(comparison["verdict"], verdict, "{comparison}");
    assert!(
        comparison["method"]
            .as_str()
            .unwrap()
            .contains("Welch's confidence interval"),
        "{comparison}"
    );

    // A server that holds every batch back 20 ms.
    let slow = out_dir("gate-slow");
    let output = run_repeated(&slow, &["--baseline", base.to_str().unwrap(), SLOWED]);
    assert_exit(&output, 1);
    let comparison = &read_json(&slow.join("repeat-1/summary.json"))["comparison"];
    assert_eq!(comparison["regressed"], true, "{comparison}");
    assert_eq!(comparison["verdict"], "regression", "{comparison}");
    assert_eq!(
        status(comparison, "latency.p50"),
        "regression",
        "{comparison}"
    );
    assert!(text(&output.stdout).contains("latency p50 regressed"));
    assert!(read(&slow.join("report.md")).contains("**REGRESSION**"));
    let failures = junit_failures(&read(&slow.join("junit.xml")));
    assert!(
        failures.iter().any(|f| f == "regression latency.p50"),
        "{failures:?}"
    );

    // `compare` on the written results says the same, by exit code.
    let compare = |current: &PathBuf, baseline: &PathBuf| {
        loadgen(&[
            "compare",
            current.to_str().unwrap(),
            baseline.to_str().unwrap(),
        ])
    };
    let output = compare(&slow, &base);
    assert_exit(&output, 1);
    assert!(
        text(&output.stdout).contains("REGRESSION"),
        "{}",
        text(&output.stdout)
    );
    assert_exit(&compare(&same, &base), same_code);
    let output = compare(&same, &base.join("nothing-here"));
    assert_exit(&output, 2);
    assert!(text(&output.stderr).contains("nothing-here"));
}

/// The cargo target directory this test was built in (the binary is in
/// its `debug/`), so `ab` builds `git:HEAD` beside it, reusing its
/// dependencies.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_streamgauge-loadgen"))
        .ancestors()
        .nth(2)
        .expect("the binary sits in TARGET/PROFILE/")
        .to_path_buf()
}

/// Exit 0 (decided: no regression) or 3 (inconclusive), never a
/// regression: which one it was.
fn undecided_or_passed(output: &std::process::Output) -> i32 {
    let code = output.status.code();
    assert!(
        matches!(code, Some(0 | 3)),
        "exit {code:?}: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    code.unwrap()
}

/// The figure `key` of an `ab.json`.
fn figure<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["figure"] == key)
        .unwrap_or_else(|| panic!("{key} not in {report}"))
}

/// `ab` with [`LOAD`] (each side 2 s a round) into `out`, plus `extra`
/// (the rounds among them).
fn ab(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["ab", "--out", out.to_str().unwrap()];
    args.extend(LOAD.iter().filter(|a| **a != "--no-history"));
    args.extend(extra);
    std::process::Command::new(env!("CARGO_BIN_EXE_streamgauge-loadgen"))
        .args(args)
        .env_remove("STREAMGAUGE_LOG")
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("running streamgauge-loadgen ab")
}

#[test]
fn ab_decides_no_regression_on_the_stable_figures_of_a_build_against_itself() {
    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let out = out_dir("ab-self");
    let builds = out_dir("ab-builds");
    let output = ab(
        &out,
        &[
            "--rounds",
            "auto",
            "--max-rounds",
            "6",
            "--base",
            "git:HEAD",
            "--change",
            "git:HEAD",
            "--cargo-profile",
            "dev",
            "--build-dir",
            builds.to_str().unwrap(),
        ],
    );
    let code = undecided_or_passed(&output);
    let report = read_json(&out.join("ab.json"));
    assert!(report["base"]["commit"].is_string(), "{report}");
    assert_eq!(report["max_rounds"], 6, "{report}");
    let rounds = report["order"].as_array().unwrap().len();
    assert!((3..=6).contains(&rounds), "{report}");
    // Paced throughput and a zero error rate are decided within the rounds.
    for key in ["events_per_s", "error_rate"] {
        assert_eq!(figure(&report, key)["verdict"], "no_regression", "{report}");
    }
    let figures = report["figures"].as_array().unwrap();
    assert!(
        figures.iter().all(|f| f["decision"] != "regression"),
        "{report}"
    );
    let tested: Vec<&Value> = figures
        .iter()
        .filter(|f| f["decision"] != "not_measured")
        .collect();
    assert!(tested.len() >= 4, "{report}");
    for figure in tested {
        assert_eq!(figure["base"].as_array().unwrap().len(), rounds, "{figure}");
        let [low, high] = [&figure["ci"][0], &figure["ci"][1]].map(|v| v.as_f64().unwrap());
        assert!(low <= high, "{figure}");
    }
    // Stopped early only when every figure was decided.
    if code == 0 {
        assert_eq!(
            (report["verdict"].as_str(), report["passed"].as_bool()),
            (Some("no_regression"), Some(true))
        );
    } else {
        assert_eq!(
            (rounds, report["verdict"].as_str()),
            (6, Some("inconclusive"))
        );
    }
    assert!(junit_failures(&read(&out.join("junit.xml"))).is_empty());
    assert!(read(&out.join("report.md")).contains("paired t interval"));
}

#[test]
fn ab_says_inconclusive_after_two_rounds() {
    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let out = out_dir("ab-two");
    let output = ab(
        &out,
        &[
            "--rounds", "2", "--base", "embedded", "--change", "embedded",
        ],
    );
    assert_exit(&output, 3);
    let report = read_json(&out.join("ab.json"));
    assert_eq!(
        (report["verdict"].as_str(), report["passed"].as_bool()),
        (Some("inconclusive"), Some(false))
    );
    // Latency moves from run to run: one degree of freedom cannot decide it.
    let p99 = figure(&report, "latency.p99");
    assert_eq!(p99["verdict"], "inconclusive", "{p99}");
    assert!(
        ["inconclusive", "no_significant_difference"].contains(&p99["decision"].as_str().unwrap()),
        "{p99}"
    );
    let undecided: Vec<&Value> = report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["verdict"] == "inconclusive")
        .collect();
    // Each undecided figure says how many more rounds (or null: none would do).
    assert!(
        undecided
            .iter()
            .all(|f| f["rounds_suggested"].is_u64() || f["rounds_suggested"].is_null()),
        "{report}"
    );
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("# streamgauge ab: INCONCLUSIVE"),
        "{stdout}"
    );
    assert!(stdout.contains("latency p99 undecided"), "{stdout}");
}

#[test]
fn ab_reports_the_regression_of_a_slowed_build() {
    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let out = out_dir("ab-slowed");
    let output = ab(
        &out,
        &[
            "--rounds",
            "3",
            "--base",
            "embedded",
            "--change",
            "embedded",
            "--change-arg=--inject-delay=20ms",
        ],
    );
    assert_exit(&output, 1);
    let report = read_json(&out.join("ab.json"));
    assert_eq!(
        (
            report["passed"].as_bool(),
            report["regressed"].as_bool(),
            report["verdict"].as_str()
        ),
        (Some(false), Some(true), Some("regression"))
    );
    let p50 = figure(&report, "latency.p50");
    assert_eq!(
        (p50["decision"].as_str(), p50["verdict"].as_str()),
        (Some("regression"), Some("regression")),
        "{p50}"
    );
    // 20 ms on a sub-millisecond p50: a ratio far above 1, and the whole
    // interval with it.
    assert!(p50["ci"][0].as_f64().unwrap() > 2.0, "{p50}");
    assert!(
        text(&output.stdout).contains("REGRESSION"),
        "{}",
        text(&output.stdout)
    );
    let failures = junit_failures(&read(&out.join("junit.xml")));
    assert!(
        failures.iter().any(|f| f == "regression latency.p50"),
        "{failures:?}"
    );
}
