//! The `streamgauge-loadgen` binary as docs/cli.md specifies it: a suite runs end
//! to end against a server it starts itself and writes valid summaries;
//! exit codes 0 / 1 / 2; precise messages for bad input.
//!
//! Test with `cargo test -p streamgauge-loadgen --test cli`.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{
    assert_exit, html_charts, junit_failures, loadgen, loadgen_command, out_dir, read, read_json,
    short_run, text,
};

/// Checks the stable fields of summary.json (docs/cli.md), with their types.
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
    if summary["events"].as_u64() > Some(0) {
        // CPU time comes in clock ticks (10 ms): a short run's may be 0.
        for per_event in [
            &server["cpu_us_per_event"],
            &summary["loadgen_cpu_us_per_event"],
        ] {
            assert!(
                per_event.as_f64() >= Some(0.0),
                "CPU per event in {summary}"
            );
        }
    }
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
    assert_exit(&output, 0);
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
        let dir = out.join(entry["summary"].as_str().unwrap());
        let dir = dir.parent().unwrap();
        assert!(dir.join("server.log").exists());
        assert_run_files(dir, &summary);
    }
    assert_report_files(&out);
    assert!(read(&out.join("report.md")).starts_with("# streamgauge: PASS"));
    assert!(suite["capacity"].is_array(), "{suite}");
    let table = text(&output.stdout);
    assert!(table.contains("clients-100") && table.contains("replay-5k") && table.contains("pass"));
}

/// The CSV header docs/cli.md gives `timeline.csv`.
const TIMELINE_HEADER: &str = "t_s,phase,clients,events_per_s,bytes_per_s,latency_p50_us,latency_p90_us,latency_p95_us,latency_p99_us,latency_p999_us,latency_max_us,errors,server_cpu_pct,server_rss_mb,server_heap_bytes,loadgen_cpu_pct,loadgen_cpu_share,loadgen_rss_mb,connects,schedule_lag_p50_us,schedule_lag_p99_us";

/// Checks one run's files beside its `summary`: the timeline has the
/// header and one row per second, with as many fields; the load
/// generator's own memory was sampled.
fn assert_run_files(dir: &Path, summary: &Value) {
    let rss = &summary["loadgen_rss_mb"];
    assert!(
        rss["peak"].as_f64().unwrap() >= rss["start"].as_f64().unwrap(),
        "{rss}"
    );
    assert!(rss["end"].as_f64().unwrap() > 0.0, "{rss}");
    let csv = read(&dir.join("timeline.csv"));
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(TIMELINE_HEADER));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), summary["timeline"].as_array().unwrap().len());
    assert!(!rows.is_empty(), "{csv}");
    let columns = TIMELINE_HEADER.split(',').count();
    for row in rows {
        assert_eq!(row.split(',').count(), columns, "{row}");
    }
    assert_report_files(dir);
}

/// Checks the reports every results directory has: junit.xml well-formed,
/// report.md with its verdict first, report.html with its charts as SVG,
/// bmf.json in Bencher Metric Format.
fn assert_report_files(dir: &Path) {
    junit_failures(&read(&dir.join("junit.xml")));
    let markdown = read(&dir.join("report.md"));
    assert!(
        ["PASS", "WARN", "FAIL"]
            .iter()
            .any(|v| markdown.starts_with(&format!("# streamgauge: {v}"))),
        "{markdown}"
    );
    for said in [
        "| load generator CPU % |",
        "CPU per event server",
        "load generator processes 1, RSS peak ",
    ] {
        assert!(markdown.contains(said), "no {said:?} in {markdown}");
    }
    let html = read(&dir.join("report.html"));
    assert!(html_charts(&html) >= 7, "charts in report.html");
    for column in ["load generator µs / event", "load generator RSS peak MiB"] {
        assert!(html.contains(&format!("<th>{column}</th>")), "no {column}");
    }
    let bmf = read_json(&dir.join("bmf.json"));
    let (_, measures) = bmf.as_object().unwrap().iter().next().unwrap();
    assert!(measures["throughput"]["value"].is_number(), "{bmf}");
}

#[test]
fn a_threshold_that_breaks_exits_1_and_says_which() {
    let out = out_dir("threshold");
    let output = short_run(&out, &[], &["gaps==0", "events_per_s>1000000000"]);
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
    let broken = "events_per_s>1000000000";
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("FAIL") && stdout.contains(broken),
        "{stdout}"
    );
    let markdown = read(&out.join("report.md"));
    assert!(
        markdown.starts_with("# streamgauge: FAIL") && markdown.contains(broken),
        "{markdown}"
    );
    let failures = junit_failures(&read(&out.join("junit.xml")));
    assert!(failures.iter().any(|f| f.contains(broken)), "{failures:?}");
    assert!(read(&out.join("report.html")).contains("events_per_s&gt;1000000000"));
    assert_run_files(&out, &summary);
}

/// Issue 18: a threshold scoped to a phase or a node reads that phase's or
/// node's figure, not the whole run's.
#[test]
fn scoped_thresholds_read_their_phase_and_node() {
    let out = out_dir("scoped");
    let output = short_run(
        &out,
        &[],
        &["events_per_s{phase=steady}>0", "latency.p99{node=1}<1us"],
    );
    assert_exit(&output, 1);
    let summary = read_json(&out.join("summary.json"));
    let thresholds = summary["thresholds"].as_array().unwrap();
    assert_eq!(thresholds[0]["expr"], "events_per_s{phase=steady}>0");
    assert_eq!(thresholds[0]["ok"], true);
    assert_eq!(thresholds[0]["value"], summary["phases"][0]["events_per_s"]);
    assert_eq!(thresholds[1]["ok"], false);
    assert_eq!(
        thresholds[1]["value"].as_f64(),
        summary["nodes"][0]["latency_us"]["p99"].as_f64()
    );
    assert!(text(&output.stdout).contains("latency.p99{node=1}<1us broke"));
}

/// Issue 18: an `abort:` threshold stops the run as soon as it breaks past
/// its grace; the run's files are written and say it was aborted.
#[test]
fn an_abort_threshold_stops_the_run_and_its_files_say_so() {
    let out = out_dir("abort");
    let output = loadgen(&[
        "run",
        "--clients",
        "2",
        "--duration",
        "60s",
        "--abort-grace",
        "1s",
        "--threshold",
        "abort:latency.p50<1us",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_exit(&output, 1);
    let summary = read_json(&out.join("summary.json"));
    assert_summary_schema(&summary);
    let aborted = &summary["aborted"];
    assert_eq!(aborted["threshold"], "abort:latency.p50<1us");
    assert!(aborted["value"].as_f64() >= Some(1.0), "{aborted}");
    // Stopped at its first check past the grace, not at its end.
    let at = aborted["at_s"].as_f64().unwrap();
    assert!((1.0..30.0).contains(&at), "{aborted}");
    assert!(summary["duration_s"].as_f64().unwrap() < 30.0, "{summary}");
    assert_eq!(summary["verdict"], "fail");
    let markdown = read(&out.join("report.md"));
    assert!(markdown.contains("ABORTED"), "{markdown}");
    assert!(text(&output.stdout).contains("ABORTED"));
    assert_run_files(&out, &summary);
}

/// Issue 17: the cluster preset without `--url` starts a throwaway
/// PostgreSQL cluster and three servers of this build on it, spreads the
/// clients and publishes over them, reports each node, and stops them all.
#[test]
fn the_cluster_preset_starts_postgresql_and_three_nodes_itself() {
    let out = out_dir("cluster");
    let output = loadgen(&[
        "run",
        "--preset",
        "cluster",
        "--clients",
        "6",
        "--publish-rate",
        "30",
        "--duration",
        "2s",
        "--ramp",
        "0s",
        "--threshold",
        "gaps==0",
        "--threshold",
        "dups==0",
        "--no-history",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_exit(&output, 0);
    let summary = read_json(&out.join("summary.json"));
    assert_summary_schema(&summary);
    let nodes = summary["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{summary}");
    for node in nodes {
        assert_eq!(node["clients"], 2, "{node}");
        assert!(node["events"].as_u64().unwrap() > 0, "{node}");
        assert!(node["published"].as_u64().unwrap() > 0, "{node}");
    }
    assert!(
        summary["publish_to_receive_cross_node_us"]["p99"].is_u64(),
        "{summary}"
    );
    for log in [
        "postgres.log",
        "server-1.log",
        "server-2.log",
        "server-3.log",
    ] {
        assert!(out.join(log).exists(), "{log}");
    }
    assert!(read(&out.join("report.md")).contains("| node | clients |"));
}

#[test]
fn several_local_nodes_without_postgresql_exit_2_saying_what_is_missing() {
    let out = out_dir("cluster-without-postgres");
    let output = loadgen_command(&[
        "run",
        "--preset",
        "cluster",
        "--no-history",
        "--out",
        out.to_str().unwrap(),
    ])
    .env("PG_BIN", out.join("no-postgresql-here"))
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("initdb and postgres were not found") && stderr.contains("--url"),
        "{stderr}"
    );
}

#[test]
fn thresholds_that_all_hold_exit_0() {
    let out = out_dir("holding");
    let output = short_run(&out, &["--rate", "50"], &["gaps==0", "events>0"]);
    assert_exit(&output, 0);
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["passed"], true);
    let thresholds = summary["thresholds"].as_array().unwrap();
    // Given ones, then the preset's defaults (error rate, connections,
    // latency), each with its severity.
    assert!(
        thresholds.len() > 2 && thresholds.iter().all(|t| t["ok"] == true),
        "{thresholds:?}"
    );
    assert!(
        thresholds
            .iter()
            .any(|t| t["default"] == true && t["severity"] == "warning")
    );
    assert!(junit_failures(&read(&out.join("junit.xml"))).is_empty());
    assert!(read(&out.join("report.md")).starts_with("# streamgauge: PASS"));
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

/// A capacity search against a local server that admits 10 streams: more
/// clients are shed, which breaks a step, and bisection finds
/// the knee at exactly 10 clients; every step is written, the estimate is
/// in `summary.json`, and bad search flags exit 2 naming the fault.
#[test]
fn capacity_bisects_to_the_knee_of_a_connection_limit() {
    let out = out_dir("capacity");
    let output = loadgen(&[
        "capacity",
        "--rate",
        "50",
        "--vary",
        "clients",
        "--start",
        "4",
        "--step",
        "4",
        "--step-duration",
        "1s",
        "--settle",
        "300ms",
        "--max-steps",
        "5",
        "--bisections",
        "3",
        "--resolution",
        "0",
        "--server-arg=--max-connections=10",
        "--no-history",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_exit(&output, 0);
    let summary = read_json(&out.join("summary.json"));
    let capacity = &summary["capacity"];
    let levels: Vec<u64> = (capacity["points"].as_array().unwrap().iter())
        .map(|p| p["level"].as_u64().unwrap())
        .collect();
    assert_eq!(levels, [4, 8, 10, 11, 12], "{capacity}");
    assert_eq!(
        (
            &capacity["vary"],
            &capacity["knee_level"],
            &capacity["knee_clients"]
        ),
        (&"clients".into(), &10.into(), &10.into()),
        "{capacity}"
    );
    assert_eq!(capacity["broke"]["level"], 11, "{capacity}");
    assert_eq!(
        (&capacity["broke"]["threshold"], &capacity["broke"]["value"]),
        (&"counts.shed==0".into(), &1.0.into()),
        "{capacity}"
    );
    assert_eq!(
        (&capacity["limit"], &capacity["lower_bound"]),
        (&"errors".into(), &false.into())
    );
    assert_eq!(
        (summary["clients"].as_u64(), &summary["passed"]),
        (Some(10), &true.into())
    );
    let steps = std::fs::read_dir(out.join("steps")).unwrap().count();
    assert_eq!(steps, 5);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("capacity on this machine is about 10 clients"),
        "{stdout}"
    );

    for (args, says) in [
        (
            &["capacity", "--factor", "1"][..],
            "factor 1 is not above 1",
        ),
        (&["capacity", "--factor", "2", "--step", "3"][..], "--step"),
        (
            &["capacity", "--vary", "publish-rate"][..],
            "publish-rate does not apply to a ticker stream",
        ),
    ] {
        let output = loadgen(args);
        assert_exit(&output, 2);
        let stderr = text(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
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
        (
            &["run", "--jwt-key", "/nonexistent/key.pem"][..],
            "--jwt-key: /nonexistent/key.pem: cannot read it",
        ),
        (&["run", "--jwt-ttl", "5s"][..], "--jwt-key FILE"),
        (
            &["run", "--threshold", "latency.p99{phase=nope}<1ms"][..],
            "no phase is called \"nope\"; the phases: steady",
        ),
        (
            &["run", "--threshold", "error_rate{node=1}<1%"][..],
            "error_rate has no figure per node",
        ),
        (
            &["run", "--threshold", "abort:events>10"][..],
            "only grows during a run",
        ),
        (&["run", "--abort-grace", "soon"][..], "--abort-grace"),
        (&["run", "--jwt-ttl", "soon"][..], "--jwt-ttl"),
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
    let output = short_run(&out, &["--url", &url], &["events>0", "counts.shed==0"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["events"], 0);
    // 503 is load shedding: counted as shed, not as an error.
    assert!(summary["counts"]["shed"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["errors"]["http_status"], 0, "{summary}");
    assert!(
        summary["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["default"] == false)
            .all(|t| t["ok"] == false),
        "{summary}"
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

#[test]
fn a_broken_warning_passes_and_says_so() {
    let out = out_dir("warning");
    let output = short_run(&out, &["--rate", "50"], &["warn:events_per_s>1000000000"]);
    assert_exit(&output, 0);
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(
        (summary["passed"].as_bool(), summary["verdict"].as_str()),
        (Some(true), Some("warn"))
    );
    let markdown = read(&out.join("report.md"));
    assert!(
        markdown.starts_with("# streamgauge: PASS WITH WARNINGS"),
        "{markdown}"
    );
    assert!(markdown.contains("events_per_s>1000000000"), "{markdown}");
    assert!(junit_failures(&read(&out.join("junit.xml"))).is_empty());
}
