//! A stream request's topic path segment, query string and `Last-Event-ID`
//! header, through every stream endpoint's validation: no panic; a refusal
//! is a `400` naming a parameter the endpoint reads (or, for the whole
//! query, one no endpoint takes); an accepted request is within the
//! configured bounds.
#![no_main]

use axum::http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use streamgauge_server::Config;
use streamgauge_server::error::ApiError;
use streamgauge_server::fuzzing::stream_request;
use streamgauge_server::protocol::MAX_NAME_LEN;

/// Every query parameter a stream endpoint reads.
const PARAMETERS: [&str; 10] = [
    "rate", "count", "size", "ttft_ms", "tps", "tokens", "jitter_ms", "since", "overflow",
    "tag",
];

/// The header a topic subscription reads, which a refusal names as it
/// names a parameter. A header, not a parameter: `?Last-Event-ID=` is an
/// unknown parameter (the input `t\nLast-Event-ID` found this oracle
/// taking the two for one).
const LAST_EVENT_ID: &str = "Last-Event-ID";

/// A refusal must be a 400 naming a known parameter or the header (any
/// parameter, for a repeated one), or, for the whole query, a parameter
/// that is not known.
fn check_refusal(error: &ApiError, any_name: bool) {
    match error {
        ApiError::BadParam { name, .. } => {
            let known = PARAMETERS.contains(&name.as_str()) || name == LAST_EVENT_ID;
            assert!(any_name || known, "names {name:?}");
        }
        ApiError::UnknownParam(name) => {
            assert!(any_name && !PARAMETERS.contains(&name.as_str()), "names {name:?}");
        }
        _ => panic!("not a parameter error: {error:?}"),
    }
    assert_eq!(error.status_code(), 400);
}

fn check<T>(result: &Result<T, ApiError>) {
    if let Err(e) = result {
        check_refusal(e, false);
    }
}

fuzz_target!(|input: &[u8]| {
    // topic \n query [\n Last-Event-ID]
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let topic = parts.next().unwrap_or_default();
    let query = parts.next().unwrap_or_default();
    let last_event_id = parts.next().and_then(|v| HeaderValue::from_str(v).ok());
    let config = Config::default();
    let request = match stream_request(topic, query, last_event_id.as_ref(), &config) {
        Ok(request) => request,
        Err(e) => return check_refusal(&e, true),
    };
    if let Ok(ticker) = &request.ticker {
        assert!(ticker.rate <= config.max_rate);
        assert!(ticker.size <= config.max_size);
    }
    if let Ok(tokens) = &request.tokens {
        assert!(tokens.tps <= config.max_rate);
    }
    check(&request.ticker);
    check(&request.tokens);
    check(&request.since);
    check(&request.overflow);
    check(&request.tag);
    match &request.topic {
        Ok(name) => {
            let name = name.as_str();
            assert!((1..=MAX_NAME_LEN).contains(&name.len()));
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b)));
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
    if let Ok(Some(tag)) = &request.tag {
        assert!((1..=64).contains(&tag.len()));
    }
});
