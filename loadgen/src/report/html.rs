//! `report.html`: the report as one page for people, with charts. It says
//! what `report.md` says, in the same order: the verdict with every broken
//! threshold and regression; the capacity estimate with its scaling chart;
//! the key figures of every run; one section per scenario and transport
//! with its thresholds one by one, its comparison with a baseline and, for
//! each run, its latency figures and charts over time; and the manifest.
//!
//! The page fetches nothing when it is viewed: the style is inline, the
//! charts are inline SVG ([`chart`]), there is no script, font or image. It
//! is also well-formed XML (every element closed, attributes quoted, all
//! text escaped), so tools can read it as XHTML.

use std::fmt::Write as _;

use quick_xml::escape::{escape, partial_escape};

use super::chart;
use super::text::{
    self, AGENT_COLUMNS, NODE_COLUMNS, agent_cells, change_text, checked, commit, display,
    estimate_text, findings, headline, ms, node_cells, notes, or_dash,
};
use crate::analysis::compare::labelled;
use crate::scenario::Severity;
use crate::summary::comparison::{Comparison, Status};
use crate::summary::verdict::Verdict;
use crate::summary::{Group, LatencyUs, Millis, Report, Summary};

/// The page's style: readable tables, verdict colors, a grid of charts.
const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; color: #1f2328;
  max-width: 1280px; margin: 0 auto; padding: 0 1.5em 3em; line-height: 1.45; }
h1 { font-size: 1.5em; margin: 0.2em 0; }
h2 { margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
h3 { margin-top: 1.5em; }
header.verdict { margin: 1.5em 0; padding: 0.8em 1.2em; border-left: 0.6em solid; border-radius: 6px; }
.verdict.pass, .badge.pass { background: #dafbe1; border-color: #1a7f37; }
.verdict.warn, .badge.warn { background: #fff8c5; border-color: #9a6700; }
.verdict.fail, .badge.fail { background: #ffebe9; border-color: #cf222e; }
.badge { font-size: 0.7em; padding: 0.1em 0.5em; border-radius: 1em; border: 1px solid; vertical-align: middle; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr.fail td { background: #ffebe9; }
tr.warn td { background: #fff8c5; }
tr.good td { background: #dafbe1; }
.scroll { overflow-x: auto; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 1em; }
figure { margin: 0.5em 0; }
svg { display: block; width: 100%; height: auto; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; }
";

/// The CSS class of a verdict.
fn class(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "pass",
        Verdict::Warn => "warn",
        Verdict::Fail => "fail",
    }
}

/// `text` escaped, with its spans between backticks as `<code>`.
fn with_code(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(i, part)| match i % 2 {
            1 => format!("<code>{}</code>", escape(part)),
            _ => escape(part).into_owned(),
        })
        .collect()
}

/// A table row of `cells` (HTML), with a CSS class if one is given.
fn row(class: &str, cells: &[String]) -> String {
    let mut out = if class.is_empty() {
        "<tr>".to_owned()
    } else {
        format!("<tr class=\"{class}\">")
    };
    for cell in cells {
        let _ = write!(out, "<td>{cell}</td>");
    }
    out.push_str("</tr>\n");
    out
}

/// A table with the column names `head` (text) and `rows` (HTML).
fn table(head: &[&str], rows: &[String]) -> String {
    let mut out = String::from("<div class=\"scroll\"><table>\n<thead><tr>");
    for name in head {
        let _ = write!(out, "<th>{}</th>", escape(*name));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    out.extend(rows.iter().map(String::as_str));
    out.push_str("</tbody></table></div>\n");
    out
}

/// A chart's SVG in a figure.
fn figure(svg: &str) -> String {
    format!("<figure>{svg}</figure>\n")
}

/// The verdict, the run's id and label, and every finding.
fn verdict(report: &Report) -> String {
    let mut out = format!(
        "<header class=\"verdict {}\">\n<h1>streamgauge: {}</h1>\n",
        class(report.verdict()),
        escape(headline(report))
    );
    let label = report
        .label
        .as_deref()
        .map(|l| format!(" (label <code>{}</code>)", escape(l)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "<p>Run <code>{}</code>{label}, started {}.</p>",
        escape(&report.run_id),
        escape(&report.started_at)
    );
    let findings = findings(report);
    if !findings.is_empty() {
        out.push_str("<ul>\n");
        for finding in &findings {
            let _ = writeln!(out, "<li>{}</li>", with_code(finding));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</header>\n");
    out
}

/// Each capacity estimate in a sentence, and the scaling chart.
fn capacity(report: &Report) -> String {
    if report.capacity.is_empty() {
        return String::new();
    }
    let mut out = String::from("<section id=\"capacity\">\n<h2>Capacity</h2>\n<ul>\n");
    for capacity in &report.capacity {
        let _ = writeln!(
            out,
            "<li>{} (from {})</li>",
            escape(&capacity.statement),
            escape(&capacity.source)
        );
    }
    out.push_str("</ul>\n");
    out.push_str(&figure(&chart::scaling(&report.capacity)));
    out.push_str("</section>\n");
    out
}

/// The anchor of the section of run `repeat` of group `group`.
fn anchor(group: usize, repeat: u32) -> String {
    format!("run-{group}-{repeat}")
}

/// Every run's key figures, one row each, linked to its section.
fn key_figures(report: &Report) -> String {
    let mut rows = Vec::new();
    for (i, group) in report.groups.iter().enumerate() {
        for s in &group.runs {
            let latency = |p: fn(&LatencyUs) -> u64| or_dash(s.latency_us, |l| ms(p(&l)));
            // Only runs that did not pass stand out.
            let highlight = match s.verdict {
                Verdict::Pass => "",
                other => class(other),
            };
            rows.push(row(
                highlight,
                &[
                    format!(
                        "<a href=\"#{}\">{}</a>",
                        anchor(i, s.repeat),
                        escape(&s.scenario)
                    ),
                    s.transport.to_owned(),
                    s.repeat.to_string(),
                    s.clients.to_string(),
                    format!("{:.0}", s.events_per_s),
                    latency(|l| l.p50),
                    latency(|l| l.p99),
                    latency(|l| l.p999),
                    error_total(s).to_string(),
                    or_dash(s.error_rate, |r| format!("{:.3}%", r * 100.0)),
                    or_dash(s.gaps, |n| n.to_string()),
                    or_dash(s.dups, |n| n.to_string()),
                    or_dash(s.server.cpu_pct, |c| format!("{c:.0}")),
                    or_dash(s.server.rss_mb, |r| format!("{:.1}", r.peak)),
                    or_dash(s.loadgen_cpu_pct, |c| format!("{c:.0}")),
                    s.verdict.as_str().to_owned(),
                ],
            ));
        }
    }
    let head = [
        "scenario",
        "transport",
        "run",
        "clients",
        "events/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "error rate",
        "gaps",
        "dups",
        "server CPU %",
        "server RSS peak MiB",
        "load generator CPU %",
        "verdict",
    ];
    format!(
        "<section id=\"figures\">\n<h2>Key figures</h2>\n{}</section>\n",
        table(&head, &rows)
    )
}

fn error_total(s: &Summary) -> u64 {
    let e = &s.errors;
    e.connect + e.http_status + e.protocol + e.timeout + e.closed
}

/// Each threshold of each run of `group`: what it asked, what was
/// measured, whether it held and how much that matters.
fn thresholds(group: &Group) -> String {
    let mut rows = Vec::new();
    for summary in &group.runs {
        for t in &summary.thresholds {
            let (severity, broke) = match t.severity {
                Severity::Critical => ("critical", ("fail", "BROKE")),
                Severity::Warning => ("warning", ("warn", "broke (warning)")),
            };
            let (class, result) = if t.ok { ("", "held") } else { broke };
            let origin = if t.default { " (default)" } else { "" };
            rows.push(row(
                class,
                &[
                    format!("<code>{}</code>", escape(&t.expr)),
                    escape(display(t.metric, t.value)).into_owned(),
                    result.to_owned(),
                    format!("{severity}{origin}"),
                    summary.repeat.to_string(),
                ],
            ));
        }
    }
    if rows.is_empty() {
        return "<p>No thresholds.</p>\n".to_owned();
    }
    table(
        &["threshold", "measured", "result", "severity", "run"],
        &rows,
    )
}

/// The CSS class of a comparison's decision.
fn status_class(status: Status) -> &'static str {
    match status {
        Status::Regression => "fail",
        Status::WithinNoise | Status::Unsure | Status::Inconclusive => "warn",
        Status::Improved => "good",
        Status::Unchanged | Status::NotMeasured => "",
    }
}

/// A scenario's figures beside its baseline's, and how that was decided.
fn comparison(comparison: &Comparison) -> String {
    let rows: Vec<String> = comparison
        .changes
        .iter()
        .map(|change| {
            let p_value = or_dash(change.p_value, |p| {
                if p < 0.001 {
                    "&lt; 0.001".to_owned()
                } else {
                    format!("{p:.3}")
                }
            });
            row(
                status_class(change.status),
                &[
                    escape(labelled(&change.label, change.unit)).into_owned(),
                    escape(estimate_text(change.baseline)).into_owned(),
                    escape(estimate_text(change.current)).into_owned(),
                    escape(change_text(change)).into_owned(),
                    p_value,
                    escape(&change.budget).into_owned(),
                    escape(change.decision_text()).into_owned(),
                ],
            )
        })
        .collect();
    let head = [
        "figure", "baseline", "current", "change", "p-value", "budget", "status",
    ];
    format!(
        "<h3>Comparison with the baseline</h3>\n<p>Baseline: <code>{}</code></p>\n{}<p>How the decision was made: {}.</p>\n",
        escape(&comparison.baseline),
        table(&head, &rows),
        escape(&comparison.method)
    )
}

/// A latency figure's row: `name` and its percentiles in ms (a dash where
/// it has none).
fn percentiles(name: &str, ms: [Option<f64>; 6]) -> String {
    let mut cells = vec![escape(name).into_owned()];
    cells.extend(ms.map(|v| or_dash(v, |v| format!("{v:.3}"))));
    row("", &cells)
}

fn latency_row(name: &str, us: Option<LatencyUs>) -> Option<String> {
    let l = us?;
    let ms = |us: u64| Some(us as f64 / 1_000.0);
    Some(percentiles(
        name,
        [
            ms(l.p50),
            ms(l.p90),
            ms(l.p95),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
        ],
    ))
}

fn millis_row(name: &str, millis: Option<Millis>) -> Option<String> {
    let m = millis?;
    Some(percentiles(
        name,
        [Some(m.p50), None, Some(m.p95), Some(m.p99), None, None],
    ))
}

/// Every latency a run measured, in ms.
fn latencies(s: &Summary) -> String {
    let rows: Vec<String> = [
        latency_row("delivery", s.latency_us),
        latency_row("schedule lag (paced streams)", s.schedule_lag_us),
        latency_row("end to end (topics)", s.end_to_end_us),
        latency_row("publish to receive (topics)", s.publish_to_receive_us),
        latency_row("publisher overhead (topics)", s.publish_overhead_us),
        latency_row(
            "publish to receive, same node",
            s.publish_to_receive_same_node_us,
        ),
        latency_row(
            "publish to receive, cross-node",
            s.publish_to_receive_cross_node_us,
        ),
        millis_row("connect", s.connect_ms),
        millis_row("first token or row", s.ttft_ms),
        millis_row("publish", s.publish_ms),
        millis_row("reconnect", s.reconnect_ms),
        millis_row("resume", s.resume_ms),
    ]
    .into_iter()
    .flatten()
    .collect();
    if rows.is_empty() {
        return "<p>No latency measured.</p>\n".to_owned();
    }
    let head = ["latency (ms)", "p50", "p90", "p95", "p99", "p99.9", "max"];
    table(&head, &rows)
}

/// What a run delivered and what failed, in a sentence.
fn counts(s: &Summary) -> String {
    let e = &s.errors;
    let behind = s
        .behind_at_end
        .map(|b| format!(", {b} behind at the end"))
        .unwrap_or_default();
    format!(
        "<p>{} events in {:.1} s ({:.0} events/s, {:.2} MiB/s) from {}; errors: {} connect, {} HTTP status, {} protocol, {} timeout, {} closed; gaps {}, dups {}{behind}.</p>\n{}",
        s.events,
        s.duration_s,
        s.events_per_s,
        s.bytes_per_s / (1024.0 * 1024.0),
        escape(&s.target),
        e.connect,
        e.http_status,
        e.protocol,
        e.timeout,
        e.closed,
        checked(s.gaps),
        checked(s.dups),
        notes(s)
            .iter()
            .map(|note| format!("<p>{}</p>\n", escape(note)))
            .collect::<String>(),
    )
}

/// A run's charts over time, and its latency distribution.
fn charts(s: &Summary) -> String {
    let rows = &s.timeline;
    let mut svgs = vec![
        chart::throughput(rows),
        chart::latency(rows),
        chart::distribution(&s.latency_distribution),
        chart::connections(rows),
        chart::errors(rows),
        chart::cpu(rows),
        chart::memory(rows),
    ];
    svgs.extend(chart::heap(rows));
    let mut out = String::from("<div class=\"charts\">\n");
    out.extend(svgs.iter().map(|svg| figure(svg)));
    out.push_str("</div>\n");
    out
}

/// One run of group `index`: its counts, memory analysis, latencies and
/// charts.
fn run(index: usize, group: &Group, s: &Summary) -> String {
    let title = if group.runs.len() > 1 {
        format!("Run {} ({})", s.repeat, s.verdict.as_str())
    } else {
        "Figures over time".to_owned()
    };
    let memory = s
        .memory
        .as_ref()
        .map(|m| format!("<p>Memory: {}</p>\n", with_code(&m.statement)))
        .unwrap_or_default();
    format!(
        "<section id=\"{}\">\n<h3>{}</h3>\n{}{memory}{}{}{}{}</section>\n",
        anchor(index, s.repeat),
        escape(&title),
        counts(s),
        latencies(s),
        nodes(s),
        agents(s),
        charts(s)
    )
}

/// The agents table of a run over several agents (nothing otherwise).
fn agents(s: &Summary) -> String {
    if s.agents.is_empty() {
        return String::new();
    }
    let rows: Vec<String> = (s.agents.iter())
        .map(|agent| {
            row(
                "",
                &agent_cells(agent).map(|cell| escape(&cell).into_owned()),
            )
        })
        .collect();
    format!("<h4>Agents</h4>\n{}", table(&AGENT_COLUMNS, &rows))
}

/// The nodes table of a server of several nodes (nothing for one).
fn nodes(s: &Summary) -> String {
    if s.nodes.len() < 2 {
        return String::new();
    }
    let rows: Vec<String> = (s.nodes.iter())
        .map(|node| row("", &node_cells(node).map(|cell| escape(&cell).into_owned())))
        .collect();
    format!("<h4>Nodes</h4>\n{}", table(&NODE_COLUMNS, &rows))
}

/// The section of one scenario on one transport.
fn group(index: usize, group: &Group) -> String {
    let verdict = group.verdict();
    let mut out = format!(
        "<section id=\"scenario-{index}\">\n<h2>{} ({}) <span class=\"badge {}\">{}</span></h2>\n<h3>Thresholds</h3>\n",
        escape(&group.scenario),
        group.transport,
        class(verdict),
        verdict.as_str()
    );
    out.push_str(&thresholds(group));
    if let Some(c) = group.comparison() {
        out.push_str(&comparison(c));
    }
    for summary in &group.runs {
        out.push_str(&run(index, group, summary));
    }
    out.push_str("</section>\n");
    out
}

/// A row of the manifest: a fact's name and its value (text).
fn fact(name: &str, value: &str) -> String {
    format!(
        "<tr><th>{}</th><td>{}</td></tr>\n",
        escape(name),
        escape(value)
    )
}

/// What makes the figures reproducible: versions, machine, limits, the
/// server measured, CPU seconds, and each scenario exactly as it ran.
fn manifest(report: &Report) -> String {
    let env = &report.environment;
    let m = &env.machine;
    let l = &env.limits;
    let mut facts = vec![
        fact("streamgauge", env.versions.streamgauge),
        fact("commit", &commit(&env.versions)),
        fact("compiler", env.versions.rustc),
        fact(
            "machine",
            &format!(
                "{} cores ({}), {} MiB memory, kernel {}",
                m.cores,
                m.cpu.as_deref().unwrap_or("CPU unknown"),
                or_dash(m.memory_mb, |mb| format!("{mb:.0}")),
                m.kernel.as_deref().unwrap_or("unknown")
            ),
        ),
        fact(
            "limits",
            &format!(
                "open files {} (hard {}), ephemeral ports {}",
                or_dash(l.open_files, |n| n.to_string()),
                or_dash(l.open_files_hard, |n| n.to_string()),
                or_dash(l.ephemeral_ports, |[a, b]| format!("{a}–{b}"))
            ),
        ),
    ];
    if let Some(first) = report.summaries().next() {
        let server = &first.manifest.server;
        let program = format!("{} {}", server.program, server.args.join(" "));
        facts.push(fact("server under test", program.trim_end()));
        facts.push(fact("target", &first.target));
    }
    let mut out = String::from("<section id=\"manifest\">\n<h2>Manifest</h2>\n<table>\n<tbody>\n");
    out.extend(facts.iter().map(String::as_str));
    out.push_str("</tbody></table>\n");
    out.push_str(&costs(report));
    out.push_str(&scenarios(report));
    out.push_str("</section>\n");
    out
}

/// What each run cost: CPU seconds, in all and per event delivered, and
/// the load generator's processes and memory.
fn costs(report: &Report) -> String {
    let rows: Vec<String> = report
        .summaries()
        .map(|s| {
            let run = [
                escape(&s.scenario).into_owned(),
                s.transport.to_owned(),
                s.repeat.to_string(),
            ];
            row("", &[&run[..], &text::costs(s)].concat())
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let head = [
        "scenario",
        "transport",
        "run",
        "server CPU s",
        "load generator CPU s",
        "server µs / event",
        "load generator µs / event",
        "load generator processes",
        "load generator RSS peak MiB",
    ];
    table(&head, &rows)
}

/// Each scenario exactly as it ran, as JSON.
fn scenarios(report: &Report) -> String {
    let mut out = String::new();
    for group in &report.groups {
        let scenario = &group.runs[0].manifest.scenario;
        let json = serde_json::to_string_pretty(scenario).expect("a scenario serializes");
        let _ = writeln!(
            out,
            "<details><summary>Scenario {} ({}), as run</summary><pre>{}</pre></details>",
            escape(&group.scenario),
            group.transport,
            // Quotes need no escaping in text, and JSON is full of them.
            partial_escape(&json)
        );
    }
    out
}

/// The HTML of `report`: one self-contained page.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n<title>streamgauge {}: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&report.run_id),
        class(report.verdict())
    );
    out.push_str(&verdict(report));
    out.push_str(&capacity(report));
    out.push_str(&key_figures(report));
    for (index, g) in report.groups.iter().enumerate() {
        out.push_str(&group(index, g));
    }
    out.push_str(&manifest(report));
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use quick_xml::Reader;
    use quick_xml::events::{BytesStart, Event};

    use super::*;
    use crate::report::fixture;

    /// The entities XML defines without a DTD.
    const ENTITIES: [&str; 5] = ["lt", "gt", "amp", "quot", "apos"];

    fn check_attributes(element: &BytesStart) {
        for attribute in element.attributes() {
            let attribute = attribute.expect("attributes are quoted and unique");
            attribute
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .expect("attribute values escape what they must");
            let name = attribute.key.as_ref();
            let value = attribute.value.as_ref();
            assert_ne!(name, b"src", "nothing is fetched");
            if name == b"href" {
                assert!(value.starts_with(b"#"), "links stay in the page");
            }
        }
    }

    /// Parses `page` as XML: one root, every element closed, attributes
    /// quoted, only XML's own entities. Returns the elements' names in the
    /// order they open.
    fn elements(page: &str) -> Vec<String> {
        let mut reader = Reader::from_str(page);
        let (mut names, mut depth, mut roots) = (Vec::new(), 0usize, 0);
        loop {
            let event = reader
                .read_event()
                .unwrap_or_else(|e| panic!("not XML at {}: {e}", reader.error_position()));
            match event {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    check_attributes(e);
                    roots += usize::from(depth == 0);
                    depth += usize::from(matches!(event, Event::Start(_)));
                    names.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                }
                Event::End(_) => depth -= 1,
                Event::GeneralRef(r) => {
                    let name = r.decode().unwrap();
                    let known = ENTITIES.contains(&name.as_ref())
                        || r.resolve_char_ref().is_ok_and(|c| c.is_some());
                    assert!(known, "&{name}; is not an XML entity");
                }
                Event::Text(t) => assert!(
                    depth > 0 || t.decode().unwrap().trim().is_empty(),
                    "text outside the root"
                ),
                Event::Eof => break,
                Event::DocType(_) => assert!(names.is_empty(), "DOCTYPE first"),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((depth, roots), (0, 1), "one root, closed");
        names
    }

    fn count(names: &[String], name: &str) -> usize {
        names.iter().filter(|n| *n == name).count()
    }

    #[test]
    fn the_page_is_xml_with_every_chart_and_fetches_nothing() {
        let report = fixture::report();
        let page = render(&report);
        let names = elements(&page);
        assert_eq!(names[..3], ["html", "head", "meta"]);
        for fetching in ["script", "link", "img", "iframe", "object", "embed"] {
            assert_eq!(count(&names, fetching), 0, "a <{fetching}> in the page");
        }
        let runs = report.summaries().count();
        assert_eq!(runs, 5);
        assert!(!report.capacity.is_empty());
        // Seven charts per run, the heap where it was sampled, the scaling.
        assert_eq!(count(&names, "svg"), 7 * runs + 1 + 1);
        assert_eq!(count(&names, "section"), 1 + 1 + 4 + runs + 1);
        assert_eq!(page.matches("<p>Memory: ").count(), runs, "RSS was sampled");
    }

    #[test]
    fn a_report_that_measured_nothing_is_xml_and_says_so() {
        let empty = fixture::empty();
        let page = render(&empty);
        let names = elements(&page);
        assert_eq!(count(&names, "svg"), 7);
        assert!(page.contains("no data") && page.contains("No latency measured."));
        let nothing = Report {
            groups: Vec::new(),
            capacity: Vec::new(),
            ..empty
        };
        let names = elements(&render(&nothing));
        assert_eq!(count(&names, "svg"), 0);
        assert_eq!(count(&names, "section"), 2, "key figures and manifest");
    }

    #[test]
    fn text_from_the_run_is_escaped() {
        let page = render(&fixture::report());
        let names = elements(&page);
        assert_eq!(count(&names, "script"), 0);
        for escaped in [
            "&lt;script&gt;&amp;&quot;odd&apos;",
            "branch &lt;x&gt; &amp; &quot;y&quot;",
            "<code>latency.p99&lt;1ms</code>",
            "main &lt;abc&gt;",
        ] {
            assert!(page.contains(escaped), "no {escaped}");
        }
        assert!(!page.contains("<script>&"));
    }

    #[test]
    fn the_verdict_comes_first_then_thresholds_comparison_and_manifest() {
        let page = render(&fixture::report());
        let at = |text: &str| page.find(text).unwrap_or_else(|| panic!("no {text}"));
        assert!(at("<header class=\"verdict fail\">") < at("<section"));
        assert!(at("streamgauge: FAIL") < at("id=\"capacity\""));
        assert!(at("id=\"capacity\"") < at("id=\"figures\""));
        assert!(at("id=\"figures\"") < at("id=\"scenario-0\""));
        assert!(at("<code>latency.p50&lt;0.1ms</code> broke") < at("id=\"figures\""));
        // The repeated scenario: thresholds, comparison, then its runs.
        let fifty = at("id=\"scenario-1\"");
        let comparison = fifty + page[fifty..].find("Comparison with the baseline").unwrap();
        assert!(fifty + page[fifty..].find("<h3>Thresholds</h3>").unwrap() < comparison);
        assert!(comparison < at("id=\"run-1-1\"") && at("id=\"run-1-2\"") < at("id=\"manifest\""));
        for head in ["<th>p-value</th>", "<th>budget</th>", "<th>status</th>"] {
            assert!(page[comparison..].contains(head), "no {head}");
        }
        for broke in [
            "<tr class=\"fail\"><td><code>error_rate&lt;5%</code></td>",
            "<tr class=\"warn\"><td><code>latency.p50&lt;0.1ms</code></td>",
            "<tr><td><code>latency.p99&lt;1ms</code></td><td>0.389 ms</td><td>held</td>",
        ] {
            assert!(page.contains(broke), "no {broke}");
        }
    }
}
