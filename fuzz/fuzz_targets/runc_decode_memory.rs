//! The runc JSON decoder's memory bound (PROTOCOL.md §15): decoding any
//! record, in every `configs.Mount` layout, never has more than 32 bytes
//! per record byte (plus 4 KiB for fixed-size bookkeeping such as error
//! texts) live at once. A counting global allocator measures the peak.
//! Byte 0 picks nothing; the whole input is the record, so the corpus of
//! `runc_decode` (whose byte 0 is a selector) also serves here.
#![no_main]

use procsync::wire::runc::{self, MountShape};
use procsync::wire::{Limits, MAX_RECORD_CEILING};

/// The tests' counting allocator (procsync's `tests/support/alloc.rs`).
#[path = "../../tests/support/alloc.rs"]
#[allow(dead_code)]
mod alloc;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = Limits::with_max_record(MAX_RECORD_CEILING);
    for shape in MountShape::ALL {
        let (res, cost) =
            alloc::measure(|| runc::decode(data, shape, &limits).map(|h| h.finish(None)));
        let peak = cost.peak;
        drop(res);
        assert!(
            peak <= 32 * data.len() + 4096,
            "{}: {peak} bytes live while decoding a {}-byte record",
            shape.name(),
            data.len()
        );
    }
});
