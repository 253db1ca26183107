//! Sequence checking: each event's `seq` against the one expected, so that
//! a gap (an event that never came) and a duplicate (one that came twice)
//! are counted exactly. Gap notices the server announces move the
//! expectation without counting as gaps. Pure logic, no I/O.

/// Why the server announced a gap, as far as the checker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// Events `from..=to` will never come (retention): skip past them.
    Skipped,
    /// The cursor was beyond the head: the stream restarts at `from`.
    Rewound,
}

/// What one event's `seq` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The one expected.
    Next,
    /// Later than expected: `missing` events never came.
    Gap {
        /// How many were skipped.
        missing: u64,
    },
    /// Already received (or older).
    Duplicate,
}

/// The expected next `seq` of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqCheck {
    expected: Option<u64>,
}

impl SeqCheck {
    /// A stream whose first event must be `next`.
    pub fn expecting(next: u64) -> Self {
        Self {
            expected: Some(next),
        }
    }

    /// A stream that may start anywhere (a live tail).
    pub fn from_first() -> Self {
        Self { expected: None }
    }

    /// Checks `seq`.
    pub fn observe(&mut self, seq: u64) -> Seen {
        match self.expected {
            Some(expected) if seq < expected => Seen::Duplicate,
            Some(expected) if seq > expected => {
                self.expected = Some(seq.saturating_add(1));
                Seen::Gap {
                    missing: seq - expected,
                }
            }
            _ => {
                self.expected = Some(seq.saturating_add(1));
                Seen::Next
            }
        }
    }

    /// A gap notice for `from..=to`.
    pub fn notice(&mut self, kind: NoticeKind, from: u64, to: u64) {
        self.expected = Some(match kind {
            NoticeKind::Skipped => self.expected.unwrap_or(0).max(to.saturating_add(1)),
            NoticeKind::Rewound => from.max(1),
        });
    }

    /// The last `seq` received, to resume after.
    pub fn last(&self) -> Option<u64> {
        self.expected.map(|next| next.saturating_sub(1))
    }

    /// How many events a stream that should have ended at `last` is short
    /// of (a truncated token stream or replay).
    pub fn short_of(&self, last: u64) -> u64 {
        last.saturating_sub(self.last().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_gaps_and_duplicates_exactly() {
        let mut check = SeqCheck::expecting(1);
        let seen: Vec<Seen> = [1, 2, 3, 5, 5, 6, 9, 2, 10]
            .into_iter()
            .map(|s| check.observe(s))
            .collect();
        assert_eq!(
            seen,
            [
                Seen::Next,
                Seen::Next,
                Seen::Next,
                Seen::Gap { missing: 1 },
                Seen::Duplicate,
                Seen::Next,
                Seen::Gap { missing: 2 },
                Seen::Duplicate,
                Seen::Next,
            ]
        );
        assert_eq!(check.last(), Some(10));
    }

    #[test]
    fn a_live_tail_starts_wherever_it_starts() {
        let mut check = SeqCheck::from_first();
        assert_eq!(check.last(), None);
        assert_eq!(check.observe(41), Seen::Next);
        assert_eq!(check.observe(42), Seen::Next);
    }

    #[test]
    fn extreme_values_neither_panic_nor_wrap() {
        let mut check = SeqCheck::expecting(1);
        assert_eq!(
            check.observe(u64::MAX),
            Seen::Gap {
                missing: u64::MAX - 1
            }
        );
        assert_eq!(check.last(), Some(u64::MAX - 1));
        let mut check = SeqCheck::expecting(5);
        check.notice(NoticeKind::Rewound, 0, 4);
        assert_eq!(check.last(), Some(0));
        let mut check = SeqCheck::expecting(1);
        check.observe(1);
        check.observe(2);
        assert_eq!((check.short_of(5), check.short_of(2)), (3, 0));
    }

    #[test]
    fn notices_move_the_expectation_without_counting() {
        let mut check = SeqCheck::expecting(1);
        check.notice(NoticeKind::Skipped, 1, 20);
        assert_eq!(check.observe(21), Seen::Next);
        let mut check = SeqCheck::expecting(10);
        check.notice(NoticeKind::Rewound, 4, 9);
        assert_eq!(check.observe(4), Seen::Next);
        assert_eq!(check.last(), Some(4));
    }
}
