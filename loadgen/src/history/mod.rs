//! The run history: every run the load generator makes, kept in SQLite or
//! PostgreSQL, so that `--baseline` and `compare` can name a run id or a
//! label, and `history` can list runs and show a scenario's trend.
//!
//! One row per run in `runs`: its key figures as columns (to list and plot
//! without parsing JSON), machine facts, git commit, verdict, and the whole
//! `summary.json` beside them. Its HDR histograms go to `run_histograms` in
//! HdrHistogram's V2 + DEFLATE encoding (base64), so runs can later be
//! merged exactly. The schema is `migrations/history/`, applied on open.
//!
//! Everything goes through sqlx's Any driver: the SQL is valid in both
//! dialects, and its `$N` placeholders are bound by number by PostgreSQL and
//! by sqlx's SQLite driver alike (the Any driver passes SQL through as is),
//! so one set of queries serves both. The history wants a database of its
//! own: sqlx's migration bookkeeping refuses a database migrated by another
//! set of migrations, such as the server's.

use std::fmt::Display;
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::Value;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyConnection, AnyPool, ConnectOptions as _, Connection as _, Row as _};

use crate::metrics::Stats;
use crate::metrics::wire::{decode, encode_all};
use crate::summary::Summary;

pub mod baseline;
mod view;

/// The history's schema, embedded at build time (see `build.rs`).
static MIGRATOR: Migrator = sqlx::migrate!("../migrations/history");

/// Why the history could not be used: where it is, and what failed.
#[derive(Debug, thiserror::Error)]
#[error("run history at {url}: {message}")]
pub struct Error {
    /// The history's URL, its password hidden.
    url: String,
    /// What failed, and why.
    message: String,
}

/// The run history, open and migrated.
#[derive(Debug)]
pub struct History {
    pool: AnyPool,
    /// Its URL, its password hidden, for messages.
    url: String,
}

/// Which runs to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Only runs of this scenario.
    pub scenario: Option<String>,
    /// Only runs on this transport (`sse` or `ws`).
    pub transport: Option<String>,
    /// At most this many runs, the newest.
    pub limit: u32,
}

/// One run as the history lists it: its key figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When the load started (RFC 3339).
    pub started_at: String,
    /// Its invocation's id.
    pub run_id: String,
    /// `--label`.
    pub label: Option<String>,
    /// The scenario's name.
    pub scenario: String,
    /// `sse` or `ws`.
    pub transport: String,
    /// Which repetition it was (1-based).
    pub repeat: u32,
    /// The most clients at once.
    pub clients: u32,
    /// Events received per second.
    pub events_per_s: f64,
    /// Median delivery latency, µs.
    pub latency_p50_us: Option<u64>,
    /// 99th percentile delivery latency, µs.
    pub latency_p99_us: Option<u64>,
    /// Failures per request.
    pub error_rate: Option<f64>,
    /// Mean server CPU, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Peak server resident memory, MiB.
    pub server_rss_peak_mib: Option<f64>,
    /// `pass`, `warn` or `fail`.
    pub verdict: String,
    /// The project's commit the run was made from.
    pub git_commit: Option<String>,
    /// Whether that checkout had uncommitted changes.
    pub git_dirty: Option<bool>,
}

impl History {
    /// Opens the history at `url` and applies its migrations: a
    /// `postgres://` URL, or a `sqlite:` URL or file path, whose file (and
    /// directories) are created if missing.
    ///
    /// # Errors
    ///
    /// The URL is not one of those, or the database cannot be created,
    /// reached or migrated.
    pub async fn open(url: &str) -> Result<Self, Error> {
        let shown = redact(url);
        let fail = |message: String| Error {
            url: shown.clone(),
            message,
        };
        let options = connect_options(url).map_err(fail)?;
        sqlx::any::install_default_drivers();
        // One connection of its own to migrate: it fails at once with the
        // reason, where a pool would retry a refused connection until its
        // timeout and then say only that it timed out.
        let mut connection = AnyConnection::connect_with(&options)
            .await
            .map_err(|e| fail(format!("connecting: {e}")))?;
        MIGRATOR
            .run(&mut connection)
            .await
            .map_err(|e| fail(format!("migrating: {e}")))?;
        if let Err(e) = connection.close().await {
            tracing::debug!("closing the history's migration connection: {e}");
        }
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(Self { pool, url: shown })
    }

    /// Stores one run: `summary`, and every histogram of `stats`.
    ///
    /// # Errors
    ///
    /// The run is already stored, or the database refused it.
    pub async fn record(&self, summary: &Summary, stats: &Stats) -> Result<(), Error> {
        let what = || format!("recording run {} ({})", summary.run_id, summary.scenario);
        let json = serde_json::to_value(summary).map_err(|e| self.error(what(), e))?;
        let histograms = encode_all(stats).map_err(|e| self.error(what(), e))?;
        let mut tx = self.pool.begin().await.map_err(|e| self.error(what(), e))?;
        insert_run(&mut tx, summary, &json)
            .await
            .map_err(|e| self.error(what(), e))?;
        insert_histograms(&mut tx, summary, histograms)
            .await
            .map_err(|e| self.error(what(), e))?;
        tx.commit().await.map_err(|e| self.error(what(), e))
    }

    /// The summaries (JSON) of every run of invocation `run_id`, in the
    /// order they were recorded; none if there is no such invocation.
    ///
    /// # Errors
    ///
    /// The database cannot be read, or holds a summary that is not JSON.
    pub async fn runs(&self, run_id: &str) -> Result<Vec<Value>, Error> {
        let what = || format!("reading run {run_id}");
        let rows = sqlx::query("SELECT summary FROM runs WHERE run_id = $1 ORDER BY seq")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(what(), e))?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get("summary").map_err(|e| self.error(what(), e))?;
                serde_json::from_str(&text).map_err(|e| self.error(what(), e))
            })
            .collect()
    }

    /// The id of the newest invocation labelled `label`, if any.
    ///
    /// # Errors
    ///
    /// The database cannot be read.
    pub async fn latest_with_label(&self, label: &str) -> Result<Option<String>, Error> {
        let what = || format!("looking up label {label}");
        let row = sqlx::query("SELECT run_id FROM runs WHERE label = $1 ORDER BY seq DESC LIMIT 1")
            .bind(label)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(what(), e))?;
        row.map(|row| row.try_get("run_id"))
            .transpose()
            .map_err(|e| self.error(what(), e))
    }

    /// The histograms stored with one run, by name (`latency`, `connect`,
    /// …), decoded and auto-resizing, so they can be merged.
    ///
    /// # Errors
    ///
    /// The database cannot be read, or a histogram does not decode.
    pub async fn histograms(
        &self,
        run_id: &str,
        scenario: &str,
        transport: &str,
        repeat: u32,
    ) -> Result<Vec<(String, Histogram<u64>)>, Error> {
        let what = || format!("reading the histograms of run {run_id} ({scenario}, {transport})");
        let rows = sqlx::query(
            "SELECT name, data FROM run_histograms \
             WHERE run_id = $1 AND scenario = $2 AND transport = $3 AND repeat = $4 \
             ORDER BY name",
        )
        .bind(run_id)
        .bind(scenario)
        .bind(transport)
        .bind(i64::from(repeat))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error(what(), e))?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name").map_err(|e| self.error(what(), e))?;
                let data: String = row.try_get("data").map_err(|e| self.error(what(), e))?;
                let histogram =
                    decode(&data).map_err(|e| self.error(what(), format!("{name}: {e}")))?;
                Ok((name, histogram))
            })
            .collect()
    }

    /// The newest runs `filter` selects, oldest first.
    ///
    /// # Errors
    ///
    /// The database cannot be read.
    pub async fn latest(&self, filter: &Filter) -> Result<Vec<Entry>, Error> {
        let what = || "listing runs".to_owned();
        let rows = sqlx::query(
            "SELECT started_at, run_id, label, scenario, transport, repeat, clients, \
             events_per_s, latency_p50_us, latency_p99_us, error_rate, server_cpu_pct, \
             server_rss_peak_mib, verdict, git_commit, git_dirty FROM runs \
             WHERE ($1 IS NULL OR scenario = $1) AND ($2 IS NULL OR transport = $2) \
             ORDER BY seq DESC LIMIT $3",
        )
        .bind(filter.scenario.as_deref())
        .bind(filter.transport.as_deref())
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error(what(), e))?;
        let mut entries = rows
            .iter()
            .map(Entry::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(what(), e))?;
        entries.reverse();
        Ok(entries)
    }

    fn error(&self, doing: String, cause: impl Display) -> Error {
        Error {
            url: self.url.clone(),
            message: format!("{doing}: {cause}"),
        }
    }
}

/// Inserts `summary`'s row, `json` being its serde form, numbered after
/// every run recorded so far.
async fn insert_run(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    summary: &Summary,
    json: &Value,
) -> Result<(), sqlx::Error> {
    let environment = &summary.manifest.environment;
    let (versions, machine) = (&environment.versions, &environment.machine);
    sqlx::query(
        "INSERT INTO runs (run_id, scenario, transport, repeat, seq, started_at, label, \
         stream, clients, duration_s, git_commit, git_dirty, cores, memory_mib, kernel, \
         events_per_s, latency_p50_us, latency_p99_us, error_rate, connect_success, \
         server_cpu_pct, server_rss_peak_mib, passed, verdict, summary) \
         SELECT $1, $2, $3, $4, COALESCE(MAX(seq), 0) + 1, $5, $6, $7, $8, $9, $10, $11, \
         $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24 FROM runs",
    )
    .bind(&summary.run_id)
    .bind(&summary.scenario)
    .bind(summary.transport)
    .bind(i64::from(summary.repeat))
    .bind(&summary.started_at)
    .bind(summary.label.as_deref())
    .bind(summary.stream)
    .bind(i64::from(summary.clients))
    .bind(summary.duration_s)
    .bind(versions.git_commit.as_deref())
    .bind(versions.git_dirty.map(i64::from))
    .bind(int(machine.cores as u64))
    .bind(machine.memory_mb)
    .bind(machine.kernel.as_deref())
    .bind(summary.events_per_s)
    .bind(summary.latency_us.map(|l| int(l.p50)))
    .bind(summary.latency_us.map(|l| int(l.p99)))
    .bind(summary.error_rate)
    .bind(summary.connect_success)
    .bind(summary.server.cpu_pct)
    .bind(summary.server.rss_mb.map(|rss| rss.peak))
    .bind(i64::from(summary.passed))
    .bind(json["verdict"].as_str().unwrap_or_default())
    .bind(json.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts the encoded `histograms` of `summary`'s run.
async fn insert_histograms(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    summary: &Summary,
    histograms: Vec<(&'static str, String)>,
) -> Result<(), sqlx::Error> {
    for (name, data) in histograms {
        sqlx::query(
            "INSERT INTO run_histograms (run_id, scenario, transport, repeat, name, data) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&summary.run_id)
        .bind(&summary.scenario)
        .bind(summary.transport)
        .bind(i64::from(summary.repeat))
        .bind(name)
        .bind(data)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// `value` as a SQL BIGINT (no measurement comes near the limit).
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Entry {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let count = |column: &str| -> Result<u32, sqlx::Error> {
            let value: i64 = row.try_get(column)?;
            Ok(u32::try_from(value).unwrap_or(u32::MAX))
        };
        let micros = |column: &str| -> Result<Option<u64>, sqlx::Error> {
            let value: Option<i64> = row.try_get(column)?;
            Ok(value.map(|v| u64::try_from(v).unwrap_or_default()))
        };
        let dirty: Option<i64> = row.try_get("git_dirty")?;
        Ok(Self {
            started_at: row.try_get("started_at")?,
            run_id: row.try_get("run_id")?,
            label: row.try_get("label")?,
            scenario: row.try_get("scenario")?,
            transport: row.try_get("transport")?,
            repeat: count("repeat")?,
            clients: count("clients")?,
            events_per_s: row.try_get("events_per_s")?,
            latency_p50_us: micros("latency_p50_us")?,
            latency_p99_us: micros("latency_p99_us")?,
            error_rate: row.try_get("error_rate")?,
            server_cpu_pct: row.try_get("server_cpu_pct")?,
            server_rss_peak_mib: row.try_get("server_rss_peak_mib")?,
            verdict: row.try_get("verdict")?,
            git_commit: row.try_get("git_commit")?,
            git_dirty: dirty.map(|d| d != 0),
        })
    }
}

/// How to reach the history at `url`: a `postgres://` URL as is; a
/// `sqlite:` URL or a file path as a SQLite file, created with its
/// directory if missing.
fn connect_options(url: &str) -> Result<AnyConnectOptions, String> {
    let invalid = |e: sqlx::Error| format!("not a usable database URL: {e}");
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return AnyConnectOptions::from_str(url).map_err(invalid);
    }
    if url.starts_with("sqlite:") {
        let sqlite = SqliteConnectOptions::from_str(url).map_err(invalid)?;
        create_parent(sqlite.get_filename())?;
        // Created if missing, unless the URL says otherwise.
        let url = match (url.contains("mode="), url.contains('?')) {
            (true, _) => url.to_owned(),
            (false, true) => format!("{url}&mode=rwc"),
            (false, false) => format!("{url}?mode=rwc"),
        };
        return AnyConnectOptions::from_str(&url).map_err(invalid);
    }
    if url.contains("://") {
        return Err(
            "not a usable database URL: expected sqlite://PATH, postgres://… or a file path"
                .to_owned(),
        );
    }
    let sqlite = SqliteConnectOptions::new().filename(url);
    create_parent(sqlite.get_filename())?;
    AnyConnectOptions::from_url(&sqlite.create_if_missing(true).to_url_lossy()).map_err(invalid)
}

/// Creates the directory `file` goes in, if it has one.
fn create_parent(file: &Path) -> Result<(), String> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir)
            .map_err(|e| format!("creating the directory {}: {e}", dir.display())),
        _ => Ok(()),
    }
}

/// `url` with its password, if any, replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[userinfo.len()..]),
        None => url.to_owned(),
    }
}

/// The `history` command: the newest runs, or with `--scenario` the trend
/// of that scenario's key figures, as text for stdout.
///
/// # Errors
///
/// The history cannot be opened or read.
pub async fn command(url: &str, filter: &Filter) -> anyhow::Result<String> {
    let history = History::open(url).await?;
    let entries = history.latest(filter).await?;
    if entries.is_empty() {
        return Ok(format!(
            "no runs{} in the history at {}",
            describe(filter),
            history.url
        ));
    }
    Ok(match &filter.scenario {
        None => view::listing(&entries),
        Some(scenario) => view::trend(scenario, &entries),
    })
}

/// ` of SCENARIO on TRANSPORT`, as far as `filter` names them.
fn describe(filter: &Filter) -> String {
    let mut text = String::new();
    if let Some(scenario) = &filter.scenario {
        text.push_str(&format!(" of {scenario}"));
    }
    if let Some(transport) = &filter.transport {
        text.push_str(&format!(" on {transport}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_from_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db?sslmode=disable"),
            "postgres://u:***@h:5432/db?sslmode=disable"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://a/b.db"), "sqlite://a/b.db");
        assert_eq!(redact("history.db"), "history.db");
    }

    #[test]
    fn urls_name_sqlite_files_or_postgres() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a/b/history.db");
        let options = connect_options(file.to_str().unwrap()).unwrap();
        assert!(dir.path().join("a/b").is_dir());
        assert_eq!(options.database_url.scheme(), "sqlite");
        assert!(options.database_url.as_str().contains("mode=rwc"));
        let url = format!("sqlite://{}", dir.path().join("c/h.db").display());
        connect_options(&url).unwrap();
        assert!(dir.path().join("c").is_dir());
        connect_options("postgres://u@127.0.0.1:1/db").unwrap();
        let wrong = connect_options("mysql://h/db").unwrap_err();
        assert!(wrong.contains("expected sqlite://PATH"), "{wrong}");
    }
}
