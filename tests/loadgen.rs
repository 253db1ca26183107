//! The load generator measures what happened, exactly: against fake peers
//! that skip, repeat or delay events on purpose, and against the real
//! server (in-process on 127.0.0.1:0), on both transports.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{StreamExt, stream};
use streamgauge_loadgen::analysis;
use streamgauge_loadgen::client::Target;
use streamgauge_loadgen::runner::Run;
use streamgauge_loadgen::scenario::{Phase, Scenario, StreamKind, Transport};
use streamgauge_loadgen::summary::{Context, Summary};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::support::{self, TestServer, now_micros};

/// One client for `duration` on `transport`.
fn scenario(
    transport: Transport,
    stream: StreamKind,
    clients: u32,
    duration: Duration,
) -> Scenario {
    Scenario {
        name: "test".to_owned(),
        transport,
        stream,
        phases: vec![Phase::steady("steady", clients, duration)],
        ..Scenario::default()
    }
}

/// Runs `scenario` against `addr` and summarizes it.
async fn measure(scenario: &Scenario, addr: std::net::SocketAddr) -> Summary {
    summarize(scenario, addr, &CancellationToken::new()).await
}

/// Runs `scenario` against `addr` until its end or `stop`, and summarizes it.
async fn summarize(
    scenario: &Scenario,
    addr: std::net::SocketAddr,
    stop: &CancellationToken,
) -> Summary {
    let measured = support::within("the run", run(scenario, addr).execute(stop))
        .await
        .expect("the run is made");
    analysis::summarize(
        scenario,
        &measured,
        Context::lone("test", &format!("http://{addr}")),
    )
}

/// A run of `scenario` against `addr`.
fn run(scenario: &Scenario, addr: std::net::SocketAddr) -> Run<'_> {
    run_on(scenario, &[addr])
}

/// A run of `scenario` against the nodes at `addrs`.
fn run_on<'a>(scenario: &'a Scenario, addrs: &[std::net::SocketAddr]) -> Run<'a> {
    Run {
        scenario,
        targets: (addrs.iter())
            .map(|addr| {
                Arc::new(Target {
                    addr: *addr,
                    host: addr.to_string(),
                    tls: false,
                })
            })
            .collect(),
        http: support::http_client(),
        monitor: None,
        run_id: format!("t{}", fastrand::u32(..)),
        token: None,
        workers: 1,
        abort: None,
        watch: None,
        agents: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_replay_extension_cannot_run_a_replay() {
    // The core protocol has no replay (docs/protocol.md): a peer that speaks
    // only the core answers 404.
    let addr = fake_peer(&[1], Duration::ZERO).await;
    let replay = scenario(
        Transport::Sse,
        StreamKind::Replay,
        1,
        Duration::from_secs(1),
    );
    let error = support::within(
        "the run",
        run(&replay, addr).execute(&CancellationToken::new()),
    )
    .await
    .expect_err("nothing to replay");
    let unsupported = error
        .downcast_ref::<streamgauge_loadgen::runner::Unsupported>()
        .unwrap_or_else(|| panic!("{error:#}"));
    assert!(unsupported.0.contains("404"), "{unsupported}");
}

/// Serves a fake peer's `app` on 127.0.0.1:0; its address.
async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A fake peer's SSE response of `chunks`.
fn event_stream(
    chunks: impl futures_util::Stream<Item = Result<String, std::convert::Infallible>> + Send + 'static,
) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(chunks))
        .unwrap()
}

/// An SSE keep-alive every 200 ms, for ever.
fn keep_alives() -> impl futures_util::Stream<Item = Result<String, std::convert::Infallible>> {
    stream::unfold(
        tokio::time::interval(Duration::from_millis(200)),
        |mut every| async move {
            every.tick().await;
            Some((Ok(": ping\n\n".to_owned()), every))
        },
    )
}

/// How much earlier than `ts` the fake peer says each event was published.
const PUBLISHED_BEFORE: Duration = Duration::from_millis(10);

/// A peer that answers every ticker request, on both transports, with the
/// events `seqs` stamped `age` in the past (`ts`; `pts` another
/// [`PUBLISHED_BEFORE`] earlier), then keeps the stream open.
async fn fake_peer(seqs: &'static [u64], age: Duration) -> std::net::SocketAddr {
    peer(seqs, age, Then::StayOpen, None).await
}

/// What a fake peer's stream does once its events are sent.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// Stays open, sending nothing more.
    StayOpen,
    /// Ends: the SSE body ends, the WebSocket closes with 1000.
    End,
}

/// A peer that answers every ticker request as [`fake_peer`] does, then
/// does `then`; `gate`, if any, may hold a request before it is answered.
async fn peer(
    seqs: &'static [u64],
    age: Duration,
    then: Then,
    gate: Option<Arc<Gate>>,
) -> std::net::SocketAddr {
    let frames = move || -> Vec<String> {
        let ts = now_micros() - age.as_micros() as u64;
        let pts = ts - PUBLISHED_BEFORE.as_micros() as u64;
        seqs.iter()
            .map(|seq| format!(r#"{{"seq":{seq},"ts":{ts},"pts":{pts},"data":"x"}}"#))
            .collect()
    };
    let sse_gate = gate.clone();
    let sse = move || {
        let gate = sse_gate.clone();
        async move {
            Gate::pass(gate.as_deref()).await;
            let chunks: Vec<Result<String, std::convert::Infallible>> = frames()
                .into_iter()
                .zip(seqs)
                .map(|(frame, seq)| Ok(format!("id: {seq}\ndata: {frame}\n\n")))
                .collect();
            match then {
                Then::StayOpen => event_stream(stream::iter(chunks).chain(stream::pending())),
                Then::End => event_stream(stream::iter(chunks)),
            }
        }
    };
    let ws = move |upgrade: WebSocketUpgrade| {
        let gate = gate.clone();
        async move {
            Gate::pass(gate.as_deref()).await;
            upgrade
                .on_upgrade(move |mut socket| async move {
                    for frame in frames() {
                        if socket.send(Message::text(frame)).await.is_err() {
                            return;
                        }
                    }
                    match then {
                        Then::StayOpen => while socket.recv().await.is_some() {},
                        Then::End => {
                            let close = CloseFrame {
                                code: 1000,
                                reason: "".into(),
                            };
                            let _ = socket.send(Message::Close(Some(close))).await;
                        }
                    }
                })
                .into_response()
        }
    };
    let app = Router::new()
        .route("/sse/ticker", get(sse))
        .route("/ws/ticker", get(ws));
    serve(app).await
}

/// The events of every stream a [`gated_peer`] answers.
const GATED_SEQS: [u64; 3] = [1, 2, 3];

/// A fake peer's hold on its second stream.
struct Gate {
    requests: AtomicUsize,
    arrived: mpsc::Sender<()>,
    release: Notify,
}

impl Gate {
    /// Returns at once, except for the second request through `gate`:
    /// that one is announced on `arrived`, then held until `release`.
    async fn pass(gate: Option<&Self>) {
        let Some(gate) = gate else {
            return;
        };
        if gate.requests.fetch_add(1, Ordering::SeqCst) == 1 {
            gate.arrived.send(()).await.expect("the test is listening");
            gate.release.notified().await;
        }
    }
}

/// A peer whose ticker streams, on both transports, are [`GATED_SEQS`] and
/// then end; it holds the response to its second request until released.
/// Its address, where the second request's arrival is announced, and what
/// releases it.
async fn gated_peer() -> (std::net::SocketAddr, mpsc::Receiver<()>, Arc<Gate>) {
    let (arrived, announced) = mpsc::channel(1);
    let gate = Arc::new(Gate {
        requests: AtomicUsize::new(0),
        arrived,
        release: Notify::new(),
    });
    let addr = peer(
        &GATED_SEQS,
        Duration::ZERO,
        Then::End,
        Some(Arc::clone(&gate)),
    )
    .await;
    (addr, announced, gate)
}

/// A finite stream whose open is still in flight when the run ends is
/// opened and read to its end, not cut: cut short, the server would have
/// sent (and counted) events that no client counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finite_stream_opening_as_the_run_ends_is_read_to_its_end() {
    for transport in Transport::ALL {
        let (addr, mut arrived, gate) = gated_peer().await;
        let mut load = scenario(transport, StreamKind::Ticker, 1, Duration::from_secs(60));
        load.count = GATED_SEQS.len() as u64;
        let stop = CancellationToken::new();
        let end_the_run_during_the_second_open = async {
            arrived.recv().await.expect("a second request");
            stop.cancel();
            gate.release.notify_one();
        };
        let (summary, ()) = tokio::join!(
            summarize(&load, addr, &stop),
            end_the_run_during_the_second_open,
        );
        let counts = &summary.counts;
        assert_eq!(
            (counts.connects, counts.completed),
            (2, 2),
            "{transport:?}: {counts:?}"
        );
        assert_eq!(summary.events, 2 * GATED_SEQS.len() as u64, "{transport:?}");
        assert_eq!(
            (summary.gaps, summary.dups),
            (Some(0), Some(0)),
            "{transport:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_and_duplicates_from_a_peer_that_skips_and_repeats_are_counted_exactly() {
    const SEQS: &[u64] = &[1, 2, 3, 5, 5, 6, 9, 10, 2];
    let addr = fake_peer(SEQS, Duration::ZERO).await;
    for transport in Transport::ALL {
        let summary = measure(
            &scenario(transport, StreamKind::Ticker, 1, Duration::from_secs(1)),
            addr,
        )
        .await;
        assert_eq!(summary.events, 9, "{transport:?}");
        assert_eq!(
            summary.gaps,
            Some(3),
            "{transport:?}: 4, 7 and 8 never came"
        );
        assert_eq!(summary.dups, Some(2), "{transport:?}: 5 and 2 came twice");
        assert_eq!(
            summary.counts.connects, 1,
            "{transport:?}: one stream, never reconnected"
        );
        assert_eq!(summary.error_rate, Some(0.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_matches_a_delay_injected_by_the_peer() {
    const SEQS: &[u64] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    let addr = fake_peer(SEQS, Duration::from_millis(20)).await;
    for transport in Transport::ALL {
        let summary = measure(
            &scenario(transport, StreamKind::Ticker, 1, Duration::from_secs(1)),
            addr,
        )
        .await;
        // Stamped 20 ms (published 30 ms) before sending: never less, and
        // loopback adds well under 5 ms to the median (a 2x error fails).
        let from_ts = summary.latency_us.expect("events were received");
        assert!(
            (20_000..25_000).contains(&from_ts.p50) && from_ts.max < 45_000,
            "{transport:?}: {from_ts:?}"
        );
        let from_pts = summary.publish_to_receive_us.expect("events carry pts");
        assert!(
            (30_000..35_000).contains(&from_pts.p50),
            "{transport:?}: {from_pts:?}"
        );
        assert_eq!(
            summary.schedule_lag_us, None,
            "{transport:?}: no event carried sched"
        );
    }
}

/// A paced ticker of one client for 1 s on `transport` against `server`,
/// summarized.
async fn paced_ticker(server: &TestServer, transport: Transport) -> Summary {
    let mut load = scenario(transport, StreamKind::Ticker, 1, Duration::from_secs(1));
    load.rate = 100;
    measure(&load, server.addr).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_lag_shows_a_server_session_delay() {
    const DELAY: Duration = Duration::from_millis(40);
    let server = TestServer::start(streamgauge_server::Config {
        inject_delay: Some(DELAY),
        ..support::config()
    })
    .await;
    for transport in Transport::ALL {
        let summary = paced_ticker(&server, transport).await;
        // Each batch waits DELAY before it is written: no event arrives
        // sooner than that after it was due.
        let lag = summary.schedule_lag_us.expect("paced events carry sched");
        let latency = summary.latency_us.expect("events were received");
        assert!(
            lag.p50 >= DELAY.as_micros() as u64 && lag.p50 >= latency.p50,
            "{transport:?}: lag {lag:?}, latency {latency:?}"
        );
        let phase = &summary.phases[0];
        assert_eq!(phase.schedule_lag_us.map(|l| l.max), Some(lag.max));
        assert!(
            (summary.timeline.iter()).any(|row| row.schedule_lag_p99_us >= Some(lag.p50)),
            "{transport:?}: the timeline has the lag"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pacer_shows_in_schedule_lag_and_not_in_latency() {
    const STALL: Duration = Duration::from_millis(150);
    let server = TestServer::start(streamgauge_server::Config {
        inject_pacer_stall: Some(streamgauge_server::source::Stall {
            every: 20,
            duration: STALL,
        }),
        ..support::config()
    })
    .await;
    let stall_us = STALL.as_micros() as u64;
    for transport in Transport::ALL {
        let summary = paced_ticker(&server, transport).await;
        // About 100 events, a stall after every 20th: the event queued just
        // before each stall (one in 20, above the 1 % of p99) is written
        // after it, a whole stall late.
        let lag = summary.schedule_lag_us.expect("paced events carry sched");
        assert!(
            lag.p99 >= stall_us && lag.max >= stall_us,
            "{transport:?}: the stall shows in the schedule lag: {lag:?}"
        );
        // `ts` is stamped when the writer takes an event, after the stall:
        // delivery latency does not see it (coordinated omission).
        let latency = summary.latency_us.expect("events were received");
        assert!(
            latency.max < stall_us,
            "{transport:?}: latency {latency:?}, lag {lag:?}"
        );
        assert_eq!((summary.gaps, summary.dups), (Some(0), Some(0)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_streams_that_never_pause_stop_when_the_run_ends() {
    const DURATION: Duration = Duration::from_secs(1);
    let server = TestServer::start(support::config()).await;
    for transport in Transport::ALL {
        // Endless streams at rate=0: the server writes as fast as the
        // clients read, so a client's next frame is almost always ready
        // without waiting, and only its look at the run's end stops it.
        let mut load = scenario(transport, StreamKind::Ticker, 2, DURATION);
        load.rate = 0;
        let started = tokio::time::Instant::now();
        let summary = measure(&load, server.addr).await;
        let took = started.elapsed();
        assert!(
            summary.events > 0 && summary.error_rate == Some(0.0),
            "{transport:?}: {} events, errors {:?}",
            summary.events,
            summary.errors
        );
        // The runner aborts clients that have not stopped 10 s after the
        // end; clients that see the end stop well within that.
        assert!(
            took < DURATION + Duration::from_secs(5),
            "{transport:?}: the run took {took:?}: its clients did not see its end"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_the_real_server_the_counts_are_exactly_what_it_sent() {
    const COUNT: u64 = 100;
    let server = TestServer::start(support::config()).await;
    for transport in Transport::ALL {
        // Streams of COUNT events at 500/s: each ends by itself after 0.2 s,
        // and the client opens the next; the streams open when the run ends
        // are read to their end (client::FINISH_GRACE).
        let mut load = scenario(transport, StreamKind::Ticker, 4, Duration::from_secs(2));
        load.rate = 500;
        load.count = COUNT;
        let summary = measure(&load, server.addr).await;
        assert_eq!(
            (summary.gaps, summary.dups, summary.error_rate),
            (Some(0), Some(0), Some(0.0)),
            "{transport:?}"
        );
        let counts = &summary.counts;
        assert!(counts.completed >= 8, "{transport:?}: {counts:?}");
        assert_eq!(
            counts.completed, counts.connects,
            "{transport:?}: every stream opened was read to its end"
        );
        assert_eq!(summary.events, COUNT * counts.completed, "{transport:?}");
        let sent = server
            .wait_for("the server to see the clients go", |m| {
                m.of("streamgauge_connections_open", transport.as_str()) == 0.0
            })
            .await
            .of("streamgauge_events_sent_total", transport.as_str());
        assert_eq!(
            summary.events as f64, sent,
            "{transport:?}: received exactly what the server sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_with_resume_loses_nothing_on_a_topic() {
    let server = TestServer::start(support::config()).await;
    for transport in Transport::ALL {
        let mut load = scenario(transport, StreamKind::Topic, 10, Duration::from_secs(3));
        load.churn = 3.0;
        load.publish_rate = 300;
        let summary = measure(&load, server.addr).await;
        assert_eq!(
            (summary.gaps, summary.dups, summary.behind_at_end),
            (Some(0), Some(0), Some(0)),
            "{transport:?}: every acknowledged event arrived, in time"
        );
        assert_eq!(
            summary.error_rate,
            Some(0.0),
            "{transport:?}: {:?}",
            summary.errors
        );
        assert!(
            summary.counts.reconnects >= 10,
            "{transport:?}: {:?}",
            summary.counts
        );
        assert!(
            summary.counts.published >= 600,
            "{transport:?}: {:?}",
            summary.counts
        );
        let (reconnect, resume) = (
            summary.reconnect_ms.expect("clients churned"),
            summary.resume_ms.expect("clients resumed"),
        );
        assert!(
            reconnect.p50 <= resume.p50,
            "reopening the stream comes before its first event: {reconnect:?} {resume:?}"
        );
        assert!(summary.end_to_end_us.is_some());
        let (from_intent, from_pts) = (
            summary.end_to_end_us.unwrap(),
            summary.publish_to_receive_us.unwrap(),
        );
        assert!(
            from_intent.p50 >= from_pts.p50,
            "the intended send time comes before the server accepts"
        );
        // Per event, pts − intended send ≤ receipt − intended send: so is
        // every percentile.
        let overhead = summary
            .publish_overhead_us
            .expect("events carry pts and sent_us");
        assert!(
            overhead.p50 <= from_intent.p50 && overhead.p99 <= from_intent.p99,
            "the publisher's overhead is part of end to end: {overhead:?} {from_intent:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phase_with_its_own_rate_switches_every_client() {
    let server = TestServer::start(support::config()).await;
    let mut load = scenario(
        Transport::Sse,
        StreamKind::Ticker,
        2,
        Duration::from_secs(1),
    );
    load.rate = 5;
    load.phases.push(Phase {
        rate: Some(200),
        ..Phase::steady("fast", 2, Duration::from_millis(1500))
    });
    let summary = measure(&load, server.addr).await;
    // 2 clients: about 10 events in the first phase, about 600 in the second.
    assert!(
        summary.events > 300,
        "{} events: the second phase's rate was not applied",
        summary.events
    );
    assert_eq!((summary.gaps, summary.dups), (Some(0), Some(0)));
    let phases: Vec<&str> = summary
        .timeline
        .iter()
        .map(|row| row.phase.as_str())
        .collect();
    assert!(
        phases.contains(&"steady") && phases.contains(&"fast"),
        "{phases:?}"
    );
}

/// How long the faulty peer's token streams wait before their first token.
const PEER_TTFT: Duration = Duration::from_millis(100);

/// The faulty peer's time to first token: the delay the test measures,
/// injected (not a wait for anything to happen).
async fn first_token_delay() {
    tokio::time::sleep_until(tokio::time::Instant::now() + PEER_TTFT).await;
}

/// A peer whose token streams start after [`PEER_TTFT`] and end after 3 of
/// the 5 tokens asked for, and whose topic feed stops after 2 events while
/// publishes keep succeeding (and keep-alives keep the subscribers'
/// connections alive).
async fn faulty_peer() -> std::net::SocketAddr {
    use std::sync::atomic::{AtomicU64, Ordering};
    let tokens = |count: u64| {
        let ts = now_micros();
        (1..=count).map(move |seq| format!(r#"{{"seq":{seq},"ts":{ts},"data":{{"token":"t"}}}}"#))
    };
    let sse_tokens = move || async move {
        first_token_delay().await;
        let chunks: Vec<Result<String, std::convert::Infallible>> = tokens(3)
            .enumerate()
            .map(|(i, e)| Ok(format!("id: {}\ndata: {e}\n\n", i + 1)))
            .collect();
        event_stream(stream::iter(chunks))
    };
    let ws_tokens = move |upgrade: WebSocketUpgrade| async move {
        upgrade
            .on_upgrade(move |mut socket| async move {
                first_token_delay().await;
                for frame in tokens(3) {
                    let _ = socket.send(Message::text(frame)).await;
                }
                let normal = axum::extract::ws::CloseFrame {
                    code: 1000,
                    reason: axum::extract::ws::Utf8Bytes::from_static(""),
                };
                let _ = socket.send(Message::Close(Some(normal))).await;
            })
            .into_response()
    };
    let published = Arc::new(AtomicU64::new(0));
    let publish = {
        let published = Arc::clone(&published);
        move || async move {
            let seq = published.fetch_add(1, Ordering::Relaxed) + 1;
            (
                axum::http::StatusCode::CREATED,
                format!(r#"{{"seq":{seq}}}"#),
            )
        }
    };
    let stalled = || {
        let ts = now_micros();
        (1..=2).map(move |seq| {
            format!(r#"{{"seq":{seq},"ts":{ts},"pts":{ts},"data":{{"sent_us":{ts}}}}}"#)
        })
    };
    let sse_topic = move || async move {
        let events: Vec<Result<String, std::convert::Infallible>> = stalled()
            .enumerate()
            .map(|(i, e)| Ok(format!("id: {}\ndata: {e}\n\n", i + 1)))
            .collect();
        event_stream(stream::iter(events).chain(keep_alives()))
    };
    let ws_topic = move |upgrade: WebSocketUpgrade| async move {
        upgrade
            .on_upgrade(move |mut socket| async move {
                for frame in stalled() {
                    let _ = socket.send(Message::text(frame)).await;
                }
                while socket.recv().await.is_some() {}
            })
            .into_response()
    };
    let app = Router::new()
        .route("/sse/tokens", get(sse_tokens))
        .route("/ws/tokens", get(ws_tokens))
        .route("/topics/{topic}/events", axum::routing::post(publish))
        .route("/sse/topics/{topic}", get(sse_topic))
        .route("/ws/topics/{topic}", get(ws_topic));
    serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_end_early_count_what_they_lost() {
    let addr = faulty_peer().await;
    for transport in Transport::ALL {
        let mut load = scenario(transport, StreamKind::Tokens, 1, Duration::from_secs(1));
        load.tokens.tokens = 5;
        load.tokens.ttft = Duration::ZERO;
        let summary = measure(&load, addr).await;
        let completed = summary.counts.completed;
        assert!(completed > 0, "{transport:?}");
        assert_eq!(
            summary.gaps,
            Some(2 * completed),
            "{transport:?}: 2 of 5 tokens lost per stream"
        );
        // The stream open when the run ended was read to its end too.
        assert_eq!(
            (summary.events, summary.counts.connects),
            (3 * completed, completed),
            "{transport:?}: 3 tokens per stream, every stream whole"
        );
        let ttft = summary.ttft_ms.expect("token streams report it");
        assert!(
            (100.0..150.0).contains(&ttft.p50),
            "{transport:?}: {ttft:?}, the peer waits {PEER_TTFT:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_feed_that_stalls_behind_keep_alives_is_reported_behind_at_end() {
    let addr = faulty_peer().await;
    for transport in Transport::ALL {
        let mut load = scenario(transport, StreamKind::Topic, 2, Duration::from_millis(2500));
        load.publish_rate = 40;
        let summary = measure(&load, addr).await;
        assert_eq!(summary.gaps, Some(0), "{transport:?}: no seq was skipped");
        assert!(
            summary.counts.published > 50,
            "{transport:?}: {:?}",
            summary.counts
        );
        let behind = summary.behind_at_end.expect("a topic run reports it");
        assert!(
            behind > 2 * 40,
            "{transport:?}: {behind} events behind; {} events, {:?}, {:?}",
            summary.events,
            summary.errors,
            summary.counts
        );
    }
}

/// How long the stalling peer holds every publish, from the first.
const STALL: Duration = Duration::from_secs(1);

/// A topic peer that stalls: every publish that arrives within [`STALL`]
/// of the first is answered only when the stall ends (then at once); its
/// subscribers get keep-alives only.
async fn stalling_peer() -> std::net::SocketAddr {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    let stall_ends = Arc::new(OnceLock::new());
    let published = Arc::new(AtomicU64::new(0));
    let publish = move || async move {
        let ends = *stall_ends.get_or_init(|| tokio::time::Instant::now() + STALL);
        // The stall under test, injected (not a wait for anything to happen).
        tokio::time::sleep_until(ends).await;
        let seq = published.fetch_add(1, Ordering::Relaxed) + 1;
        (
            axum::http::StatusCode::CREATED,
            format!(r#"{{"seq":{seq}}}"#),
        )
    };
    let sse_topic = || async { event_stream(keep_alives()) };
    let ws_topic = |upgrade: WebSocketUpgrade| async move {
        upgrade
            .on_upgrade(|mut socket| async move { while socket.recv().await.is_some() {} })
            .into_response()
    };
    let app = Router::new()
        .route("/topics/{topic}/events", axum::routing::post(publish))
        .route("/sse/topics/{topic}", get(sse_topic))
        .route("/ws/topics/{topic}", get(ws_topic));
    serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_keep_their_schedule_and_a_stalled_server_shows_in_their_latency() {
    let addr = stalling_peer().await;
    let mut load = scenario(Transport::Sse, StreamKind::Topic, 1, Duration::from_secs(2));
    load.publish_rate = 50;
    let summary = measure(&load, addr).await;
    // An open model sends the ~100 publishes due in 2 s whatever the
    // answers; one publisher waiting for each answer would have sent a few.
    let published = summary.counts.published;
    assert!((90..=102).contains(&published), "{:?}", summary.counts);
    // About half were due during the 1 s stall and waited for its end,
    // measured from when each was due: up to 1 s. Measured from when each
    // was sent, a closed loop would have seen one slow answer.
    let publish = summary.publish_ms.expect("publishes were answered");
    assert!(
        publish.p95 >= 800.0 && publish.p50 < 800.0,
        "the stall is in the tail: {publish:?}"
    );
    assert_eq!(summary.error_rate, Some(0.0), "{:?}", summary.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_streams_closed_1013_count_as_shed_not_connected() {
    let server = TestServer::start(streamgauge_server::Config {
        max_connections: 3,
        ..support::config()
    })
    .await;
    let mut load = scenario(
        Transport::Ws,
        StreamKind::Ticker,
        8,
        Duration::from_millis(1500),
    );
    load.rate = 20;
    let summary = measure(&load, server.addr).await;
    let counts = &summary.counts;
    assert!(counts.shed >= 5, "{counts:?}");
    assert!(
        counts.connected + counts.shed <= counts.connects,
        "the upgraded-then-closed streams are not connections: {counts:?}"
    );
    assert_eq!(summary.connect_success, Some(1.0), "{counts:?}");
    assert_eq!((summary.error_rate, summary.gaps), (Some(0.0), Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phase_publishes_at_its_own_rate_and_each_phase_is_reported() {
    let server = TestServer::start(support::config()).await;
    let mut load = scenario(Transport::Sse, StreamKind::Topic, 2, Duration::from_secs(1));
    load.publish_rate = 20;
    // Two phases of one name: told apart by position.
    load.phases.push(Phase {
        publish_rate: Some(400),
        ..Phase::steady("steady", 2, Duration::from_secs(1))
    });
    let summary = measure(&load, server.addr).await;
    let [slow, fast] = &summary.phases[..] else {
        panic!("two phases: {:?}", summary.phases)
    };
    assert_eq!(
        (slow.name.as_str(), fast.name.as_str()),
        ("steady", "steady")
    );
    // About 20 publishes, then about 400.
    assert!(
        fast.publishes > 5 * slow.publishes && slow.publishes > 0,
        "{} then {} publishes",
        slow.publishes,
        fast.publishes
    );
    assert_eq!(
        slow.events + fast.events,
        summary.events,
        "every event is in its phase"
    );
    assert_eq!((summary.gaps, summary.dups), (Some(0), Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusers_meet_the_documented_limits_while_the_others_lose_nothing() {
    use streamgauge_loadgen::scenario::{Abuse, AbuseKind};
    let server = TestServer::start(streamgauge_server::Config {
        header_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(300),
        max_connections_per_peer: 10,
        ..support::config()
    })
    .await;
    let abusers = |kind| match kind {
        AbuseKind::OnePeer => 20,
        _ => 3,
    };
    for transport in Transport::ALL {
        let mut load = scenario(transport, StreamKind::Ticker, 4, Duration::from_millis(500));
        load.rate = 50;
        for kind in AbuseKind::ALL {
            load.phases.push(Phase {
                abuse: Some(Abuse {
                    kind,
                    clients: abusers(kind),
                }),
                ..Phase::steady(kind.as_str(), 4, Duration::from_millis(1200))
            });
        }
        let summary = measure(&load, server.addr).await;
        let met: Vec<(&str, u64, u64)> = summary
            .abuse
            .iter()
            .map(|a| (a.kind, a.refused.min(1), a.unexpected))
            .collect();
        assert_eq!(
            met,
            AbuseKind::ALL.map(|k| (k.as_str(), 1, 0)),
            "{transport:?}: each kind refused as documented, nothing else: {:?}",
            summary.abuse
        );
        assert_eq!(
            (summary.error_rate, summary.gaps, summary.dups),
            (Some(0.0), Some(0), Some(0)),
            "{transport:?}: the well-behaved clients"
        );
        assert_eq!(summary.phases.len(), 1 + AbuseKind::ALL.len());
        assert!(summary.phases.iter().all(|p| p.events > 0), "{transport:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_clients_split_over_both_transports_and_quiet_topics_stay_idle() {
    let server = TestServer::start(support::config()).await;
    let mut ticker = scenario(
        Transport::Mixed,
        StreamKind::Ticker,
        4,
        Duration::from_secs(1),
    );
    ticker.rate = 20;
    let summary = measure(&ticker, server.addr).await;
    assert_eq!((summary.error_rate, summary.gaps), (Some(0.0), Some(0)));
    assert_eq!(summary.transports, ["sse", "ws"]);
    let json = serde_json::to_value(&summary).unwrap();
    assert!(json["transport"].is_null(), "docs/cli.md: sse, ws or null");
    let metrics = server
        .wait_for("the mixed clients to go", |m| {
            m.of("streamgauge_connections_open", "sse") == 0.0
                && m.of("streamgauge_connections_open", "ws") == 0.0
        })
        .await;
    for transport in ["sse", "ws"] {
        assert!(
            metrics.of("streamgauge_events_sent_total", transport) > 0.0,
            "{transport} streamed nothing"
        );
    }

    let mut quiet = scenario(
        Transport::Mixed,
        StreamKind::Topic,
        4,
        Duration::from_secs(1),
    );
    quiet.publish_rate = 0;
    let summary = measure(&quiet, server.addr).await;
    assert_eq!(
        (summary.events, summary.counts.publishes, summary.error_rate),
        (0, 0, Some(0.0)),
        "idle subscribers of a quiet topic"
    );
    assert_eq!(summary.counts.connected, 4);
}

/// Issue 17: over three nodes sharing one PostgreSQL database, clients and
/// publishes are spread round robin, each node's figures stand apart and
/// add up to the totals, and events published on one node and received on
/// another are measured as such: nothing lost or repeated across nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_three_nodes_each_has_its_figures_and_cross_node_delivery_is_measured() {
    let cluster = support::cluster::Nodes::start(3, support::config()).await;
    let addrs: Vec<_> = cluster.nodes.iter().map(|node| node.addr).collect();
    let scenario = Scenario {
        publish_rate: 60,
        nodes: 3,
        ..scenario(
            Transport::Mixed,
            StreamKind::Topic,
            6,
            Duration::from_secs(3),
        )
    };
    let measured = support::within(
        "the run",
        run_on(&scenario, &addrs).execute(&CancellationToken::new()),
    )
    .await
    .expect("the run is made");
    let summary = analysis::summarize(&scenario, &measured, Context::lone("nodes", "cluster"));
    assert_eq!(
        (summary.gaps, summary.dups, summary.behind_at_end),
        (Some(0), Some(0), Some(0)),
        "{summary:?}"
    );
    let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    let nodes: Vec<_> = (summary.nodes.iter())
        .map(|n| (n.url.clone(), n.clients))
        .collect();
    assert_eq!(
        nodes,
        urls.iter().map(|u| (u.clone(), 2)).collect::<Vec<_>>(),
        "two clients a node"
    );
    for node in &summary.nodes {
        assert!(node.events > 0 && node.published > 0, "{node:?}");
        assert!(node.publish_to_receive_cross_node_us.is_some(), "{node:?}");
        assert_eq!(node.errors, 0, "{node:?}");
    }
    let events: u64 = summary.nodes.iter().map(|n| n.events).sum();
    assert_eq!(events, summary.events);
    let published: u64 = summary.nodes.iter().map(|n| n.published).sum();
    assert_eq!(published, summary.counts.published);
    // Each event reaches every subscriber, two of three of them on other
    // nodes; those acknowledged in the last second may not have arrived
    // when the clients stopped (`behind_at_end` counts the older ones).
    let all = 6 * summary.counts.published;
    assert!(
        (all.saturating_sub(6 * 60)..=all).contains(&summary.events),
        "{} events of {all}",
        summary.events
    );
    let (same, cross) = (
        summary
            .publish_to_receive_same_node_us
            .expect("same-node delivery"),
        summary
            .publish_to_receive_cross_node_us
            .expect("cross-node delivery"),
    );
    assert!(same.p50 > 0 && cross.p50 > 0, "{same:?} {cross:?}");
}
