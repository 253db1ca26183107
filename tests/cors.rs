//! CORS (issue 23): off by default; with `--cors-origin`, a page of a
//! named origin reads answers (credentials allowed), preflights are
//! answered with the headers a streaming page sends (`Authorization`,
//! `Last-Event-ID`), and other origins get nothing; `*` lets any origin
//! read, without credentials.

use reqwest::header::HeaderMap;
use streamgauge_server::Config;
use streamgauge_server::cors::Cors;

use crate::support::{TestServer, config, within};

const APP: &str = "https://app.example";

fn with_cors(cors: Cors) -> Config {
    Config { cors, ..config() }
}

/// `method path` sent from a page of `origin`, with `extra` headers: the
/// status and the answer's headers.
async fn from_origin(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    origin: &str,
    extra: &[(&str, &str)],
) -> (u16, HeaderMap) {
    let mut request = server
        .http()
        .request(method, server.url(path))
        .header("origin", origin);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = within("an answer", request.send())
        .await
        .expect("an answer");
    (response.status().as_u16(), response.headers().clone())
}

/// A preflight of a publish with a bearer token.
async fn preflight(server: &TestServer, origin: &str) -> (u16, HeaderMap) {
    from_origin(
        server,
        reqwest::Method::OPTIONS,
        "/topics/t/events",
        origin,
        &[
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type, last-event-id",
            ),
        ],
    )
    .await
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let server = TestServer::start(config()).await;
    let (status, headers) = preflight(&server, APP).await;
    assert_eq!(status, 405);
    assert!(headers.get("access-control-allow-origin").is_none());
    let (status, headers) = from_origin(
        &server,
        reqwest::Method::GET,
        "/sse/ticker?count=1",
        APP,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_named_origin_reads_with_credentials_and_others_get_nothing() {
    let origins = Cors::parse(vec![APP.to_owned()]).unwrap();
    let server = TestServer::start(with_cors(origins)).await;
    let (status, headers) = preflight(&server, APP).await;
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], APP);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["authorization", "last-event-id", "content-type"] {
        assert!(allowed.contains(header), "{allowed}");
    }
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    // A stream read from the page, and its resumption.
    let (status, headers) = from_origin(
        &server,
        reqwest::Method::GET,
        "/sse/topics/t",
        APP,
        &[("last-event-id", "0")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], APP);
    assert!(headers["vary"].to_str().unwrap().contains("origin"));
    // A refusal's Retry-After is readable from the page.
    let (_, headers) = from_origin(&server, reqwest::Method::GET, "/nowhere", APP, &[]).await;
    assert!(
        headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("retry-after")
    );
    // Another origin is not allowed to read.
    let (_, headers) = preflight(&server, "https://evil.example").await;
    assert!(headers.get("access-control-allow-origin").is_none());
    let (_, headers) = from_origin(
        &server,
        reqwest::Method::GET,
        "/sse/ticker?count=1",
        "https://evil.example",
        &[],
    )
    .await;
    assert!(headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn any_origin_reads_without_credentials() {
    let server = TestServer::start(with_cors(Cors::Any)).await;
    let (status, headers) = preflight(&server, "https://anyone.example").await;
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(headers.get("access-control-allow-credentials").is_none());
    let (_, headers) = from_origin(
        &server,
        reqwest::Method::GET,
        "/sse/ticker?count=1",
        "https://anyone.example",
        &[],
    )
    .await;
    assert_eq!(headers["access-control-allow-origin"], "*");
}
