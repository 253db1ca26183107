//! The `streamgauge-loadgen` binary as CLI.md specifies it: a suite runs end
//! to end against a server it starts itself and writes valid summaries;
//! exit codes 0 / 1 / 2; precise messages for bad input.
//!
//! Test with `cargo test -p streamgauge-loadgen --test cli`.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamgauge-loadgen"))
        .args(args)
        .env_remove("STREAMGAUGE_LOG")
        .output()
        .expect("running streamgauge-loadgen")
}

fn out_dir(name: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("loadgen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Checks the stable fields of CLI.md's summary.json, with their types.
fn assert_summary_schema(summary: &Value) {
    for field in ["run_id", "started_at", "scenario", "transport", "stream"] {
        assert!(summary[field].is_string(), "{field} in {summary}");
    }
    for field in ["clients", "events", "gaps", "dups"] {
        assert!(summary[field].is_u64(), "{field} in {summary}");
    }
    for field in ["duration_s", "events_per_s", "bytes_per_s"] {
        assert!(summary[field].is_f64(), "{field} in {summary}");
    }
    let latency = &summary["latency_us"];
    for p in ["p50", "p90", "p95", "p99", "p999", "max"] {
        assert!(latency[p].is_u64(), "latency_us.{p} in {summary}");
    }
    for p in ["p50", "p95", "p99"] {
        assert!(summary["connect_ms"][p].is_number(), "connect_ms.{p}");
    }
    assert!(summary["ttft_ms"].is_null() || summary["ttft_ms"]["p95"].is_number());
    for kind in ["connect", "http_status", "protocol", "timeout", "closed"] {
        assert!(summary["errors"][kind].is_u64(), "errors.{kind}");
    }
    assert!(summary["error_rate"].is_number());
    let server = &summary["server"];
    assert!(
        server["cpu_pct"].is_number() && server["rss_mb"]["peak"].is_number(),
        "{server}"
    );
    assert!(server["heap_bytes"].is_null());
    assert!(summary["thresholds"].is_array() && summary["passed"].is_boolean());
    assert!(["sse", "ws"].contains(&summary["transport"].as_str().unwrap()));
}

#[test]
fn the_quick_suite_runs_end_to_end_and_writes_valid_summaries() {
    let out = out_dir("suite");
    let output = loadgen(&[
        "suite",
        "--quick",
        "--time-scale",
        "0.15",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr:\n{}\nstdout:\n{}",
        text(&output.stderr),
        text(&output.stdout)
    );
    let suite = read_json(&out.join("suite.json"));
    let scenarios = suite["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 14, "{suite}");
    assert_eq!(suite["passed"], true);
    for entry in scenarios {
        let summary = read_json(&out.join(entry["summary"].as_str().unwrap()));
        assert_summary_schema(&summary);
        assert_eq!(summary["passed"], true, "{summary}");
        assert_eq!(
            (summary["gaps"].as_u64(), summary["dups"].as_u64()),
            (Some(0), Some(0))
        );
        assert!(summary["events"].as_u64().unwrap() > 0, "{summary}");
        let stream = summary["stream"].as_str().unwrap();
        assert_eq!(
            summary["ttft_ms"].is_null(),
            !matches!(stream, "tokens" | "replay"),
            "{summary}"
        );
        assert!(
            out.join(entry["summary"].as_str().unwrap())
                .with_file_name("server.log")
                .exists()
        );
    }
    let table = text(&output.stdout);
    assert!(table.contains("clients-100") && table.contains("replay-5k") && table.contains("pass"));
}

#[test]
fn a_threshold_that_breaks_exits_1_and_says_which() {
    let out = out_dir("threshold");
    let output = loadgen(&[
        "run",
        "--clients",
        "2",
        "--duration",
        "1s",
        "--threshold",
        "gaps==0",
        "--threshold",
        "events_per_s>1000000000",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let summary = read_json(&out.join("summary.json"));
    assert_summary_schema(&summary);
    assert_eq!(summary["passed"], false);
    let thresholds = summary["thresholds"].as_array().unwrap();
    assert_eq!(thresholds[0]["expr"], "gaps==0");
    assert_eq!(thresholds[0]["ok"], true);
    assert_eq!(thresholds[1]["expr"], "events_per_s>1000000000");
    assert_eq!(thresholds[1]["ok"], false);
    assert!(thresholds[1]["value"].as_f64().unwrap() > 0.0);
    assert!(text(&output.stdout).contains("FAIL"));
}

#[test]
fn a_bad_scenario_file_exits_2_naming_the_file_and_line() {
    let file = out_dir("scenario").with_extension("toml");
    std::fs::write(
        &file,
        "transport = \"ws\"\n\n[[phase]]\nkind = \"ramp\"\nduration = \"5s\"\nclients = 3\n",
    )
    .unwrap();
    let output = loadgen(&["run", "--scenario", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:3: ramp phase: a ramp needs", file.display())),
        "{stderr}"
    );
}

#[test]
fn runs_that_cannot_be_made_exit_2_with_the_reason() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = out_dir("unreachable");
    let url = format!("http://{unused}");
    let output = loadgen(&[
        "run",
        "--url",
        &url,
        "--duration",
        "1s",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("not reachable"),
        "{}",
        text(&output.stderr)
    );

    for (args, says) in [
        (&["run", "--preset", "nope"][..], "no preset named"),
        (&["run", "--threshold", "p99<1ms"][..], "unknown metric"),
        (&["run", "--clients", "many"][..], "--clients"),
        (
            &["run", "--url", "127.0.0.1:8080"][..],
            "expected http://HOST:PORT",
        ),
        (&["compare-everything"][..], "unrecognized subcommand"),
    ] {
        let output = loadgen(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            text(&output.stderr).contains(says),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
}

/// A server that is up (`/healthz` answers 200) but refuses every stream.
fn refusing_server() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let answer = if request[..n].starts_with(b"GET /healthz") {
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            } else {
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    addr
}

#[test]
fn a_server_that_delivers_nothing_does_not_pass() {
    let addr = refusing_server();
    let out = out_dir("refusing");
    let url = format!("http://{addr}");
    let output = loadgen(&[
        "run",
        "--url",
        &url,
        "--duration",
        "1s",
        "--clients",
        "2",
        "--threshold",
        "events>0",
        "--threshold",
        "error_rate<1%",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["events"], 0);
    assert!(
        summary["errors"]["http_status"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        summary["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["ok"] == false)
    );
}

#[test]
fn presets_are_listed_one_line_each() {
    let output = loadgen(&["presets"]);
    assert_eq!(output.status.code(), Some(0));
    let listing = text(&output.stdout);
    for name in [
        "single",
        "clients-200",
        "ramp",
        "spike",
        "churn",
        "slow-50ms",
        "replay-1m",
        "soak",
    ] {
        assert!(
            listing.lines().any(|line| line.starts_with(name)),
            "{name} missing:\n{listing}"
        );
    }
}
