//! The client allocates nothing per delivered event. Each transport's
//! per-event path (socket bytes through the stream's read buffer; for SSE
//! HTTP chunked decoding and SSE parsing, for WebSocket tungstenite's frame
//! decoding; then the envelope, the `seq` check and the recorder, as a
//! virtual client does) is driven from memory under a global allocator
//! that counts this thread's allocations. After a warm-up (buffers grown,
//! the recorder's first flush), a window of 10,000 events and one of
//! 20,000 allocate the same: nothing, whatever the count.
//!
//! Test with `cargo test -p streamgauge-loadgen --test alloc`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use streamgauge_loadgen::client::check::{Seen, SeqCheck};
use streamgauge_loadgen::client::format::{Decoder, Message};
use streamgauge_loadgen::client::http::BodyFraming;
use streamgauge_loadgen::client::sse::SseStream;
use streamgauge_loadgen::client::ws::WsStream;
use streamgauge_loadgen::client::{ClientError, Frame};
use streamgauge_loadgen::metrics::{Recorder, Shards};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// The system allocator, counting each allocation on the thread that
/// makes it (tests run on threads of their own).
struct Counting;

thread_local! {
    /// Allocations (and reallocations) made by this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: a thread being torn down has no counter any more.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call goes straight to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Events read before the window measured: enough for every buffer to
/// reach its steady size and for the recorder to flush.
const WARM_UP: u64 = 2_000;

/// A keep-alive every this many events, as on a quiet stream.
const KEEP_ALIVE_EVERY: u64 = 1_000;

/// `ts` of every event: in the future, so that the latency recorded is 0
/// and the histograms never resize for a value they have not seen.
const TS: u64 = 4_000_000_000_000_000;

/// The JSON of event `seq`, as the server writes it.
fn json(seq: u64) -> String {
    format!("{{\"seq\":{seq},\"ts\":{TS},\"data\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}")
}

/// `events` SSE events from `seq` 1 as an HTTP chunked body, 64 to a chunk
/// as the server batches them, with a keep-alive comment now and then.
fn sse_body(events: u64) -> Vec<u8> {
    let mut body = Vec::new();
    let mut batch = String::new();
    for seq in 1..=events {
        if seq % KEEP_ALIVE_EVERY == 0 {
            batch.push_str(": ping\n\n");
        }
        batch.push_str(&format!("id: {seq}\ndata: {}\n\n", json(seq)));
        if seq % 64 == 0 || seq == events {
            body.extend_from_slice(format!("{:x}\r\n{batch}\r\n", batch.len()).as_bytes());
            batch.clear();
        }
    }
    body
}

/// `events` WebSocket text frames from `seq` 1 as the server writes them,
/// with a ping now and then.
fn ws_frames(events: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    for seq in 1..=events {
        if seq % KEEP_ALIVE_EVERY == 0 {
            WsFrame::ping(&b""[..]).format(&mut bytes).unwrap();
        }
        WsFrame::message(json(seq), OpCode::Data(Data::Text), true)
            .format(&mut bytes)
            .unwrap();
    }
    bytes
}

/// The output of `future`, which must not wait: its stream is in memory.
fn ready<T>(future: impl Future<Output = T>) -> T {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-memory stream waited"),
    }
}

/// Either transport's stream, read frame by frame.
trait Stream {
    async fn frame(&mut self) -> Result<Frame, ClientError>;
}

impl<S: AsyncRead + Unpin> Stream for SseStream<S> {
    async fn frame(&mut self) -> Result<Frame, ClientError> {
        self.next().await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WsStream<S> {
    async fn frame(&mut self) -> Result<Frame, ClientError> {
        self.next().await
    }
}

/// A stream with its client's seq check and recorder, as a virtual
/// client reads it.
struct Client<S> {
    stream: S,
    check: SeqCheck,
    recorder: Recorder,
}

impl<S: Stream> Client<S> {
    fn new(stream: S) -> Self {
        Self {
            stream,
            check: SeqCheck::expecting(1),
            recorder: Shards::new(1).recorder(0),
        }
    }

    /// Reads `events` events (and the keep-alives between them), checking
    /// and recording each as `VirtualClient::read` does.
    async fn deliver(&mut self, events: u64) {
        let mut delivered = 0;
        while delivered < events {
            let frame = self.stream.frame().await.expect("a valid stream");
            let Frame::Event {
                message: Message::Envelope(envelope),
                bytes,
                received_us,
            } = frame
            else {
                assert_eq!(frame, Frame::KeepAlive);
                self.recorder.count(|c| c.keepalives += 1);
                continue;
            };
            let seq = envelope.seq.expect("every event has a seq");
            assert_eq!(self.check.observe(seq), Seen::Next);
            let ts = envelope.ts.expect("every event has a ts");
            self.recorder.event(bytes, received_us.saturating_sub(ts));
            self.recorder.flush_if_due(Instant::now());
            delivered += 1;
        }
    }

    /// The allocations made reading `events` events after the warm-up.
    fn allocations_for(mut self, events: u64) -> u64 {
        ready(self.deliver(WARM_UP));
        let before = ALLOCATIONS.with(Cell::get);
        ready(self.deliver(events));
        ALLOCATIONS.with(Cell::get) - before
    }
}

/// The allocations of 10,000 and of 20,000 events on streams `open` makes
/// for that many events after the warm-up.
fn windows<S: Stream>(open: impl Fn(u64) -> Client<S>) -> [u64; 2] {
    [10_000, 20_000].map(|events| open(WARM_UP + events).allocations_for(events))
}

#[test]
fn an_sse_event_allocates_nothing() {
    let allocations = windows(|events| {
        let body = Cursor::new(sse_body(events));
        Client::new(SseStream::from_body(
            body,
            BodyFraming::Chunked,
            Decoder::streamgauge(),
        ))
    });
    assert_eq!(allocations, [0, 0]);
}

#[test]
fn a_websocket_event_allocates_nothing() {
    let allocations = windows(|events| {
        let stream = tokio::io::join(Cursor::new(ws_frames(events)), tokio::io::sink());
        Client::new(ready(WsStream::upgraded(stream, Decoder::streamgauge())))
    });
    assert_eq!(allocations, [0, 0]);
}

#[test]
fn the_counter_sees_an_allocation() {
    // Were the allocator not counting, the tests above would pass anyway.
    let before = ALLOCATIONS.with(Cell::get);
    let boxed = std::hint::black_box(Box::new(1u64));
    assert_eq!(ALLOCATIONS.with(Cell::get) - before, 1);
    drop(boxed);
}
