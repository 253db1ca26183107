//! `/healthz`, `/readyz` and `/metrics`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use streamgauge_server::state::AppState;
use streamgauge_server::{Shutdown, Store};
use tower::ServiceExt;

use crate::support::{self, Backend, Database, TestServer};

#[tokio::test]
async fn health_and_readiness_answer_200_and_metrics_are_openmetrics_text() {
    let server = TestServer::start(support::config()).await;
    for path in ["/healthz", "/readyz"] {
        let response = server.http().get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let response = server
        .http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
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
