//! The charts of `report.html`, drawn by plotters as inline SVG: each
//! public function returns one `<svg>` element as a string, to be placed in
//! the page as it is.
//!
//! plotters runs without a font backend: the SVG backend writes every label
//! as a `<text>` element for the viewer's `sans-serif` to render, so no font
//! file is read or embedded (plotters only estimates text widths, for
//! layout). Charts take what the report holds and never panic on it: a
//! missing, NaN, infinite or absurdly large value breaks a line, a flat
//! range is widened, a chart with nothing to draw says "no data", and one
//! plotters cannot draw says why.
//!
//! Two kinds of chart do all the drawing: [`lines`] (one or more panels of
//! line series over a numeric x axis, sharing a legend) and the latency
//! distribution's bars on a log-scaled axis. The other functions choose
//! what goes in them.

use std::ops::Range;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::metrics::timeline::Row;
use crate::summary::Bucket;
use crate::summary::capacity::Capacity;

/// A chart's drawing surface.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// What drawing returns: plotters' error for the SVG backend.
type Drawn = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// One panel's size in pixels (the page scales charts to its width).
const PANEL: (u32, u32) = (560, 300);

/// Series colors, in order (the "tab10" palette, readable on white).
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Grid lines.
const GRID: RGBColor = RGBColor(221, 221, 221);

/// Font sizes as plotters takes them (the SVG gets them divided by 1.24).
const TITLE_SIZE: f64 = 20.0;
const LABEL_SIZE: f64 = 15.0;

/// Roughly how wide a legend character is at [`LABEL_SIZE`], pixels.
const CHAR_WIDTH: i32 = 7;

/// Height of one legend line, pixels.
const LEGEND_LINE: i32 = 20;

/// The largest magnitude plotted. No figure of a run comes near it (1e15
/// µs is 31 years); beyond it plotters' tick placement loses precision,
/// and on an infinite range it never ends.
const LARGEST: f64 = 1e15;

/// Whether `value` can be plotted: finite and at most [`LARGEST`].
fn plottable(value: f64) -> bool {
    value.abs() <= LARGEST
}

/// One line of a chart.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Its legend entry.
    pub label: String,
    /// Its points in order; a `None` or non-finite value breaks the line.
    pub points: Vec<(f64, Option<f64>)>,
    /// Points that did not hold, drawn as crosses on the line.
    pub failed: Vec<(f64, f64)>,
}

impl Series {
    fn new(label: &str, points: Vec<(f64, Option<f64>)>) -> Self {
        Self {
            label: label.to_owned(),
            points,
            failed: Vec::new(),
        }
    }

    /// The unbroken runs of finite points.
    fn segments(&self) -> Vec<Vec<(f64, f64)>> {
        let mut segments = vec![Vec::new()];
        for &(x, y) in &self.points {
            match y.filter(|&y| plottable(x) && plottable(y)) {
                Some(y) => segments.last_mut().expect("never empty").push((x, y)),
                None => segments.push(Vec::new()),
            }
        }
        segments.retain(|s| !s.is_empty());
        segments
    }

    fn finite_failed(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.failed
            .iter()
            .copied()
            .filter(|&(x, y)| plottable(x) && plottable(y))
    }
}

/// One panel of a line chart.
#[derive(Debug, Clone, Default)]
pub struct Panel {
    /// Its title.
    pub title: String,
    /// The x axis, with its unit.
    pub x_desc: String,
    /// The y axis, with its unit.
    pub y_desc: String,
    /// Its lines. Every panel of a chart shows the same series, in the same
    /// order: they share colors and the legend.
    pub series: Vec<Series>,
}

/// A chart of `panels` side by side, with a legend under them when there
/// are several series or failed points.
pub fn lines(panels: &[Panel]) -> String {
    let columns = u32::try_from(panels.len().max(1)).unwrap_or(1);
    let width = PANEL.0 * columns;
    let legend = legend_entries(panels.first());
    let rows = legend_layout(&legend, width)
        .last()
        .map_or(0, |e| e.row + 1);
    let height = PANEL.1 + u32::try_from(rows).unwrap_or(0) * LEGEND_LINE as u32;
    svg((width, height), |root| {
        let (body, strip) = root.split_vertically(PANEL.1);
        draw_legend(&strip, &legend)?;
        for (area, panel) in body.split_evenly((1, panels.len())).iter().zip(panels) {
            draw_panel(area, panel)?;
        }
        Ok(())
    })
}

/// A legend entry: a line or a cross of a color.
struct Entry {
    label: String,
    color: RGBColor,
    cross: bool,
}

/// An entry placed: its row and the x where it starts.
struct Placed<'a> {
    entry: &'a Entry,
    row: usize,
    x: i32,
}

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn legend_entries(panel: Option<&Panel>) -> Vec<Entry> {
    let Some(panel) = panel else {
        return Vec::new();
    };
    let failed = panel.series.iter().any(|s| !s.failed.is_empty());
    if panel.series.len() < 2 && !failed {
        return Vec::new();
    }
    let mut entries: Vec<Entry> = panel
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| Entry {
            label: s.label.clone(),
            color: color(i),
            cross: false,
        })
        .collect();
    if failed {
        entries.push(Entry {
            label: "did not hold".to_owned(),
            color: BLACK,
            cross: true,
        });
    }
    entries
}

/// Entries left to right, wrapping to a new row at `width`.
fn legend_layout(entries: &[Entry], width: u32) -> Vec<Placed<'_>> {
    let width = i32::try_from(width).unwrap_or(i32::MAX);
    let (mut row, mut x) = (0, 16);
    entries
        .iter()
        .map(|entry| {
            let size = 40 + CHAR_WIDTH * i32::try_from(entry.label.len()).unwrap_or(0);
            if x > 16 && x + size > width {
                (row, x) = (row + 1, 16);
            }
            let placed = Placed { entry, row, x };
            x += size;
            placed
        })
        .collect()
}

fn draw_legend(area: &Area, entries: &[Entry]) -> Drawn {
    let (width, _) = area.dim_in_pixel();
    let text = ("sans-serif", LABEL_SIZE)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for placed in legend_layout(entries, width) {
        let (x, y) = (
            placed.x,
            LEGEND_LINE * i32::try_from(placed.row).unwrap_or(0) + 10,
        );
        let style = placed.entry.color.stroke_width(2);
        if placed.entry.cross {
            area.draw(&Cross::new((x + 10, y), 5, style))?;
        } else {
            area.draw(&PathElement::new([(x, y), (x + 24, y)], style))?;
        }
        area.draw(&Text::new(placed.entry.label.as_str(), (x + 30, y), &text))?;
    }
    Ok(())
}

/// The bounds of a panel's points, widened where flat.
fn bounds(points: impl Iterator<Item = (f64, f64)>) -> Option<(Range<f64>, Range<f64>)> {
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, f64::MIN, 0.0_f64, 0.0_f64);
    let mut any = false;
    for (x, y) in points {
        any = true;
        (x_lo, x_hi) = (x_lo.min(x), x_hi.max(x));
        (y_lo, y_hi) = (y_lo.min(y), y_hi.max(y));
    }
    if !any {
        return None;
    }
    if x_hi - x_lo <= f64::EPSILON * x_hi.abs().max(1.0) {
        (x_lo, x_hi) = (x_lo - 0.5, x_hi + 0.5);
    }
    let y_hi = if y_hi > 0.0 { y_hi * 1.1 } else { 1.0 };
    Some((x_lo..x_hi, y_lo..y_hi))
}

fn draw_panel(area: &Area, panel: &Panel) -> Drawn {
    let segments: Vec<Vec<Vec<(f64, f64)>>> = panel.series.iter().map(Series::segments).collect();
    let points = segments.iter().flatten().flatten().copied();
    let failed = panel.series.iter().flat_map(Series::finite_failed);
    let Some((x, y)) = bounds(points.chain(failed)) else {
        return no_data(area, &panel.title);
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", TITLE_SIZE))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_desc.as_str())
        .y_desc(panel.y_desc.as_str())
        .x_label_formatter(&|v| compact(*v))
        .y_label_formatter(&|v| compact(*v))
        .label_style(("sans-serif", LABEL_SIZE))
        .axis_desc_style(("sans-serif", LABEL_SIZE))
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .x_labels(8)
        .y_labels(6)
        .draw()?;
    for (i, (series, segments)) in panel.series.iter().zip(segments).enumerate() {
        let style = color(i).stroke_width(2);
        for segment in segments {
            // A lone point has no line to show it: mark it.
            let marker = if segment.len() == 1 { 3 } else { 0 };
            chart.draw_series(LineSeries::new(segment, style).point_size(marker))?;
        }
        chart.draw_series(series.finite_failed().map(|p| Cross::new(p, 6, style)))?;
    }
    Ok(())
}

/// `title` and "no data" in the middle of `area`.
fn no_data(area: &Area, title: &str) -> Drawn {
    let inner = area.titled(title, ("sans-serif", TITLE_SIZE))?;
    let (width, height) = inner.dim_in_pixel();
    let style = ("sans-serif", TITLE_SIZE)
        .into_font()
        .color(&RGBColor(110, 110, 110))
        .pos(Pos::new(HPos::Center, VPos::Center));
    let middle = (
        i32::try_from(width / 2).unwrap_or(0),
        i32::try_from(height / 2).unwrap_or(0),
    );
    inner.draw(&Text::new("no data", middle, &style))
}

/// The SVG `draw` makes on a white canvas of `size`; if plotters fails, an
/// SVG that says so.
fn svg(size: (u32, u32), draw: impl FnOnce(&Area) -> Drawn) -> String {
    render(size, draw)
        .or_else(|error| {
            render(size, |root| {
                no_data(root, &format!("chart could not be drawn: {error}"))
            })
        })
        .unwrap_or_default()
}

fn render(
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> Drawn,
) -> Result<String, DrawingAreaErrorKind<std::io::Error>> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(out)
}

/// A tick label: short, with k, M and G for large numbers.
fn compact(value: f64) -> String {
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude >= 1e9 {
        (value / 1e9, "G")
    } else if magnitude >= 1e6 {
        (value / 1e6, "M")
    } else if magnitude >= 1e4 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = format!("{scaled:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    let text = if text == "-0" { "0" } else { text };
    format!("{text}{suffix}")
}

/// A duration in µs as people read it on an axis: `250µs`, `2ms`, `1.5s`.
fn duration_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{}s", compact(us / 1e6))
    } else if us >= 1e3 {
        format!("{}ms", compact(us / 1e3))
    } else {
        format!("{}µs", compact(us))
    }
}

/// The unit latencies `max_us` and below read best in: a divisor and its
/// name.
fn latency_unit(max_us: f64) -> (f64, &'static str) {
    if max_us >= 1_000.0 {
        (1_000.0, "ms")
    } else {
        (1.0, "µs")
    }
}

/// A series of one figure of each timeline row, over time.
fn over_time(rows: &[Row], label: &str, value: impl Fn(&Row) -> Option<f64>) -> Series {
    Series::new(label, rows.iter().map(|r| (r.t_s, value(r))).collect())
}

/// A one-panel chart over time.
fn timeline(title: &str, y_desc: &str, series: Vec<Series>) -> String {
    lines(&[Panel {
        title: title.to_owned(),
        x_desc: "time since the load started (s)".to_owned(),
        y_desc: y_desc.to_owned(),
        series,
    }])
}

/// Events received per second.
pub fn throughput(rows: &[Row]) -> String {
    let series = over_time(rows, "events/s", |r| Some(r.events_per_s));
    timeline("Throughput", "events/s", vec![series])
}

/// Delivery latency percentiles (p50, p90, p99, p99.9) per second.
pub fn latency(rows: &[Row]) -> String {
    let max = rows
        .iter()
        .filter_map(|r| r.latency_p999_us.or(r.latency_p99_us))
        .max()
        .unwrap_or(0);
    let (divisor, unit) = latency_unit(max as f64);
    let percentile = |label: &str, us: fn(&Row) -> Option<u64>| {
        over_time(rows, label, |r| us(r).map(|us| us as f64 / divisor))
    };
    let series = vec![
        percentile("p50", |r| r.latency_p50_us),
        percentile("p90", |r| r.latency_p90_us),
        percentile("p99", |r| r.latency_p99_us),
        percentile("p99.9", |r| r.latency_p999_us),
    ];
    timeline("Delivery latency", &format!("latency ({unit})"), series)
}

/// Clients connected or connecting.
pub fn connections(rows: &[Row]) -> String {
    let series = over_time(rows, "clients", |r| Some(f64::from(r.clients)));
    timeline("Connections", "clients", vec![series])
}

/// Failures per second.
pub fn errors(rows: &[Row]) -> String {
    let series = over_time(rows, "errors", |r| Some(r.errors as f64));
    timeline("Errors", "errors/s", vec![series])
}

/// The server's CPU beside the load generator's.
pub fn cpu(rows: &[Row]) -> String {
    let series = vec![
        over_time(rows, "server", |r| r.server_cpu_pct),
        over_time(rows, "load generator", |r| r.loadgen_cpu_pct),
    ];
    timeline("CPU", "% of one core", series)
}

/// The server's resident memory.
pub fn memory(rows: &[Row]) -> String {
    let series = over_time(rows, "server RSS", |r| r.server_rss_mb);
    timeline("Server resident memory", "RSS (MiB)", vec![series])
}

/// The server's live heap, if any row measured it.
pub fn heap(rows: &[Row]) -> Option<String> {
    rows.iter().any(|r| r.server_heap_bytes.is_some()).then(|| {
        let series = over_time(rows, "server heap", |r| {
            r.server_heap_bytes.map(|b| b as f64 / (1024.0 * 1024.0))
        });
        timeline("Server heap", "live heap (MiB)", vec![series])
    })
}

/// Where a capacity point goes on the load axis: a search's level (in its
/// varied unit), else its clients.
fn load(point: &crate::summary::capacity::Point) -> f64 {
    point
        .level
        .map_or(f64::from(point.clients), |level| level as f64)
}

/// Throughput and p99 latency by load, one series per estimate.
pub fn scaling(capacity: &[Capacity]) -> String {
    let max_us = capacity
        .iter()
        .flat_map(|c| &c.points)
        .filter_map(|p| p.latency_p99_us)
        .max()
        .unwrap_or(0);
    let (divisor, unit) = latency_unit(max_us as f64);
    let panel = |title: &str,
                 y_desc: &str,
                 value: &dyn Fn(&crate::summary::capacity::Point) -> Option<f64>| {
        let series = capacity
            .iter()
            .map(|c| Series {
                label: format!("{}: {}", c.transport, c.source),
                points: c.points.iter().map(|p| (load(p), value(p))).collect(),
                failed: c
                    .points
                    .iter()
                    .filter(|p| !p.ok)
                    .filter_map(|p| Some((load(p), value(p)?)))
                    .collect(),
            })
            .collect();
        let vary = capacity.iter().find_map(|c| c.vary).unwrap_or("clients");
        Panel {
            title: title.to_owned(),
            x_desc: vary.to_owned(),
            y_desc: y_desc.to_owned(),
            series,
        }
    };
    lines(&[
        panel("Throughput by load", "events/s", &|p| Some(p.events_per_s)),
        panel("Latency p99 by load", &format!("p99 ({unit})"), &|p| {
            p.latency_p99_us.map(|us| us as f64 / divisor)
        }),
    ])
}

/// The delivery latency distribution: a bar per bucket on a log-scaled
/// latency axis, as a share of the events.
pub fn distribution(buckets: &[Bucket]) -> String {
    let title = "Delivery latency distribution";
    let total: f64 = buckets.iter().map(|b| b.count as f64).sum();
    // Bucket `le` holds latencies above the previous bound, `le / 2`.
    let bars: Vec<(f64, f64, f64)> = buckets
        .iter()
        .filter(|b| b.count > 0 && b.le_us > 0 && plottable(b.le_us as f64))
        .map(|b| {
            let le = b.le_us as f64;
            (le / 2.0, le, 100.0 * b.count as f64 / total)
        })
        .collect();
    svg(PANEL, |root| {
        let (Some(first), Some(last)) = (bars.first(), bars.last()) else {
            return no_data(root, title);
        };
        let top = bars.iter().map(|b| b.2).fold(0.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", TITLE_SIZE))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d((first.0..last.1).log_scale(), 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("delivery latency (log scale)")
            .y_desc("share of events (%)")
            .x_label_formatter(&|v| duration_us(*v))
            .y_label_formatter(&|v| compact(*v))
            .label_style(("sans-serif", LABEL_SIZE))
            .axis_desc_style(("sans-serif", LABEL_SIZE))
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .draw()?;
        chart.draw_series(bars.iter().map(|&(lo, hi, share)| {
            Rectangle::new([(lo, 0.0), (hi, share)], color(0).mix(0.8).filled())
        }))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;
    use crate::summary::capacity::Point;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(compact(0.0), "0");
        assert_eq!(compact(2.5), "2.5");
        assert_eq!(compact(1_500.0), "1500");
        assert_eq!(compact(150_000.0), "150k");
        assert_eq!(compact(2_250_000.0), "2.25M");
        assert_eq!(duration_us(250.0), "250µs");
        assert_eq!(duration_us(2_000.0), "2ms");
        assert_eq!(duration_us(1_500_000.0), "1.5s");
    }

    #[test]
    fn lines_break_at_missing_and_non_finite_values() {
        let series = Series::new(
            "x",
            vec![
                (0.0, Some(1.0)),
                (1.0, Some(2.0)),
                (2.0, None),
                (3.0, Some(f64::NAN)),
                (4.0, Some(3.0)),
                (f64::INFINITY, Some(3.0)),
            ],
        );
        assert_eq!(
            series.segments(),
            [vec![(0.0, 1.0), (1.0, 2.0)], vec![(4.0, 3.0)]]
        );
    }

    #[test]
    fn flat_and_empty_ranges_are_widened_or_refused() {
        assert_eq!(bounds(std::iter::empty()), None);
        assert_eq!(bounds([(5.0, 0.0)].into_iter()), Some((4.5..5.5, 0.0..1.0)));
        let (x, y) = bounds([(0.0, 10.0), (2.0, 20.0)].into_iter()).unwrap();
        assert_eq!(x, 0.0..2.0);
        assert!((y.end - 22.0).abs() < 1e-9 && y.start == 0.0);
    }

    #[test]
    fn charts_have_titles_labels_and_units_as_svg_text() {
        let rows = crate::report::fixture::summary(
            &crate::report::fixture::scenario("clients-10", &[]),
            6,
        )
        .timeline;
        let svg = latency(&rows);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for text in [
            "Delivery latency",
            "latency (ms)",
            "p50",
            "p90",
            "p99.9",
            "time since the load started (s)",
        ] {
            assert!(
                svg.contains(&format!(">\n{text}\n</text>")),
                "no {text} in {svg}"
            );
        }
        assert!(svg.contains("<polyline"), "lines are drawn");
    }

    fn assert_svg(svg: &str) {
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
    }

    #[test]
    fn no_chart_panics_on_empty_non_finite_extreme_or_single_points() {
        let row = fixture::summary(&fixture::scenario("single", &[]), 1).timeline[0].clone();
        let non_finite = Row {
            t_s: f64::NAN,
            events_per_s: f64::INFINITY,
            server_cpu_pct: Some(f64::NAN),
            server_rss_mb: Some(f64::NEG_INFINITY),
            ..row.clone()
        };
        let extreme = Row {
            t_s: 1e300,
            events_per_s: f64::MAX,
            latency_p999_us: Some(u64::MAX),
            server_heap_bytes: Some(u64::MAX),
            ..row.clone()
        };
        let same_second = [
            row.clone(),
            Row {
                clients: 0,
                ..row.clone()
            },
        ];
        let timelines: [&[Row]; 5] = [
            &[],
            std::slice::from_ref(&row),
            std::slice::from_ref(&non_finite),
            &[row.clone(), extreme],
            &same_second,
        ];
        for rows in timelines {
            for svg in [
                throughput(rows),
                latency(rows),
                connections(rows),
                errors(rows),
            ] {
                assert_svg(&svg);
            }
            for svg in [cpu(rows), memory(rows)].into_iter().chain(heap(rows)) {
                assert_svg(&svg);
            }
        }
        let bucket = |le_us, count| Bucket { le_us, count };
        for buckets in [
            vec![bucket(0, 3)],
            vec![bucket(1, 1)],
            vec![bucket(8, 0), bucket(16, 0)],
            vec![bucket(1, u64::MAX / 2), bucket(u64::MAX, u64::MAX / 2)],
        ] {
            assert_svg(&distribution(&buckets));
        }
        let point = |events_per_s, latency_p99_us| Point {
            level: None,
            clients: 10,
            events_per_s,
            latency_p99_us,
            server_cpu_pct: None,
            loadgen_cpu_pct: None,
            ok: false,
        };
        for points in [
            vec![],
            vec![point(f64::NAN, None)],
            vec![point(1.0, Some(u64::MAX)), point(f64::MAX, Some(0))],
        ] {
            let capacity = Capacity {
                transport: "sse",
                source: "ramp".to_owned(),
                knee_clients: None,
                knee_events_per_s: None,
                limit: crate::summary::capacity::Limit::Errors,
                vary: None,
                knee_level: None,
                broke: None,
                lower_bound: false,
                statement: String::new(),
                points,
            };
            assert_svg(&scaling(&[capacity]));
        }
    }

    #[test]
    fn nothing_to_draw_says_no_data() {
        for svg in [
            throughput(&[]),
            latency(&[]),
            distribution(&[]),
            scaling(&[]),
        ] {
            assert!(svg.contains("no data"), "{svg}");
        }
        let nan = Row {
            events_per_s: f64::NAN,
            ..crate::report::fixture::summary(&crate::report::fixture::scenario("single", &[]), 1)
                .timeline[0]
                .clone()
        };
        assert!(throughput(std::slice::from_ref(&nan)).contains("no data"));
        assert!(heap(std::slice::from_ref(&nan)).is_none());
        // A single row is one point, marked.
        let one = connections(std::slice::from_ref(&nan));
        assert!(one.contains("<circle"), "{one}");
    }
}
