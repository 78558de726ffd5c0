// Invariant checks shared by the fuzz targets and the corpus replay test.
// Every function takes the raw fuzz input and panics if an invariant breaks.

use bytes::BytesMut;
use procsync::wire::{native, validate, Limits, MAX_RECORD_CEILING};

/// Input layout: byte 0 selects the number of fds that "arrived" (low two
/// bits: 0..=3); the rest is one record.
///
/// Invariants: decoding never panics; an accepted message passes validation
/// with the same fd count, re-encodes (HasFd from its flags) to a record that
/// decodes to the same message, and the canonical record of that message is
/// a fixed point; a rejection has a stable kind and a message.
pub fn frame_decode(data: &[u8]) {
    let Some((&sel, record)) = data.split_first() else {
        return;
    };
    let nfds = usize::from(sel & 3);
    let limits = Limits::default();
    match native::decode(record, nfds, &limits) {
        Ok(msg) => {
            assert!(record.len() <= limits.max_record());
            validate(&msg, nfds).expect("an accepted message validates");
            let wide = Limits::with_max_record(MAX_RECORD_CEILING);
            let mut buf = BytesMut::new();
            native::encode(&msg, msg.has_fd(), &mut buf, &wide)
                .expect("an accepted message re-encodes");
            let again = native::decode(&buf, nfds, &wide).expect("the re-encoded record decodes");
            assert_eq!(again, msg, "re-encode round trip changed the message");
            let mut buf2 = BytesMut::new();
            native::encode(&again, again.has_fd(), &mut buf2, &wide).unwrap();
            assert_eq!(buf, buf2, "canonical encoding is not a fixed point");
            assert_eq!(native::encoded_len(&msg, msg.has_fd()), buf.len());
        }
        Err(e) => {
            assert!(!e.kind().as_str().is_empty());
            assert!(!e.to_string().is_empty());
        }
    }
}
