//! The part of an event the load generator reads: `seq`, `ts`, `sched`, `pts`, a gap
//! notice, an `end` notice's reason, a WebSocket refresh's answer, and
//! (topic scenarios) the `sent_us`, `node` and `agent` that publishers put in
//! `data`. Parsed straight from the frame's bytes into integers: nothing is
//! allocated per event, and `data` is skimmed, not built.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::metrics::auth::{Ended, Refusal};

/// One frame, as far as measuring goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Envelope {
    /// The event's sequence number (absent on gap notices).
    pub seq: Option<u64>,
    /// When the server handed it to its writer, µs since the Unix epoch.
    pub ts: Option<u64>,
    /// Paced ticker and token events: when the server's pacer meant the
    /// event to go out, µs since the Unix epoch (the clock of `ts`).
    pub sched: Option<u64>,
    /// Topic events: when the server accepted the publish.
    pub pts: Option<u64>,
    /// A gap notice.
    pub gap: Option<GapNotice>,
    /// An `end` notice: the server ends the stream, saying why (its
    /// storage failed, or the subscriber lagged under a disconnect policy).
    pub end: Option<EndNotice>,
    /// `data.sent_us` and `data.node`, when `data` is an object that has
    /// them.
    #[serde(default)]
    pub data: Published,
    /// A WebSocket refresh accepted: `{"refreshed": {"exp": …}, "id": …}`.
    pub refreshed: Option<Present>,
    /// An error answer, `{"error": "…", "reason": R, "id": …}`: a refresh
    /// refused.
    pub error: Option<Present>,
    /// The reason an error answer gives.
    pub reason: Option<Refusal>,
}

/// A key that is there, whatever its value (skipped, not built).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Present;

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| Present)
    }
}

/// An `end` notice; its message is for people and logs, its reason says
/// whether the token ended the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct EndNotice {
    /// Why the server ended the stream, as far as the client cares.
    #[serde(default)]
    pub reason: EndReason,
}

/// The reasons of `end` notices that tell the client something.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The token expired while streaming.
    TokenExpired,
    /// The token was revoked while streaming.
    Revoked,
    /// Any other reason (storage, a lagging subscriber): the stream failed.
    #[default]
    #[serde(other)]
    Other,
}

impl EndReason {
    /// Whether the token ended the stream, and how.
    pub fn ended(self) -> Option<Ended> {
        match self {
            EndReason::TokenExpired => Some(Ended::TokenExpired),
            EndReason::Revoked => Some(Ended::Revoked),
            EndReason::Other => None,
        }
    }
}

/// A gap notice's range and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct GapNotice {
    /// First missing seq.
    pub from: u64,
    /// Last missing seq.
    pub to: u64,
    /// Why.
    pub reason: GapReason,
}

/// The reasons of the gap notices (docs/protocol.md) that change what comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// The cursor was beyond the head: the stream continues at `from`.
    BeyondHead,
    /// Any other reason: `from..=to` will not come.
    #[serde(other)]
    Skipped,
}

/// What the load generator's publishers put in `data`: the intended send
/// time (`sent_us`), on runs over several nodes the node it was published
/// on (`node`), and on runs over several agents the agent that published
/// it (`agent`), each `None` when `data` is not an object holding it as an
/// integer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// `data.sent_us`: when the publisher meant to send it, µs since the
    /// Unix epoch.
    pub sent_us: Option<u64>,
    /// `data.node`: the node it was published on, from 0.
    pub node: Option<u32>,
    /// `data.agent`: the agent whose publisher sent it, from 0.
    pub agent: Option<u32>,
}

impl<'de> Deserialize<'de> for Published {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PublishedVisitor)
    }
}

struct PublishedVisitor;

impl<'de> Visitor<'de> for PublishedVisitor {
    type Value = Published;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Published, A::Error> {
        let mut published = Published::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::SentUs => published.sent_us = map.next_value::<u64>().ok(),
                Key::Node => published.node = map.next_value::<u32>().ok(),
                Key::Agent => published.agent = map.next_value::<u32>().ok(),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(published)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Published, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Published::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Published, E> {
        Ok(Published::default())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Published, E> {
        Ok(Published::default())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Published, E> {
        Ok(Published::default())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Published, E> {
        Ok(Published::default())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Published, E> {
        Ok(Published::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Published, E> {
        Ok(Published::default())
    }
}

/// Which of `data`'s keys the load generator reads, without allocating.
enum Key {
    SentUs,
    Node,
    Agent,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "sent_us" => Key::SentUs,
                    "node" => Key::Node,
                    "agent" => Key::Agent,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Parses one frame.
///
/// # Errors
///
/// The frame is not a JSON object of the protocol.
pub fn parse(frame: &[u8]) -> Result<Envelope, serde_json::Error> {
    serde_json::from_slice(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_events_of_every_stream() {
        let ticker = parse(br#"{"seq":7,"ts":1795427796037182,"data":"xxxx"}"#).unwrap();
        assert_eq!(
            (ticker.seq, ticker.ts, ticker.data),
            (Some(7), Some(1795427796037182), Published::default())
        );
        let token = parse(br#"{"seq":1,"ts":5,"sched":4,"data":{"token":" the"}}"#).unwrap();
        assert_eq!((token.seq, token.sched), (Some(1), Some(4)));
        assert_eq!(ticker.sched, None, "an unpaced event has no schedule");
        let topic =
            parse(br#"{"seq":3,"ts":9,"pts":8,"data":{"k":1,"sent_us":6,"pad":"x\"y"}}"#).unwrap();
        let sent = |sent_us, node| Published {
            sent_us,
            node,
            agent: None,
        };
        assert_eq!((topic.pts, topic.data), (Some(8), sent(Some(6), None)));
        let from_a_node =
            parse(br#"{"seq":4,"ts":9,"pts":8,"data":{"sent_us":6,"k":2,"node":2,"pad":""}}"#)
                .unwrap();
        assert_eq!(from_a_node.data, sent(Some(6), Some(2)));
        let from_an_agent =
            parse(br#"{"seq":5,"ts":9,"pts":8,"data":{"sent_us":6,"k":4,"agent":1,"pad":""}}"#)
                .unwrap();
        assert_eq!(from_an_agent.data.agent, Some(1));
        let nested =
            parse(br#"{"seq":1,"ts":1,"data":[{"sent_us":1},[1,2],null,true,-1.5]}"#).unwrap();
        assert_eq!(nested.data, Published::default());
    }

    #[test]
    fn reads_gap_notices() {
        let end =
            parse(br#"{"end":{"message":"storage unavailable","reason":"storage_unavailable"}}"#)
                .unwrap();
        assert!(end.end.is_some() && end.seq.is_none());
        assert_eq!(end.end.unwrap().reason, EndReason::Other);
        let gap = parse(br#"{"gap":{"from":3,"to":9,"reason":"retention"}}"#).unwrap();
        assert_eq!(
            gap.gap,
            Some(GapNotice {
                from: 3,
                to: 9,
                reason: GapReason::Skipped
            })
        );
        let rewind = parse(br#"{"gap":{"from":4,"to":9,"reason":"beyond_head"}}"#).unwrap();
        assert_eq!(rewind.gap.unwrap().reason, GapReason::BeyondHead);
    }

    #[test]
    fn reads_token_endings_and_refresh_answers() {
        let ended = |json: &[u8]| parse(json).unwrap().end.unwrap().reason.ended();
        assert_eq!(
            ended(br#"{"end":{"reason":"token_expired","message":"exp passed"}}"#),
            Some(Ended::TokenExpired)
        );
        assert_eq!(
            ended(br#"{"end":{"reason":"revoked"}}"#),
            Some(Ended::Revoked)
        );
        assert_eq!(ended(br#"{"end":{}}"#), None);
        let accepted = parse(br#"{"refreshed":{"exp":1765100000},"id":3}"#).unwrap();
        assert_eq!(
            (accepted.refreshed, accepted.seq, accepted.error),
            (Some(Present), None, None)
        );
        let refused =
            parse(br#"{"error":"token refresh refused: expired","reason":"expired","id":4}"#)
                .unwrap();
        assert_eq!(
            (refused.error, refused.reason),
            (Some(Present), Some(Refusal::Expired))
        );
    }

    #[test]
    fn refuses_what_is_not_a_protocol_object() {
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            b"{\"seq\":\"one\"}",
            b"{\"seq\":1",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
