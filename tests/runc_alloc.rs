//! Issue 12.16: the runc JSON decoder's memory bound (PROTOCOL.md §15: at
//! most 32 bytes allocated per record byte), measured with a counting
//! global allocator on the densest records that fit the limit. On main a
//! 64 KiB record of nested one-element arrays peaked at about 4 MB (61 bytes
//! per byte): the decoder built a tree of every value, used or not.
//!
//! This binary has a single test, so no other thread allocates while it
//! counts.
#![cfg(feature = "runc-compat")]

mod support;

use procsync::wire::runc::{self, MountShape, MAX_JSON_DEPTH};
use procsync::wire::{Limits, MAX_RECORD_CEILING};

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;

/// The peak of live bytes above the starting level while `f` runs.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let (r, cost) = support::alloc::measure(f);
    (r, cost.peak)
}

/// Repeats `unit` (joined by commas) inside `open`…`close` until the record
/// is as close to `size` bytes as the unit allows.
fn fill(open: &str, unit: &str, close: &str, size: usize) -> Vec<u8> {
    let mut s = String::from(open);
    let mut first = true;
    while s.len() + unit.len() + 1 + close.len() <= size {
        if !first {
            s.push(',');
        }
        first = false;
        s.push_str(unit);
    }
    s.push_str(close);
    s.into_bytes()
}

fn mount_arg(inner: &str) -> (String, String) {
    (
        format!(
            r#"{{"type":"procMountPlease","flags":0,"arg":{{"source":"/a","destination":"/b","device":"bind",{inner}"#
        ),
        "}}".to_string(),
    )
}

#[test]
fn decoding_stays_within_32_bytes_per_record_byte() {
    let one_deep = format!(
        "{}1{}",
        "[".repeat(MAX_JSON_DEPTH - 1),
        "]".repeat(MAX_JSON_DEPTH - 1)
    );
    let mut worst = (0.0f64, String::new());
    for max in [64 * 1024, MAX_RECORD_CEILING] {
        let limits = Limits::with_max_record(max);
        let top = (r#"{"type":"procReady","flags":0,"x":["#, "]}");
        let mut cases: Vec<(&str, MountShape, Vec<u8>)> = vec![
            // Unknown top-level key: nested one-element arrays, empty arrays,
            // empty objects, numbers (the main-branch worst cases).
            (
                "nested one-element arrays",
                MountShape::V1_2,
                fill(top.0, &one_deep, top.1, max),
            ),
            (
                "empty arrays",
                MountShape::V1_2,
                fill(top.0, "[]", top.1, max),
            ),
            (
                "empty objects",
                MountShape::V1_2,
                fill(top.0, "{}", top.1, max),
            ),
            (
                "small numbers",
                MountShape::V1_2,
                fill(top.0, "0", top.1, max),
            ),
            (
                "escaped keys",
                MountShape::V1_2,
                fill(
                    r#"{"type":"procReady","flags":0,"x":{"#,
                    r#""\u0061":0"#,
                    "}}",
                    max,
                ),
            ),
        ];
        // Values the message keeps: propagation flags, id-map lines, both
        // layouts that carry them.
        let (o, c) = mount_arg(r#""propagation_flags":["#);
        cases.push((
            "propagation flags",
            MountShape::V1_2,
            fill(&o, "0", &format!("]{c}"), max),
        ));
        let (o, c) = mount_arg(r#""id_mapping":{"uid_mappings":["#);
        cases.push((
            "empty id-map lines",
            MountShape::V1_4,
            fill(&o, "{}", &format!("]}}{c}"), max),
        ));
        let (o, c) = mount_arg(r#""uid_mappings":["#);
        cases.push((
            "seed id-map lines",
            MountShape::Seed,
            fill(&o, "{}", &format!("]{c}"), max),
        ));
        let (o, c) = mount_arg(r#""data":""#);
        cases.push((
            "escaped string",
            MountShape::V1_2,
            fill(&o, r#"\u00e9"#, &format!("\"{c}"), max),
        ));
        for (name, shape, rec) in &cases {
            assert!(
                rec.len() <= max && rec.len() > max - 64,
                "{name}: {} bytes",
                rec.len()
            );
            let (res, peak) =
                peak_of(|| runc::decode(rec, *shape, &limits).map(|h| h.finish(None)));
            // Accepted or rejected, the bound holds; rejections here are
            // only the protocol's own (e.g. empty id-map lines).
            drop(res);
            let per_byte = peak as f64 / rec.len() as f64;
            println!(
                "{name} ({} bytes, {}): peak {peak} bytes = {per_byte:.2} B/B",
                rec.len(),
                shape.name()
            );
            assert!(
                peak <= 32 * rec.len(),
                "{name}: {peak} bytes for a {}-byte record ({per_byte:.1} B/B)",
                rec.len()
            );
            if per_byte > worst.0 {
                worst = (per_byte, name.to_string());
            }
        }
    }
    println!("worst: {:.2} B/B ({})", worst.0, worst.1);
}
