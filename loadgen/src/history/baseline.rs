//! Finds the runs a `--baseline` or `compare` reference names: a results
//! directory, a `summary.json` or `suite.json` file, or, from the run
//! history, a run id or a label (its newest invocation). Runs come back as
//! summaries' JSON, grouped by scenario and transport.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use super::History;
use crate::summary::MIXED;

/// The runs of a reference, and what it was.
#[derive(Debug, Clone)]
pub struct Runs {
    /// What the reference resolved to, for reports.
    pub what: String,
    /// Summaries' JSON, in order.
    pub summaries: Vec<Value>,
}

impl Runs {
    /// The runs of one scenario on one transport.
    pub fn of(&self, scenario: &str, transport: &str) -> Vec<Value> {
        self.summaries
            .iter()
            .filter(|s| s["scenario"] == scenario && transport_of(s) == transport)
            .cloned()
            .collect()
    }

    /// Every scenario and transport, in order of first appearance.
    pub fn groups(&self) -> Vec<(String, String)> {
        let mut groups: Vec<(String, String)> = Vec::new();
        for s in &self.summaries {
            let key = (
                s["scenario"].as_str().unwrap_or_default().to_owned(),
                transport_of(s).to_owned(),
            );
            if !groups.contains(&key) {
                groups.push(key);
            }
        }
        groups
    }
}

/// A summary's transport: `sse`, `ws`, or for a run of both (written
/// `null`, with `transports` listing them) [`MIXED`].
fn transport_of(summary: &Value) -> &str {
    summary["transport"].as_str().unwrap_or(MIXED)
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The summaries a results file or directory holds.
fn from_path(path: &Path) -> anyhow::Result<Vec<Value>> {
    let file: PathBuf = if path.is_dir() {
        ["suite.json", "summary.json"]
            .iter()
            .map(|name| path.join(name))
            .find(|file| file.is_file())
            .with_context(|| {
                format!(
                    "{} holds neither suite.json nor summary.json",
                    path.display()
                )
            })?
    } else {
        path.to_owned()
    };
    let value = read_json(&file)?;
    match value.get("scenarios").and_then(Value::as_array) {
        Some(entries) => {
            let root = file.parent().unwrap_or(Path::new("."));
            entries
                .iter()
                .map(|entry| {
                    let relative = entry["summary"].as_str().with_context(|| {
                        format!("{}: an entry without a summary", file.display())
                    })?;
                    read_json(&root.join(relative))
                })
                .collect()
        }
        None if value.get("run_id").is_some() && value.get("scenario").is_some() => Ok(vec![value]),
        None => anyhow::bail!(
            "{} is neither a summary.json nor a suite.json",
            file.display()
        ),
    }
}

/// Resolves `reference`: an existing path first, then a run id, then a
/// label in `history` (opened only if needed, from `history_url`).
///
/// # Errors
///
/// Nothing by that name, or it cannot be read.
pub async fn resolve(reference: &str, history_url: &str) -> anyhow::Result<Runs> {
    let path = Path::new(reference);
    if path.exists() {
        return Ok(Runs {
            what: path.display().to_string(),
            summaries: from_path(path)?,
        });
    }
    let history = History::open(history_url)
        .await
        .with_context(|| format!("{reference:?} is not a file, so looking it up in the history"))?;
    let runs = history.runs(reference).await?;
    if !runs.is_empty() {
        return Ok(Runs {
            what: format!("run {reference}"),
            summaries: runs,
        });
    }
    if let Some(run_id) = history.latest_with_label(reference).await? {
        return Ok(Runs {
            what: format!("label {reference} (run {run_id})"),
            summaries: history.runs(&run_id).await?,
        });
    }
    anyhow::bail!(
        "no results named {reference:?}: not a results directory or summary.json, nor a run id or label in the history at {history_url}"
    )
}
