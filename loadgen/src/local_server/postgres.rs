//! A throwaway PostgreSQL cluster for local servers that share a database
//! (several nodes): `initdb` into a temp dir, `postgres` on a free loopback
//! port, with the machine's own binaries (`PG_BIN`, or the newest
//! `/usr/lib/postgresql/VERSION/bin`). Run as the `postgres` user when the
//! load generator runs as root (PostgreSQL refuses root). It dies with the
//! load generator however that ends (the parent-death signal), and is
//! stopped with a fast shutdown.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// How long the cluster may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long it may take to stop after its fast shutdown before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How often readiness is asked while it starts.
const POLL: Duration = Duration::from_millis(50);

/// A running throwaway cluster.
#[derive(Debug)]
pub struct Postgres {
    child: Child,
    port: u16,
    /// Its data directory, removed when this is dropped.
    _dir: TempDir,
}

impl Postgres {
    /// Creates and starts a cluster, its server log in `log`.
    ///
    /// # Errors
    ///
    /// PostgreSQL's binaries are not installed, `initdb` fails, or the
    /// cluster does not accept connections in time (its log is named).
    pub async fn start(log: &Path) -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let user = postgres_user().await?;
        let dir = tempfile::Builder::new()
            .prefix("streamgauge-loadgen-pg-")
            .tempdir()
            .context("creating a temp dir for PostgreSQL")?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .context("giving PostgreSQL's temp dir to the postgres user")?;
        }
        let data = dir.path().join("data");
        let initdb = as_user(Command::new(bin.join("initdb")), user)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8"])
            .args(["--locale=C.UTF-8", "-N", "-D"])
            .arg(&data)
            .output()
            .await
            .context("running initdb")?;
        ensure_success(&initdb, "initdb")?;
        let port = free_port()?;
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut postgres = as_user(Command::new(bin.join("postgres")), user);
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "max_connections=400"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe, as pre_exec requires.
        unsafe {
            postgres.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
                Ok(())
            });
        }
        let child = postgres.spawn().context("starting postgres")?;
        let mut started = Self {
            child,
            port,
            _dir: dir,
        };
        started
            .wait_until_ready(&bin)
            .await
            .with_context(|| format!("see {}", log.display()))?;
        Ok(started)
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Waits until it accepts connections (`pg_isready`), within
    /// [`START_TIMEOUT`].
    async fn wait_until_ready(&mut self, bin: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .await
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("postgres exited at once ({status})");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "PostgreSQL did not accept connections within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops it with a fast shutdown (SIGINT: connections are ended),
    /// killing it if it does not stop in time; a failure is logged.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: kill has no memory-safety preconditions; the pid is
            // our own child's, not yet waited for.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!("PostgreSQL did not stop within {STOP_TIMEOUT:?}; killing it");
            let _ = self.child.kill().await;
        }
    }
}

/// PostgreSQL's binaries: `PG_BIN`, or the newest
/// `/usr/lib/postgresql/VERSION/bin` that has `initdb`; `None` when there
/// are none. (The tests' throwaway clusters look the same way, in
/// `tests/support/postgres.rs`, which the server's own tests share and
/// which therefore cannot call this.)
fn installed_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").exists().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// [`installed_bin_dir`], or why the load generator cannot start a cluster.
fn bin_dir() -> anyhow::Result<PathBuf> {
    installed_bin_dir().context(
        "several local nodes share a throwaway PostgreSQL cluster, and PostgreSQL's initdb and \
         postgres were not found (under /usr/lib/postgresql/VERSION/bin, or PG_BIN): install \
         PostgreSQL (Debian: apt-get install postgresql), set PG_BIN, or give the nodes of a \
         cluster of yours with --url",
    )
}

/// The uid and gid of the `postgres` user when running as root; `None`
/// otherwise.
async fn postgres_user() -> anyhow::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let id = |flag: &'static str| async move {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .await
            .context("running id")?;
        ensure_success(&out, "id postgres (PostgreSQL does not run as root)")?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .context("id printed no number")
    };
    Ok(Some((id("-u").await?, id("-g").await?)))
}

/// `command` run as `user`, when given.
fn as_user(mut command: Command, user: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

/// Fails with `what`'s stderr unless it succeeded.
fn ensure_success(output: &Output, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// A free loopback port (free now; the cluster binds it at once).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
