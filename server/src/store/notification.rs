//! What a commit tells the other nodes of a cluster: the payload of the
//! `pg_notify` that a PostgreSQL commit of topic events sends on
//! [`CHANNEL`], inside its transaction (so it is delivered at commit, to
//! every node listening, in commit order), and its decoding on the
//! receiving side. Pure: no database here.
//!
//! A payload is one line of JSON naming the node that committed and each
//! topic of the commit with its `seq` range, and the events themselves
//! when they fit:
//!
//! ```text
//! {"v":1,"o":"host-a:8080","t":[{"n":"orders","f":41,"l":42,"e":[[1795428000120001,{"a":1}],[1795428000120002,{"a":2}]]}]}
//! {"v":1,"o":"host-b:8080","t":[{"n":"orders","f":43,"l":554}]}
//! ```
//!
//! `o` the committing node (`""` for a store that is no node), `n` the
//! topic, `f` and `l` the first and last `seq`, `e` each event's `pts` and
//! `data`. A topic deleted through the admin API is announced the same way,
//! from the transaction that deletes it, with its head `h`:
//!
//! ```text
//! {"v":1,"o":"host-a:8080","t":[],"d":{"n":"orders","h":554}}
//! ``` PostgreSQL refuses payloads of 8,000 bytes or more, so
//! bodies are inline only while the whole payload stays within
//! [`MAX_PAYLOAD`]; otherwise every topic gets its range alone and
//! receivers read the bodies from the store. A commit normally sends one
//! notification; only one whose ranges alone overflow the limit (hundreds
//! of topics) sends several, split between topics.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Append;
use crate::protocol::{Event, Stamp};

/// The channel every node listens on and every commit notifies.
pub const CHANNEL: &str = "streamgauge";

/// Largest payload sent, bytes: PostgreSQL's limit is 8,000, and a margin
/// keeps a change in the format from crossing it.
pub const MAX_PAYLOAD: usize = 7000;

/// The payload format's version; a receiver that does not know a payload's
/// version resyncs from the store.
const VERSION: u32 = 1;

/// One topic's events in a commit: their first `seq`, then each one's
/// `pts` and `data`.
struct Run<'a> {
    first: u64,
    events: Vec<(u64, &'a str)>,
}

/// `origin` (a node's name) as the JSON string a payload carries.
pub fn origin(name: &str) -> String {
    serde_json::to_string(name).expect("a string serializes")
}

/// The payloads announcing a commit of `batch` by `origin` (from
/// [`origin`]), whose events were given `seqs` (in batch order). Topics
/// appear in name order.
pub fn encode(batch: &[Append<'_>], seqs: &[u64], origin: &str) -> Vec<String> {
    let mut runs: BTreeMap<&str, Run<'_>> = BTreeMap::new();
    for (append, &seq) in batch.iter().zip(seqs) {
        runs.entry(append.topic)
            .or_insert_with(|| Run {
                first: seq,
                events: Vec::new(),
            })
            .events
            .push((append.pts, append.data));
    }
    let start = format!("{{\"v\":{VERSION},\"o\":{origin},\"t\":[");
    if let Some(inline) = inline(&start, &runs) {
        return vec![inline];
    }
    ranges(&start, &runs)
}

/// The one payload with every body, if it fits.
fn inline(start: &str, runs: &BTreeMap<&str, Run<'_>>) -> Option<String> {
    let mut out = String::with_capacity(MAX_PAYLOAD);
    out.push_str(start);
    for (i, (topic, run)) in runs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        put_range(&mut out, topic, run);
        out.push_str(",\"e\":[");
        for (j, (pts, data)) in run.events.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "[{pts},{data}]");
            if out.len() > MAX_PAYLOAD {
                return None;
            }
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    (out.len() <= MAX_PAYLOAD).then_some(out)
}

/// Payloads with every topic's range and no bodies, as few as fit.
fn ranges(start: &str, runs: &BTreeMap<&str, Run<'_>>) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut out = start.to_owned();
    for (topic, run) in runs {
        let mut entry = String::new();
        put_range(&mut entry, topic, run);
        entry.push('}');
        // Room for a comma and the closing `]}`.
        if out.len() > start.len() && out.len() + entry.len() + 3 > MAX_PAYLOAD {
            out.push_str("]}");
            payloads.push(std::mem::replace(&mut out, start.to_owned()));
        }
        if out.len() > start.len() {
            out.push(',');
        }
        out.push_str(&entry);
    }
    out.push_str("]}");
    payloads.push(out);
    payloads
}

/// `{"n":…,"f":…,"l":…` (left open). Topic names need no escaping: they
/// are made of `A-Z a-z 0-9 . _ - :` ([`crate::protocol::Name`]).
fn put_range(out: &mut String, topic: &str, run: &Run<'_>) {
    let last = run.first + run.events.len() as u64 - 1;
    let _ = write!(out, "{{\"n\":\"{topic}\",\"f\":{},\"l\":{last}", run.first);
}

/// The payload announcing that `origin` deleted `topic` at `head`.
pub fn encode_deletion(topic: &str, head: u64, origin: &str) -> String {
    format!("{{\"v\":{VERSION},\"o\":{origin},\"t\":[],\"d\":{{\"n\":\"{topic}\",\"h\":{head}}}}}")
}

/// A received notification.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    /// The node that committed (`""` for a store that is no node).
    pub origin: String,
    /// Each topic of the commit.
    pub topics: Vec<Announced>,
    /// A topic deleted, and the head it had.
    pub deleted: Option<(String, u64)>,
}

/// One topic of a received notification.
#[derive(Debug, PartialEq, Eq)]
pub struct Announced {
    /// The topic.
    pub topic: String,
    /// The first `seq` committed.
    pub first: u64,
    /// The last `seq` committed.
    pub last: u64,
    /// The events `first..=last`, when the payload carried them.
    pub events: Option<Vec<Event>>,
}

/// Why a payload could not be read: it was not written by this version
/// (or not by streamgauge at all). The receiver resyncs from the store.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("unreadable notification payload: {0}")]
pub struct Unreadable(String);

#[derive(Deserialize)]
struct Payload<'a> {
    v: u32,
    #[serde(borrow)]
    o: Cow<'a, str>,
    #[serde(borrow)]
    t: Vec<Entry<'a>>,
    #[serde(borrow, default)]
    d: Option<Deletion<'a>>,
}

#[derive(Deserialize)]
struct Deletion<'a> {
    #[serde(borrow)]
    n: Cow<'a, str>,
    h: u64,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    n: Cow<'a, str>,
    f: u64,
    l: u64,
    #[serde(borrow, default)]
    e: Option<Vec<(u64, &'a RawValue)>>,
}

/// Reads a payload; the events' `data` share `payload`'s bytes.
///
/// # Errors
///
/// [`Unreadable`] for anything [`encode`] does not write.
pub fn decode(payload: &Bytes) -> Result<Received, Unreadable> {
    let text = std::str::from_utf8(payload).map_err(|e| Unreadable(e.to_string()))?;
    let parsed: Payload<'_> = serde_json::from_str(text).map_err(|e| Unreadable(e.to_string()))?;
    if parsed.v != VERSION {
        return Err(Unreadable(format!("version {}", parsed.v)));
    }
    let topics = parsed
        .t
        .into_iter()
        .map(|entry| {
            if entry.n.is_empty() || entry.f == 0 || entry.l < entry.f {
                return Err(Unreadable(format!(
                    "topic {:?} range {}..={}",
                    entry.n, entry.f, entry.l
                )));
            }
            let events = entry
                .e
                .map(|events| {
                    if events.len() as u64 != entry.l - entry.f + 1 {
                        return Err(Unreadable(format!(
                            "topic {:?}: {} events for {}..={}",
                            entry.n,
                            events.len(),
                            entry.f,
                            entry.l
                        )));
                    }
                    Ok((entry.f..)
                        .zip(events)
                        .map(|(seq, (pts, data))| Event {
                            seq,
                            stamp: Stamp::Pts(pts),
                            data: payload.slice_ref(data.get().as_bytes()),
                        })
                        .collect())
                })
                .transpose()?;
            Ok(Announced {
                topic: entry.n.into_owned(),
                first: entry.f,
                last: entry.l,
                events,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Received {
        origin: parsed.o.into_owned(),
        topics,
        deleted: parsed.d.map(|d| (d.n.into_owned(), d.h)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append<'a>(topic: &'a str, data: &'a str) -> Append<'a> {
        Append {
            topic,
            pts: 1_000,
            data,
            key: None,
        }
    }

    fn decoded(payload: &str) -> Vec<Announced> {
        let received = decode(&Bytes::from(payload.to_owned())).unwrap();
        assert_eq!(received.origin, "node:1");
        received.topics
    }

    fn encode(batch: &[Append<'_>], seqs: &[u64]) -> Vec<String> {
        super::encode(batch, seqs, &origin("node:1"))
    }

    #[test]
    fn a_deletion_round_trips_beside_no_commit() {
        let payload = encode_deletion("orders", 554, &origin("node:1"));
        assert_eq!(
            payload,
            r#"{"v":1,"o":"node:1","t":[],"d":{"n":"orders","h":554}}"#
        );
        let received = decode(&Bytes::from(payload)).unwrap();
        assert_eq!(
            (received.topics.len(), received.deleted),
            (0, Some(("orders".to_owned(), 554)))
        );
    }

    #[test]
    fn a_small_commit_is_one_payload_with_its_bodies_in_topic_order() {
        let batch = [
            append("b", "{\"x\":1}"),
            append("a", "[1,2]"),
            append("b", "\"s\""),
        ];
        let payloads = encode(&batch, &[7, 3, 8]);
        assert_eq!(
            payloads,
            [concat!(
                r#"{"v":1,"o":"node:1","t":[{"n":"a","f":3,"l":3,"e":[[1000,[1,2]]]},"#,
                r#"{"n":"b","f":7,"l":8,"e":[[1000,{"x":1}],[1000,"s"]]}]}"#
            )]
        );
        let topics = decoded(&payloads[0]);
        assert_eq!(topics.len(), 2);
        let b = &topics[1];
        assert_eq!((b.topic.as_str(), b.first, b.last), ("b", 7, 8));
        let events = b.events.as_ref().unwrap();
        assert_eq!(
            events
                .iter()
                .map(|e| (e.seq, e.stamp, &e.data[..]))
                .collect::<Vec<_>>(),
            [
                (7, Stamp::Pts(1000), &b"{\"x\":1}"[..]),
                (8, Stamp::Pts(1000), &b"\"s\""[..])
            ]
        );
    }

    #[test]
    fn bodies_that_do_not_fit_leave_ranges_alone() {
        let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD));
        let batch = [append("a", "1"), append("a", &big), append("c", "2")];
        let payloads = encode(&batch, &[1, 2, 9]);
        assert_eq!(
            payloads,
            [r#"{"v":1,"o":"node:1","t":[{"n":"a","f":1,"l":2},{"n":"c","f":9,"l":9}]}"#]
        );
        let topics = decoded(&payloads[0]);
        assert!(topics.iter().all(|t| t.events.is_none()));
        assert_eq!((topics[0].first, topics[0].last), (1, 2));
    }

    #[test]
    fn the_limit_holds_right_at_its_edge() {
        // Bodies sized so that the inline payload is exactly the limit,
        // then one byte over.
        let overhead = encode(&[append("t", "\"\"")], &[1])[0].len();
        let fits = format!("\"{}\"", "y".repeat(MAX_PAYLOAD - overhead));
        let inline = encode(&[append("t", &fits)], &[1]);
        assert_eq!(inline[0].len(), MAX_PAYLOAD);
        assert!(decoded(&inline[0])[0].events.is_some());
        let over = format!("\"{}\"", "y".repeat(MAX_PAYLOAD - overhead + 1));
        let ranges = encode(&[append("t", &over)], &[1]);
        assert!(decoded(&ranges[0])[0].events.is_none());
    }

    #[test]
    fn a_commit_of_very_many_topics_is_split_between_topics() {
        let names: Vec<String> = (0..500).map(|i| format!("{i:0>150}")).collect();
        let batch: Vec<Append<'_>> = names.iter().map(|n| append(n, "0")).collect();
        let seqs: Vec<u64> = (1..=500).collect();
        let payloads = encode(&batch, &seqs);
        assert!(payloads.len() > 1);
        let mut topics = Vec::new();
        for payload in &payloads {
            assert!(payload.len() <= MAX_PAYLOAD, "{}", payload.len());
            topics.extend(decoded(payload));
        }
        let got: Vec<&str> = topics.iter().map(|t| t.topic.as_str()).collect();
        let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(got, wanted);
    }

    #[test]
    fn anything_else_is_unreadable() {
        for bad in [
            "",
            "not json",
            r#"{"v":2,"o":"","t":[]}"#,
            r#"{"v":1,"o":""}"#,
            r#"{"v":1,"t":[]}"#,
            r#"{"v":1,"o":"","t":[{"n":"a","f":5,"l":4}]}"#,
            r#"{"v":1,"o":"","t":[{"n":"a","f":0,"l":4}]}"#,
            r#"{"v":1,"o":"","t":[{"n":"","f":1,"l":1}]}"#,
            r#"{"v":1,"o":"","t":[{"n":"a","f":1,"l":2,"e":[[1,2]]}]}"#,
        ] {
            assert!(decode(&Bytes::from(bad)).is_err(), "{bad:?}");
        }
    }
}
