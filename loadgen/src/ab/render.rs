//! The A/B comparison's files: `ab.json` (the [`AbReport`]), `report.md`
//! (verdict first, with the rounds each undecided figure needs, then a
//! table of figures with their ratios, confidence intervals and p-values)
//! and `junit.xml` (one test case per figure and per broken threshold).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::{AbReport, Decision, FigureTest, MIN_AUTO_ROUNDS, Rounds};
use crate::report::junit::{self, Case, Suite};
use crate::summary::comparison::{GateVerdict, rounds_text};

/// How the decision was made, in words.
pub fn method(rounds: Rounds, alpha: f64, confidence: f64) -> String {
    let rounds = match rounds {
        Rounds::Fixed(n) => format!("{n} rounds"),
        Rounds::Auto { max } => format!(
            "rounds added until every figure was decided ({MIN_AUTO_ROUNDS} at least, {max} at most)"
        ),
    };
    format!(
        "{rounds}, the order alternating (base first, then change first), each run on a fresh server; per figure a paired t interval of change / base (on logarithms; of change − base for the error rate), Bonferroni-corrected: family-wise alpha {alpha}, each figure tested one-sided at {:.4}, so its interval is a {:.2}% confidence interval; a regression when the interval lies wholly beyond the figure's budget the worse way, no regression when wholly within it (an improvement when also wholly better than no change), inconclusive otherwise",
        (1.0 - confidence) / 2.0,
        confidence * 100.0
    )
}

/// What an undecided figure needs, in words.
fn needs(test: &FigureTest) -> String {
    format!("{} suggested", rounds_text(test.rounds_suggested, "rounds"))
}

/// A figure's decision in words, with the rounds it needs when undecided.
fn decision_words(test: &FigureTest) -> String {
    match test.decision {
        Decision::Inconclusive | Decision::NoSignificantDifference => {
            format!("{}: {}", test.decision.as_str(), needs(test))
        }
        other => other.as_str().to_owned(),
    }
}

/// The verdict's headline.
fn headline(report: &AbReport) -> String {
    match report.verdict {
        GateVerdict::NoRegression => "PASS: no regression".to_owned(),
        GateVerdict::Regression => "FAIL: regression".to_owned(),
        GateVerdict::Inconclusive => format!(
            "INCONCLUSIVE: {} for a decision",
            rounds_text(report.rounds_suggested, "rounds")
        ),
    }
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

fn estimate(test: &FigureTest) -> String {
    match (test.estimate, test.ci) {
        (Some(e), Some([low, high])) if test.scale == "ratio" => {
            format!("×{e:.3} [{low:.3}, {high:.3}]")
        }
        (Some(e), Some([low, high])) => format!("{e:+.4} [{low:+.4}, {high:+.4}]"),
        _ => "–".to_owned(),
    }
}

fn median(values: &[f64]) -> String {
    if values.is_empty() {
        return "–".to_owned();
    }
    let mut values = values.to_vec();
    number(crate::analysis::compare::median(&mut values))
}

/// The Markdown of `report`.
pub fn markdown(report: &AbReport) -> String {
    let mut out = format!(
        "# streamgauge ab: {}\n\n{} ({}): base `{}` vs change `{}`, {} rounds.\n\n",
        headline(report),
        report.scenario,
        report.transport,
        report.base.build,
        report.change.build,
        report.order.len()
    );
    for test in report
        .figures
        .iter()
        .filter(|t| t.decision == Decision::Regression)
    {
        let _ = writeln!(
            out,
            "- {} regressed: {} (budget {}, p = {:.2e})",
            test.label,
            estimate(test),
            test.budget,
            test.p_value.unwrap_or(f64::NAN)
        );
    }
    for test in report
        .figures
        .iter()
        .filter(|t| t.verdict == Some(GateVerdict::Inconclusive))
    {
        let _ = writeln!(
            out,
            "- {} undecided: {} (budget {}): {}",
            test.label,
            estimate(test),
            test.budget,
            needs(test)
        );
    }
    for line in &report.broken {
        let _ = writeln!(out, "- the change broke a threshold: {line}");
    }
    out.push_str(
        "\n| figure | base (median) | change (median) | change/base [CI] | p-value | budget | decision |\n|---|---|---|---|---|---|---|\n",
    );
    for test in &report.figures {
        let decision = match test.decision {
            Decision::Regression => "**REGRESSION**".to_owned(),
            _ => decision_words(test),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {decision} |",
            crate::analysis::compare::labelled(&test.label, test.unit),
            median(&test.base),
            median(&test.change),
            estimate(test),
            test.p_value
                .map_or_else(|| "–".to_owned(), |p| format!("{p:.2e}")),
            test.budget,
        );
    }
    let sides = [&report.base, &report.change];
    for side in sides {
        let _ = write!(out, "\n- {}: `{}`", side.name, side.build);
        if let Some(commit) = &side.commit {
            let _ = write!(out, " at {commit}");
        }
        if !side.args.is_empty() {
            let _ = write!(out, " with `{}`", side.args.join(" "));
        }
    }
    let _ = writeln!(out, "\n\nHow the decision was made: {}.", report.method);
    out
}

/// The JUnit XML of `report`: one case per figure and per broken threshold.
pub fn junit(report: &AbReport) -> String {
    let mut cases: Vec<Case> = report
        .figures
        .iter()
        .map(|test| {
            let text = format!(
                "{}: {} {} (budget {}, p {})",
                test.label,
                decision_words(test),
                estimate(test),
                test.budget,
                test.p_value
                    .map_or_else(|| "–".to_owned(), |p| format!("{p:.2e}"))
            );
            let regressed = test.decision == Decision::Regression;
            Case {
                name: format!("regression {}", test.figure),
                time_s: 0.0,
                failure: regressed.then(|| text.clone()),
                out: (!regressed).then_some(text),
            }
        })
        .collect();
    cases.extend(report.broken.iter().map(|line| Case {
        name: format!("threshold {line}"),
        time_s: 0.0,
        failure: Some(format!("the change broke a threshold: {line}")),
        out: None,
    }));
    let suite = Suite {
        name: format!("ab {} ({})", report.scenario, report.transport),
        classname: format!("streamgauge.ab.{}.{}", report.scenario, report.transport),
        time_s: 0.0,
        cases,
    };
    junit::document(
        &format!("streamgauge ab {}", report.run_id),
        &report.started_at,
        &[suite],
    )
}

/// Writes `ab.json`, `report.md` and `junit.xml` into `dir`.
///
/// # Errors
///
/// A file cannot be written.
pub fn write(dir: &Path, report: &AbReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut json = serde_json::to_vec_pretty(report).expect("an A/B report serializes");
    json.push(b'\n');
    for (name, contents) in [
        ("ab.json", json),
        ("report.md", markdown(report).into_bytes()),
        ("junit.xml", junit(report).into_bytes()),
    ] {
        crate::report::files::write(&dir.join(name), &contents)?;
    }
    Ok(())
}
