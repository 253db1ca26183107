//! `streamgauge-loadgen`: the load generator.
//!
//! Run with `streamgauge-loadgen suite --quick`; see `--help`. Exit codes:
//! 0 every threshold held, 1 at least one broke (or a regression), 2 the run
//! could not be made, 3 a comparison was inconclusive (`ab`, `compare`, a
//! baseline).
//! Two hidden first arguments run this executable as something else: the
//! server (`__serve`, a local server of this build) and a worker process
//! (`__worker`, a share of a run's clients; see the library's `runner::worker`).

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use streamgauge_loadgen::cli::Cli;
use streamgauge_loadgen::runner::worker;
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
    if std::env::args_os().nth(1).as_deref() == Some(worker::SUBCOMMAND.as_ref()) {
        let filter = std::env::args().nth(2).unwrap_or_else(|| "warn".to_owned());
        return run_worker(&filter);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let Some(runtime) = start(&cli.log) else {
        return ExitCode::from(2);
    };
    worker::set_log_filter(&cli.log);
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
        Ok(outcome) if outcome.passed && outcome.inconclusive => ExitCode::from(3),
        Ok(outcome) if outcome.passed => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("streamgauge-loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs as a worker process of a parent load generator, logging with
/// `filter`: exits 0 once it has stopped as told, 2 otherwise.
fn run_worker(filter: &str) -> ExitCode {
    let Some(runtime) = start(filter) else {
        return ExitCode::from(2);
    };
    match runtime.block_on(worker::serve()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamgauge-loadgen worker {}: {e:#}", std::process::id());
            ExitCode::from(2)
        }
    }
}

/// Logs to stderr with `filter`, and builds the runtime; `None` (said on
/// stderr) if either cannot be.
fn start(filter: &str) -> Option<tokio::runtime::Runtime> {
    let filter = match EnvFilter::try_new(filter) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("streamgauge-loadgen: invalid --log: {e}");
            return None;
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("streamgauge-loadgen: starting the runtime: {e}");
            None
        }
    }
}
