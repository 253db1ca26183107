//! The durable store: topic events (with their publishes' idempotency
//! keys) and the replay dataset, in SQLite (the embedded default: a file
//! created and migrated on start) or PostgreSQL (a `postgres://` URL),
//! behind one [`Store`].
//!
//! Each query is written once and expanded for the backend in use by
//! `with_pool!`, so both dialects are type-checked and neither pays for
//! dynamic dispatch. The DDL differs per dialect: [`SQLITE_MIGRATOR`] and
//! [`POSTGRES_MIGRATOR`] embed `migrations/sqlite` and `migrations/postgres`.
//! The store knows nothing of HTTP, queues or subscribers.
//!
//! PostgreSQL may be shared by several servers (a cluster): each commit
//! notifies the others ([`notification`]), and [`Store::listener_pool`]
//! gives a node its listening connection. SQLite serves one server only,
//! which holds a lock on the file ([`lock`]).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

mod catalog;
mod idempotency;
pub mod lock;
pub mod notification;
mod topics;
mod trades;

pub use self::catalog::{DELETE_CHUNK, MAX_PAGE, Prefix, RetentionView, TopicFigures};
pub use self::idempotency::{Digest, IdempotencyKey, Outcome, digest};
pub use self::topics::{Append, Commit};
pub use self::trades::{Cursor, Trade, WalletTrade};

/// The SQLite schema.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// The PostgreSQL schema.
pub static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// Expands `$body` once per backend with `$pool` bound to the typed pool.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
use with_pool;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL names no supported database.
    #[error("unsupported database URL {0:?}: expected sqlite:PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Another server holds the SQLite file.
    #[error(
        "another streamgauge-server holds the SQLite database {}: an SQLite database serves one \
         server only (several servers share topics through PostgreSQL: docs/cluster.md)",
        path.display()
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// The SQLite file could not be opened to lock it.
    #[error("opening the SQLite database {} to lock it: {source}", path.display())]
    LockFile {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How SQLite makes a commit durable.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum SqliteDurability {
    /// fsync at every commit: a committed event survives power loss.
    Full,
    /// fsync at checkpoints: a committed event survives a crash of the
    /// process, not of the machine.
    Normal,
}

/// How to open the store.
#[derive(Clone, PartialEq, Eq)]
pub struct Options {
    /// `sqlite:PATH` (created if missing) or `postgres://…`.
    pub url: String,
    /// Most connections in the pool.
    pub max_connections: u32,
    /// SQLite only: how commits are made durable.
    pub sqlite_durability: SqliteDurability,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("url", &redact(&self.url))
            .field("max_connections", &self.max_connections)
            .field("sqlite_durability", &self.sqlite_durability)
            .finish()
    }
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend `url` names.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedUrl`] for any other scheme.
    pub fn of(url: &str) -> Result<Self, Error> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::UnsupportedUrl(redact(url)))
        }
    }
}

/// `url` with any password replaced by `***`, fit for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// The connection pool of the backend in use.
#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The durable store; clones share one pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    /// SQLite: the lock on the file, released once the pool has closed.
    lock: Arc<Mutex<Option<lock::FileLock>>>,
    /// PostgreSQL: the node whose commits this store notifies, as the JSON
    /// string a notification carries ([`notification::origin`]).
    origin: Arc<str>,
    /// Topics this store removed since it opened.
    removals: Arc<AtomicU64>,
    /// SQLite: the turns of the writers that would otherwise contend for
    /// the database's one write lock ([`Store::write_turn`]).
    write_turns: Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Connects (creating an SQLite file if missing) and migrates.
    ///
    /// # Errors
    ///
    /// An unsupported URL, an unreachable database, or a failed migration.
    pub async fn open(options: &Options) -> Result<Self, Error> {
        let mut file_lock = None;
        let pool = match Backend::of(&options.url)? {
            Backend::Sqlite => {
                let connect = SqliteConnectOptions::from_str(&options.url)?;
                if !is_in_memory(&options.url) {
                    file_lock = Some(lock::FileLock::acquire(connect.get_filename())?);
                }
                let connect = connect
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(match options.sqlite_durability {
                        SqliteDurability::Full => SqliteSynchronous::Full,
                        SqliteDurability::Normal => SqliteSynchronous::Normal,
                    })
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(options.max_connections)
                    .connect_with(connect)
                    .await?;
                SQLITE_MIGRATOR.run(&pool).await?;
                Pool::Sqlite(pool)
            }
            Backend::Postgres => {
                let pool = PgPoolOptions::new()
                    .max_connections(options.max_connections)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(&options.url)
                    .await?;
                POSTGRES_MIGRATOR.run(&pool).await?;
                Pool::Postgres(pool)
            }
        };
        Ok(Self {
            pool,
            lock: Arc::new(Mutex::new(file_lock)),
            origin: Arc::from(notification::origin("")),
            removals: Arc::default(),
            write_turns: Arc::default(),
        })
    }

    /// This store, its commits notified as made by the node `name`.
    pub fn with_origin(mut self, name: &str) -> Self {
        self.origin = Arc::from(notification::origin(name));
        self
    }

    /// Closes every connection, waiting for those in use, then releases
    /// the SQLite file.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await);
        self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// SQLite: waits for this writer's turn, held until the guard drops;
    /// `None` at once on PostgreSQL, whose writers lock rows, not the
    /// database.
    ///
    /// SQLite has one write lock, and a writer that finds it taken retries
    /// after sleeps of up to 100 ms (its busy handler) while the holder may
    /// commit and take it again in between: a seed committing chunk after
    /// chunk would keep the publish writer waiting until the whole seed
    /// ended, or past the busy timeout. Turns are handed out first come,
    /// first served (tokio's `Mutex` is fair), so the publish writer, which
    /// takes one for each commit, waits behind at most one seed chunk, and
    /// a seed's next chunk waits for that commit.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled wait gives up its place in the queue.
    pub async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.pool {
            Pool::Sqlite(_) => Some(self.write_turns.lock().await),
            Pool::Postgres(_) => None,
        }
    }

    /// Runs a trivial query: whether the database answers now.
    ///
    /// # Errors
    ///
    /// The database failed (or no connection could be had).
    pub async fn ping(&self) -> Result<(), Error> {
        with_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// How many topics this store (any clone) has removed since it opened:
    /// what was known to exist before may not any more.
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::Acquire)
    }

    /// Notes that a topic was removed.
    fn removed_one(&self) {
        self.removals.fetch_add(1, Ordering::AcqRel);
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// PostgreSQL: a pool of one connection to the same database, named
    /// `application_name` (as `pg_stat_activity` shows it), for a node's
    /// listener; it connects when first used. `None` on SQLite.
    pub fn listener_pool(&self, application_name: &str) -> Option<PgPool> {
        let Pool::Postgres(pool) = &self.pool else {
            return None;
        };
        let options = (*pool.connect_options())
            .clone()
            .application_name(application_name);
        Some(
            PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_lazy_with(options),
        )
    }
}

/// Whether an SQLite URL names an in-memory database (no file to lock).
fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// A sequence number or time as the database stores it (`BIGINT`).
fn to_db(n: u64) -> i64 {
    // Beyond i64::MAX nothing is stored; saturating keeps comparisons right.
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A `BIGINT` read back as the unsigned value it was written from.
fn from_db(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_the_backend() {
        assert_eq!(Backend::of("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("sqlite:x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(
            Backend::of("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(
            Backend::of("mysql://u:secret@h/db")
                .unwrap_err()
                .to_string()
                .contains("u:***@h")
        );
    }

    #[test]
    fn in_memory_databases_are_told_from_files() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://?mode=memory",
        ] {
            assert!(is_in_memory(url), "{url}");
        }
        assert!(!is_in_memory("sqlite://streamgauge.db"));
    }

    #[tokio::test]
    async fn a_second_store_on_one_sqlite_file_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            url: format!("sqlite://{}", dir.path().join("one.db").display()),
            max_connections: 2,
            sqlite_durability: SqliteDurability::Normal,
        };
        let first = Store::open(&options).await.unwrap();
        let err = Store::open(&options).await.unwrap_err().to_string();
        assert!(
            err.contains("another streamgauge-server holds the SQLite database")
                && err.contains("one.db"),
            "{err}"
        );
        first.close().await;
        Store::open(&options).await.unwrap().close().await;
    }

    #[test]
    fn options_print_without_the_password() {
        let options = Options {
            url: "postgres://u:hunter2@h/db".to_owned(),
            max_connections: 1,
            sqlite_durability: SqliteDurability::Full,
        };
        assert!(!format!("{options:?}").contains("hunter2"));
    }

    #[test]
    fn passwords_never_leave_redact() {
        assert_eq!(
            redact("postgres://u:s3cret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
    }
}
