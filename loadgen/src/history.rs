//! The run history (being written by a helper): every run stored through
//! sqlx with migrations.

use hdrhistogram::Histogram;
use serde_json::Value;

use crate::cli::HistoryArgs;
use crate::metrics::Stats;
use crate::report::Summary;

/// Why the history could not be used.
#[derive(Debug, thiserror::Error)]
#[error("run history: {0}")]
pub struct Error(String);

/// The run history.
#[derive(Debug)]
pub struct History {}

impl History {
    /// Opens (creating and migrating) the history at `url`.
    ///
    /// # Errors
    ///
    /// The database cannot be opened or migrated.
    pub async fn open(url: &str) -> Result<Self, Error> {
        Err(Error(format!("not written yet: {url}")))
    }

    /// Stores one run.
    ///
    /// # Errors
    ///
    /// The database refused it.
    pub async fn record(&self, _summary: &Summary, _stats: &Stats) -> Result<(), Error> {
        Err(Error("not written yet".to_owned()))
    }

    /// The summaries (JSON) of every run of invocation `run_id`.
    ///
    /// # Errors
    ///
    /// The database cannot be read.
    pub async fn runs(&self, _run_id: &str) -> Result<Vec<Value>, Error> {
        Err(Error("not written yet".to_owned()))
    }

    /// The id of the newest invocation labelled `label`.
    ///
    /// # Errors
    ///
    /// The database cannot be read.
    pub async fn latest_with_label(&self, _label: &str) -> Result<Option<String>, Error> {
        Err(Error("not written yet".to_owned()))
    }

    /// The histograms stored with one run, by name.
    ///
    /// # Errors
    ///
    /// The database cannot be read, or a histogram does not decode.
    pub async fn histograms(
        &self,
        _run_id: &str,
        _scenario: &str,
        _transport: &str,
        _repeat: u32,
    ) -> Result<Vec<(String, Histogram<u64>)>, Error> {
        Err(Error("not written yet".to_owned()))
    }
}

/// The `history` command: the listing or trend, as text for stdout.
///
/// # Errors
///
/// The history cannot be opened or read.
pub async fn command(_args: &HistoryArgs) -> anyhow::Result<String> {
    anyhow::bail!("not written yet")
}
