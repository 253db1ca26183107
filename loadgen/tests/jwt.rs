//! Per-user tokens end to end (issue 22), against the real server that
//! verifies them: churning topic subscribers on each transport, with
//! 5-second ES256 tokens over 30 s, renew every token in time (no gap, no
//! duplicate, no refusal, no stream ended by its token), and each
//! WebSocket refresh the server accepted is counted once by the load
//! generator; meanwhile tokens signed with another key are refused, and the
//! server's reason is read from SSE and WebSocket refusals alike. The runs
//! go at once, against one server, so that the test takes the 30 s once.
//!
//! Test with `cargo test -p streamgauge-loadgen --test jwt`.

mod support;

use std::path::{Path, PathBuf};

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::Value;
use support::{WAIT, assert_exit, out_dir, read_json, server, spawn, text, wait_for};
use tokio::process::Child;

/// Clients per run.
const CLIENTS: u64 = 4;

/// A run with 5-second tokens signed with `key` against `url`: topic
/// subscribers on `transport` that churn, for 30 s, into `out`.
fn churning(url: &str, transport: &str, key: &Path, out: &Path) -> Child {
    let clients = CLIENTS.to_string();
    spawn(&[
        "run",
        "--url",
        url,
        "--stream",
        "topic",
        "--transport",
        transport,
        "--clients",
        &clients,
        "--duration",
        "30s",
        "--churn",
        "0.2",
        "--publish-rate",
        "20",
        "--jwt-key",
        key.to_str().unwrap(),
        "--jwt-ttl",
        "5s",
        "--no-default-thresholds",
        "--threshold",
        "gaps==0",
        "--threshold",
        "dups==0",
        "--threshold",
        "auth.refreshes_refused==0",
        "--threshold",
        "auth.ended.token_expired==0",
        "--no-history",
        "--out",
        out.to_str().unwrap(),
    ])
}

/// A short mixed run (SSE and WebSocket clients in two worker processes,
/// which read the key themselves, and a publisher) with tokens signed with
/// `key`, into `out`.
fn short(url: &str, key: &Path, out: &Path) -> Child {
    spawn(&[
        "run",
        "--url",
        url,
        "--stream",
        "topic",
        "--transport",
        "mixed",
        "--workers",
        "2",
        "--clients",
        "2",
        "--duration",
        "3s",
        "--publish-rate",
        "5",
        "--jwt-key",
        key.to_str().unwrap(),
        "--no-default-thresholds",
        "--no-history",
        "--out",
        out.to_str().unwrap(),
    ])
}

/// A fresh ES256 key pair in `dir`, never committed: the private key's
/// file and the public key's.
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    std::fs::write(&private, pair.serialize_pem()).unwrap();
    std::fs::write(&public, pair.public_key_pem()).unwrap();
    (private, public)
}

/// Waits for `run` to pass (exit 0), and reads its summary from `out`.
async fn passed(run: Child, out: &Path) -> Value {
    let limit = WAIT * 3;
    let output = tokio::time::timeout(limit, run.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("a 30 s run ends within {limit:?}"))
        .unwrap();
    assert_exit(&output, 0);
    assert!(text(&output.stdout).contains("Tokens: "), "the token line");
    read_json(&out.join("summary.json"))
}

/// The sample `name{result="…"}` of `metrics`, 0 if absent.
fn sample(metrics: &str, name: &str, result: &str) -> u64 {
    let key = format!("{name}{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&key))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_second_tokens_are_renewed_in_time_on_both_transports() {
    let out = out_dir("jwt");
    std::fs::create_dir_all(&out).unwrap();
    // The server verifies with the public half, the load generator signs
    // with the private one; the other key's tokens do not verify.
    let (private, public) = key_pair(&out, "es256");
    let (other, _) = key_pair(&out, "other");
    // A second of leeway: a renewal that came late would show as a stream
    // ended by its token.
    let public = public.to_str().unwrap();
    let server_args = ["--jwt-key", public, "--jwt-leeway", "1s"];
    let (_server, addr) = server(&out.join("server"), &server_args).await;
    let url = format!("http://{addr}");
    let (sse_out, ws_out, refused_out) = (out.join("sse"), out.join("ws"), out.join("refused"));
    let sse = churning(&url, "sse", &private, &sse_out);
    let ws = churning(&url, "ws", &private, &ws_out);
    let refused = short(&url, &other, &refused_out);
    let (sse, ws, refused) = tokio::join!(
        passed(sse, &sse_out),
        passed(ws, &ws_out),
        passed(refused, &refused_out)
    );

    // Every stream request and publish of the other key was refused, the
    // reason read from each 401's body (SSE, WebSocket upgrade, publish),
    // and the workers' counts merged into the parent's exactly.
    let bad = refused["auth"]["refusals"]["bad_signature"].as_u64();
    assert!(bad.is_some_and(|n| n > 2), "{}", refused["auth"]);
    assert_eq!(refused["errors"]["http_status"].as_u64(), bad, "{refused}");
    assert_eq!(refused["events"], 0, "{refused}");
    assert_eq!(refused["loadgen_workers"], 2, "{refused}");

    for summary in [&sse, &ws] {
        assert_eq!(
            (summary["gaps"].as_u64(), summary["dups"].as_u64()),
            (Some(0), Some(0)),
            "{summary}"
        );
        for (kind, count) in summary["errors"].as_object().unwrap() {
            assert_eq!(count, 0, "errors.{kind}: {summary}");
        }
        let auth = &summary["auth"];
        assert_eq!(auth["refreshes_refused"], 0, "{auth}");
        assert_eq!(auth["refusals"], serde_json::json!({}), "{auth}");
        assert_eq!(
            auth["ended"],
            serde_json::json!({"token_expired": 0, "revoked": 0}),
            "{auth}"
        );
        // Renewed at 3.5 to 4 s of 5: about 8 times a client in 30 s.
        let refreshes = auth["token_refreshes"].as_u64().unwrap();
        assert!(refreshes >= 6 * CLIENTS, "{refreshes} renewals: {auth}");
        assert!(
            summary["counts"]["reconnects"].as_u64().unwrap() > 0,
            "churned"
        );
        assert!(summary["events"].as_u64().unwrap() > 0, "{summary}");
    }
    // Only WebSocket clients refresh on the live stream (SSE ones open a new
    // stream): the server's count of accepted refreshes is theirs, exactly.
    let metrics = wait_for(addr, "the metrics", |_| true).await;
    let refreshes = "streamgauge_token_refreshes_total";
    assert_eq!(
        (
            sample(&metrics, refreshes, "accepted"),
            sample(&metrics, refreshes, "refused")
        ),
        (ws["auth"]["token_refreshes"].as_u64().unwrap(), 0),
        "{metrics}"
    );
}
