//! PostgreSQL for the tests: the server named by `TEST_DATABASE_URL` when it
//! is set, otherwise a throwaway cluster that this test process starts on a
//! free loopback port (initdb into a temp dir) and that dies with it. Each
//! test gets a fresh database, dropped when the test is done with it. A
//! machine without PostgreSQL fails these tests loudly: they are never
//! skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};

/// The base URL of the PostgreSQL server the tests use.
fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => start_cluster(),
    })
}

/// A database made for one test, dropped with this value (best effort:
/// a failure is logged), so that runs against a `TEST_DATABASE_URL` server
/// leave nothing behind.
pub struct FreshDatabase {
    name: String,
    url: String,
}

impl FreshDatabase {
    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    #[allow(dead_code, reason = "only the cluster tests reach into their database")]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A connection to the test server's `postgres` database, as its
/// superuser: for what a test does to a database from outside.
#[allow(dead_code, reason = "only the cluster tests reach into their database")]
pub async fn admin() -> PgConnection {
    let url = server_url();
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL at {url}: {e}"))
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run on the test's runtime, which cannot block on a
        // future: the drop runs on a thread and a runtime of its own.
        let dropped = std::thread::spawn(move || drop_database(&name))
            .join()
            .unwrap_or_else(|_| Err("the thread dropping it panicked".to_owned()));
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// `DROP DATABASE name`, ending the connections still open to it (a server
/// that has not finished closing its pool).
fn drop_database(name: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let drop = async {
        let mut admin = PgConnection::connect(server_url()).await?;
        admin
            // The name is made of the pid and a counter: nothing to inject.
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await?;
        admin.close().await
    };
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), drop).await })
        .map_err(|_| "timed out after 10 s".to_owned())?
        .map_err(|e| e.to_string())
}

/// A new, empty database on the test server, dropped with the value.
pub async fn fresh_database() -> FreshDatabase {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = server_url();
    let name = format!(
        "streamgauge_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = PgConnection::connect(base)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL at {base}: {e}"));
    admin
        // The name is made of the pid and a counter: nothing to inject.
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    FreshDatabase {
        url: with_database(base, &name),
        name,
    }
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (url, query) = url
        .split_once('?')
        .map_or((url, None), |(u, q)| (u, Some(q)));
    let authority_end = url
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| url[start..].find('/').map(|i| start + i))
        .unwrap_or(url.len());
    let mut out = format!("{}/{name}", &url[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// The newest PostgreSQL's binaries: `PG_BIN`, or /usr/lib/postgresql/*/bin.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
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
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL is required by these tests and was not found: install it (initdb and postgres \
             under /usr/lib/postgresql/VERSION/bin; scripts/test does), set PG_BIN, or set \
             TEST_DATABASE_URL"
        )
    })
}

/// The uid and gid of the `postgres` user, when running as root (PostgreSQL
/// refuses to run as root).
fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("running id");
        assert!(
            out.status.success(),
            "running as root needs a `postgres` user for PostgreSQL"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a numeric id")
    };
    Some((id("-u"), id("-g")))
}

fn as_postgres(command: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

/// Removes data directories left by earlier test processes that are gone:
/// `streamgauge-pg-PID` (the shared cluster) and `streamgauge-pg-PID-own-N`
/// (a test's own, [`Cluster`]), by the PID they start with. A directory
/// whose process still runs is kept: another test of it may be using it.
fn remove_stale_clusters(parent: &Path) {
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("streamgauge-pg-"))
        else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or(rest);
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Starts a cluster that lives as long as this process; returns its URL.
fn start_cluster() -> String {
    let parent = std::env::temp_dir();
    remove_stale_clusters(&parent);
    let cluster = Files::init(&parent.join(format!("streamgauge-pg-{}", std::process::id())));
    let port = free_port();
    keep_alive_with_this_process(cluster.postgres(port));
    wait_until_ready(&cluster.bin, port, &cluster.dir);
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// A cluster's binaries, owner and directories.
struct Files {
    bin: PathBuf,
    user: Option<(u32, u32)>,
    dir: PathBuf,
}

impl Files {
    /// A new cluster (initdb) in `dir`, emptied first.
    fn init(dir: &Path) -> Self {
        let (bin, user) = (bin_dir(), postgres_user());
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("creating the cluster directory");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .expect("giving the cluster directory to postgres");
        }
        let initdb = as_postgres(&mut Command::new(bin.join("initdb")), user)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-N",
                "-D",
            ])
            .arg(dir.join("data"))
            .output()
            .expect("running initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        Self {
            bin,
            user,
            dir: dir.to_owned(),
        }
    }

    /// The command that runs the cluster on `port` (loopback only).
    fn postgres(&self, port: u16) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .expect("the cluster log");
        let mut postgres = Command::new(self.bin.join("postgres"));
        as_postgres(&mut postgres, self.user)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=400",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        die_with_this_process(&mut postgres);
        postgres
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A cluster of this test's own, to stop and start at will (a database
/// outage), on one port throughout.
#[allow(dead_code, reason = "only the outage test stops its database")]
pub struct Cluster {
    files: Files,
    port: u16,
    running: Option<std::process::Child>,
}

#[allow(dead_code, reason = "only the outage test stops its database")]
impl Cluster {
    /// Creates and starts a cluster.
    pub fn start() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "streamgauge-pg-{}-own-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cluster = Self {
            files: Files::init(&dir),
            port: free_port(),
            running: None,
        };
        cluster.resume();
        cluster
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it (a fast shutdown: connections are terminated).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.running.take() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGINT);
            }
            child.wait().expect("waiting for postgres to stop");
        }
    }

    /// Starts it again, on the same port and data.
    pub fn resume(&mut self) {
        let child = self
            .files
            .postgres(self.port)
            .spawn()
            .expect("starting postgres");
        self.running = Some(child);
        wait_until_ready(&self.files.bin, self.port, &self.files.dir);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.files.dir);
    }
}

/// Sets the parent-death signal: the kernel sends the child SIGINT (a fast
/// shutdown) when the thread that spawned it dies.
fn die_with_this_process(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe, as pre_exec requires.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
            Ok(())
        });
    }
}

/// Spawns `command` from a thread that never ends, with the parent-death
/// signal set: the kernel sends SIGINT (a fast shutdown) to the child when
/// that thread dies, which is when this process exits, however it exits.
fn keep_alive_with_this_process(mut command: Command) {
    let (started, spawned) = mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-keeper".to_owned())
        .spawn(move || {
            let child = command.spawn();
            let failed = child.as_ref().err().map(ToString::to_string);
            let _ = started.send(failed);
            loop {
                std::thread::park();
            }
        })
        .expect("spawning the postgres keeper thread");
    if let Some(e) = spawned.recv().expect("the keeper thread reports") {
        panic!("starting postgres: {e}");
    }
}

fn wait_until_ready(bin: &Path, port: u16, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the test PostgreSQL did not become ready; its log:\n{}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

#[test]
fn clusters_of_running_processes_are_kept_and_those_of_gone_ones_removed() {
    let parent = std::env::temp_dir().join(format!("streamgauge-stale-{}", std::process::id()));
    let me = std::process::id();
    // PIDs above the kernel's maximum (4,194,304) belong to no process.
    let names = [
        format!("streamgauge-pg-{me}"),
        format!("streamgauge-pg-{me}-own-3"),
        "streamgauge-pg-4194399".to_owned(),
        "streamgauge-pg-4194399-own-1".to_owned(),
    ];
    for name in &names {
        std::fs::create_dir_all(parent.join(name)).unwrap();
    }
    remove_stale_clusters(&parent);
    let kept: Vec<bool> = names.iter().map(|n| parent.join(n).exists()).collect();
    std::fs::remove_dir_all(&parent).unwrap();
    assert_eq!(kept, [true, true, false, false]);
}

#[test]
fn database_urls_are_rewritten_keeping_credentials_and_options() {
    assert_eq!(
        with_database("postgres://u:p@h:5/postgres", "x"),
        "postgres://u:p@h:5/x"
    );
    assert_eq!(
        with_database("postgres://h/db?sslmode=disable", "x"),
        "postgres://h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}

#[tokio::test]
async fn a_test_database_is_dropped_with_its_value_even_while_in_use() {
    let database = fresh_database().await;
    let name = database.name.clone();
    // A connection still open, as a server's pool may hold one.
    let in_use = PgConnection::connect(database.url()).await.unwrap();
    drop(database);
    let mut admin = PgConnection::connect(server_url()).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "{name} is still there");
    drop(in_use);
}
