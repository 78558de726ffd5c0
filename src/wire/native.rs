//! procsync's native framing: one record is `varint(len(body)) || body`,
//! where `body` is a protobuf-encoded [`SyncMessage`] and the varint is the
//! minimal unsigned LEB128 encoding of the body's length.
//!
//! The prefix is redundant on a seqpacket socket (the record has a size), and
//! that is the point: it must equal the bytes that follow *exactly*, which
//! catches truncation and trailing garbage that protobuf alone would accept.
//!
//! ```
//! use procsync::bytes::BytesMut;
//! use procsync::schema::SyncMessage;
//! use procsync::wire::{native, Limits};
//!
//! let mut buf = BytesMut::with_capacity(64);
//! native::encode(&SyncMessage::ready(), false, &mut buf, &Limits::default()).unwrap();
//! assert_eq!(&buf[..], &[0x02, 0x08, 0x02]);
//! let back = native::decode(&buf, 0, &Limits::default()).unwrap();
//! assert_eq!(back, SyncMessage::ready());
//! ```

use bytes::BytesMut;

use crate::schema::{SyncMessage, FLAG_HAS_FD};
use crate::wire::validate::validate_with_flags;
use crate::wire::{pb, validate, DecodeError, EncodeError, Limits};

/// Encodes `msg` as one record appended to `buf`.
///
/// `fd_attached` says whether an fd will travel with the record; the HasFd
/// bit is set from it, whatever `msg.flags` says about HasFd, so a caller
/// cannot announce an fd it does not send (runc's writer does the same).
/// The message is validated first: an invalid message is never encoded.
/// Nothing is allocated when `buf` already has room for the record.
pub fn encode(
    msg: &SyncMessage,
    fd_attached: bool,
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<(), EncodeError> {
    let flags = (msg.flags & !FLAG_HAS_FD) | if fd_attached { FLAG_HAS_FD } else { 0 };
    let ty = validate_with_flags(msg, flags, usize::from(fd_attached))?;
    let sizes = pb::sizes(msg, flags);
    let size = sizes.record();
    if size > limits.max_record() {
        return Err(EncodeError::TooLarge {
            ty,
            size,
            max: limits.max_record(),
        });
    }
    pb::encode_record(msg, flags, sizes, buf);
    Ok(())
}

/// The size of the record [`encode`] would produce (without validating).
pub fn encoded_len(msg: &SyncMessage, fd_attached: bool) -> usize {
    let flags = (msg.flags & !FLAG_HAS_FD) | if fd_attached { FLAG_HAS_FD } else { 0 };
    pb::sizes(msg, flags).record()
}

/// Decodes one record that arrived together with `nfds` fds into a
/// validated message. Never panics; every rejection is a typed
/// [`DecodeError`]. Allocation is bounded by the record size, which is
/// checked against `limits` before anything is decoded.
pub fn decode(record: &[u8], nfds: usize, limits: &Limits) -> Result<SyncMessage, DecodeError> {
    let mut msg = SyncMessage::default();
    decode_into(record, nfds, limits, &mut msg)?;
    Ok(msg)
}

/// [`decode`] into `msg`, which must be the default message (the transport
/// builds the message where it returns it). On error `msg` holds a partial
/// message, to be discarded.
#[inline]
pub(crate) fn decode_into(
    record: &[u8],
    nfds: usize,
    limits: &Limits,
    msg: &mut SyncMessage,
) -> Result<(), DecodeError> {
    if record.is_empty() {
        return Err(DecodeError::Empty);
    }
    if record.len() > limits.max_record() {
        return Err(DecodeError::TooLarge {
            size: record.len(),
            max: limits.max_record(),
        });
    }
    let (declared, prefix_len) = read_varint(record)?;
    let body = &record[prefix_len..];
    if declared != body.len() as u64 {
        return Err(DecodeError::LengthMismatch {
            declared,
            actual: body.len(),
        });
    }
    pb::decode_into(body, msg).map_err(malformed)?;
    validate(msg, nfds)?;
    Ok(())
}

/// Decodes a protobuf `SyncMessage` body alone: no length prefix, no size
/// limit, no validation. It accepts exactly what prost's
/// `SyncMessage::decode` accepts, with the same result (a hand-written
/// decoder for this one schema, several times faster; `tests/codec_prost.rs`
/// holds it to prost). Every rejection is [`DecodeError::Malformed`].
pub fn decode_body(body: &[u8]) -> Result<SyncMessage, DecodeError> {
    let mut msg = SyncMessage::default();
    pb::decode_into(body, &mut msg).map_err(malformed)?;
    Ok(msg)
}

#[cold]
fn malformed(e: pb::Malformed) -> DecodeError {
    DecodeError::Malformed(e.to_string())
}

/// Reads a minimal LEB128 varint from the front of `buf`.
fn read_varint(buf: &[u8]) -> Result<(u64, usize), DecodeError> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err(DecodeError::MalformedLength);
        }
        value |= bits << (7 * i);
        if b & 0x80 == 0 {
            // A final zero byte after the first is a non-minimal encoding.
            if i > 0 && b == 0 {
                return Err(DecodeError::MalformedLength);
            }
            return Ok((value, i + 1));
        }
    }
    if buf.len() < 10 {
        Err(DecodeError::TruncatedLength)
    } else {
        Err(DecodeError::MalformedLength)
    }
}
