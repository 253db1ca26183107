//! An agent's clock against the coordinator's, estimated NTP style over the
//! control connection: the coordinator notes when it sent a ping and when
//! the pong came back, the agent when it read the ping. Assuming the two
//! legs took equally long, the agent read it halfway; the sample with the
//! shortest round trip bounds the error best, by half its round trip.

use serde::{Deserialize, Serialize};

/// Round trips made to estimate an offset.
pub const ROUNDS: usize = 16;

/// One round trip, µs since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundTrip {
    /// The coordinator sent the ping (its clock).
    pub sent_us: u64,
    /// The agent read it (the agent's clock).
    pub agent_us: u64,
    /// The pong came back (the coordinator's clock).
    pub back_us: u64,
}

/// How far an agent's clock is from the coordinator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offset {
    /// The agent's clock minus the coordinator's, µs.
    pub offset_us: i64,
    /// The most the true offset can differ from it, µs: half the best
    /// round trip.
    pub uncertainty_us: u64,
}

/// The offset the round trip with the shortest delay says; `None` without
/// any round trip.
pub fn estimate(trips: &[RoundTrip]) -> Option<Offset> {
    let best = trips
        .iter()
        .min_by_key(|trip| trip.back_us.saturating_sub(trip.sent_us))?;
    let delay = best.back_us.saturating_sub(best.sent_us);
    let midpoint = i128::from(best.sent_us) + i128::from(delay / 2);
    let offset = i128::from(best.agent_us) - midpoint;
    Some(Offset {
        offset_us: i64::try_from(offset).unwrap_or(i64::MAX),
        uncertainty_us: delay.div_ceil(2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quickest_round_trip_decides() {
        let trip = |sent_us, agent_us, back_us| RoundTrip {
            sent_us,
            agent_us,
            back_us,
        };
        assert_eq!(estimate(&[]), None);
        // An agent 5 ms ahead; a slow trip whose way back was long says
        // less than the quick one.
        let trips = [
            trip(1_000, 6_100, 1_900),
            trip(2_000, 7_060, 2_120),
            trip(3_000, 8_600, 3_400),
        ];
        assert_eq!(
            estimate(&trips),
            Some(Offset {
                offset_us: 5_000,
                uncertainty_us: 60
            })
        );
        let behind = estimate(&[trip(10_000, 7_001, 10_002)]).unwrap();
        assert_eq!((behind.offset_us, behind.uncertainty_us), (-3_000, 1));
    }
}
