//! [`Stats`] as text, exactly: each HDR histogram in HdrHistogram's V2 +
//! DEFLATE encoding (base64), the counters as numbers. The run history
//! stores histograms this way; worker processes send their measurements to
//! the parent this way ([`Encoded`]), and the parent merges them as if its
//! own clients had recorded them: nothing is lost or averaged on the way.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use super::{Counts, Shards, Stats};

/// `histogram` in HdrHistogram's V2 + DEFLATE encoding, base64.
///
/// # Errors
///
/// The histogram cannot be serialized (it never is, short of a bug).
pub fn encode(histogram: &Histogram<u64>) -> Result<String, String> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(histogram, &mut bytes)
        .map_err(|e| format!("encoding the histogram: {e}"))?;
    Ok(BASE64.encode(bytes))
}

/// The histogram [`encode`] made `text` of, auto-resizing (so that it
/// merges with any other).
///
/// # Errors
///
/// `text` is not base64, or not an encoded histogram.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = BASE64
        .decode(text)
        .map_err(|e| format!("not base64: {e}"))?;
    let mut histogram: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("not an encoded histogram: {e}"))?;
    histogram.auto(true);
    Ok(histogram)
}

/// Every histogram of `stats` by name, encoded, the empty ones included.
///
/// # Errors
///
/// A histogram cannot be encoded.
pub fn encode_all(stats: &Stats) -> Result<Vec<(&'static str, String)>, String> {
    Stats::NAMES
        .into_iter()
        .zip(stats.each())
        .map(|(name, histogram)| Ok((name, encode(histogram).map_err(|e| format!("{name}: {e}"))?)))
        .collect()
}

/// [`Stats`] ready for a line of JSON: the counters, and by name each
/// histogram that holds anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encoded {
    /// The counters.
    pub counts: Counts,
    /// The histograms that hold anything, by name, [`encode`]d.
    pub histograms: BTreeMap<String, String>,
    /// The start of a message a foreign format could not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unparsed_example: Option<String>,
}

impl Encoded {
    /// `stats`, encoded.
    ///
    /// # Errors
    ///
    /// A histogram cannot be encoded.
    pub fn of(stats: &Stats) -> Result<Self, String> {
        let histograms = Stats::NAMES
            .into_iter()
            .zip(stats.each())
            .filter(|(_, histogram)| !histogram.is_empty())
            .map(|(name, histogram)| {
                let text = encode(histogram).map_err(|e| format!("{name}: {e}"))?;
                Ok((name.to_owned(), text))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            counts: stats.counts,
            histograms,
            unparsed_example: stats.unparsed_example.clone(),
        })
    }

    /// The stats it encodes.
    ///
    /// # Errors
    ///
    /// A histogram of an unknown name, or one that does not decode.
    pub fn decode(&self) -> Result<Stats, String> {
        let mut stats = Stats {
            counts: self.counts,
            unparsed_example: self.unparsed_example.clone(),
            ..Stats::default()
        };
        for (name, text) in &self.histograms {
            let slot = Stats::NAMES
                .iter()
                .position(|known| known == name)
                .ok_or_else(|| format!("no histogram is called {name:?}"))?;
            let histogram = decode(text).map_err(|e| format!("{name}: {e}"))?;
            *stats.histograms()[slot] = histogram;
        }
        Ok(stats)
    }

    /// What `shards` hold now, drained (using `spare`, as
    /// [`Shards::drain_nodes`] does), each node's encoded apart: what a
    /// worker process or an agent sends of an interval.
    ///
    /// # Errors
    ///
    /// A histogram cannot be encoded.
    pub fn drain(shards: &Shards, spare: &mut Stats) -> Result<Vec<Self>, String> {
        let mut nodes: Vec<Stats> = (0..shards.nodes()).map(|_| Stats::default()).collect();
        shards.drain_nodes(&mut nodes, spare);
        nodes.iter().map(Self::of).collect()
    }

    /// Whether it holds nothing at all (as [`Stats::is_empty`]).
    pub fn is_empty(&self) -> bool {
        self.counts == Counts::default()
            && self.histograms.is_empty()
            && self.unparsed_example.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::auth::{Ended, Refusal};
    use crate::metrics::{ErrorKind, Sample};

    #[test]
    fn histograms_survive_encoding_exactly() {
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        for us in [1, 250, 999, 1_000, 1_234_567, 60_000_000] {
            histogram.record_n(us, us % 7 + 1).unwrap();
        }
        let decoded = decode(&encode(&histogram).unwrap()).unwrap();
        assert_eq!(decoded, histogram);
        for q in [0.5, 0.99, 0.999, 1.0] {
            assert_eq!(decoded.value_at_quantile(q), histogram.value_at_quantile(q));
        }
        assert!(decode("not base64!").unwrap_err().contains("not base64"));
        assert!(
            decode("AAAA")
                .unwrap_err()
                .contains("not an encoded histogram")
        );
    }

    /// Stats whose every histogram holds a value of its own (its rank in
    /// [`Sample`] order, times 100: exact at 3 digits), and some counters.
    fn distinct() -> Stats {
        let shards = Shards::new(1);
        let mut recorder = shards.recorder(0);
        recorder.event(40, 3);
        for (rank, sample) in [
            Sample::Latency,
            Sample::EndToEnd,
            Sample::FromPublish,
            Sample::SameNode,
            Sample::CrossNode,
            Sample::Connect,
            Sample::FirstEvent,
            Sample::Reconnect,
            Sample::Publish,
            Sample::Resume,
            Sample::InterToken,
            Sample::TokenTime,
            Sample::InterTokenWritten,
            Sample::ScheduleLag,
            Sample::PublishOverhead,
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(sample as usize, rank, "Sample order");
            recorder.sample(sample, 100 * (rank as u64 + 1));
        }
        recorder.error(ErrorKind::Closed);
        recorder.count(|c| c.abuse[2].refused = 4);
        recorder.count(|c| {
            c.auth.token_refreshes = 5;
            c.auth.refreshes_refused = 1;
            c.auth.refused(Refusal::Expired);
            c.auth.ended(Ended::TokenExpired);
        });
        recorder.unparsed(Some("<not json>".to_owned()));
        drop(recorder);
        let (mut stats, mut spare) = (Stats::default(), Stats::default());
        shards.drain_into(&mut stats, &mut spare);
        stats
    }

    #[test]
    fn stats_cross_a_line_of_json_and_merge_exactly() {
        let stats = distinct();
        let line = serde_json::to_string(&Encoded::of(&stats).unwrap()).unwrap();
        let back: Encoded = serde_json::from_str(&line).unwrap();
        let decoded = back.decode().unwrap();
        assert_eq!(decoded.counts, stats.counts);
        for ((name, ours), theirs) in Stats::NAMES.iter().zip(stats.each()).zip(decoded.each()) {
            assert_eq!(ours, theirs, "{name}");
        }
        assert_eq!(decoded.latency.max(), 100, "each histogram by its name");
        assert_eq!(decoded.cross_node.max(), 500);
        assert_eq!(decoded.resume.max(), 1000);
        assert_eq!(decoded.token_time.max(), 1200);
        assert_eq!(decoded.schedule_lag.max(), 1400);
        assert_eq!(decoded.unparsed_example.as_deref(), Some("<not json>"));

        // Merged into a parent's shards, they count as its own clients' do.
        let parent = Shards::new(2);
        let local = distinct();
        parent.absorb(0, 0, &local);
        parent.absorb(1, 0, &back.decode().unwrap());
        let (mut total, mut spare) = (Stats::default(), Stats::default());
        parent.drain_into(&mut total, &mut spare);
        assert_eq!(total.counts.events, 2);
        assert_eq!(total.counts.abuse[2].refused, 8);
        let auth = &total.counts.auth;
        assert_eq!(
            (
                auth.token_refreshes,
                auth.refreshes_refused,
                auth.refusals[Refusal::Expired as usize],
                auth.ended[Ended::TokenExpired as usize]
            ),
            (10, 2, 2, 2),
            "a worker's credential counts add to the parent's exactly"
        );
        assert_eq!(
            (
                total.latency.len(),
                total.connect.len(),
                total.latency.max()
            ),
            (4, 2, 100)
        );

        let empty = Encoded::of(&Stats::default()).unwrap();
        assert!(empty.histograms.is_empty(), "empty histograms are left out");
        let mut unknown = empty.clone();
        unknown.histograms.insert("nope".to_owned(), String::new());
        assert!(unknown.decode().unwrap_err().contains("\"nope\""));
    }
}
