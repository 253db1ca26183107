//! `streamgauge-loadgen`: the load generator.
//!
//! Run with `streamgauge-loadgen suite --quick`; see `--help`. Exit codes:
//! 0 every threshold held, 1 at least one broke, 2 the run could not be made.

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use streamgauge_loadgen::cli::Cli;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// The hidden first argument under which this executable runs the server
/// (how the load generator starts a local server of its own build).
const SERVE: &str = "__serve";

fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref() == Some(SERVE.as_ref()) {
        let args = std::iter::once(OsString::from("streamgauge-server"))
            .chain(std::env::args_os().skip(2));
        return streamgauge_server::cli::main_with(args);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let filter = match EnvFilter::try_new(&cli.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("streamgauge-loadgen: invalid --log: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("streamgauge-loadgen: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        let cancel = CancellationToken::new();
        let interrupt = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupt.cancel();
            }
        });
        streamgauge_loadgen::run(cli.command, cancel).await
    });
    match outcome {
        Ok(outcome) if outcome.passed => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("streamgauge-loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}
