//! The `streamgauge-server` program: arguments in, exit code out. The
//! binary calls [`main_with`]; so can another program that runs the server
//! as a child process of its own (the load generator does).
//!
//! Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on a bad
//! flag, environment variable or config file, or an SQLite database that
//! another server holds.

use std::ffi::OsString;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use crate::config::Args;
use crate::shutdown::{Reloads, Signals};
use crate::store::{self, redact};
use crate::{Config, Shutdown, Store, Tls, heap, logging, run};

/// Runs the server as the program invoked with `args` (the first being the
/// program name), until a signal stops it.
pub fn main_with(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let config = match Args::try_parse_from(args) {
        Ok(args) => args.load(),
        Err(e) => {
            // --help and --version print and succeed; errors exit 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("streamgauge-server: {e}");
            return ExitCode::from(2);
        }
    };
    // A certificate or key that cannot be used is a mistake in the
    // invocation, like a bad flag.
    let tls = match config.tls.as_ref().map(Tls::load).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("streamgauge-server: --tls-cert/--tls-key: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log_format, &config.log, config.access_log);
    // Started before the runtime and dropped after it has shut down (at the
    // end of `serve`), so the profile covers the whole life of the server.
    let profiling = heap::Profiling::start(&config.heap_profile);
    let served = serve(config, tls);
    drop(profiling);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        // Not a failure of the server: it must not be started there.
        Err(e) if matches!(e.downcast_ref(), Some(store::Error::Locked { .. })) => {
            eprintln!("streamgauge-server: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config, tls: Option<Tls>) -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = config.workers {
        runtime.worker_threads(workers);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding --listen {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let store = Store::open(&config.store)
            .await
            .with_context(|| format!("opening --database {}", redact(&config.store.url)))?;
        let signals = Signals::install().context("installing signal handlers")?;
        // Installed before the announcement, like the shutdown signals: a
        // SIGHUP's default action would end the process.
        let tls = match tls {
            Some(tls) => {
                Some(tls.reloading_on(Reloads::install().context("installing the SIGHUP handler")?))
            }
            None => None,
        };
        // The denylist's reloader installs its own once the server runs; the
        // handler stays installed from here on (tokio never uninstalls one).
        if config.jwt_denylist.is_some() {
            Reloads::install().context("installing the SIGHUP handler")?;
        }
        announce(addr, tls.is_some())?;
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            signals.recv().await;
            trigger.trigger();
        });
        run(listener, config, store, tls, shutdown).await;
        Ok(())
    })
}

/// Prints the readiness line of docs/cli.md (the socket is bound and the database
/// migrated), the one line this program writes to stdout, and flushes it so
/// a parent process sees it at once.
fn announce(addr: std::net::SocketAddr, tls: bool) -> anyhow::Result<()> {
    let scheme = if tls { "https" } else { "http" };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {scheme}://{addr}").context("writing to stdout")?;
    stdout.flush().context("flushing stdout")
}
