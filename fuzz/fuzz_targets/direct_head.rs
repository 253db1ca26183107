//! A connection's first bytes, through the hand-written HTTP/1.1 path
//! (`server/src/direct.rs`) and through hyper, which serves every request
//! that path leaves: no panic; a head the path serves is the request hyper
//! reads from the same bytes (a repeated `Content-Length: 0`, which hyper
//! keeps once, aside), and nothing after it is read; a head it refuses is
//! one hyper refuses too, or, when it has a `Transfer-Encoding`, one hyper
//! reads by it whatever its lengths say and then reads nothing after
//! (RFC 9112 section 6.1 allows either); and the same bytes cut short are
//! either left to hyper or read the same.
//!
//! Input: one byte saying where to cut (a fraction of the rest), then the
//! bytes of the connection's first read.
#![no_main]

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use streamgauge_server::direct::Head;
use streamgauge_server::fuzzing::first_head;
use tokio::io::AsyncWriteExt as _;
use tokio::runtime::Runtime;

/// What hyper read of one request head.
#[derive(Debug, PartialEq)]
struct Seen {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// Whether its body is known to be empty.
    no_body: bool,
}

impl Seen {
    fn of(request: &Request<Incoming>) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
            no_body: request.body().is_end_stream(),
        }
    }
}

/// The runtime every input's hyper connection runs on.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

/// The requests hyper's HTTP/1.1 server (as the server builds it: no
/// options) reads from `bytes`, sent at once by a client that then closes
/// its side, each answered `200` with an empty body.
fn hyper_reads(bytes: &[u8]) -> Vec<Seen> {
    runtime().block_on(async {
        // Room for the whole input and every answer, so neither side waits.
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(bytes).await.expect("an in-memory write");
        client.shutdown().await.expect("an in-memory shutdown");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let service = service_fn(move |request: Request<Incoming>| {
            let mut seen = record.lock().unwrap_or_else(PoisonError::into_inner);
            seen.push(Seen::of(&request));
            async { Ok::<_, Infallible>(Response::new(Body::empty())) }
        });
        // Ends when the input ends (or on its first error).
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(server), service)
            .await;
        drop(client);
        std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner))
    })
}

/// A head the path serves: a body-less HTTP/1.1 `GET` of a stream path,
/// ending within the bytes, read as hyper reads it, and alone: hyper may
/// read more requests after it, which the path never does.
fn check_stream(request: &Request<Body>, len: usize, bytes: &[u8]) {
    assert!(len <= bytes.len());
    assert!(bytes[..len].ends_with(b"\n\n") || bytes[..len].ends_with(b"\n\r\n"));
    assert_eq!(request.method(), Method::GET);
    assert_eq!(request.version(), Version::HTTP_11);
    assert!(
        request.uri().path().starts_with("/sse/"),
        "{}",
        request.uri()
    );
    let hyper = hyper_reads(bytes);
    let first = hyper.first().expect("hyper reads the head the path serves");
    assert_eq!(first.method, request.method());
    assert_eq!(&first.uri, request.uri());
    assert_eq!(first.version, request.version());
    assert_eq!(
        without_lengths(&first.headers),
        without_lengths(request.headers())
    );
    assert!(
        first.no_body,
        "hyper reads a body after a head the path serves"
    );
    match first_head(&bytes[..len]) {
        Head::Stream(alone, same) => {
            assert_eq!(same, len);
            assert_eq!(alone.uri(), request.uri());
            assert_eq!(alone.headers(), request.headers());
        }
        other => panic!("the head alone is {other:?}"),
    }
}

/// `headers` but their `Content-Length`s.
fn without_lengths(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    headers.remove(CONTENT_LENGTH);
    headers
}

/// A head the path refuses: hyper refuses it too, or reads it by its
/// transfer coding (ignoring its lengths) and reads nothing after it.
fn check_malformed(reason: &str, bytes: &[u8]) {
    assert!(!reason.is_empty());
    match &hyper_reads(bytes)[..] {
        [] => {}
        [seen] if seen.headers.contains_key(TRANSFER_ENCODING) => {}
        read => panic!("hyper reads a head refused as {reason:?}: {read:?}"),
    }
}

/// The bytes cut short are left to hyper, or read as the whole is.
fn check_prefix(prefix: &Head, whole: &Head) {
    match (prefix, whole) {
        (Head::Other, _) => {}
        (Head::Stream(a, a_len), Head::Stream(b, b_len)) => {
            assert_eq!(a_len, b_len);
            assert_eq!(a.uri(), b.uri());
            assert_eq!(a.headers(), b.headers());
        }
        (Head::Malformed(a), Head::Malformed(b)) => assert_eq!(a, b),
        (prefix, whole) => panic!("cut short: {prefix:?}; whole: {whole:?}"),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut, bytes)) = input.split_first() else {
        return;
    };
    let whole = first_head(bytes);
    let at = bytes.len() * usize::from(cut) / usize::from(u8::MAX);
    check_prefix(&first_head(&bytes[..at]), &whole);
    match &whole {
        Head::Stream(request, len) => check_stream(request, *len, bytes),
        Head::Malformed(reason) => check_malformed(reason, bytes),
        Head::Other => {}
    }
});
