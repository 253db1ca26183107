//! The load generator's incremental SSE parser, on any byte stream a server
//! may send: no panic, the same events however the stream is cut into
//! reads, and events that hold no line end where the format forbids one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgauge_loadgen::client::sse_parser::SseParser;

/// An event as owned values: (event type, data, id).
type Owned = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Feeds `stream` in reads of `step` bytes; returns the events and what is
/// left buffered.
fn parse(stream: &[u8], step: usize) -> (Vec<Owned>, u64, Vec<u8>, Option<u64>) {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for chunk in stream.chunks(step) {
        parser.feed(chunk);
        while let Some(e) = parser.next_event() {
            assert!(!e.data.contains(&b'\r'), "a CR is a line end: {e:?}");
            assert!(!e.event.iter().any(|b| matches!(b, b'\r' | b'\n')));
            assert!(!e.id.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
            events.push((e.event.to_vec(), e.data.to_vec(), e.id.to_vec()));
        }
        assert!(parser.buffered() <= stream.len(), "holds more than it was fed");
    }
    (
        events,
        parser.comments(),
        parser.last_event_id().to_vec(),
        parser.retry_ms(),
    )
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, stream)) = input.split_first() else {
        return;
    };
    let whole = parse(stream, stream.len().max(1));
    let step = usize::from(seed % 17) + 1;
    assert_eq!(parse(stream, step), whole, "reads of {step} bytes");
    assert_eq!(parse(stream, 1), whole, "reads of 1 byte");
});
