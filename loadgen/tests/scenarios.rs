//! The example scenario files under `scenarios/` (docs/loadgen.md,
//! "Foreign targets") parse into valid scenarios, one of each kind the
//! docs name, and none carries a secret: keys come from the environment.
//!
//! Test with `cargo test -p streamgauge-loadgen --test scenarios`.

use std::path::Path;

use streamgauge_loadgen::scenario::StreamKind;
use streamgauge_loadgen::scenario::file;
use streamgauge_loadgen::scenario::target::{Format, Origin};

/// What an example is: its format, whether over WebSocket, whether its URL
/// names its server, and what it streams.
type Kind = (Format, bool, Origin, StreamKind);

/// The environment variables the examples read their secrets from.
const SECRETS: [&str; 3] = ["HUB_TOKEN", "CHAT_TOKEN", "OPENAI_API_KEY"];

#[test]
fn every_example_scenario_parses_and_keeps_its_secrets_out() {
    for name in SECRETS {
        if std::env::var_os(name).is_none() {
            // SAFETY: this binary's only test, before any thread it starts
            // reads the environment.
            unsafe { std::env::set_var(name, "example-value") };
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut kinds: Vec<Kind> = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("scenarios/ is readable") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let scenario = file::load(&path, file::Flags::default()).unwrap_or_else(|e| panic!("{e}"));
        let spec = scenario.target_spec().unwrap().expect("a foreign target");
        kinds.push((spec.format, spec.websocket, spec.origin, scenario.stream));
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text
            .lines()
            .filter(|l| l.contains("Bearer") && !l.trim_start().starts_with('#'))
        {
            assert!(
                line.contains("${"),
                "{}: a literal credential: {line}",
                path.display()
            );
        }
    }
    let has = |wanted: &dyn Fn(&Kind) -> bool| kinds.iter().any(wanted);
    assert!(
        has(&|k| k.0 == Format::Json && !k.1 && k.3 == StreamKind::Topic),
        "an SSE hub: {kinds:?}"
    );
    assert!(
        has(&|k| k.1 && k.3 == StreamKind::Topic),
        "a WebSocket chat: {kinds:?}"
    );
    assert!(
        has(&|k| k.0 == Format::Openai && k.2 == Origin::Absolute),
        "an OpenAI endpoint: {kinds:?}"
    );
    assert!(
        has(&|k| k.0 == Format::Openai && k.2 == Origin::Relative),
        "this server's: {kinds:?}"
    );
}
