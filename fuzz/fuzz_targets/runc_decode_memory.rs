//! The runc JSON decoder's memory bound (PROTOCOL.md §15): decoding any
//! record, in every `configs.Mount` layout, never has more than 32 bytes
//! per record byte (plus 4 KiB for fixed-size bookkeeping such as error
//! texts) live at once. A counting global allocator measures the peak.
//! Byte 0 picks nothing; the whole input is the record, so the corpus of
//! `runc_decode` (whose byte 0 is a selector) also serves here.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use procsync::wire::runc::{self, MountShape};
use procsync::wire::{Limits, MAX_RECORD_CEILING};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grow(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = Limits::with_max_record(MAX_RECORD_CEILING);
    for shape in MountShape::ALL {
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let res = runc::decode(data, shape, &limits).map(|h| h.finish(None));
        let peak = PEAK.load(Ordering::Relaxed) - base;
        drop(res);
        assert!(
            peak <= 32 * data.len() + 4096,
            "{}: {peak} bytes live while decoding a {}-byte record",
            shape.name(),
            data.len()
        );
    }
});
