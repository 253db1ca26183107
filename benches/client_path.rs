//! The load generator's per-event path on one core, for each transport:
//! for SSE, HTTP chunked body decoding, SSE parsing, the envelope parse, the
//! `seq` check and the recorder, over a realistic stream in 16 KiB reads;
//! for WebSocket, the client's `WsStream` (its read buffer, tungstenite's
//! frame decoding, the envelope parse) over the same events as text frames
//! in memory, then the `seq` check and the recorder. What one event costs
//! the client, so that a run can say whether the client was the limit.
//!
//! The `sse_stream_*` cases time the whole `SseStream` (its reads, chunked
//! decoding, SSE parsing, the format's decoder) and the recording, over an
//! in-memory stream that already holds the server's bytes: `plain` reads
//! this project's protocol, `json` the same events as a foreign target's
//! JSON through `seq_pointer = "/seq"` and `ts_pointer = "/ts"`, `tls` this
//! project's protocol inside TLS (rustls, ring; the handshake and the
//! server's encryption done before the timing, so only the client's
//! decryption is in it).
//!
//! Run with `cargo bench --bench client_path`.

use std::hint::black_box;
use std::io::Cursor;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use streamgauge_loadgen::client::check::SeqCheck;
use streamgauge_loadgen::client::format::{Decoder, Message};
use streamgauge_loadgen::client::http::{BodyDecoder, BodyFraming};
use streamgauge_loadgen::client::sse::SseStream;
use streamgauge_loadgen::client::sse_parser::SseParser;
use streamgauge_loadgen::client::tls::Connector;
use streamgauge_loadgen::client::ws::WsStream;
use streamgauge_loadgen::client::{Frame, envelope};
use streamgauge_loadgen::metrics::{Recorder, Shards};
use streamgauge_loadgen::scenario::target::{RawTarget, Trust};
use tokio::io::{AsyncRead, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use self::support::{STREAM_TS, chunked, event_json, runtime, sse_event};

#[allow(dead_code, reason = "each bench uses part of the shared fixtures")]
mod support;

/// Events in the benchmark stream.
const EVENTS: u64 = 10_000;

/// When every event is received, µs since the epoch (after its `ts`).
const RECEIVED_US: u64 = 1_795_427_796_037_400;

/// The stream as the server sends it: batches of 64 events per chunk, every
/// event stamped [`STREAM_TS`].
fn chunked_stream() -> Vec<u8> {
    let events: Vec<Vec<u8>> = (1..=EVENTS).map(|seq| sse_event(seq, STREAM_TS)).collect();
    chunked(&events, 64)
}

/// The same events as WebSocket text frames, as the server sends them.
fn ws_frames() -> Vec<u8> {
    let mut bytes = Vec::new();
    for seq in 1..=EVENTS {
        WsFrame::message(event_json(seq, STREAM_TS), OpCode::Data(Data::Text), true)
            .format(&mut bytes)
            .expect("a frame formats into a Vec");
    }
    bytes
}

fn client_path(c: &mut Criterion) {
    let stream = chunked_stream();
    let frames = ws_frames();
    let shards = Shards::new(1);
    let runtime = runtime();
    let mut group = c.benchmark_group("client_path");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("sse_event", |b| {
        let mut recorder = shards.recorder(0);
        b.iter(|| {
            let mut decoder = BodyDecoder::new(BodyFraming::Chunked);
            let mut parser = SseParser::new();
            let mut check = SeqCheck::expecting(1);
            for read in stream.chunks(16 * 1024) {
                decoder
                    .decode(read, &mut |body| parser.feed(body))
                    .expect("a valid chunked body");
                while let Some(event) = parser.next_event() {
                    let bytes = event.data.len();
                    let envelope = envelope::parse(event.data).expect("a valid event");
                    black_box(check.observe(envelope.seq.expect("a seq")));
                    recorder.event(bytes, RECEIVED_US - envelope.ts.expect("a ts"));
                }
            }
        });
    });
    group.bench_function("ws_event", |b| {
        let mut recorder = shards.recorder(0);
        // The frames are copied for each iteration outside the timing: the
        // stream consumes them.
        let input = || tokio::io::join(Cursor::new(frames.clone()), tokio::io::sink());
        b.iter_batched(
            input,
            |stream| {
                runtime.block_on(async {
                    let mut ws = WsStream::upgraded(stream, Decoder::streamgauge()).await;
                    let mut check = SeqCheck::expecting(1);
                    for _ in 0..EVENTS {
                        let Ok(Frame::Event {
                            message: Message::Envelope(envelope),
                            bytes,
                            ..
                        }) = ws.next().await
                        else {
                            panic!("an event");
                        };
                        black_box(check.observe(envelope.seq.expect("a seq")));
                        recorder.event(bytes, RECEIVED_US - envelope.ts.expect("a ts"));
                    }
                });
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

/// Room for the whole stream in an in-memory pipe: the server side writes
/// it all before the timing starts.
const PIPE: usize = 8 * 1024 * 1024;

/// An in-memory stream holding `bytes`, as the client end of a pipe.
async fn holding(bytes: &[u8]) -> DuplexStream {
    let (client, mut server) = tokio::io::duplex(PIPE);
    server
        .write_all(bytes)
        .await
        .expect("the pipe holds the stream");
    // What it wrote stays readable; the client reads only that much.
    drop(server);
    client
}

/// The client end of a TLS session (rustls, ring, a self-signed
/// certificate) whose server has already written `bytes` into it.
async fn tls_holding(bytes: &[u8]) -> tokio_rustls::client::TlsStream<DuplexStream> {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a certificate");
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
        .expect("a key");
    #[allow(deprecated, reason = "ring is the tree's one provider (TOOLCHAIN.md)")]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("a server configuration");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(
        Connector::new(&Trust::Insecure)
            .expect("a client configuration")
            .config(),
    );
    let (client, server) = tokio::io::duplex(PIPE);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
    let (client, server) = tokio::join!(connector.connect(name, client), acceptor.accept(server));
    let (client, mut server) = (client.expect("a handshake"), server.expect("a handshake"));
    server
        .write_all(bytes)
        .await
        .expect("the pipe holds the stream");
    server.flush().await.expect("written");
    drop(server);
    client
}

/// Reads [`EVENTS`] events from `sse` and records each as a client does:
/// the `seq` check, then the event and its latency.
async fn read_all<S: AsyncRead + Unpin>(mut sse: SseStream<S>, recorder: &mut Recorder) {
    let mut check = SeqCheck::expecting(1);
    for _ in 0..EVENTS {
        let Ok(Frame::Event { message, bytes, .. }) = sse.next().await else {
            panic!("an event");
        };
        let (seq, ts) = match message {
            Message::Envelope(e) => (e.seq, e.ts),
            Message::Found { seq, ts_us } => (seq, ts_us),
            other => panic!("not an event: {other:?}"),
        };
        black_box(check.observe(seq.expect("a seq")));
        recorder.event(bytes, RECEIVED_US - ts.expect("a ts"));
    }
}

/// The decoder of a foreign JSON target finding `seq` and `ts`.
fn json_decoder() -> Decoder {
    let raw = RawTarget {
        subscribe_url: Some("/sse/ticker".to_owned()),
        format: Some(streamgauge_loadgen::scenario::target::Format::Json),
        seq_pointer: Some("/seq".to_owned()),
        ts_pointer: Some("/ts".to_owned()),
        ..RawTarget::default()
    };
    Decoder::of(&raw.validate(false).expect("a valid target"))
}

fn sse_stream(c: &mut Criterion) {
    let stream = chunked_stream();
    let shards = Shards::new(1);
    let runtime = runtime();
    let mut group = c.benchmark_group("client_path");
    group.throughput(Throughput::Elements(EVENTS));
    let cases: [(&str, Decoder); 2] = [
        ("sse_stream_plain", Decoder::streamgauge()),
        ("sse_stream_json", json_decoder()),
    ];
    for (name, decoder) in cases {
        group.bench_function(name, |b| {
            let mut recorder = shards.recorder(0);
            b.iter_batched(
                || runtime.block_on(holding(&stream)),
                |pipe| {
                    let sse = SseStream::from_body(pipe, BodyFraming::Chunked, decoder.clone());
                    runtime.block_on(read_all(sse, &mut recorder));
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.bench_function("sse_stream_tls", |b| {
        let mut recorder = shards.recorder(0);
        b.iter_batched(
            || runtime.block_on(tls_holding(&stream)),
            |tls| {
                let sse = SseStream::from_body(tls, BodyFraming::Chunked, Decoder::streamgauge());
                runtime.block_on(read_all(sse, &mut recorder));
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, client_path, sse_stream);
criterion_main!(benches);
