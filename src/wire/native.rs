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

use bytes::{BufMut, BytesMut};
use prost::encoding::{encode_varint, encoded_len_varint};
use prost::Message;

use crate::schema::{SyncMessage, FLAG_HAS_FD};
use crate::wire::validate::validate_with_flags;
use crate::wire::{validate, DecodeError, EncodeError, Limits};

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
    let body_len = body_len(msg, flags);
    let size = encoded_len_varint(body_len as u64) + body_len;
    if size > limits.max_record() {
        return Err(EncodeError::TooLarge {
            ty,
            size,
            max: limits.max_record(),
        });
    }
    buf.reserve(size);
    encode_varint(body_len as u64, buf);
    encode_body(msg, flags, buf);
    Ok(())
}

/// The size of the record [`encode`] would produce (without validating).
pub fn encoded_len(msg: &SyncMessage, fd_attached: bool) -> usize {
    let flags = (msg.flags & !FLAG_HAS_FD) | if fd_attached { FLAG_HAS_FD } else { 0 };
    let body_len = body_len(msg, flags);
    encoded_len_varint(body_len as u64) + body_len
}

/// Decodes one record that arrived together with `nfds` fds into a
/// validated message. Never panics; every rejection is a typed
/// [`DecodeError`]. Allocation is bounded by the record size, which is
/// checked against `limits` before anything is decoded.
pub fn decode(record: &[u8], nfds: usize, limits: &Limits) -> Result<SyncMessage, DecodeError> {
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
    let msg = SyncMessage::decode(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    validate(&msg, nfds)?;
    Ok(msg)
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

fn body_len(msg: &SyncMessage, flags: u32) -> usize {
    let mut n = 0;
    if msg.r#type != 0 {
        n += prost::encoding::int32::encoded_len(1, &msg.r#type);
    }
    if flags != 0 {
        n += prost::encoding::uint32::encoded_len(2, &flags);
    }
    if let Some(p) = &msg.payload {
        n += p.encoded_len();
    }
    n
}

fn encode_body(msg: &SyncMessage, flags: u32, buf: &mut impl BufMut) {
    if msg.r#type != 0 {
        prost::encoding::int32::encode(1, &msg.r#type, buf);
    }
    if flags != 0 {
        prost::encoding::uint32::encode(2, &flags, buf);
    }
    if let Some(p) = &msg.payload {
        p.encode(buf);
    }
}
