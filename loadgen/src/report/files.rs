//! Writes the report files: for each run, in its directory, `summary.json`,
//! `timeline.csv`, `report.md`, `report.html`, `junit.xml` and `bmf.json`;
//! for an invocation of several runs (a suite, repetitions), the same
//! reports for all of them at the top, with `suite.json` indexing the runs.
//!
//! Each file is written to a temporary name and renamed into place, so a
//! reader never sees half a file.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use super::{bmf, csv, html, junit, markdown};
use crate::analysis::capacity;
use crate::summary::capacity::Capacity;
use crate::summary::verdict::Verdict;
use crate::summary::{Report, Summary};

/// Writes `contents` to `path` atomically.
///
/// # Errors
///
/// The file cannot be written.
pub fn write(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, contents)
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("writing {}", path.display()))
}

fn json(value: &impl Serialize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("reports serialize");
    bytes.push(b'\n');
    bytes
}

/// The reports every results directory holds.
fn write_reports(dir: &Path, report: &Report) -> anyhow::Result<()> {
    write(&dir.join("report.md"), markdown::render(report).as_bytes())?;
    write(&dir.join("report.html"), html::render(report).as_bytes())?;
    write(&dir.join("junit.xml"), junit::render(report).as_bytes())?;
    write(&dir.join("bmf.json"), &json(&bmf::render(report)))
}

/// Writes the files of one run into `dir`.
///
/// # Errors
///
/// A file cannot be written.
pub fn write_run(dir: &Path, summary: &Summary) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write(&dir.join("summary.json"), &json(summary))?;
    write(&dir.join("timeline.csv"), csv::timeline(summary).as_bytes())?;
    let capacity = capacity::estimate(std::slice::from_ref(summary));
    write_reports(dir, &Report::of_run(summary, capacity))
}

/// The directory of a run, relative to the invocation's results: `""` for
/// the only scenario run once, `NAME-TRANSPORT` for one of several
/// scenarios, with `repeat-K` (1-based) below it when runs are repeated.
pub fn run_dir(
    scenario: &str,
    transport: &str,
    alone: bool,
    repeated: bool,
    repeat: u32,
) -> String {
    let mut parts = Vec::new();
    if !alone {
        parts.push(format!("{scenario}-{transport}"));
    }
    if repeated {
        parts.push(format!("repeat-{repeat}"));
    }
    parts.join("/")
}

/// One run in `suite.json`.
#[derive(Serialize)]
struct Entry<'a> {
    scenario: &'a str,
    transport: &'a str,
    repeat: u32,
    passed: bool,
    verdict: Verdict,
    summary: String,
}

/// `suite.json`: the invocation's verdict, capacity and runs.
#[derive(Serialize)]
struct Index<'a> {
    run_id: &'a str,
    started_at: &'a str,
    label: Option<&'a str>,
    passed: bool,
    verdict: Verdict,
    capacity: &'a [Capacity],
    scenarios: Vec<Entry<'a>>,
}

/// Writes the files of `report` into `dir`: for a single run, that run's
/// files; otherwise every run's files in its own directory, and the
/// invocation's reports and `suite.json` at the top.
///
/// # Errors
///
/// A file cannot be written.
pub fn write_report(dir: &Path, report: &Report) -> anyhow::Result<()> {
    if report.is_single_run() {
        return write_run(dir, &report.groups[0].runs[0]);
    }
    let mut scenarios = Vec::new();
    for group in &report.groups {
        for summary in &group.runs {
            let run_dir = run_dir(
                &group.scenario,
                group.transport,
                report.groups.len() == 1,
                group.runs.len() > 1,
                summary.repeat,
            );
            write_run(&dir.join(&run_dir), summary)?;
            scenarios.push(Entry {
                scenario: &group.scenario,
                transport: group.transport,
                repeat: summary.repeat,
                passed: summary.passed,
                verdict: summary.verdict,
                summary: format!("{run_dir}/summary.json"),
            });
        }
    }
    let verdict = report.verdict();
    let index = Index {
        run_id: &report.run_id,
        started_at: &report.started_at,
        label: report.label.as_deref(),
        passed: verdict.passed(),
        verdict,
        capacity: &report.capacity,
        scenarios,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write(&dir.join("suite.json"), &json(&index))?;
    write_reports(dir, report)
}
