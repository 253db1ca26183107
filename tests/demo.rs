//! The demo page in a real browser: headless Chromium (Debian's `chromium`
//! and `chromium-driver`, which `scripts/test` installs), driven over WebDriver.
//! On each transport the test loads `/demo`, starts a ticker, sees events
//! arrive at both readers, raises the slow reader's consumer delay, and
//! sees the batch size the page shows for the slow reader grow (about one
//! to three events per write before, tens after) while the fast
//! reader keeps its rate. A screenshot of each is saved under the test's
//! target directory (`CARGO_TARGET_TMPDIR/demo-*.png`).
//!
//! Over HTTPS (a certificate made for the test, which the browser is told
//! to accept), the page comes over HTTP/2, and it runs more SSE streams at
//! once than a browser opens HTTP/1.1 connections to one origin (six):
//! the page sees every one of them receiving before any has ended, each
//! over `h2` (Resource Timing's `nextHopProtocol`), and the server counts
//! one HTTP/2 connection.

use std::path::{Path, PathBuf};

use fantoccini::{Client, Locator};
use serde_json::json;

use crate::support::browser::Driver;
use crate::support::tls::TestCert;
use crate::support::{TestServer, Transport, WAIT, config};

/// The number a panel shows in its field `field` (`None` for "–").
async fn shown(browser: &Client, panel: &str, field: &str) -> Option<f64> {
    let text = browser
        .find(Locator::Css(&format!("#{panel} .{field}")))
        .await
        .expect("the field")
        .text()
        .await
        .expect("its text");
    text.trim().parse().ok()
}

/// Waits for the page's next update of its figures: a mutation of the
/// panels' DOM, observed in the page (bounded by WebDriver's script
/// timeout).
async fn next_update(browser: &Client) {
    browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const observer = new MutationObserver(() => { observer.disconnect(); done(); });
             observer.observe(document.querySelector('.panels'),
                 { subtree: true, childList: true, characterData: true });",
            vec![],
        )
        .await
        .expect("the page's next update");
}

/// Reads the page at each of its updates until `ready` holds of the slow
/// and fast panels' `field`, failing with `what` after [`WAIT`].
async fn until(browser: &Client, field: &str, what: &str, ready: impl Fn(f64, f64) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = (None, None);
    while tokio::time::Instant::now() < deadline {
        last = (
            shown(browser, "slow", field).await,
            shown(browser, "fast", field).await,
        );
        if let (Some(slow), Some(fast)) = last
            && ready(slow, fast)
        {
            return;
        }
        next_update(browser).await;
    }
    panic!("timed out waiting for {what}; {field} slow/fast: {last:?}");
}

/// Sets the number input `id` to `value`.
async fn set(browser: &Client, id: &str, value: &str) {
    let input = browser.find(Locator::Id(id)).await.expect("the input");
    input.clear().await.expect("clearing it");
    input.send_keys(value).await.expect("typing");
}

/// Where the screenshots go.
fn screenshot_path(transport: Transport) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("demo-{}.png", transport.label()))
}

async fn slow_reader_batches_grow(browser: &Client, server: &TestServer, transport: Transport) {
    browser
        .goto(&server.url("/demo"))
        .await
        .expect("loading /demo");
    browser
        .find(Locator::Id("transport"))
        .await
        .expect("the transport select")
        .select_by_value(transport.label())
        .await
        .expect("choosing the transport");
    // 2,000 events/s of 8 KiB: a reader that keeps up gets a few events
    // per write; one that takes 5 ms per event (200/s) fills the buffers
    // between server and page (tens of MB in Chromium) within seconds.
    set(browser, "rate", "2000").await;
    set(browser, "size", "8192").await;
    set(browser, "delay", "0").await;
    browser
        .find(Locator::Id("start"))
        .await
        .expect("the start button")
        .click()
        .await
        .expect("starting");
    eprintln!("demo ({}): started", transport.label());

    until(
        browser,
        "received",
        "events at both readers",
        |slow, fast| slow > 500.0 && fast > 500.0,
    )
    .await;
    until(browser, "batch", "the batch sizes", |_, _| true).await;
    let before = shown(browser, "slow", "batch").await.expect("a batch size");

    set(browser, "delay", "5").await;
    until(
        browser,
        "batch",
        "the slow reader's batches to grow",
        |slow, fast| slow >= before + 5.0 && slow > 2.0 * fast,
    )
    .await;
    until(
        browser,
        "queue",
        "the slow reader's queue to fill",
        |slow, _| slow > 0.0,
    )
    .await;
    until(
        browser,
        "eps",
        "the fast reader to go on at full rate beside the slow one",
        |slow, fast| fast > 1000.0 && fast > 3.0 * slow,
    )
    .await;

    let png = browser.screenshot().await.expect("a screenshot");
    let path = screenshot_path(transport);
    std::fs::write(&path, png).expect("saving the screenshot");
    eprintln!(
        "demo ({}): screenshot at {}",
        transport.label(),
        path.display()
    );
    browser
        .find(Locator::Id("stop"))
        .await
        .expect("the stop button")
        .click()
        .await
        .expect("stopping");
    server
        .wait_for("the demo's streams to close", |m| {
            m.of("streamgauge_connections_open", transport.label()) == 0.0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_batches_growing_for_a_slow_reader_on_both_transports() {
    // Batches of up to 1 MiB (128 events of 8 KiB) and a queue of 4 MiB:
    // room for the slow reader's batches to grow well past the fast one's.
    let mut config = config();
    config.batch.max_bytes = 1 << 20;
    config.queue.max_bytes = 4 << 20;
    let server = TestServer::start(config).await;
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let browser = driver.browser(profile.path(), &[]).await;
    for transport in Transport::BOTH {
        slow_reader_batches_grow(&browser, &server, transport).await;
    }
    browser.close().await.expect("closing the browser");
}

/// SSE streams the page opens at once over HTTPS: more than the six
/// connections per origin a browser holds on HTTP/1.1.
const H2_STREAMS: usize = 8;

/// What the page found: when each stream got its first event and when it
/// ended (ms, the page's clock), and the protocol each went over.
#[derive(Debug, serde::Deserialize)]
struct Multiplexed {
    page: String,
    first: Vec<f64>,
    ended: Vec<f64>,
    protocols: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_page_runs_more_sse_streams_at_once_than_http1_allows_on_one_h2_connection()
{
    let cert = TestCert::new();
    let server = TestServer::start_tls(config(), &cert).await;
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let browser = driver
        .browser(profile.path(), &["--ignore-certificate-errors"])
        .await;
    let page = format!("https://{}/demo", server.addr);
    browser.goto(&page).await.expect("loading /demo over HTTPS");
    // Each stream: 20 events at 20/s, a second long; the page records when
    // each first receives and when each ends, then reads Resource Timing
    // (whose entries exist once a stream has ended).
    let found = browser
        .execute_async(
            "const [n, done] = [arguments[0], arguments[arguments.length - 1]];
             const first = [], ended = [];
             const open = (i) => new Promise((resolve) => {
                 const source = new EventSource(`/sse/ticker?rate=20&count=20&tag=h2-${i}`);
                 source.onmessage = () => { first[i] ??= performance.now(); };
                 source.onerror = () => { source.close(); ended[i] = performance.now(); resolve(); };
             });
             Promise.all([...Array(n).keys()].map(open)).then(() => {
                 const streams = performance.getEntriesByType('resource')
                     .filter((e) => e.name.includes('/sse/ticker'));
                 done({
                     page: performance.getEntriesByType('navigation')[0].nextHopProtocol,
                     first, ended,
                     protocols: streams.map((e) => e.nextHopProtocol),
                 });
             });",
            vec![json!(H2_STREAMS)],
        )
        .await
        .expect("the page's streams");
    let found: Multiplexed = serde_json::from_value(found).expect("the page's findings");
    eprintln!("demo over HTTPS: {found:?}");
    assert_eq!(found.page, "h2", "the page itself");
    assert_eq!(found.first.len(), H2_STREAMS, "{found:?}");
    assert_eq!(found.protocols.len(), H2_STREAMS, "{found:?}");
    assert!(found.protocols.iter().all(|p| p == "h2"), "{found:?}");
    let last_start = found.first.iter().copied().fold(f64::MIN, f64::max);
    let first_end = found.ended.iter().copied().fold(f64::MAX, f64::min);
    assert!(
        last_start < first_end,
        "all {H2_STREAMS} streams received before any ended: {found:?}"
    );
    let metrics = server.metrics().await;
    // Eight streams on at most two connections is multiplexing (HTTP/1.1
    // takes a connection per stream): Chromium now and then opens a second,
    // speculative connection to the same origin beside the one the page
    // uses (seen about once in three runs).
    let h2 = metrics.get("streamgauge_http_connections_open{protocol=\"h2\"}");
    assert!(
        (1.0..=2.0).contains(&h2),
        "one HTTP/2 connection (and at most a speculative second) carried the page and its \
         streams: {metrics}"
    );
    assert_eq!(
        metrics.get("streamgauge_http_connections_open{protocol=\"http1\"}"),
        1.0,
        "the test's own scrape only: {metrics}"
    );
    browser.close().await.expect("closing the browser");
}
