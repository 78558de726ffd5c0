//! A counting global allocator: allocator calls, bytes requested, live
//! bytes and their peak. It must be the global allocator of the test binary
//! that measures, declared there in one place:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: support::alloc::Counting = support::alloc::Counting;
//! ```
//!
//! The counters are process-wide: a binary that measures runs one test at a
//! time (or measures in a re-executed peer), so no other thread allocates
//! while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// The counting allocator; forwards every call to [`System`].
pub struct Counting;

static CALLS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    CALLS.fetch_add(1, SeqCst);
    BYTES.fetch_add(n, SeqCst);
    let now = LIVE.fetch_add(n, SeqCst) + n;
    PEAK.fetch_max(now, SeqCst);
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting only touches atomics (it never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), SeqCst);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a fresh block while the old one is still live: a
        // moving realloc holds both for a moment.
        grow(new_size);
        LIVE.fetch_sub(layout.size(), SeqCst);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// What a measured closure cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Allocator calls that hand out memory (`alloc` and `realloc`).
    pub calls: usize,
    /// Bytes those calls asked for (a `realloc` counts its new size).
    pub bytes: usize,
    /// The peak of live heap bytes above the level when the closure began.
    pub peak: usize,
}

/// Allocator calls that handed out memory so far (`alloc` and `realloc`).
pub fn calls() -> usize {
    CALLS.load(SeqCst)
}

/// Runs `f`; returns its result and what it cost.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Cost) {
    let (calls, bytes) = (CALLS.load(SeqCst), BYTES.load(SeqCst));
    let base = LIVE.load(SeqCst);
    PEAK.store(base, SeqCst);
    let r = f();
    let cost = Cost {
        calls: CALLS.load(SeqCst) - calls,
        bytes: BYTES.load(SeqCst) - bytes,
        peak: PEAK.load(SeqCst).saturating_sub(base),
    };
    (r, cost)
}
