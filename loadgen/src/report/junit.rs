//! `junit.xml`: the verdict in the JUnit XML format every CI system shows
//! as test results. Each scenario and transport is a test suite; each
//! threshold of each run is a test case, and so is each regression check of
//! a baseline comparison. A broken critical threshold or a regression is a
//! `<failure>` naming the threshold or figure and what was measured; a
//! broken warning passes, with the finding in its `<system-out>`.

use std::fmt::Write as _;

use quick_xml::escape::escape;

use super::text::display;
use crate::scenario::Severity;
use crate::summary::comparison::Status;
use crate::summary::{Group, Report};

/// One test case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// What was checked.
    pub name: String,
    /// How long it took, s.
    pub time_s: f64,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// What it measured, for people.
    pub out: Option<String>,
}

/// One test suite.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    /// Its name.
    pub name: String,
    /// The class name of its cases.
    pub classname: String,
    /// How long it took, s.
    pub time_s: f64,
    /// Its cases.
    pub cases: Vec<Case>,
}

impl Suite {
    fn failures(&self) -> usize {
        self.cases.iter().filter(|c| c.failure.is_some()).count()
    }
}

impl Case {
    fn write(&self, classname: &str, xml: &mut String) {
        let _ = write!(
            xml,
            r#"    <testcase classname="{}" name="{}" time="{:.3}""#,
            escape(classname),
            escape(&self.name),
            self.time_s
        );
        if self.failure.is_none() && self.out.is_none() {
            xml.push_str("/>\n");
            return;
        }
        xml.push_str(">\n");
        if let Some(message) = &self.failure {
            let _ = writeln!(
                xml,
                r#"      <failure message="{0}" type="streamgauge">{0}</failure>"#,
                escape(message)
            );
        }
        if let Some(out) = &self.out {
            let _ = writeln!(xml, "      <system-out>{}</system-out>", escape(out));
        }
        xml.push_str("    </testcase>\n");
    }
}

/// The test cases of one group: thresholds per run, then regression checks.
fn cases(group: &Group) -> Vec<Case> {
    let mut cases = Vec::new();
    for summary in &group.runs {
        let run = if group.runs.len() > 1 {
            format!(" (run {})", summary.repeat)
        } else {
            String::new()
        };
        for t in &summary.thresholds {
            let measured = format!("measured {}", display(t.metric, t.value));
            let broke = format!("threshold {} broke: {measured}", t.expr);
            let (failure, out) = match (t.ok, t.severity) {
                (true, _) => (None, Some(measured)),
                (false, Severity::Critical) => (Some(broke), None),
                (false, Severity::Warning) => (None, Some(format!("warning: {broke}"))),
            };
            cases.push(Case {
                name: format!("threshold {}{run}", t.expr),
                time_s: summary.duration_s,
                failure,
                out,
            });
        }
    }
    if let Some(comparison) = group.comparison() {
        for change in &comparison.changes {
            let status = format!(
                "{} against {}: {}, change {}, budget {}",
                change.label,
                comparison.baseline,
                change.decision_text(),
                change
                    .change
                    .map_or_else(|| "not measured".to_owned(), |c| format!("{c:+.3}")),
                change.budget
            );
            let regressed = change.status == Status::Regression;
            cases.push(Case {
                name: format!("regression {}", change.figure),
                time_s: 0.0,
                failure: regressed.then(|| status.clone()),
                out: (!regressed).then_some(status),
            });
        }
    }
    cases
}

/// A JUnit XML document titled `title` of `suites`, run at `timestamp`.
pub fn document(title: &str, timestamp: &str, suites: &[Suite]) -> String {
    let all: usize = suites.iter().map(|s| s.cases.len()).sum();
    let failed: usize = suites.iter().map(Suite::failures).sum();
    let time: f64 = suites.iter().map(|s| s.time_s).sum();
    let mut xml = String::from(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        xml,
        "\n<testsuites name=\"{}\" tests=\"{all}\" failures=\"{failed}\" errors=\"0\" time=\"{time:.3}\">",
        escape(title)
    );
    for suite in suites {
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"0\" timestamp=\"{}\" time=\"{:.3}\">",
            escape(&suite.name),
            suite.cases.len(),
            suite.failures(),
            escape(timestamp),
            suite.time_s
        );
        for case in &suite.cases {
            case.write(&suite.classname, &mut xml);
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// The JUnit XML of `report`.
pub fn render(report: &Report) -> String {
    let suites: Vec<Suite> = report
        .groups
        .iter()
        .map(|group| Suite {
            name: format!("{} ({})", group.scenario, group.transport),
            classname: format!("streamgauge.{}.{}", group.scenario, group.transport),
            time_s: group.runs.iter().map(|s| s.duration_s).sum(),
            cases: cases(group),
        })
        .collect();
    document(
        &format!("streamgauge {}", report.run_id),
        &report.started_at,
        &suites,
    )
}
