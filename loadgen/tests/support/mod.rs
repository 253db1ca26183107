//! What the binary's tests share: running `streamgauge-loadgen`, the real
//! server it embeds, a fresh output directory per test, reading what it
//! wrote and what the server's metrics say.
#![allow(dead_code, reason = "each test binary uses its own part of it")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Child;

/// The longest any step may take: starting a server, clients connecting,
/// a run failing.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Runs `streamgauge-loadgen` with `args` to its end, its run history in this test
/// process's own temporary database (never in the repository).
pub(crate) fn loadgen(args: &[&str]) -> Output {
    loadgen_command(args)
        .output()
        .expect("running streamgauge-loadgen")
}

/// `streamgauge-loadgen` with `args`, ready to start, as [`loadgen`] runs it.
pub(crate) fn loadgen_command(args: &[&str]) -> Command {
    let history =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("history-{}.db", std::process::id()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_streamgauge-loadgen"));
    command.args(args).env_remove("STREAMGAUGE_LOG").env(
        "STREAMGAUGE_HISTORY",
        format!("sqlite://{}", history.display()),
    );
    command
}

/// `streamgauge-loadgen` with `args`, stdout and stderr piped, killed if
/// the test ends first.
pub(crate) fn spawn(args: &[&str]) -> Child {
    let mut command = tokio::process::Command::from(loadgen_command(args));
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command.spawn().expect("starting streamgauge-loadgen")
}

/// The real server (the binary's `__serve`) with `args`, on a free
/// loopback port with a fresh database in `dir`, once it says where it
/// listens.
pub(crate) async fn server(dir: &Path, args: &[&str]) -> (Child, SocketAddr) {
    std::fs::create_dir_all(dir).unwrap();
    let database = format!("sqlite://{}", dir.join("server.db").display());
    let mut all = vec![
        "__serve",
        "--listen",
        "127.0.0.1:0",
        "--database",
        &database,
        "--log",
        "warn",
    ];
    all.extend_from_slice(args);
    let mut server = spawn(&all);
    let mut line = String::new();
    let stdout = server.stdout.as_mut().unwrap();
    tokio::time::timeout(WAIT, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("the server says where it listens")
        .unwrap();
    let addr = line
        .trim_end()
        .strip_prefix("listening on http://")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("the server's first line: {line:?}"));
    (server, addr)
}

/// Scrapes `addr`'s `/metrics` every 20 ms until `ready` holds, at most
/// [`WAIT`].
pub(crate) async fn wait_for(addr: SocketAddr, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        poll.tick().await;
        let response = http
            .get(format!("http://{addr}/metrics"))
            .timeout(WAIT)
            .send()
            .await
            .expect("GET /metrics");
        let metrics = response.text().await.expect("the metrics");
        if ready(&metrics) {
            return metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}; last metrics:\n{metrics}"
        );
    }
}

/// `run` with two clients for a second, plus `extra` flags and each of
/// `thresholds`, writing into `out`.
pub(crate) fn short_run(out: &Path, extra: &[&str], thresholds: &[&str]) -> Output {
    let mut args = vec!["run", "--clients", "2", "--duration", "1s"];
    args.extend_from_slice(extra);
    for threshold in thresholds {
        args.extend(["--threshold", threshold]);
    }
    args.extend(["--out", out.to_str().unwrap()]);
    loadgen(&args)
}

/// A directory for test `name`'s results, empty.
pub(crate) fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("loadgen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `path` as JSON.
pub(crate) fn read_json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `path` as text.
pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Output bytes as text.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `output` exited with `code`, showing what it printed if not.
pub(crate) fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stderr:\n{}\nstdout:\n{}",
        text(&output.stderr),
        text(&output.stdout)
    );
}

/// The names of the test cases in `junit.xml` that failed, after checking
/// that the document is well-formed XML.
pub(crate) fn junit_failures(xml: &str) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut failures, mut case, mut depth) = (Vec::new(), None::<String>, 0usize);
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(Event::Start(e)) => {
                depth += 1;
                if e.name().as_ref() == b"testcase" {
                    case = attribute(&e, b"name");
                } else if e.name().as_ref() == b"failure" {
                    failures.extend(case.clone());
                }
            }
            Ok(Event::Empty(e)) if e.name().as_ref() == b"failure" => failures.extend(case.clone()),
            Ok(Event::End(_)) => depth -= 1,
            Ok(_) => {}
            Err(e) => panic!(
                "junit.xml is not well-formed at {}: {e}\n{xml}",
                reader.error_position()
            ),
        }
    }
    assert_eq!(depth, 0, "junit.xml has unclosed elements");
    failures
}

/// The number of SVG charts in `report.html`, after checking that the page
/// is well-formed XML and has nothing that loads from elsewhere.
pub(crate) fn html_charts(html: &str) -> usize {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(html);
    let (mut charts, mut depth) = (0, 0usize);
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(Event::Start(e)) => {
                depth += 1;
                charts += usize::from(is_chart(&e));
            }
            Ok(Event::Empty(e)) => charts += usize::from(is_chart(&e)),
            Ok(Event::End(_)) => depth -= 1,
            Ok(_) => {}
            Err(e) => panic!(
                "report.html is not well-formed at {}: {e}",
                reader.error_position()
            ),
        }
    }
    assert_eq!(depth, 0, "report.html has unclosed elements");
    charts
}

/// Whether `element` is an SVG chart; panics on one that loads from
/// elsewhere.
fn is_chart(element: &quick_xml::events::BytesStart) -> bool {
    let name = element.name();
    assert!(
        !matches!(name.as_ref(), b"script" | b"link" | b"img"),
        "report.html loads from elsewhere: {element:?}"
    );
    name.as_ref() == b"svg"
}

fn attribute(element: &quick_xml::events::BytesStart, name: &[u8]) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .map(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .expect("an attribute value")
                .into_owned()
        })
}
