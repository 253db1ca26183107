//! Agents (`streamgauge-loadgen agent`) on other loopback addresses run
//! their shares of one coordinator's run against the real server: the
//! merged figures are the sum of theirs, an agent's clock offset is found,
//! a wrong token or build is refused on both sides, and a lost agent
//! fails the run (incomplete) or, tolerated, is reported.
//!
//! Test with `cargo test -p streamgauge-loadgen --test agents`.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader as StdReader, Write as _};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::{WAIT, assert_exit, out_dir, read_json, spawn, text};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStderr};

/// An agent process, where it listens, and its log.
struct Agent {
    child: Child,
    address: String,
    log: Lines<BufReader<ChildStderr>>,
}

impl Agent {
    /// An agent on `ip` (port chosen by the system) with the token in
    /// `token`, and `extra` flags, once it says where it listens.
    async fn start(ip: &str, token: &Path, extra: &[&str]) -> Self {
        let listen = format!("{ip}:0");
        let mut args = vec![
            "agent",
            "--listen",
            &listen,
            "--token-file",
            token.to_str().unwrap(),
            "--log",
            "streamgauge_loadgen=info",
        ];
        args.extend_from_slice(extra);
        let mut child = spawn(&args);
        let mut line = String::new();
        let stdout = child.stdout.as_mut().unwrap();
        tokio::time::timeout(WAIT, BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("the agent says where it listens")
            .unwrap();
        let address = (line.trim_end().strip_prefix("agent listening on "))
            .unwrap_or_else(|| panic!("the agent's first line: {line:?}"))
            .to_owned();
        let log = BufReader::new(child.stderr.take().unwrap()).lines();
        Self {
            child,
            address,
            log,
        }
    }

    /// Reads the agent's log until a line holds `wanted`; the lines read.
    async fn wait_for(&mut self, wanted: &str) -> String {
        let mut read = String::new();
        tokio::time::timeout(WAIT, async {
            while let Some(line) = self.log.next_line().await.unwrap() {
                read.push_str(&line);
                read.push('\n');
                if line.contains(wanted) {
                    return;
                }
            }
            panic!("the agent's log ended without {wanted:?}:\n{read}");
        })
        .await
        .unwrap_or_else(|_| panic!("no {wanted:?} in the agent's log within {WAIT:?}"));
        read
    }

    /// Sends the agent `signal`.
    fn signal(&self, signal: libc::c_int) {
        let pid = i32::try_from(self.child.id().expect("running")).unwrap();
        // SAFETY: kill has no memory-safety preconditions; the pid is this
        // test's child's, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }
}

/// A token file of `token` in `dir`.
fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

/// The coordinator's flags for `agents` with the token in `token`.
fn coordinated(agents: &[&Agent], token: &Path) -> Vec<String> {
    let mut args: Vec<String> = agents
        .iter()
        .flat_map(|a| ["--agent".to_owned(), a.address.clone()])
        .collect();
    args.extend(["--agent-token-file".to_owned(), token.display().to_string()]);
    args
}

/// Runs the coordinator with `args` (and `--no-history --out out`) to its
/// end.
async fn coordinator(args: &[String], out: &Path) -> std::process::Output {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend(["--no-history", "--out", out.to_str().unwrap()]);
    let run = spawn(&all);
    tokio::time::timeout(4 * WAIT, run.wait_with_output())
        .await
        .expect("the coordinator ends")
        .unwrap()
}

fn sum(agents: &[Value], field: &str) -> u64 {
    agents.iter().map(|a| a[field].as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_run_one_run_whose_figures_are_the_sum_of_theirs() {
    let out = out_dir("agents-merge");
    let token = token_file(&out, "token", "a-shared-token-for-agents");
    let first = Agent::start("127.0.0.2", &token, &[]).await;
    // The second runs its share in two worker processes of its own.
    let second = Agent::start(
        "127.0.0.3",
        &token,
        &["--inject-clock-offset", "3000", "--workers", "2"],
    )
    .await;
    let mut args: Vec<String> = [
        "run",
        "--stream",
        "topic",
        "--transport",
        "mixed",
        "--clients",
        "10",
        "--publish-rate",
        "50",
        "--duration",
        "3s",
        "--no-default-thresholds",
        "--threshold",
        "gaps==0",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(coordinated(&[&first, &second], &token));
    let output = coordinator(&args, &out.join("results")).await;
    assert_exit(&output, 0);
    let summary = read_json(&out.join("results").join("summary.json"));
    let agents = summary["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2, "{summary}");
    assert_eq!(agents[0]["address"], json!(first.address));
    assert_eq!(
        (agents[0]["clients"].as_u64(), agents[1]["clients"].as_u64()),
        (Some(5), Some(5)),
        "clients by rank"
    );
    // The merged figures are exactly the sum of the parts.
    assert_eq!(sum(agents, "events"), summary["events"].as_u64().unwrap());
    assert!(summary["events"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(sum(agents, "errors"), 0, "{summary}");
    assert_eq!(
        sum(agents, "published"),
        summary["counts"]["published"].as_u64().unwrap()
    );
    assert!(
        agents.iter().all(|a| a["published"].as_u64() > Some(0)),
        "publishers split"
    );
    // The merged latency histogram is the agents' added up, bucket by
    // bucket, exactly.
    let buckets = |value: &Value| -> BTreeMap<u64, u64> {
        (value["latency_distribution"].as_array().unwrap().iter())
            .map(|b| (b["le_us"].as_u64().unwrap(), b["count"].as_u64().unwrap()))
            .collect()
    };
    let mut added = buckets(&agents[0]);
    for (le, count) in buckets(&agents[1]) {
        *added.entry(le).or_default() += count;
    }
    added.retain(|_, count| *count > 0);
    let mut merged = buckets(&summary);
    merged.retain(|_, count| *count > 0);
    assert_eq!(merged, added, "{summary}");
    let max = |value: &Value| value["latency_us"]["max"].as_u64().unwrap();
    assert_eq!(max(&summary), agents.iter().map(max).max().unwrap());
    let p50 = |value: &Value| value["latency_us"]["p50"].as_u64().unwrap();
    let (low, high) = (
        p50(&agents[0]).min(p50(&agents[1])),
        p50(&agents[0]).max(p50(&agents[1])),
    );
    assert!((low..=high).contains(&p50(&summary)), "{summary}");
    assert_eq!(
        (summary["gaps"].as_u64(), summary["dups"].as_u64()),
        (Some(0), Some(0))
    );
    // Each measured end-to-end latency on its own clock, from its own
    // publishes.
    assert!(
        agents.iter().all(|a| a["end_to_end_us"].is_object()),
        "{summary}"
    );
    // The injected offset is found within ±0.5 ms, the other agent's is 0.
    let offset = |a: &Value| a["clock_offset_us"].as_i64().unwrap();
    assert!(offset(&agents[0]).abs() <= 500, "{}", agents[0]);
    assert!((offset(&agents[1]) - 3_000).abs() <= 500, "{}", agents[1]);
    assert!(
        agents
            .iter()
            .all(|a| a["lost"].is_null() && a["clock_comparable"] == true)
    );
    assert_eq!(summary["incomplete"], false);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(&second.address),
        "the agents table: {stdout}"
    );
    let report = support::read(&out.join("results").join("report.md"));
    assert!(
        report.contains("Agents:") && report.contains(&first.address),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_on_both_sides_and_the_agent_waits_on() {
    let out = out_dir("agents-token");
    let token = token_file(&out, "token", "the-agent-s-own-token");
    let wrong = token_file(&out, "wrong", "a-coordinator-s-wrong-token");
    let mut agent = Agent::start("127.0.0.2", &token, &[]).await;
    let short = [
        "run",
        "--clients",
        "2",
        "--duration",
        "1s",
        "--no-default-thresholds",
    ]
    .map(str::to_owned)
    .to_vec();
    let refused = coordinator(
        &[short.clone(), coordinated(&[&agent], &wrong)].concat(),
        &out.join("refused"),
    )
    .await;
    assert_exit(&refused, 2);
    let stderr = text(&refused.stderr);
    let said = format!(
        "agent {}: refused this coordinator: the token does not match",
        agent.address
    );
    assert!(stderr.contains(&said), "{stderr}");
    agent.wait_for("refused: the token does not match").await;
    // It went back to waiting: the right token runs.
    let ran = coordinator(
        &[short, coordinated(&[&agent], &token)].concat(),
        &out.join("ran"),
    )
    .await;
    assert_exit(&ran, 0);
    let summary = read_json(&out.join("ran").join("summary.json"));
    assert!(
        summary["agents"][0]["events"].as_u64() > Some(0),
        "{summary}"
    );
}

/// A fake agent on 127.0.0.2 that greets with `greeting`, reads the
/// coordinator's hello and answers `answer`; its address.
fn fake_agent(greeting: &'static str, answer: &'static str) -> String {
    let listener = StdListener::bind("127.0.0.2:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(greeting.as_bytes()).unwrap();
        let mut hello = String::new();
        let _ = StdReader::new(stream.try_clone().unwrap()).read_line(&mut hello);
        let _ = stream.write_all(answer.as_bytes());
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_build_or_bad_input_is_refused_on_both_sides() {
    let out = out_dir("agents-build");
    let token = token_file(&out, "token", "a-shared-token-for-agents");
    let run = |address: String, name: &str| {
        let args = one_client_run(&address, &token);
        let out = out.join(name);
        async move { coordinator(&args, &out).await }
    };
    // An agent of another build: the coordinator says so.
    let older = fake_agent(
        "{\"greeting\":{\"protocol\":1,\"commit\":\"0000000\",\"nonce\":\"00\"}}\n",
        "{\"refused\":{\"reason\":\"another build\"}}\n",
    );
    let output = run(older.clone(), "older").await;
    assert_exit(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "agent {older}: another build of the load generator: it is build 0000000"
        )),
        "{stderr}"
    );
    // An agent that speaks something else: a clear error, no panic.
    let garbled = fake_agent("HTTP/1.1 400 Bad Request\r\n\r\n", "");
    let output = run(garbled.clone(), "garbled").await;
    assert_exit(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("agent {garbled}: it sent \"HTTP/1.1 400")),
        "{stderr}"
    );
    assert!(stderr.contains("not the control protocol"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A coordinator of another build: the agent refuses it and says why.
    let mut agent = Agent::start("127.0.0.3", &token, &[]).await;
    let mut stream = std::net::TcpStream::connect(&agent.address).unwrap();
    let mut lines = StdReader::new(stream.try_clone().unwrap()).lines();
    let greeting: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(greeting["greeting"]["nonce"].is_string(), "{greeting}");
    stream
        .write_all(b"{\"hello\":{\"protocol\":1,\"commit\":\"0000000\",\"proof\":\"00\"}}\n")
        .unwrap();
    let answer: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let reason = answer["refused"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("another build of the load generator"),
        "{answer}"
    );
    assert!(reason.contains("0000000"), "{answer}");
    agent.wait_for("refused: another build").await;
}

/// Two agents running `run` with `flags` (and 4 clients): `signal` is sent
/// to the second once its run started; the coordinator's output (within
/// `within`), where its results went, and the second agent.
async fn lose_the_second(
    name: &str,
    flags: &[&str],
    signal: libc::c_int,
    within: std::time::Duration,
) -> (std::process::Output, PathBuf, Agent) {
    let out = out_dir(name);
    let token = token_file(&out, "token", "a-shared-token-for-agents");
    let first = Agent::start("127.0.0.2", &token, &[]).await;
    let mut second = Agent::start("127.0.0.3", &token, &[]).await;
    let mut args: Vec<String> = ["run", "--clients", "4"].map(str::to_owned).to_vec();
    args.extend(flags.iter().map(|f| (*f).to_owned()));
    args.extend(coordinated(&[&first, &second], &token));
    let results = out.join("results");
    let into = results.clone();
    let run = tokio::spawn(async move { coordinator(&args, &into).await });
    second.wait_for("run started").await;
    second.signal(signal);
    let output = tokio::time::timeout(within, run)
        .await
        .expect("the run ends")
        .unwrap();
    (output, results, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_run_fails_the_run_which_is_marked_incomplete() {
    // A minute of load: the run must end long before it, on the loss.
    let (output, results, second) =
        lose_the_second("agents-killed", &["--duration", "60s"], libc::SIGKILL, WAIT).await;
    assert_exit(&output, 2);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("the run is incomplete"), "{stderr}");
    assert!(
        stderr.contains(&format!("agent {} lost", second.address)),
        "{stderr}"
    );
    let summary = read_json(&results.join("summary.json"));
    assert_eq!(summary["incomplete"], true, "{summary}");
    assert_eq!(summary["verdict"], "fail");
    let lost = &summary["agents"][1]["lost"];
    assert!(
        lost["why"].as_str().unwrap().contains("disconnected"),
        "{lost}"
    );
    assert!(lost["at_s"].as_f64().unwrap() < 30.0, "{lost}");
    assert!(summary["agents"][0]["lost"].is_null());
    // What was measured until then stands, the lost agent's included.
    let agents = summary["agents"].as_array().unwrap();
    assert_eq!(sum(agents, "events"), summary["events"].as_u64().unwrap());
    assert_eq!(agents[0]["clients"], 2, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_agent_is_lost_and_tolerated_the_run_goes_on() {
    let flags = [
        "--duration",
        "8s",
        "--no-default-thresholds",
        "--tolerate-agent-loss",
    ];
    let (output, results, second) =
        lose_the_second("agents-stalled", &flags, libc::SIGSTOP, 2 * WAIT).await;
    second.signal(libc::SIGCONT);
    assert_exit(&output, 0);
    let summary = read_json(&results.join("summary.json"));
    assert_eq!(summary["incomplete"], false, "{summary}");
    let lost = &summary["agents"][1]["lost"];
    assert!(
        lost["why"]
            .as_str()
            .unwrap()
            .contains("stalled: no report for 5s"),
        "{lost}"
    );
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("the run went on without its clients"),
        "{stdout}"
    );
}

/// A second of one client's run over the agent at `address`, with the
/// token in `token`.
fn one_client_run(address: &str, token: &Path) -> Vec<String> {
    let token = token.to_str().unwrap();
    let args = [
        "run",
        "--clients",
        "1",
        "--duration",
        "1s",
        "--agent",
        address,
    ];
    let mut args: Vec<String> = args.map(str::to_owned).to_vec();
    args.extend(["--agent-token-file".to_owned(), token.to_owned()]);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_agent_or_a_bad_address_exits_2_naming_it() {
    let out = out_dir("agents-unreachable");
    let token = token_file(&out, "token", "a-shared-token-for-agents");
    let free = StdListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    for (agent, said) in [
        (free.as_str(), format!("agent {free}: unreachable")),
        ("no-port", "--agent \"no-port\": not HOST:PORT".to_owned()),
    ] {
        let output = coordinator(&one_client_run(agent, &token), &out.join("results")).await;
        assert_exit(&output, 2);
        let stderr = text(&output.stderr);
        assert!(stderr.contains(&said), "{stderr}");
    }
    let output = support::loadgen(&["run", "--agent", "127.0.0.2:1"]);
    assert_exit(&output, 2);
    assert!(
        text(&output.stderr).contains("--agent-token-file"),
        "clap names the missing flag"
    );
}
