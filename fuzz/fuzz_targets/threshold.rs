//! A threshold expression (`--threshold`, a scenario's `thresholds`): no
//! panic; an accepted threshold prints back to an expression that parses
//! to the same threshold, as reports and the history store it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgauge_loadgen::scenario::Threshold;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    match text.parse::<Threshold>() {
        Ok(threshold) => {
            assert!(!threshold.value.is_nan(), "{text:?}");
            let again: Threshold = threshold.to_string().parse().expect("prints back parseable");
            assert_eq!(again, threshold);
        }
        Err(e) => assert!(e.to_string().starts_with("threshold ")),
    }
});
