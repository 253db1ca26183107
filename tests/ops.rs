//! `/healthz`, `/readyz`, `/metrics`, `/connections` and `/demo`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use streamgauge_server::state::AppState;
use streamgauge_server::{Shutdown, Store};
use tower::ServiceExt;

use crate::support::{self, Backend, Database, TestServer, Transport};

#[tokio::test]
async fn health_and_readiness_answer_200_and_metrics_are_openmetrics_text() {
    let server = TestServer::start(support::config()).await;
    for path in ["/healthz", "/readyz"] {
        let response = server.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
    }
    let response = server.get("/metrics").await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    for family in [
        "streamgauge_connections_open",
        "streamgauge_connections_rejected",
        "streamgauge_events_sent",
        "streamgauge_bytes_sent",
        "streamgauge_batch_events",
        "streamgauge_queue_depth_events",
        "streamgauge_slow_consumers",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no {family} in\n{text}"
        );
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
