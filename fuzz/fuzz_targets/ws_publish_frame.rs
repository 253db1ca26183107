//! A WebSocket subscriber's inbound text frame, as the server handles it up
//! to the store: no panic; a frame is either refused with the close reason
//! docs/protocol.md gives, or becomes a body that is one line (it goes on an
//! SSE `data:` line) holding exactly the JSON value the client sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use streamgauge_server::disconnect::Disconnect;
use streamgauge_server::fuzzing::publish_frame;

/// A small limit, so that the fuzzer reaches the too-large refusal.
const MAX_BODY: usize = 256;

fuzz_target!(|message: &[u8]| {
    match publish_frame(message, MAX_BODY) {
        Ok(body) => {
            assert!(body.len() <= MAX_BODY);
            assert!(!body.contains(['\n', '\r']), "not one line: {body:?}");
            let sent: Value = serde_json::from_slice(message).expect("an accepted frame is JSON");
            let stored: Value = serde_json::from_str(&body).expect("the stored body is JSON");
            assert_eq!(stored, sent["publish"], "the stored value differs from the sent one");
        }
        Err(Disconnect::InvalidMessage | Disconnect::MessageTooBig) => {}
        Err(other) => panic!("a frame closed the stream as {other:?}"),
    }
});
