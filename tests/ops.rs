//! `/healthz`, `/readyz`, `/metrics`, `/connections` and `/demo`.

use std::collections::{HashMap, HashSet};

use axum::body::Body;
use axum::http::header::ACCEPT;
use axum::http::{Request, StatusCode};
use streamgauge_server::state::AppState;
use streamgauge_server::{Shutdown, Store};
use tower::ServiceExt;

use crate::support::{self, Backend, Database, TestServer, Transport};

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let server = TestServer::start(support::config()).await;
    for path in ["/healthz", "/readyz"] {
        let response = server.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
    }
}

/// The families the issue asks `/metrics` for, by their 0.0.4 names.
const FAMILIES: [(&str, &str); 7] = [
    ("streamgauge_connections_open", "gauge"),
    ("streamgauge_connections_rejected_total", "counter"),
    ("streamgauge_events_sent_total", "counter"),
    ("streamgauge_bytes_sent_total", "counter"),
    ("streamgauge_batch_events", "histogram"),
    ("streamgauge_queue_depth_events", "gauge"),
    ("streamgauge_slow_consumers_total", "counter"),
];

/// Checks `text` as the Prometheus text format 0.0.4: no OpenMetrics-only
/// line, one `TYPE` per family before its first sample, every sample of a
/// typed family (a histogram's by its `_bucket`, `_sum` and `_count`), each
/// family's samples together, every value a number. Returns the types.
fn parse_prometheus_text(text: &str) -> HashMap<&str, &str> {
    let mut types = HashMap::new();
    let mut done = HashSet::new();
    let mut current = None;
    for line in text.lines() {
        assert!(
            !line.starts_with("# EOF") && !line.starts_with("# UNIT"),
            "OpenMetrics only: {line}"
        );
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(types.insert(name, kind).is_none(), "a second {line}");
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name = line.split(['{', ' ']).next().expect("a sample name");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (types.get(base) == Some(&"histogram")).then_some(base)
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "no TYPE before {line:?}");
        if current != Some(family) {
            assert!(done.insert(family), "{family} is split: {line:?}");
            current = Some(family);
        }
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "not a number: {line:?}");
    }
    types
}

#[tokio::test]
async fn metrics_are_prometheus_text_unless_openmetrics_is_asked_for() {
    let server = TestServer::start(support::config()).await;
    // A stream and its batches, so histograms and labelled series exist.
    for transport in Transport::BOTH {
        let mut client = server.open(transport, "ticker?rate=0&count=3").await;
        assert_eq!(client.drain().await.0.len(), 3);
    }

    let response = server.get("/metrics").await;
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let types = parse_prometheus_text(&text);
    for (family, kind) in FAMILIES {
        assert_eq!(types.get(family), Some(&kind), "{family} in\n{text}");
    }
    assert_eq!(types.get("process_cpu_seconds_total"), Some(&"counter"));

    let metrics = server.url("/metrics");
    for accept in [
        "application/openmetrics-text; version=1.0.0",
        // What Prometheus sends.
        "application/openmetrics-text;version=1.0.0;q=0.5,\
         application/openmetrics-text;version=0.0.1;q=0.4,\
         text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    ] {
        let request = server.http().get(&metrics).header(ACCEPT, accept).send();
        let response = support::within("GET /metrics", request).await.unwrap();
        assert_eq!(
            response.headers()["content-type"],
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            "{accept}"
        );
        let text = response.text().await.unwrap();
        assert!(text.ends_with("# EOF\n"), "{accept}");
        assert!(text.contains("# TYPE streamgauge_events_sent counter\n"));
        assert!(text.contains("\nstreamgauge_events_sent_total{transport=\"sse\"} 3\n"));
    }
}

#[tokio::test]
async fn readiness_turns_503_once_the_server_is_draining() {
    let database = Database::fresh(Backend::Sqlite).await;
    let mut config = support::config();
    config.store.url = database.url().to_owned();
    let store = Store::open(&config.store).await.unwrap();
    let shutdown = Shutdown::new();
    let (state, _writer) = AppState::start(config, store, shutdown.clone());
    let app = streamgauge_server::app::router(state);
    let readyz = || Request::get("/readyz").body(Body::empty()).unwrap();
    assert_eq!(
        app.clone().oneshot(readyz()).await.unwrap().status(),
        StatusCode::OK
    );
    shutdown.trigger();
    assert_eq!(
        app.oneshot(readyz()).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn connections_lists_a_tagged_stream_with_its_batches() {
    let server = TestServer::start(support::config()).await;
    for transport in Transport::BOTH {
        let tag = format!("mine-{}", transport.label());
        let mut stream = server
            .open(transport, &format!("ticker?rate=2000&tag={tag}"))
            .await;
        let mut received = 0;
        while received < 500 {
            stream.next_event().await;
            received += 1;
        }
        let listed: serde_json::Value = server.get_json(&format!("/connections?tag={tag}")).await;
        let streams = listed["connections"].as_array().unwrap();
        assert_eq!(streams.len(), 1, "{listed}");
        let info = &streams[0];
        assert_eq!(info["transport"], transport.label());
        assert_eq!(info["tag"], tag.as_str());
        let events = info["events"].as_u64().unwrap();
        let batches = info["batches"].as_u64().unwrap();
        assert!(events >= 500 && (1..=events).contains(&batches), "{info}");
        assert!(info["queue_events"].is_u64() && info["last_batch"].as_u64().unwrap() >= 1);
    }
    let all: serde_json::Value = server.get_json("/connections").await;
    assert!(all["connections"].is_array());
    let bad = server.get("/connections?tag=no%20spaces").await;
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("`tag`"), "{body}");
    let bad = server.get("/sse/ticker?tag=%3Cscript%3E").await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn the_demo_page_is_served_whole_and_fetches_nothing_elsewhere() {
    let server = TestServer::start(support::config()).await;
    let response = server.get("/demo").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("/connections?tag="));
    for external in ["http://", "https://", "<script src", "<link"] {
        assert!(!page.contains(external), "the page loads {external}…");
    }
}

/// A burst of connections that ends hands the memory it freed back
/// (`--malloc-trim`, on by default): not while the connections are open,
/// once they have fallen to at most half their peak.
#[tokio::test]
async fn the_end_of_a_burst_of_connections_is_trimmed() {
    let server = TestServer::start(support::config()).await;
    let open = "streamgauge_http_connections_open{protocol=\"http1\"}";
    let trims = "streamgauge_memory_trims_total";
    let burst = 2 * streamgauge_server::trim::MIN_FALL as usize;
    let streams = futures_util::future::join_all(
        (0..burst).map(|_| server.open(Transport::Sse, "ticker?rate=1")),
    )
    .await;
    let metrics = server
        .wait_for("the burst's connections", |m| m.get(open) >= burst as f64)
        .await;
    assert_eq!(metrics.get(trims), 0.0);
    drop(streams);
    server
        .wait_for("the trim after the burst", |m| m.get(trims) >= 1.0)
        .await;
}
