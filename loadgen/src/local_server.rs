//! A server the load generator starts for itself (no `--url`): a child
//! process on a free loopback port, with a fresh SQLite database in a temp
//! dir, its log in the results directory. Ready once it prints its
//! `listening on` line; stopped with SIGTERM, then killed if it hangs.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the server may take to print its readiness line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long it may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Which server program to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerProgram {
    /// This very executable, in server mode (`__serve`): the server built
    /// with the load generator.
    Embedded,
    /// Another build's `streamgauge-server` binary.
    Binary(PathBuf),
}

/// A running local server.
#[derive(Debug)]
pub struct LocalServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id, for the monitor.
    pub pid: u32,
    /// Holds its database until it is stopped.
    _data: TempDir,
}

impl LocalServer {
    /// Starts `program` with `extra_args`, its stderr going to `log`.
    ///
    /// # Errors
    ///
    /// The program cannot start or never prints its readiness line.
    pub async fn start(
        program: &ServerProgram,
        extra_args: &[String],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new()
            .prefix("streamgauge-loadgen-")
            .tempdir()
            .context("creating a temp dir for the server's database")?;
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let (exe, mut args): (PathBuf, Vec<OsString>) = match program {
            ServerProgram::Embedded => (
                std::env::current_exe().context("locating this executable")?,
                vec!["__serve".into()],
            ),
            ServerProgram::Binary(path) => (path.clone(), Vec::new()),
        };
        let database = format!("sqlite://{}", data.path().join("streamgauge.db").display());
        args.extend(
            [
                "--listen",
                "127.0.0.1:0",
                "--database",
                &database,
                "--log",
                "warn",
            ]
            .map(OsString::from),
        );
        args.extend(extra_args.iter().map(OsString::from));
        let mut child = Command::new(&exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the server {}", exe.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut line = String::new();
        let read =
            tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
        let addr = match read {
            Ok(Ok(_)) => line
                .trim_end()
                .strip_prefix("listening on http://")
                .and_then(|addr| addr.parse().ok())
                .with_context(|| {
                    format!(
                        "the server's first line was {line:?}; see {}",
                        log.display()
                    )
                })?,
            Ok(Err(e)) => anyhow::bail!("reading the server's stdout: {e}"),
            Err(_) => anyhow::bail!(
                "the server printed nothing in {START_TIMEOUT:?}; see {}",
                log.display()
            ),
        };
        Ok(Self {
            child,
            addr,
            pid,
            _data: data,
        })
    }

    /// Stops it gracefully (SIGTERM), killing it if it does not stop in time.
    ///
    /// # Errors
    ///
    /// The process could not be signalled or waited for.
    pub async fn stop(mut self) -> anyhow::Result<ExitStatus> {
        let pid = libc::pid_t::try_from(self.pid).context("a pid that fits pid_t")?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own child's, which we have not yet waited for.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await.context("killing the server")?;
                anyhow::bail!(
                    "the server did not stop within {STOP_TIMEOUT:?} of SIGTERM and was killed"
                )
            }
        }
    }
}
