//! Servers the load generator starts for itself (no `--url`): child
//! processes on free loopback ports, their logs in the results directory.
//! One node gets a fresh SQLite database in a temp dir; several nodes share
//! a fresh throwaway PostgreSQL cluster ([`postgres`]), as a deployment of
//! several nodes shares one database. A server is ready once it prints its
//! `listening on` line; it is stopped with SIGTERM, then killed if it
//! hangs.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use self::postgres::Postgres;

pub mod postgres;

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
    /// Holds its SQLite database until it is stopped (none on PostgreSQL).
    _data: Option<TempDir>,
}

impl LocalServer {
    /// Starts `program` with `extra_args`, its stderr going to `log`, on
    /// `database` (a PostgreSQL URL) or, without one, a fresh SQLite
    /// database of its own, unless `extra_args` name a `--database`
    /// themselves.
    ///
    /// # Errors
    ///
    /// The program cannot start or never prints its readiness line.
    pub async fn start(
        program: &ServerProgram,
        extra_args: &[String],
        log: &Path,
        database: Option<&str>,
    ) -> anyhow::Result<Self> {
        let (database, data) = match database {
            _ if names_database(extra_args) => (None, None),
            Some(url) => (Some(url.to_owned()), None),
            None => {
                let data = tempfile::Builder::new()
                    .prefix("streamgauge-loadgen-")
                    .tempdir()
                    .context("creating a temp dir for the server's database")?;
                let file = data.path().join("streamgauge.db");
                (Some(format!("sqlite://{}", file.display())), Some(data))
            }
        };
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let (exe, mut args): (PathBuf, Vec<OsString>) = match program {
            ServerProgram::Embedded => (
                std::env::current_exe().context("locating this executable")?,
                vec!["__serve".into()],
            ),
            ServerProgram::Binary(path) => (path.clone(), Vec::new()),
        };
        args.extend(["--listen", "127.0.0.1:0", "--log", "warn"].map(OsString::from));
        if let Some(database) = database {
            args.extend(["--database".into(), database.into()]);
        }
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

/// The servers of one run, and the database they share when there are
/// several.
#[derive(Debug)]
pub struct LocalServers {
    /// The nodes, in order.
    pub servers: Vec<LocalServer>,
    /// The throwaway PostgreSQL cluster the nodes share (several nodes).
    postgres: Option<Postgres>,
}

impl LocalServers {
    /// Starts `nodes` servers of `program` with `extra_args`, logging into
    /// `dir` (`server.log`, or `server-N.log` for several): one on a fresh
    /// SQLite database, several on a fresh throwaway PostgreSQL cluster
    /// (its log `postgres.log`), or all on the `--database` that
    /// `extra_args` name; one after the other, so that the first migrates
    /// the database.
    ///
    /// # Errors
    ///
    /// PostgreSQL is missing or does not start, or a server does not.
    pub async fn start(
        program: &ServerProgram,
        extra_args: &[String],
        nodes: usize,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let postgres = if nodes > 1 && !names_database(extra_args) {
            Some(Postgres::start(&dir.join("postgres.log")).await?)
        } else {
            None
        };
        let database = postgres.as_ref().map(Postgres::url);
        let mut started = Self {
            servers: Vec::with_capacity(nodes),
            postgres,
        };
        for node in 1..=nodes.max(1) {
            let log = if nodes > 1 {
                dir.join(format!("server-{node}.log"))
            } else {
                dir.join("server.log")
            };
            match LocalServer::start(program, extra_args, &log, database.as_deref()).await {
                Ok(server) => started.servers.push(server),
                Err(e) => {
                    started.stop().await;
                    return Err(e.context(format!("starting node {node} of {nodes}")));
                }
            }
        }
        Ok(started)
    }

    /// Stops every server, then the database; what went wrong is logged.
    pub async fn stop(self) {
        for (node, server) in self.servers.into_iter().enumerate() {
            match server.stop().await {
                Ok(status) if status.success() => {}
                Ok(status) => tracing::warn!(
                    %status,
                    "local server {} exited badly; see its log",
                    node + 1
                ),
                Err(e) => tracing::warn!("stopping local server {}: {e:#}", node + 1),
            }
        }
        if let Some(postgres) = self.postgres {
            postgres.stop().await;
        }
    }
}

/// Whether `args` give the server a `--database` of their own.
fn names_database(args: &[String]) -> bool {
    args.iter()
        .any(|arg| arg == "--database" || arg.starts_with("--database="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_given_as_a_server_argument_is_the_servers() {
        let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        assert!(names_database(&args(&["--database=postgres://h/db"])));
        assert!(names_database(&args(&[
            "--max-batch=1",
            "--database",
            "sqlite://x"
        ])));
        assert!(!names_database(&args(&["--database-connections=4"])));
        assert!(!names_database(&[]));
    }
}
