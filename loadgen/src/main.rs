//! `streamgauge-loadgen`: not built yet; see the crate documentation.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("streamgauge-loadgen: the load generator is not built yet");
    ExitCode::from(2)
}
