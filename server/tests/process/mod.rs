//! The server binary as a child process of a test: started on a database,
//! its address read from the readiness line, killed (SIGKILL) when asked or
//! when dropped. Also the root tests' PostgreSQL harness, for the database.

#[path = "../../../tests/support/postgres.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "the root tests' PostgreSQL harness, shared"
)]
pub(crate) mod postgres;
#[allow(
    dead_code,
    reason = "shared by the test binaries; each uses part of it"
)]
pub(crate) mod topic;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the server may take to print its readiness line.
const READY: Duration = Duration::from_secs(30);

/// A server process and its address.
pub(crate) struct Server {
    child: Child,
    addr: String,
}

/// The binary, to run on `database` in `dir`.
fn command(database: &str, dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_streamgauge-server"));
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database",
            database,
            "--log",
            "warn",
        ])
        .current_dir(dir)
        .stdin(Stdio::null());
    command
}

/// What `read` makes of `from`, read on a thread of its own, within the
/// readiness wait.
fn read_within<R: std::io::Read + Send + 'static>(
    from: R,
    read: impl FnOnce(BufReader<R>) -> String + Send + 'static,
) -> Result<String, mpsc::RecvTimeoutError> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read(BufReader::new(from)));
    });
    rx.recv_timeout(READY)
}

#[allow(dead_code, reason = "only the cluster test expects a refusal")]
/// Runs the binary on `database` in `dir` expecting it to exit at once
/// (within the readiness wait): its exit code and what it wrote to stderr.
pub(crate) fn exit_of(database: &str, dir: &Path) -> (Option<i32>, String) {
    let mut child = command(database, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning streamgauge-server");
    let stderr = child.stderr.take().expect("its stderr");
    let read = read_within(stderr, |mut stderr| {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let Ok(stderr) = read else {
        let _ = child.kill();
        panic!("streamgauge-server did not exit within {READY:?}");
    };
    let status = child.wait().expect("reaping the server");
    (status.code(), stderr)
}

impl Server {
    /// Starts the binary on `database`, in `dir`, and waits for its
    /// readiness line.
    pub(crate) fn start(database: &str, dir: &Path) -> Self {
        Self::start_with(database, dir, &[])
    }

    /// Starts the binary on `database`, in `dir`, with the flags `extra`,
    /// and waits for its readiness line.
    pub(crate) fn start_with(database: &str, dir: &Path, extra: &[&str]) -> Self {
        let mut child = command(database, dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning streamgauge-server");
        let stdout = child.stdout.take().expect("its stdout");
        let line = read_within(stdout, |mut stdout| {
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            line
        })
        .expect("the readiness line");
        let addr = line
            .trim_end()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("first stdout line was {line:?}"))
            .to_owned();
        Self { child, addr }
    }

    /// `http://ADDR{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: no drain, no shutdown hook.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping the server");
    }

    /// Waits for the process to end by itself, within the readiness wait;
    /// how it ended.
    #[allow(dead_code, reason = "only the crash test's server ends by itself")]
    pub(crate) async fn exited(mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + READY;
        let mut poll = tokio::time::interval(Duration::from_millis(10));
        loop {
            poll.tick().await;
            if let Some(status) = self.child.try_wait().expect("polling the server") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "streamgauge-server did not exit within {READY:?}"
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
