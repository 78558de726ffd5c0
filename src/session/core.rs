//! The sans-IO session core shared by every driver (blocking and async):
//! what to send, what a received message means, what to reply. No system
//! calls and no clocks here: the drivers do the I/O and pass in what
//! happened.

use std::time::{Duration, Instant};

use crate::schema::SyncMessage;
use crate::transport::Wire;
use crate::wire::{native, Limits};

/// What a truncated Error text ends with, so a reader sees it was cut.
pub const TRUNCATION_MARK: &str = " […truncated]";

/// `now + limit`, or `None` (no deadline) when that is past the end of
/// time: a deadline too far away to represent is no deadline.
pub(crate) fn deadline_after(now: Instant, limit: Option<Duration>) -> Option<Instant> {
    limit.and_then(|d| now.checked_add(d))
}

/// Whether `msg` (sent without an fd) fits one record of `wire` under `limits`,
/// as the wire's own encoder computes it.
#[cfg_attr(not(feature = "runc-compat"), allow(unused_variables))]
fn fits(msg: &SyncMessage, wire: Wire, limits: &Limits, scratch: &mut Vec<u8>) -> bool {
    match wire {
        Wire::Native => native::encoded_len(msg, false) <= limits.max_record(),
        #[cfg(feature = "runc-compat")]
        Wire::Runc(shape) => {
            scratch.clear();
            crate::wire::runc::encode(msg, None, shape, limits, scratch).is_ok()
        }
    }
}

/// An Error message carrying `text`, cut (at a UTF-8 boundary, ending with
/// [`TRUNCATION_MARK`]) so that its record fits `limits` on `wire`: a long
/// refusal or handler text built from a 4096-byte path, or any text under a
/// small record limit, still reaches the peer instead of failing to encode.
pub fn error_reply(text: &str, wire: Wire, limits: &Limits) -> SyncMessage {
    let mut scratch = Vec::new();
    let msg = SyncMessage::error(text);
    if fits(&msg, wire, limits, &mut scratch) {
        return msg;
    }
    let with_cut = |cut: usize| {
        let mut t = String::with_capacity(cut + TRUNCATION_MARK.len());
        t.push_str(&text[..cut]);
        t.push_str(TRUNCATION_MARK);
        SyncMessage::error(t)
    };
    // The largest char-boundary prefix that fits with the mark. The encoded
    // size grows with the prefix, so binary search over byte offsets, each
    // rounded down to a char boundary.
    let (mut lo, mut hi) = (0usize, text.len());
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(
            &with_cut(floor_char_boundary(text, mid)),
            wire,
            limits,
            &mut scratch,
        ) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let lo = floor_char_boundary(text, lo);
    let msg = with_cut(lo);
    if fits(&msg, wire, limits, &mut scratch) {
        msg
    } else {
        // Not even the mark fits (limits are at least 16 bytes; a runc Error
        // needs more): send the shortest honest text there is.
        SyncMessage::error("")
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(m: &SyncMessage) -> &str {
        m.error_message().unwrap()
    }

    #[test]
    fn short_texts_are_untouched_and_long_ones_cut_to_fit_at_char_boundaries() {
        let limits = Limits::with_max_record(128);
        assert_eq!(
            text_of(&error_reply("short", Wire::Native, &limits)),
            "short"
        );
        for unit in ["a", "é", "€", "𝄞", "a\u{0}\"\\é"] {
            let long = unit.repeat(5000);
            for max in [16, 17, 64, 100, 128, 4096, 65536] {
                let limits = Limits::with_max_record(max);
                let m = error_reply(&long, Wire::Native, &limits);
                let t = text_of(&m);
                assert!(native::encoded_len(&m, false) <= limits.max_record());
                if t != long && !t.is_empty() {
                    assert!(t.ends_with(TRUNCATION_MARK), "{max}: {t:?}");
                    let kept = &t[..t.len() - TRUNCATION_MARK.len()];
                    assert!(long.starts_with(kept));
                    // Maximal: one more character would not fit.
                    let next =
                        &long[..kept.len() + long[kept.len()..].chars().next().unwrap().len_utf8()];
                    let bigger = SyncMessage::error(format!("{next}{TRUNCATION_MARK}"));
                    assert!(native::encoded_len(&bigger, false) > limits.max_record());
                }
            }
        }
    }

    #[cfg(feature = "runc-compat")]
    #[test]
    fn runc_texts_are_cut_by_the_escaped_size() {
        use crate::wire::runc::{encode, MountShape};
        // Control characters expand sixfold in JSON (\u0001).
        let long = "\u{1}é/".repeat(20000);
        for max in [64, 200, 4096, 65536] {
            let limits = Limits::with_max_record(max);
            let wire = Wire::Runc(MountShape::V1_2);
            let m = error_reply(&long, wire, &limits);
            let mut out = Vec::new();
            let recs = encode(&m, None, MountShape::V1_2, &limits, &mut out).unwrap();
            assert!(recs.json.len() <= limits.max_record());
            assert!(text_of(&m).ends_with(TRUNCATION_MARK) || text_of(&m).is_empty());
        }
    }

    #[test]
    fn a_deadline_past_the_end_of_time_is_no_deadline() {
        let now = Instant::now();
        assert_eq!(deadline_after(now, Some(Duration::MAX)), None);
        assert_eq!(deadline_after(now, None), None);
        assert_eq!(
            deadline_after(now, Some(Duration::from_secs(1))),
            Some(now + Duration::from_secs(1))
        );
    }
}
