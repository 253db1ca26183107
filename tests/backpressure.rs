//! A slow reader makes batches grow, not memory: the producer pauses on a
//! full, bounded queue, and what the reader then receives is complete.

use streamgauge_server::Config;
use streamgauge_server::protocol::ENVELOPE_ALLOWANCE;

use crate::support::{self, TestServer, Transport};

const QUEUE_EVENTS: usize = 64;
const SIZE: usize = 1024;
/// Far more than the socket buffers and hyper's write queue can absorb.
const COUNT: u64 = 20_000;

fn config() -> Config {
    let mut config = support::config();
    config.queue.max_events = QUEUE_EVENTS;
    config.queue.max_bytes = 1 << 20;
    config
}

#[tokio::test]
async fn a_reader_that_falls_behind_fills_only_its_bounded_queue_then_gets_big_batches() {
    for transport in Transport::BOTH {
        let server = TestServer::start(config()).await;
        let t = transport.label();
        let mut client = server
            .open(
                transport,
                &format!("ticker?rate=0&size={SIZE}&count={COUNT}"),
            )
            .await;

        // The client reads nothing: the transport stalls, the queue fills to
        // its bound, and the ticker pauses there.
        let stalled = server
            .wait_for(
                "the queue to fill behind a reader that does not read",
                |m| m.of("streamgauge_queue_depth_events", t) == QUEUE_EVENTS as f64,
            )
            .await;
        let queued_bytes = stalled.of("streamgauge_queue_depth_bytes", t);
        assert_eq!(
            queued_bytes,
            (QUEUE_EVENTS * (SIZE + 2 + ENVELOPE_ALLOWANCE)) as f64
        );
        let sent = stalled.of("streamgauge_events_sent_total", t);
        assert!(
            sent + (QUEUE_EVENTS as f64) < COUNT as f64,
            "{t}: the producer did not pause ({sent} sent of {COUNT})"
        );

        // Now read everything: nothing was lost or reordered on the way.
        let (events, _) = client.drain().await;
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=COUNT).collect::<Vec<_>>(), "{t}");

        let done = server.metrics().await;
        let batches = done.get(&format!(
            "streamgauge_batch_events_count{{transport=\"{t}\"}}"
        ));
        let singles = done.get(&format!(
            "streamgauge_batch_events_bucket{{le=\"1.0\",transport=\"{t}\"}}"
        ));
        assert_eq!(done.of("streamgauge_events_sent_total", t), COUNT as f64);
        assert!(
            batches < COUNT as f64,
            "{t}: {batches} batches for {COUNT} events"
        );
        assert!(singles < batches, "{t}: every batch held one event");
    }
}
