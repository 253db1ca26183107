//! A scenario file (TOML), as `run --scenario FILE` reads it: no panic; a
//! refusal names the file and, when it gives a line, one inside the file;
//! an accepted scenario passes the same validation as every other.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use streamgauge_loadgen::scenario::file;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    match file::parse(text, Path::new("fuzz.toml")) {
        Ok(scenario) => assert!(scenario.validate().is_ok(), "{scenario:?}"),
        Err(e) => {
            let message = e.to_string();
            let rest = message.strip_prefix("fuzz.toml").expect("names the file");
            if let Some(line) = rest
                .strip_prefix(':')
                .and_then(|r| r.split(':').next())
                .and_then(|l| l.parse::<usize>().ok())
            {
                assert!(line >= 1 && line <= text.lines().count().max(1), "{message}");
            }
        }
    }
});
