//! Wire formats: how a [`SyncMessage`](crate::schema::SyncMessage) becomes the
//! bytes of one `SOCK_SEQPACKET` record and back. Sans-IO: no syscalls here.
//!
//! * [`native`] — procsync's own framing: `varint(len) || protobuf body`.
//! * [`mod@validate`] — the rules every decoded message must satisfy, shared by
//!   every wire format (types, flag bits, the HasFd/fd-count rule, payload
//!   shapes and values).
//!
//! Errors say who caused them: a [`DecodeError`] means the bytes that came
//! from the peer are bad; an [`EncodeError`] means the local caller tried to
//! send something the protocol does not allow.

#![forbid(unsafe_code)]

pub mod native;
mod pb;
#[cfg(feature = "runc-compat")]
pub mod runc;
pub mod validate;

pub use validate::{validate, ValidationError};

use crate::schema::MessageType;

/// Default maximum record size: 64 KiB, well under the ~212 KB a seqpacket
/// record can have with the default socket buffer.
pub const DEFAULT_MAX_RECORD: usize = 64 * 1024;

/// The largest maximum [`Limits::with_max_record`] accepts: above this the
/// kernel refuses records with `EMSGSIZE` under default socket buffers.
pub const MAX_RECORD_CEILING: usize = 200 * 1024;

/// At most this many fds travel with one record.
pub const MAX_FDS_PER_RECORD: usize = 1;

/// Size limits a codec enforces on both encode and decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_record: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record: DEFAULT_MAX_RECORD,
        }
    }
}

impl Limits {
    /// Limits with a maximum record size of `max_record` bytes, clamped to
    /// `16..=MAX_RECORD_CEILING`.
    pub fn with_max_record(max_record: usize) -> Self {
        Limits {
            max_record: max_record.clamp(16, MAX_RECORD_CEILING),
        }
    }

    /// The maximum record size in bytes (length prefix included).
    pub fn max_record(&self) -> usize {
        self.max_record
    }
}

/// Why a received record was rejected. The peer caused every one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A record with no bytes (on a seqpacket socket this reads as EOF).
    #[error("empty record")]
    Empty,
    /// The varint length prefix ends before its last byte.
    #[error("truncated length prefix")]
    TruncatedLength,
    /// The length prefix is longer than 10 bytes, overflows, or is not minimal.
    #[error("malformed length prefix")]
    MalformedLength,
    /// The length prefix does not match the bytes that follow it.
    #[error("length prefix says {declared} bytes but {actual} follow")]
    LengthMismatch {
        /// What the prefix declared.
        declared: u64,
        /// What actually followed.
        actual: usize,
    },
    /// The record is larger than the configured maximum.
    #[error("record of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The record's size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The body is not a valid protobuf `SyncMessage`.
    #[error("malformed body: {0}")]
    Malformed(String),
    /// The message decoded but breaks a protocol rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// Why a message could not be encoded. The local caller caused every one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The message breaks a protocol rule; it is never sent. The rule is
    /// part of this error's text, not a separate `source()`, so an error
    /// chain names it once.
    #[error("refusing to send an invalid message: {0}")]
    Invalid(ValidationError),
    /// The encoded record would exceed the configured maximum.
    #[error("{ty} record of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The message type.
        ty: MessageType,
        /// The record's size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
}

impl From<ValidationError> for EncodeError {
    fn from(e: ValidationError) -> Self {
        EncodeError::Invalid(e)
    }
}

/// A stable, language-neutral name for each rejection, used by the golden
/// vectors (`tests/vectors/`) and by every implementation of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `empty-record`
    EmptyRecord,
    /// `truncated-length`
    TruncatedLength,
    /// `malformed-length`
    MalformedLength,
    /// `length-mismatch`
    LengthMismatch,
    /// `too-large`
    TooLarge,
    /// `malformed-body`
    MalformedBody,
    /// `unspecified-type`
    UnspecifiedType,
    /// `unknown-type`
    UnknownType,
    /// `reserved-flags`
    ReservedFlags,
    /// `missing-fd`
    MissingFd,
    /// `unexpected-fd`
    UnexpectedFd,
    /// `too-many-fds`
    TooManyFds,
    /// `missing-payload`
    MissingPayload,
    /// `unexpected-payload`
    UnexpectedPayload,
    /// `invalid-value`
    InvalidValue,
}

impl ErrorKind {
    /// The stable name (`"missing-fd"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::EmptyRecord => "empty-record",
            ErrorKind::TruncatedLength => "truncated-length",
            ErrorKind::MalformedLength => "malformed-length",
            ErrorKind::LengthMismatch => "length-mismatch",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::MalformedBody => "malformed-body",
            ErrorKind::UnspecifiedType => "unspecified-type",
            ErrorKind::UnknownType => "unknown-type",
            ErrorKind::ReservedFlags => "reserved-flags",
            ErrorKind::MissingFd => "missing-fd",
            ErrorKind::UnexpectedFd => "unexpected-fd",
            ErrorKind::TooManyFds => "too-many-fds",
            ErrorKind::MissingPayload => "missing-payload",
            ErrorKind::UnexpectedPayload => "unexpected-payload",
            ErrorKind::InvalidValue => "invalid-value",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DecodeError {
    /// The stable kind of this rejection.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DecodeError::Empty => ErrorKind::EmptyRecord,
            DecodeError::TruncatedLength => ErrorKind::TruncatedLength,
            DecodeError::MalformedLength => ErrorKind::MalformedLength,
            DecodeError::LengthMismatch { .. } => ErrorKind::LengthMismatch,
            DecodeError::TooLarge { .. } => ErrorKind::TooLarge,
            DecodeError::Malformed(_) => ErrorKind::MalformedBody,
            DecodeError::Invalid(v) => v.kind(),
        }
    }
}
