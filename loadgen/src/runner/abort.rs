//! `abort:` thresholds while a run goes on: once a second, past the
//! scenario's grace, what was measured so far is judged, and the run stops
//! as soon as one breaks. Judging needs a summary, which is built above the
//! runner, so the runner takes the judge as a function.

use std::fmt;
use std::time::Duration;

use crate::metrics::timeline::{Aborted, Measured};

/// Judges a run so far: which `abort:` threshold broke, if one did.
pub type Judge<'a> = Box<dyn FnMut(&Measured) -> Option<Aborted> + Send + 'a>;

/// When and how a run is judged while it goes on.
pub struct Abort<'a> {
    /// Not judged before this far into the run.
    pub grace: Duration,
    /// The judge.
    pub judge: Judge<'a>,
}

impl Abort<'_> {
    /// Whether the run must stop, `elapsed` into it, judged on what
    /// `measured_so_far` gives (called only past the grace).
    pub(super) fn check(
        &mut self,
        elapsed: Duration,
        measured_so_far: impl FnOnce() -> Measured,
    ) -> Option<Aborted> {
        if elapsed < self.grace {
            return None;
        }
        (self.judge)(&measured_so_far())
    }
}

impl fmt::Debug for Abort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Abort")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}
