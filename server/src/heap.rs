//! Heap profiling: with the `dhat-heap` feature, the binary's global
//! allocator is dhat's; [`Profiling`] runs its profiler for the life of the
//! process and writes the DHAT profile (for `dh_view.html`) when dropped,
//! after the runtime has shut down; [`stats`] reads the live heap figures
//! that `GET /debug/heap` serves. Without the feature none of it is
//! compiled and the system allocator is used: no cost.
//!
//! Also the test-only leak of `--inject-leak`, so leak detection can be
//! shown to work on a server that leaks on purpose.

use std::path::Path;

use serde::Serialize;

/// Leaks `bytes` of heap, written to so that they are resident too (RSS
/// grows as well as the live heap).
pub fn leak(bytes: usize) {
    let leaked: &'static mut [u8] = Box::leak(vec![0xA5; bytes].into_boxed_slice());
    std::hint::black_box(leaked);
}

/// The live heap, as dhat counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HeapStats {
    /// Bytes allocated and not yet freed.
    pub current_bytes: u64,
    /// Blocks allocated and not yet freed.
    pub current_blocks: u64,
    /// The most bytes live at once.
    pub peak_bytes: u64,
    /// Blocks live at the peak of bytes.
    pub peak_blocks: u64,
    /// Bytes allocated since the start.
    pub total_bytes: u64,
    /// Allocations since the start.
    pub total_allocations: u64,
}

/// The heap profiler, while it runs (`None` without the feature).
#[derive(Debug)]
#[must_use = "the profile is written when this is dropped"]
pub struct Profiling {
    #[cfg(feature = "dhat-heap")]
    profiler: Option<dhat::Profiler>,
}

#[cfg(feature = "dhat-heap")]
mod dhat_heap {
    //! The profiler, with the feature.

    use std::sync::atomic::{AtomicBool, Ordering};

    use super::{HeapStats, Path, Profiling};

    /// Whether a profiler runs: dhat panics when asked for statistics
    /// without one.
    static RUNNING: AtomicBool = AtomicBool::new(false);

    impl Profiling {
        /// Starts the profiler; the profile goes to `path` when this is
        /// dropped.
        pub fn start(path: &Path) -> Self {
            let profiler = dhat::Profiler::builder().file_name(path).build();
            RUNNING.store(true, Ordering::Release);
            tracing::info!(
                path = %path.display(),
                "heap profiling (dhat): the profile is written on graceful shutdown"
            );
            Self {
                profiler: Some(profiler),
            }
        }
    }

    impl Drop for Profiling {
        fn drop(&mut self) {
            if let Some(profiler) = self.profiler.take() {
                RUNNING.store(false, Ordering::Release);
                // dhat writes the file and names it on stderr.
                drop(profiler);
            }
        }
    }

    /// The live heap, if the profiler runs.
    pub fn stats() -> Option<HeapStats> {
        if !RUNNING.load(Ordering::Acquire) {
            return None;
        }
        let s = dhat::HeapStats::get();
        Some(HeapStats {
            current_bytes: s.curr_bytes as u64,
            current_blocks: s.curr_blocks as u64,
            peak_bytes: s.max_bytes as u64,
            peak_blocks: s.max_blocks as u64,
            total_bytes: s.total_bytes,
            total_allocations: s.total_blocks,
        })
    }
}

#[cfg(feature = "dhat-heap")]
pub use dhat_heap::stats;

#[cfg(not(feature = "dhat-heap"))]
impl Profiling {
    /// Without the `dhat-heap` feature: nothing to start.
    pub fn start(_path: &Path) -> Self {
        Self {}
    }
}

/// Without the `dhat-heap` feature there are no heap figures.
#[cfg(not(feature = "dhat-heap"))]
pub fn stats() -> Option<HeapStats> {
    None
}
