//! The databases tests run on: a fresh SQLite file in a temp dir (removed
//! afterwards) or a fresh PostgreSQL database.

use tempfile::TempDir;

use super::postgres;

/// A backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database, deleted (SQLite) or dropped (PostgreSQL) with this
/// value.
pub struct Database {
    url: String,
    _dir: Option<TempDir>,
    _postgres: Option<postgres::FreshDatabase>,
}

impl Database {
    /// A new, empty database on `backend`.
    pub async fn fresh(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("streamgauge-test-")
                    .tempdir()
                    .expect("a temp dir for SQLite");
                Self {
                    url: format!("sqlite://{}", dir.path().join("streamgauge.db").display()),
                    _dir: Some(dir),
                    _postgres: None,
                }
            }
            Backend::Postgres => {
                let database = postgres::fresh_database().await;
                Self {
                    url: database.url().to_owned(),
                    _dir: None,
                    _postgres: Some(database),
                }
            }
        }
    }

    /// Its URL, for `--database`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `sql` (one or more statements) on it from outside the server,
    /// as a fault a test injects.
    #[allow(
        dead_code,
        reason = "loadgen/tests/history.rs includes this file and injects no fault"
    )]
    pub async fn execute(&self, sql: &'static str) {
        use sqlx::Connection as _;
        let what = "running SQL on the test database";
        if self._postgres.is_some() {
            let mut connection = sqlx::PgConnection::connect(&self.url).await.expect(what);
            sqlx::raw_sql(sql)
                .execute(&mut connection)
                .await
                .expect(what);
        } else {
            let mut connection = sqlx::SqliteConnection::connect(&self.url)
                .await
                .expect(what);
            sqlx::raw_sql(sql)
                .execute(&mut connection)
                .await
                .expect(what);
        }
    }

    /// Its name on the test PostgreSQL server (`None` for SQLite).
    #[allow(dead_code, reason = "only the cluster tests reach into their database")]
    pub fn postgres_name(&self) -> Option<&str> {
        self._postgres.as_ref().map(postgres::FreshDatabase::name)
    }
}
