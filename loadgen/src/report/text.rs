//! Text the renderers share: the verdict's headline and findings (also the
//! terminal's closing lines), figures as people read them, a comparison's
//! cells, the commit measured and a run's costs. `report.md` and
//! `report.html` say the same things in the same words because both take
//! them from here.

use std::fmt::Write as _;

use crate::analysis::memory::bytes_text;
use crate::scenario::Severity;
use crate::summary::agents::AgentSummary;
use crate::summary::comparison::{Change, Estimate, GateVerdict, NoiseSource, Status};
use crate::summary::manifest::Versions;
use crate::summary::verdict::Verdict;
use crate::summary::{NodeSummary, Report, Summary};

/// A cell for a value that may be missing.
pub fn or_dash<T>(value: Option<T>, show: impl Fn(T) -> String) -> String {
    value.map_or_else(|| "–".to_owned(), show)
}

/// What one run cost, as both reports show it: CPU seconds of the server
/// and of the load generator, the same per event delivered (µs), the load
/// generator's processes and its peak RSS (MiB).
pub fn costs(s: &Summary) -> [String; 6] {
    let cpu = &s.manifest.cpu_seconds;
    [
        or_dash(cpu.server, |c| format!("{c:.2}")),
        or_dash(cpu.loadgen, |c| format!("{c:.2}")),
        or_dash(s.server.cpu_us_per_event, |c| format!("{c:.3}")),
        or_dash(s.loadgen_cpu_us_per_event, |c| format!("{c:.3}")),
        s.loadgen_workers.to_string(),
        or_dash(s.loadgen_rss_mb, |r| format!("{:.1}", r.peak)),
    ]
}

/// The columns of the nodes table every report shows for a server of
/// several nodes, and [`node_cells`] fills.
pub const NODE_COLUMNS: [&str; 11] = [
    "node",
    "clients",
    "events/s",
    "errors",
    "latency p50 ms",
    "latency p99 ms",
    "schedule lag p99 ms",
    "publish to receive p50 ms",
    "publish to receive p99 ms",
    "cross-node p99 ms",
    "published",
];

/// One node's row of the nodes table.
pub fn node_cells(node: &NodeSummary) -> [String; 11] {
    [
        node.url.clone(),
        node.clients.to_string(),
        format!("{:.0}", node.events_per_s),
        node.errors.to_string(),
        or_dash(node.latency_us, |l| ms(l.p50)),
        or_dash(node.latency_us, |l| ms(l.p99)),
        or_dash(node.schedule_lag_us, |l| ms(l.p99)),
        or_dash(node.publish_to_receive_us, |l| ms(l.p50)),
        or_dash(node.publish_to_receive_us, |l| ms(l.p99)),
        or_dash(node.publish_to_receive_cross_node_us, |l| ms(l.p99)),
        node.published.to_string(),
    ]
}

/// The columns of the agents table every report shows for a run over
/// several agents, and [`agent_cells`] fills.
pub const AGENT_COLUMNS: [&str; 11] = [
    "agent",
    "clients",
    "events/s",
    "errors",
    "latency p50 ms",
    "latency p99 ms",
    "end to end p50 ms",
    "published",
    "cpu %",
    "rss MB",
    "clock offset ms",
];

/// One agent's row of the agents table (a lost agent's address says so).
pub fn agent_cells(agent: &AgentSummary) -> [String; 11] {
    let name = match &agent.lost {
        Some(lost) => format!("{} (lost at {:.1} s)", agent.address, lost.at_s),
        None => agent.address.clone(),
    };
    [
        name,
        agent.clients.to_string(),
        format!("{:.0}", agent.events_per_s),
        agent.errors.to_string(),
        or_dash(agent.latency_us, |l| ms(l.p50)),
        or_dash(agent.latency_us, |l| ms(l.p99)),
        or_dash(agent.end_to_end_us, |l| ms(l.p50)),
        agent.published.to_string(),
        format!("{:.0}", agent.cpu_pct),
        format!("{:.1}", agent.rss_mb),
        format!(
            "{:+.3} ± {:.3}",
            agent.clock_offset_us as f64 / 1_000.0,
            agent.clock_uncertainty_us as f64 / 1_000.0
        ),
    ]
}

/// A count of gaps or duplicates, or `not checked` where no sequence number
/// could be read (a foreign target without `seq_pointer`).
pub fn checked(count: Option<u64>) -> String {
    count.map_or_else(|| "not checked".to_owned(), |n| n.to_string())
}

/// What a run against a foreign target adds, in sentences: its format and
/// how TLS verified the server (in capitals when it did not), what was not
/// measured, the messages that could not be read with an example, and an
/// OpenAI-style stream's figures. Empty on this project's protocol.
pub fn target_notes(s: &Summary) -> Vec<String> {
    let Some(foreign) = &s.foreign else {
        return Vec::new();
    };
    let mut notes = vec![format!(
        "Target {} read as `{}`{}.",
        s.target,
        foreign.target_format,
        match foreign.tls {
            Some("insecure") => {
                ", over TLS WITHOUT certificate verification (insecure): the server was not authenticated"
            }
            Some("ca_cert") => ", over TLS verified against its ca_cert",
            Some(_) => ", over TLS verified against the system's trust store",
            None => "",
        }
    )];
    if s.gaps.is_none() {
        notes.push(
            "Gaps and duplicates not checked: no sequence number to read (seq_pointer).".to_owned(),
        );
    }
    if s.latency_us.is_none() && s.events > 0 {
        notes.push("Delivery latency not measured: no time to read (ts_pointer).".to_owned());
    }
    if let Some(unparsed) = s.errors.unparsed.filter(|&n| n > 0) {
        let example = foreign
            .unparsed_example
            .as_deref()
            .map(|e| format!(", such as {e:?}"))
            .unwrap_or_default();
        notes.push(format!(
            "{unparsed} messages could not be read (errors.unparsed){example}."
        ));
    }
    if let Some(requests) = foreign.requests {
        notes.push(format!(
            "{requests} requests, {} completed, {} output tokens; time to first token p50 {} ms, \
             inter-token latency p50 {} ms and p99 {} ms, decode rate p50 {} tokens/s.",
            s.counts.completed,
            foreign.output_tokens.unwrap_or(0),
            or_dash(s.ttft_ms, |t| format!("{:.1}", t.p50)),
            or_dash(foreign.itl_ms, |t| format!("{:.1}", t.p50)),
            or_dash(foreign.itl_ms, |t| format!("{:.1}", t.p99)),
            or_dash(foreign.tokens_per_s, |r| format!("{:.1}", r.p50)),
        ));
    }
    notes
}

/// What a run's credentials came to, in a sentence: tokens renewed and
/// renewals refused, credentials refused by reason, streams the server
/// ended because of their token. `None` when the summary has no `auth`.
pub fn auth_note(s: &Summary) -> Option<String> {
    let auth = s.auth.as_ref()?;
    let refusals = if auth.refusals.is_empty() {
        "none".to_owned()
    } else {
        (auth.refusals.iter())
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "Tokens: {} renewed, {} renewals refused; credentials refused: {refusals}; streams          ended by their token: {} expired, {} revoked.",
        auth.token_refreshes, auth.refreshes_refused, auth.ended.token_expired, auth.ended.revoked
    ))
}

/// What a run adds in sentences beside its figures: a foreign target's
/// notes ([`target_notes`]), then its credentials' ([`auth_note`]).
pub fn notes(s: &Summary) -> Vec<String> {
    let mut notes = target_notes(s);
    notes.extend(auth_note(s));
    notes
}

/// µs as ms, to the µs.
pub fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1_000.0)
}

/// One finding per broken threshold and per regression, worst first.
pub fn findings(report: &Report) -> Vec<String> {
    let mut critical = Vec::new();
    let mut warnings = Vec::new();
    for group in &report.groups {
        let name = format!("{} ({})", group.scenario, group.transport);
        for summary in &group.runs {
            let run = if group.runs.len() > 1 {
                format!("{name} run {}", summary.repeat)
            } else {
                name.clone()
            };
            if summary
                .foreign
                .as_ref()
                .is_some_and(|f| f.tls == Some("insecure"))
            {
                warnings.push(format!(
                    "warning: {run}: TLS certificates were not verified (insecure)"
                ));
            }
            for agent in &summary.agents {
                let Some(lost) = &agent.lost else { continue };
                let line = format!(
                    "{run}: agent {} lost {:.1} s into the run: {}",
                    agent.address, lost.at_s, lost.why
                );
                if summary.incomplete {
                    critical.push(format!(
                        "{line}; INCOMPLETE: the run stopped, its figures cover what was \
                         measured until then"
                    ));
                } else {
                    warnings.push(format!(
                        "warning: {line}; the run went on without its clients"
                    ));
                }
            }
            if let Some(agent) = summary.agents.iter().find(|a| !a.clock_comparable) {
                warnings.push(format!(
                    "warning: {run}: agent {}'s clock is known to ±{} µs only \
                     (--max-clock-uncertainty): delivery latency is not comparable across agents",
                    agent.address, agent.clock_uncertainty_us
                ));
            }
            if let Some(aborted) = &summary.aborted {
                critical.push(format!(
                    "{run}: ABORTED {:.1} s into the run: `{}` broke (measured {}); its figures \
                     cover the time it ran",
                    aborted.at_s,
                    aborted.threshold,
                    display(aborted.metric, Some(aborted.value))
                ));
            }
            for t in summary.thresholds.iter().filter(|t| !t.ok) {
                let line = format!(
                    "{run}: `{}` broke: measured {}",
                    t.expr,
                    display(t.metric, t.value)
                );
                match t.severity {
                    Severity::Critical => critical.push(line),
                    Severity::Warning => warnings.push(format!("warning: {line}")),
                }
            }
        }
        if let Some(comparison) = group.comparison() {
            for change in &comparison.changes {
                let moved = format!(
                    "{} against {} (budget {})",
                    change_text(change),
                    comparison.baseline,
                    change.budget
                );
                match change.status {
                    Status::Regression => {
                        critical.push(format!("{name}: {} regressed {moved}", change.label));
                    }
                    Status::Unsure => warnings.push(format!(
                        "warning: {name}: {} moved {moved}, its noise unknown: measure both sides with --repeat 3 to decide",
                        change.label
                    )),
                    Status::Inconclusive | Status::WithinNoise => warnings.push(format!(
                        "warning: {name}: {} undecided, moved {moved}: {}",
                        change.label,
                        change.decision_text()
                    )),
                    _ => {}
                }
            }
            if comparison.verdict == GateVerdict::Inconclusive {
                warnings.push(format!(
                    "warning: {name}: INCONCLUSIVE against {}: {}",
                    comparison.baseline,
                    comparison.needs_text()
                ));
            }
        }
    }
    critical.extend(warnings);
    critical
}

/// The verdict in a line: pass, pass with warnings or fail, and of how
/// many runs.
pub fn headline(report: &Report) -> String {
    let runs = report.summaries().count();
    let failed = report
        .summaries()
        .filter(|s| s.verdict == Verdict::Fail)
        .count();
    match report.verdict() {
        Verdict::Pass => format!("PASS: every threshold held in {runs} run(s)"),
        Verdict::Warn => format!(
            "PASS WITH WARNINGS: every critical threshold held in {runs} run(s); some warnings broke"
        ),
        Verdict::Fail => format!("FAIL: {failed} of {runs} run(s) broke a threshold or regressed"),
    }
}

/// The closing lines printed after a run: verdict, findings, capacity.
pub fn verdict_lines(report: &Report) -> String {
    let mut out = format!("verdict: {}", headline(report));
    for finding in findings(report) {
        let _ = write!(out, "\n  - {}", finding.replace('`', ""));
    }
    for capacity in &report.capacity {
        let _ = write!(
            out,
            "\ncapacity: {} (from {})",
            capacity.statement, capacity.source
        );
    }
    out
}

/// A change as people read it: `-20.0%`, or `+0.0200` for absolute budgets.
pub fn change_text(change: &Change) -> String {
    match change.change {
        None => "–".to_owned(),
        Some(value) if change.budget.ends_with('%') => format!("{value:+.1}%"),
        Some(value) => format!("{value:+.4}"),
    }
}

/// One side of a comparison: its median and its noise band.
pub fn estimate_text(estimate: Option<Estimate>) -> String {
    or_dash(estimate, |e| {
        let noise = match e.noise_from {
            NoiseSource::Unknown => "noise unknown".to_owned(),
            NoiseSource::Repeats => format!("±{} over {} runs", number(e.noise), e.runs),
            NoiseSource::Seconds => format!("±{} per second", number(e.noise)),
        };
        format!("{} ({noise})", number(e.median))
    })
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

/// `value` of `metric` as people read it: latencies in ms, rates in %.
pub fn display(metric: &str, value: Option<f64>) -> String {
    let Some(value) = value else {
        return "not measured".to_owned();
    };
    let head = metric.split('.').next().unwrap_or(metric);
    match head {
        "latency"
        | "end_to_end"
        | "schedule_lag"
        | "publish_to_receive"
        | "publish_overhead"
        | "publish_to_receive_same_node"
        | "publish_to_receive_cross_node" => format!("{:.3} ms", value / 1_000.0),
        "connect" | "ttft" | "publish" | "reconnect" | "resume" => format!("{value:.3} ms"),
        "error_rate" | "connect_success" => format!("{:.3}%", value * 100.0),
        "heap" | "rss" if metric.ends_with("recovery") => format!("{:.1}%", value * 100.0),
        "heap" | "rss" => format!("{}/h", bytes_text(value)),
        _ if value.fract() == 0.0 && value.abs() < 1e15 => format!("{value:.0}"),
        _ => format!("{value:.2}"),
    }
}

/// The commit measured, and whether its checkout had uncommitted changes.
pub fn commit(versions: &Versions) -> String {
    match (&versions.git_commit, versions.git_dirty) {
        (Some(commit), Some(true)) => format!("{commit} (with uncommitted changes)"),
        (Some(commit), _) => commit.clone(),
        (None, _) => "not a git checkout".to_owned(),
    }
}
