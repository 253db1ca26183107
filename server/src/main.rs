//! `streamgauge-server`: the reference streaming server.
//!
//! Run with `streamgauge-server --listen 127.0.0.1:8080`; see `--help`.

use std::process::ExitCode;

/// With the `dhat-heap` feature, every allocation goes through dhat.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> ExitCode {
    streamgauge_server::cli::main_with(std::env::args_os())
}
