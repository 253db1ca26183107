//! Headless Chromium for the browser tests (Debian's `chromium` and
//! `chromium-driver`, which `scripts/test` installs), driven over WebDriver:
//! the demo page's test (`tests/demo.rs`) and the load generator's live
//! dashboard's (`loadgen/tests/dashboard.rs`, which includes this file by
//! path, as it sits in another package). It needs nothing of either test
//! crate but the dev-dependencies both have: fantoccini, hyper-util,
//! libc, serde_json and tokio.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The longest chromedriver or a browser session may take to start.
const START: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test with `what` if it takes over [`START`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(START, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {START:?} waiting for {what}"))
}

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process on a free loopback port, in a process group of
/// its own: dropping it kills the group, the browser it started included
/// (even when a failed assertion skipped closing the session).
pub(crate) struct Driver {
    url: String,
    process: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = self.process.id() {
            // SAFETY: kill has no memory-safety preconditions; a negative
            // pid names the process group chromedriver leads.
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
            }
        }
    }
}

impl Driver {
    /// Starts chromedriver and waits for its readiness line.
    pub(crate) async fn start() -> Self {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: the browser tests need Debian's chromium and chromium-driver \
                 (`apt-get install chromium chromium-driver`; scripts/test installs them)"
            );
        }
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a: SocketAddr| a.port())
            .expect("a free port");
        let mut process = Command::new(CHROMEDRIVER)
            .args([
                format!("--port={port}"),
                "--allowed-ips=127.0.0.1".to_owned(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("starting chromedriver");
        let stdout = process.stdout.take().expect("chromedriver's stdout");
        let mut lines = BufReader::new(stdout).lines();
        within("chromedriver to start", async {
            while let Some(line) = lines.next_line().await.expect("reading chromedriver") {
                if line.contains("started successfully") {
                    return;
                }
            }
            panic!("chromedriver exited before it was ready");
        })
        .await;
        Self {
            url: format!("http://127.0.0.1:{port}"),
            process,
        }
    }

    /// A headless Chromium session with a fresh profile and no background
    /// networking (the machine has no network beyond loopback), with
    /// `extra` arguments.
    pub(crate) async fn browser(&self, profile: &Path, extra: &[&str]) -> Client {
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1280,1300".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let options = json!({ "binary": CHROMIUM, "args": args });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), options);
        within(
            "a browser session",
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&self.url),
        )
        .await
        .expect("connecting to chromedriver")
    }
}
