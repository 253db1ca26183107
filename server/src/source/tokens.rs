//! The LLM-like token stream of docs/protocol.md, for time-to-first-token tests:
//! a delay (plus random jitter) before the first event, then `tokens`
//! events at `tps` per second, each `{"token": "<a short word>"}`.

use bytes::Bytes;
use tokio::time::{Duration, sleep};

use super::{Source, Stall, paced};
use crate::protocol::{Event, Stamp, micros};
use crate::queue::Sender;

/// The words tokens cycle through, already serialized as event `data`.
const WORDS: [&str; 16] = [
    r#"{"token":"The"}"#,
    r#"{"token":" quick"}"#,
    r#"{"token":" stream"}"#,
    r#"{"token":" carries"}"#,
    r#"{"token":" each"}"#,
    r#"{"token":" token"}"#,
    r#"{"token":" to"}"#,
    r#"{"token":" the"}"#,
    r#"{"token":" reader"}"#,
    r#"{"token":" as"}"#,
    r#"{"token":" soon"}"#,
    r#"{"token":" as"}"#,
    r#"{"token":" it"}"#,
    r#"{"token":" is"}"#,
    r#"{"token":" ready"}"#,
    r#"{"token":"."}"#,
];

/// Token-stream parameters, validated by the HTTP layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    /// Delay before the first token.
    pub ttft: Duration,
    /// Upper bound of a uniform random delay added to `ttft`.
    pub jitter: Duration,
    /// Tokens per second after the first; 0 means as fast as the client reads.
    pub tps: u64,
    /// Tokens to send before the stream ends.
    pub tokens: u64,
    /// The pacer's test-only stall (`--inject-pacer-stall`), if injected.
    pub stall: Option<Stall>,
}

impl Tokens {
    fn first_token_delay(&self) -> Duration {
        let jitter_us = micros(self.jitter);
        self.ttft + Duration::from_micros(fastrand::u64(0..=jitter_us))
    }
}

impl Source for Tokens {
    async fn run(self, queue: Sender) {
        sleep(self.first_token_delay()).await;
        let events = (1..=self.tokens)
            .zip(WORDS.iter().cycle())
            .map(|(seq, word)| Event {
                seq,
                stamp: Stamp::None,
                data: Bytes::from_static(word.as_bytes()),
            });
        paced(queue, self.tps, self.stall, events).await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::protocol::Item;
    use crate::queue::{self, Limits, Received};

    #[test]
    fn every_word_is_a_json_object_with_a_token() {
        for word in WORDS {
            let v: serde_json::Value = serde_json::from_str(word).unwrap();
            assert!(v["token"].is_string());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_token_waits_for_ttft_then_tokens_follow_at_the_rate() {
        let (tx, mut rx) = queue::channel(Limits {
            max_events: 100,
            max_bytes: 1 << 20,
        });
        let start = Instant::now();
        let source = Tokens {
            ttft: Duration::from_millis(200),
            jitter: Duration::ZERO,
            tps: 10,
            tokens: 3,
            stall: None,
        };
        let producer = tokio::spawn(source.run(tx));
        let mut out = Vec::new();
        assert_eq!(
            rx.recv_batch(&mut out, 100, usize::MAX).await,
            Received::Items
        );
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        producer.await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        while rx.recv_batch(&mut out, 100, usize::MAX).await == Received::Items {}
        let events: Vec<(u64, u64)> = out
            .iter()
            .filter_map(|item| match item {
                Item::Event(e) => Some((e.seq, e.stamp.sched().expect("paced tokens carry sched"))),
                Item::Gap(_) => None,
            })
            .collect();
        let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
        assert_eq!(seqs, [1, 2, 3]);
        let steps: Vec<u64> = events.windows(2).map(|w| w[1].1 - w[0].1).collect();
        assert_eq!(steps, [100_000; 2], "sched is a period apart at 10 tps");
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let source = Tokens {
            ttft: Duration::from_millis(100),
            jitter: Duration::from_millis(50),
            tps: 1,
            tokens: 1,
            stall: None,
        };
        for _ in 0..100 {
            let delay = source.first_token_delay();
            assert!(delay >= Duration::from_millis(100) && delay <= Duration::from_millis(150));
        }
    }
}
