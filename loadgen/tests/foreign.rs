//! Foreign targets (issue 21): the load generator measures servers that do
//! not speak this project's protocol, each written in this test with a
//! message shape of its own (`foreign/servers.rs`): a pub/sub hub wrapping
//! payloads with string ids, a WebSocket chat that needs a subprotocol and
//! a join frame, an OpenAI-compatible stream with a fixed time to first
//! token and token interval, this project's events over TLS with a test
//! CA; and this project's own server's `/v1/chat/completions`. The binary
//! runs each, as a user would, from a scenario file.
//!
//! Test with `cargo test -p streamgauge-loadgen --test foreign`.

mod support;

#[path = "foreign/servers.rs"]
mod servers;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use servers::{Faults, Hub, TestCa};
use support::{assert_exit, loadgen_command, out_dir, read, read_json, text};

/// The longest a run of the binary may take here.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes `scenario` (TOML) for test `name`, and runs it with `args` (and
/// `env`) into that test's results directory: the output and the
/// directory. Only the thresholds a test gives apply (the default latency
/// budget would make a busy machine's run fail).
async fn run(name: &str, scenario: &str, args: &[&str], env: &[(&str, &str)]) -> (Output, PathBuf) {
    let out = out_dir(name);
    std::fs::create_dir_all(&out).unwrap();
    let file = out.join(format!("{name}.toml"));
    std::fs::write(&file, scenario).unwrap();
    let mut all = vec![
        "run".to_owned(),
        "--scenario".to_owned(),
        file.display().to_string(),
        "--no-history".to_owned(),
        "--no-default-thresholds".to_owned(),
        "--out".to_owned(),
        out.join("results").display().to_string(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    // The binary runs beside this test's own servers, off their runtime.
    let output = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut command = loadgen_command(&args);
        command.envs(env);
        command.output().expect("running streamgauge-loadgen")
    });
    let output = tokio::time::timeout(RUN_TIMEOUT, output)
        .await
        .expect("the run ends in time")
        .unwrap();
    (output, out.join("results"))
}

/// `--clients N --duration D` and `extra`.
fn load(
    clients: &'static str,
    duration: &'static str,
    extra: &[&'static str],
) -> Vec<&'static str> {
    let mut args = vec!["--clients", clients, "--duration", duration];
    args.extend_from_slice(extra);
    args
}

/// `summary.json` of a run's results directory.
fn summary(results: &Path) -> Value {
    read_json(&results.join("summary.json"))
}

/// Whether `measured` is within 10 % of `wanted`.
fn within_10_percent(measured: &Value, wanted: f64) -> bool {
    measured
        .as_f64()
        .is_some_and(|m| (m - wanted).abs() <= 0.1 * wanted)
}

/// Asserts that a run of token streams of `tokens` tokens each, the first
/// `ttft_ms` after the request and the others 20 ms apart, measured them
/// so (time to first token and inter-token latency within 10 %, every
/// token counted); how many requests completed.
fn assert_generation(s: &Value, ttft_ms: f64, tokens: u64) -> u64 {
    assert!(
        within_10_percent(&s["ttft_ms"]["p50"], ttft_ms),
        "{}",
        s["ttft_ms"]
    );
    assert!(
        within_10_percent(&s["itl_ms"]["p50"], 20.0),
        "{}",
        s["itl_ms"]
    );
    let completed = s["counts"]["completed"].as_u64().unwrap();
    assert!(completed >= 4, "{s}");
    assert_eq!(s["output_tokens"].as_u64(), Some(tokens * completed));
    completed
}

/// A hub scenario on `addr`: JSON messages whose pointers find the load
/// generator's own seq and send time.
fn hub_scenario(addr: std::net::SocketAddr) -> String {
    format!(
        r#"
publish-rate = 50

[target]
subscribe_url = "http://{addr}/topics/{{topic}}/events"
format = "json"
seq_pointer = "/message/seq"
ts_pointer = "/message/ts_us"
event_filter = ["message"]
publish_url = "http://{addr}/topics/{{topic}}"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pub_sub_hub_is_measured_through_what_it_relays() {
    let (hub, addr) = Hub::start(Faults::default()).await;
    let (output, results) = run(
        "hub",
        &hub_scenario(addr),
        &load("3", "2s", &["--threshold", "gaps==0"]),
        &[],
    )
    .await;
    assert_exit(&output, 0);
    let s = summary(&results);
    assert_eq!(
        (s["stream"].as_str(), s["target_format"].as_str()),
        (Some("topic"), Some("json"))
    );
    assert!(s["events"].as_u64() > Some(0), "{s}");
    assert_eq!((&s["gaps"], &s["dups"]), (&Value::from(0), &Value::from(0)));
    assert_eq!(s["behind_at_end"], 0);
    assert!(s["counts"]["published"].as_u64() > Some(0));
    for figure in ["latency_us", "end_to_end_us"] {
        assert!(s[figure]["p99"].is_u64(), "{figure} in {s}");
    }
    assert!(
        s["publish_ms"]["p99"].is_number(),
        "publishes answered 202: {s}"
    );
    // Each subscription's greeting has no `/message/seq`: unparsed, kept.
    let subscriptions = hub.log.lock().unwrap().subscriptions;
    assert_eq!(s["errors"]["unparsed"].as_u64(), Some(subscriptions), "{s}");
    assert!(
        s["unparsed_example"].as_str().unwrap().contains("welcome"),
        "{s}"
    );
    assert_eq!(s["tls"], Value::Null);
    // The presence events between were filtered out: had they been read,
    // they would be unparsed too (their data is not JSON), and each
    // relayed message is one event per subscriber at most.
    let published = s["counts"]["published"].as_u64().unwrap();
    assert!(s["events"].as_u64() <= Some(3 * published), "{s}");
    let report = read(&results.join("report.md"));
    assert!(
        report.contains("could not be read (errors.unparsed)"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_clients_in_worker_processes_resume_with_the_last_event_id() {
    let (hub, addr) = Hub::start(Faults::default()).await;
    let args = load("4", "2s", &["--churn", "2", "--workers", "2"]);
    let (output, results) = run("hub-churn", &hub_scenario(addr), &args, &[]).await;
    assert_exit(&output, 0);
    let s = summary(&results);
    assert_eq!(s["loadgen_workers"], 2);
    assert!(s["counts"]["reconnects"].as_u64() > Some(0), "{s}");
    assert!(s["reconnect_ms"]["p95"].is_number(), "{s}");
    let log = hub.log.lock().unwrap();
    assert!(!log.resumed_after.is_empty(), "{log:?}");
    // The hub's own string ids, as its events carried them (or its
    // greeting's, when no message came before the churn).
    assert!(
        log.resumed_after
            .iter()
            .all(|id| id.starts_with("msg-") || id == "sys-0"),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_and_duplicates_a_hub_injects_are_caught() {
    let faults = Faults {
        drop_every: 7,
        repeat_every: 5,
    };
    let (hub, addr) = Hub::start(faults).await;
    let (output, results) = run(
        "hub-faults",
        &hub_scenario(addr),
        &load("2", "2s", &["--threshold", "gaps==0"]),
        &[],
    )
    .await;
    assert_exit(&output, 1);
    let s = summary(&results);
    let log = hub.log.lock().unwrap();
    let (gaps, dups) = (s["gaps"].as_u64().unwrap(), s["dups"].as_u64().unwrap());
    // A drop after a subscriber's last message, or a repeat cut by the end
    // of the run, cannot be seen; every other one is.
    assert!(
        gaps > 0 && gaps <= log.dropped && gaps + 4 >= log.dropped,
        "{gaps} of {log:?}"
    );
    assert!(
        dups > 0 && dups <= log.repeated && dups + 4 >= log.repeated,
        "{dups} of {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_measured_is_null_never_zero() {
    let (_hub, addr) = Hub::start(Faults::default()).await;
    let scenario = format!(
        "[target]\nsubscribe_url = \"http://{addr}/topics/quiet/events\"\nformat = \"json\"\n"
    );
    let (output, results) = run(
        "hub-unchecked",
        &scenario,
        &load("1", "1s", &["--threshold", "gaps==0"]),
        &[],
    )
    .await;
    // Not checked is not passed.
    assert_exit(&output, 1);
    let s = summary(&results);
    for figure in [
        "gaps",
        "dups",
        "latency_us",
        "end_to_end_us",
        "behind_at_end",
    ] {
        assert!(s[figure].is_null(), "{figure} in {s}");
    }
    assert_eq!(s["errors"]["unparsed"], 0, "the greeting is JSON: counted");
    assert!(s["events"].as_u64() >= Some(1));
    let report = read(&results.join("report.md"));
    assert!(
        report.contains("Gaps and duplicates not checked"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_chat_is_joined_with_its_subprotocol_and_frame() {
    let addr = servers::chat().await;
    let chat = |subprotocols: &str| {
        format!(
            r#"
publish-rate = 40

[target]
subscribe_url = "ws://{addr}/chat"
{subprotocols}
ws_on_open = ['{{"join":"{{{{topic}}}}"}}']
format = "json"
seq_pointer = "/text/seq"
ts_pointer = "/text/ts_us"
ws_publish_frame = '{{"say":{{"seq":{{{{seq}}}},"ts_us":{{{{ts_us}}}}}}}}'
"#
        )
    };
    let (output, results) = run(
        "chat",
        &chat(r#"ws_subprotocols = ["chat.v1"]"#),
        &load("3", "2s", &[]),
        &[],
    )
    .await;
    assert_exit(&output, 0);
    let s = summary(&results);
    assert_eq!(s["transport"], "ws");
    assert!(s["events"].as_u64() > Some(0), "{s}");
    assert_eq!((&s["gaps"], &s["dups"]), (&Value::from(0), &Value::from(0)));
    assert!(s["end_to_end_us"]["p50"].is_u64(), "{s}");
    assert!(s["counts"]["published"].as_u64() > Some(0));
    assert!(
        s["publish_ms"].is_null(),
        "a frame has no answer to time: {s}"
    );
    // Without the subprotocol the chat refuses the upgrade.
    let refused = load("1", "1s", &["--threshold", "errors.http_status==0"]);
    let (output, results) = run("chat-refused", &chat(""), &refused, &[]).await;
    assert_exit(&output, 1);
    let s = summary(&results);
    assert!(s["errors"]["http_status"].as_u64() > Some(0), "{s}");
    assert_eq!(s["events"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_stream_gives_time_to_first_token_and_inter_token_latency() {
    const KEY: &str = "sk-test-21-not-a-secret";
    let addr = servers::llm(
        KEY,
        Duration::from_millis(150),
        Duration::from_millis(20),
        10,
    )
    .await;
    let scenario = format!(
        r#"
[target]
subscribe_url = "http://{addr}/v1/chat/completions"
format = "openai"
headers = {{ Authorization = "Bearer ${{TEST_LLM_KEY}}" }}
request_body = '{{"model":"m","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}'
"#
    );
    let thresholds = [
        "--threshold",
        "itl.p99<500ms",
        "--threshold",
        "ttft.p95<2s",
        "--threshold",
        "tokens_per_s.p50>40",
        "--threshold",
        "requests>4",
        "--threshold",
        "output_tokens>40",
    ];
    let args = load("4", "2s", &thresholds);
    let (output, results) = run("llm", &scenario, &args, &[("TEST_LLM_KEY", KEY)]).await;
    assert_exit(&output, 0);
    let s = summary(&results);
    assert_eq!(s["stream"], "tokens");
    let completed = assert_generation(&s, 150.0, 10);
    assert!(
        within_10_percent(&s["tokens_per_s"]["p50"], 50.0),
        "{}",
        s["tokens_per_s"]
    );
    assert!(s["requests"].as_u64() >= Some(completed));
    assert!(s["gaps"].is_null());
    assert!(s["itl_written_ms"].is_null(), "no ts in these chunks: {s}");
    let written = read(&results.join("summary.json"));
    assert!(!written.contains(KEY), "the key is never written");
    // A wrong key: every request refused.
    let refused = load("1", "1s", &["--threshold", "errors.http_status==0"]);
    let (output, results) = run(
        "llm-refused",
        &scenario,
        &refused,
        &[("TEST_LLM_KEY", "wrong")],
    )
    .await;
    assert_exit(&output, 1);
    assert!(summary(&results)["errors"]["http_status"].as_u64() > Some(0));
    // Open model: two requests a second per client, whatever they take.
    let (output, results) = run(
        "llm-rate",
        &scenario,
        &load("2", "2s", &["--request-rate", "2"]),
        &[("TEST_LLM_KEY", KEY)],
    )
    .await;
    assert_exit(&output, 0);
    let requests = summary(&results)["requests"].as_u64().unwrap();
    assert!(
        (4..=10).contains(&requests),
        "{requests} requests at 2/s for 2 clients and 2 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_test_ca_is_verified_and_a_wrong_ca_is_exit_2() {
    let ca = TestCa::new("streamgauge test CA");
    let addr = servers::tls_events(&ca).await;
    let dir = out_dir("tls-ca");
    std::fs::create_dir_all(&dir).unwrap();
    let (good, wrong) = (dir.join("ca.pem"), dir.join("other-ca.pem"));
    std::fs::write(&good, &ca.pem).unwrap();
    std::fs::write(&wrong, TestCa::new("another test CA").pem).unwrap();
    let scenario =
        |trust: &str| format!("[target]\nsubscribe_url = \"https://{addr}/events\"\n{trust}\n");
    let verified = scenario(&format!("ca_cert = {:?}", good.display().to_string()));
    let (output, results) = run("tls", &verified, &load("2", "1s", &[]), &[]).await;
    assert_exit(&output, 0);
    let s = summary(&results);
    assert_eq!(
        (s["tls"].as_str(), s["gaps"].as_u64()),
        (Some("ca_cert"), Some(0))
    );
    assert!(
        s["events"].as_u64() > Some(0) && s["latency_us"]["p50"].is_u64(),
        "{s}"
    );
    let wrong = scenario(&format!("ca_cert = {:?}", wrong.display().to_string()));
    let (output, _) = run("tls-wrong", &wrong, &load("1", "1s", &[]), &[]).await;
    assert_exit(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("over TLS (verified against ca_cert")
            && stderr.contains("invalid peer certificate: UnknownIssuer"),
        "{stderr}"
    );
    let (output, results) = run(
        "tls-insecure",
        &scenario("insecure = true"),
        &load("1", "1s", &[]),
        &[],
    )
    .await;
    assert_exit(&output, 0);
    assert_eq!(summary(&results)["tls"], "insecure");
    let report = read(&results.join("report.md"));
    assert!(
        report.contains("WITHOUT certificate verification"),
        "{report}"
    );
    // The same over wss://.
    let secure_ws = format!(
        "[target]\nsubscribe_url = \"wss://{addr}/events\"\nca_cert = {:?}\n",
        good.display().to_string()
    );
    let (output, results) = run("wss", &secure_ws, &load("2", "1s", &[]), &[]).await;
    assert_exit(&output, 0);
    let s = summary(&results);
    assert_eq!(
        (s["transport"].as_str(), s["tls"].as_str()),
        (Some("ws"), Some("ca_cert"))
    );
    assert!(s["events"].as_u64() > Some(0) && s["gaps"] == 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_own_chat_completions_give_what_was_asked() {
    let scenario = r#"
[target]
subscribe_url = "/v1/chat/completions"
format = "openai"
ts_pointer = "/ts"
request_body = '{"model":"streamgauge","stream":true,"max_tokens":10,"ttft_ms":100,"tps":50,"stream_options":{"include_usage":true}}'
"#;
    let (output, results) = run("own-llm", scenario, &load("4", "2s", &[]), &[]).await;
    assert_exit(&output, 0);
    let s = summary(&results);
    assert_generation(&s, 100.0, 10);
    assert!(s["latency_us"]["p50"].is_u64(), "each chunk's ts: {s}");
    assert!(
        within_10_percent(&s["itl_written_ms"]["p50"], 20.0),
        "the gaps as the server wrote them, at 50 tokens/s: {}",
        s["itl_written_ms"]
    );
}
