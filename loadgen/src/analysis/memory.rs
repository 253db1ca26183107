//! The server's memory over a run, for leak hunting: how fast its live heap
//! (dhat's count, from a server built with the `dhat-heap` feature) and its
//! RSS grew once warmed up, and how much of the memory a burst of
//! connections took came back after they closed.
//!
//! Growth is the slope of a least-squares line through the samples of the
//! run's main load (its longest phase) after a warm-up (the first fifth of
//! the run, at least two seconds), in bytes per hour, with its 95 %
//! confidence interval and R²: a figure *grew* when the whole interval is
//! above zero; otherwise its growth is indistinguishable from zero.
//!
//! Retention per stream compares like with like: the last sample of each
//! stretch with no client connected (the end of a phase of zero clients,
//! when the server has had the most time to close what they left), after
//! the warm-up, against the streams opened so far. While streams come and go,
//! what they hold in flight (buffers, queued events, a catch-up's page)
//! swings the live heap by far more than a small leak adds in seconds; with
//! none connected, what is left is what they kept. The slope (bytes per
//! stream opened) is a two-point difference with two such samples and a
//! least-squares fit, with its 95 % interval, from three; the live heap
//! *grew* too when that interval is above zero.
//! Recovery applies to a run whose load rose from at most half its peak and
//! fell back to at most half: of the memory taken between the last quiet
//! second before the peak and the highest sample after it, the share given
//! back by the end.
//!
//! The live heap and RSS are always reported side by side, so that memory
//! the allocator keeps (RSS up, live heap back) is not mistaken for a leak.

use super::stats::fit_line;
use crate::metrics::timeline::Row;
use crate::summary::memory::{Burst, Figures, Grew, Memory};

/// The warm-up left out of the growth fit: this share of the run…
const WARM_UP_SHARE: f64 = 0.2;

/// …and at least this many seconds.
const WARM_UP_S: f64 = 2.0;

/// Below this much taken by a burst, there is nothing to recover, bytes
/// (heap, RSS).
const TAKEN_AT_LEAST: [f64; 2] = [16.0 * 1024.0, 1024.0 * 1024.0];

/// Seconds in an hour.
const HOUR_S: f64 = 3_600.0;

/// Analyses `timeline`; `None` without a single memory sample.
pub fn analyse(timeline: &[Row]) -> Option<Memory> {
    let heap = figures(
        timeline,
        |r| r.server_heap_bytes.map(|b| b as f64),
        TAKEN_AT_LEAST[0],
    );
    let rss = figures(
        timeline,
        |r| r.server_rss_mb.map(|mb| mb * 1024.0 * 1024.0),
        TAKEN_AT_LEAST[1],
    );
    if heap.is_none() && rss.is_none() {
        return None;
    }
    let grew = match (
        heap.map(|h| (h.grew, h.samples)),
        rss.map(|r| (r.grew, r.samples)),
    ) {
        (Some((true, _)), Some((true, _))) => Grew::Both,
        (Some((true, _)), _) => Grew::Heap,
        (_, Some((true, _))) => Grew::Rss,
        (h, r) if h.is_some_and(|h| h.1 >= 3) || r.is_some_and(|r| r.1 >= 3) => Grew::Neither,
        _ => Grew::Unknown,
    };
    Some(Memory {
        heap,
        rss,
        grew,
        statement: statement(heap.as_ref(), rss.as_ref(), grew),
    })
}

/// The analysis of one figure (`value` of a row, bytes).
fn figures(
    timeline: &[Row],
    value: impl Fn(&Row) -> Option<f64>,
    taken_at_least: f64,
) -> Option<Figures> {
    let samples: Vec<(&Row, f64)> = timeline
        .iter()
        .filter_map(|r| value(r).map(|v| (r, v)))
        .collect();
    if samples.is_empty() {
        return None;
    }
    let points = growth_points(timeline, &samples);
    let line = fit_line(&points, 0.05);
    let (retained, retained_ci95) = per_stream(&quiet_points(timeline, &value));
    let burst = burst(&samples);
    Some(Figures {
        growth_per_hour: line.map(|l| l.slope),
        growth_ci95: line.map(|l| [l.low, l.high]),
        r2: line.and_then(|l| l.r2),
        samples: points.len(),
        retained_per_stream: retained,
        retained_per_stream_ci95: retained_ci95,
        grew: line.is_some_and(|l| l.low > 0.0) || retained_ci95.is_some_and(|[low, _]| low > 0.0),
        burst,
        recovery: burst
            .filter(|b| b.peak - b.before >= taken_at_least)
            .map(|b| ((b.peak - b.end) / (b.peak - b.before)).clamp(0.0, 1.0)),
    })
}

/// The samples to fit, (hours, bytes): those of the longest phase after
/// the warm-up.
fn growth_points(timeline: &[Row], samples: &[(&Row, f64)]) -> Vec<(f64, f64)> {
    let warm = warm_up(timeline);
    let main = longest_phase(timeline);
    samples
        .iter()
        .filter(|(r, _)| r.t_s >= warm && Some(r.phase.as_str()) == main)
        .map(|(r, v)| (r.t_s / HOUR_S, *v))
        .collect()
}

/// When the warm-up ends, s.
fn warm_up(timeline: &[Row]) -> f64 {
    let end = timeline.last().map_or(0.0, |r| r.t_s);
    (WARM_UP_SHARE * end).max(WARM_UP_S)
}

/// The last sample of `value` of each stretch with no client connected,
/// after the warm-up: (streams opened so far, bytes).
fn quiet_points(timeline: &[Row], value: impl Fn(&Row) -> Option<f64>) -> Vec<(f64, f64)> {
    let warm = warm_up(timeline);
    let mut opened = 0;
    let mut points = Vec::new();
    let mut rows = timeline.iter().peekable();
    while let Some(row) = rows.next() {
        opened += row.connects;
        let stretch_ends = rows.peek().is_none_or(|next| next.clients != 0);
        if row.clients == 0 && stretch_ends && row.t_s >= warm {
            points.extend(value(row).map(|v| (opened as f64, v)));
        }
    }
    points
}

/// Bytes per stream opened through `points`, and its 95 % interval from
/// three points on; nothing unless streams were opened between them.
fn per_stream(points: &[(f64, f64)]) -> (Option<f64>, Option<[f64; 2]>) {
    match points {
        [(x0, y0), (x1, y1)] if x1 > x0 => (Some((y1 - y0) / (x1 - x0)), None),
        _ => {
            fit_line(points, 0.05).map_or((None, None), |l| (Some(l.slope), Some([l.low, l.high])))
        }
    }
}

/// The phase with the most rows.
fn longest_phase(timeline: &[Row]) -> Option<&str> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for row in timeline {
        match counts.iter_mut().find(|(p, _)| *p == row.phase) {
            Some((_, n)) => *n += 1,
            None => counts.push((&row.phase, 1)),
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(p, _)| p)
}

/// The burst of `samples`, if the load rose from at most half its peak and
/// fell back to at most half by the end.
fn burst(samples: &[(&Row, f64)]) -> Option<Burst> {
    let peak_clients = samples.iter().map(|(r, _)| r.clients).max()?;
    let quiet = |r: &Row| r.clients * 2 <= peak_clients;
    let first_peak = samples
        .iter()
        .position(|(r, _)| r.clients == peak_clients)?;
    let before = samples[..first_peak]
        .iter()
        .rev()
        .find(|(r, _)| quiet(r))?
        .1;
    let (last, end) = *samples.last()?;
    if peak_clients == 0 || !quiet(last) {
        return None;
    }
    let peak = samples[first_peak..]
        .iter()
        .map(|(_, v)| *v)
        .fold(f64::MIN, f64::max);
    Some(Burst { before, peak, end })
}

/// Bytes per hour as people read them.
fn per_hour(bytes: f64) -> String {
    format!("{}/h", bytes_text(bytes))
}

/// Bytes as people read them (decimal units, signed).
pub fn bytes_text(bytes: f64) -> String {
    let sign = if bytes < 0.0 { "-" } else { "+" };
    let b = bytes.abs();
    let (value, unit) = match b {
        _ if b >= 1e9 => (b / 1e9, "GB"),
        _ if b >= 1e6 => (b / 1e6, "MB"),
        _ if b >= 1e3 => (b / 1e3, "kB"),
        _ => (b, "B"),
    };
    format!("{sign}{value:.1} {unit}")
}

/// One figure in a sentence.
fn sentence(name: &str, f: &Figures) -> String {
    let growth = match (f.growth_per_hour, f.growth_ci95) {
        (Some(g), Some([low, high])) => format!(
            "{name} {} (95% CI {} to {}, R² {}, {} samples): {}",
            per_hour(g),
            per_hour(low),
            per_hour(high),
            f.r2.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}")),
            f.samples,
            match f.growth_ci95 {
                _ if f.grew => "grew",
                Some([_, high]) if high < 0.0 => "shrank",
                _ => "indistinguishable from no growth",
            }
        ),
        _ => format!("{name}: too few samples after the warm-up to fit a growth"),
    };
    let retained = match (f.retained_per_stream, f.retained_per_stream_ci95) {
        (Some(b), Some([low, high])) => format!(
            "; {} per stream opened (95% CI {} to {}), between the samples with no client",
            bytes_text(b),
            bytes_text(low),
            bytes_text(high)
        ),
        (Some(b), None) => format!(
            "; {} per stream opened, between the two samples with no client",
            bytes_text(b)
        ),
        _ => String::new(),
    };
    let recovery = match (f.burst, f.recovery) {
        (Some(b), Some(r)) => format!(
            "; a burst took {} of it and {:.1}% came back",
            bytes_text(b.peak - b.before),
            100.0 * r
        ),
        (Some(_), None) => "; a burst took no measurable amount of it".to_owned(),
        _ => String::new(),
    };
    growth + &retained + &recovery
}

fn statement(heap: Option<&Figures>, rss: Option<&Figures>, grew: Grew) -> String {
    let mut parts: Vec<String> = Vec::new();
    match heap {
        Some(h) => parts.push(sentence("live heap", h)),
        None => parts.push(
            "live heap: not measured (build the server with `--features dhat-heap` to see it)"
                .to_owned(),
        ),
    }
    parts.extend(rss.map(|r| sentence("RSS", r)));
    let verdict = match grew {
        Grew::Both => "both grew: memory is being kept, a leak",
        Grew::Heap => "the live heap grew: allocations are being kept, a leak",
        Grew::Rss if heap.is_some() => {
            "RSS grew while the live heap did not: the allocator keeping freed memory, not a leak"
        }
        Grew::Rss => {
            "RSS grew; without the live heap, a leak cannot be told from allocator retention"
        }
        Grew::Neither => "neither grew",
        Grew::Unknown => "too short to tell",
    };
    parts.push(verdict.to_owned());
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: f64, phase: &str, clients: u32, rss_mb: f64, heap: Option<u64>) -> Row {
        Row {
            t_s: t,
            phase: phase.to_owned(),
            clients,
            server_rss_mb: Some(rss_mb),
            server_heap_bytes: heap,
            ..Row::default()
        }
    }

    #[test]
    fn a_leak_grows_both_and_retention_grows_rss_alone() {
        // 1 MB of heap a second, and RSS with it: 3.6 GB/h.
        let leaking: Vec<Row> = (1..=20u32)
            .map(|t| {
                let bytes = 1_000_000 * u64::from(t);
                row(
                    f64::from(t),
                    "steady",
                    10,
                    20.0 + bytes as f64 / 1048576.0,
                    Some(bytes),
                )
            })
            .collect();
        let memory = analyse(&leaking).unwrap();
        assert_eq!(memory.grew, Grew::Both);
        let heap = memory.heap.unwrap();
        assert!(
            (heap.growth_per_hour.unwrap() - 3.6e9).abs() < 1e3,
            "{heap:?}"
        );
        assert!(heap.grew && heap.r2.unwrap() > 0.999);
        assert!(memory.statement.contains("a leak"), "{}", memory.statement);
        // The heap comes and goes around a level; RSS creeps up.
        let retaining: Vec<Row> = (1..=20u32)
            .map(|t| {
                let heap = 500_000 + [0, 20_000, -20_000, 10_000][t as usize % 4];
                row(
                    f64::from(t),
                    "steady",
                    10,
                    20.0 + 0.05 * f64::from(t),
                    Some(heap as u64),
                )
            })
            .collect();
        let memory = analyse(&retaining).unwrap();
        assert_eq!(memory.grew, Grew::Rss);
        assert!(!memory.heap.unwrap().grew);
        assert!(
            memory.statement.contains("not a leak"),
            "{}",
            memory.statement
        );
    }

    #[test]
    fn a_burst_that_gives_its_memory_back_recovers() {
        let mut rows = vec![row(1.0, "idle", 0, 20.0, Some(100_000))];
        rows.extend((2..=6).map(|t| row(f64::from(t), "spike", 100, 30.0, Some(5_100_000))));
        rows.extend((7..=9).map(|t| row(f64::from(t), "cool-down", 0, 26.0, Some(150_000))));
        let memory = analyse(&rows).unwrap();
        let heap = memory.heap.unwrap();
        assert_eq!(
            heap.burst,
            Some(Burst {
                before: 100_000.0,
                peak: 5_100_000.0,
                end: 150_000.0
            })
        );
        assert!((heap.recovery.unwrap() - 0.99).abs() < 1e-9, "{heap:?}");
        let rss = memory.rss.unwrap();
        assert!((rss.recovery.unwrap() - 0.4).abs() < 1e-9, "{rss:?}");
        // A steady run has no burst.
        let steady: Vec<Row> = (1..=5)
            .map(|t| row(f64::from(t), "steady", 10, 20.0, None))
            .collect();
        let memory = analyse(&steady).unwrap();
        assert_eq!(memory.rss.unwrap().burst, None);
        assert!(memory.heap.is_none() && memory.statement.contains("dhat-heap"));
    }

    #[test]
    fn what_streams_keep_is_read_where_no_client_is_connected() {
        // 100 streams opened a second, two seconds out of four; the live
        // heap swings by up to 2 MB while they come and go, is still
        // settling in the first second without them, and keeps `leak`
        // bytes of each.
        let run = |leak: u64| -> Vec<Row> {
            let mut opened = 0;
            (1..=12u32)
                .map(|t| {
                    let quiet = t % 4 == 3 || t % 4 == 0;
                    let connects = if quiet { 0 } else { 100 };
                    opened += connects;
                    let swing = match t % 4 {
                        0 => 0,
                        3 => 500_000,
                        _ => 1_000_000 * u64::from(t % 3),
                    };
                    Row {
                        connects,
                        ..row(
                            f64::from(t),
                            if quiet { "quiet" } else { "churn" },
                            if quiet { 0 } else { 50 },
                            20.0,
                            Some(2_000_000 + swing + leak * opened),
                        )
                    }
                })
                .collect()
        };
        let leaking = analyse(&run(1024)).unwrap();
        let heap = leaking.heap.unwrap();
        // The ends of the quiet stretches, at 4, 8 and 12 s: 200, 400 and
        // 600 streams opened.
        assert!(
            (heap.retained_per_stream.unwrap() - 1024.0).abs() < 1e-6,
            "{heap:?}"
        );
        assert!(heap.grew && leaking.grew == Grew::Heap, "{heap:?}");
        assert!(
            leaking.statement.contains("+1.0 kB per stream opened"),
            "{}",
            leaking.statement
        );
        let clean = analyse(&run(0)).unwrap().heap.unwrap();
        assert_eq!(clean.retained_per_stream, Some(0.0));
        // Two quiet stretches: the difference, without an interval.
        let short: Vec<Row> = run(1024).into_iter().take(8).collect();
        let heap = analyse(&short).unwrap().heap.unwrap();
        assert!((heap.retained_per_stream.unwrap() - 1024.0).abs() < 1e-6);
        assert_eq!(heap.retained_per_stream_ci95, None);
        // One quiet stretch after the warm-up: nothing.
        let once: Vec<Row> = run(1024).into_iter().take(6).collect();
        assert_eq!(
            analyse(&once).unwrap().heap.unwrap().retained_per_stream,
            None
        );
    }

    #[test]
    fn without_samples_there_is_no_analysis() {
        let rows = [Row::default(), Row::default()];
        assert_eq!(analyse(&rows), None);
    }
}
