//! The runc codec's errors and their stable kinds (PROTOCOL.md §15).

use crate::schema::MessageType;
use crate::wire::{ErrorKind, ValidationError};

use super::{type_name, MAX_FD_NAME_LEN};

/// A stable, language-neutral name for each rejection of the runc codec:
/// the native [`ErrorKind`]s where they fit, plus runc-specific ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuncErrorKind {
    /// A kind shared with the native wire (`too-large`, `malformed-body`,
    /// `unknown-type`, `missing-fd`, `missing-payload`, ...).
    Wire(ErrorKind),
    /// `too-deep`: arrays/objects nested deeper than [`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH).
    TooDeep,
    /// `wrong-type`: a JSON value of the wrong type for its key.
    WrongType,
    /// `number-out-of-range`: an integer beyond what its field can hold.
    NumberOutOfRange,
    /// `missing-field`: a key runc always sends is absent or `null`.
    MissingField,
    /// `duplicate-field`: a known key appears twice in one object.
    DuplicateField,
    /// `noncanonical-key`: a key matches a known key only case-insensitively.
    NoncanonicalKey,
    /// `unknown-field`: a `configs.Mount` key (or a key of an object inside
    /// it) that the selected [`MountShape`](super::MountShape) does not have.
    UnknownField,
    /// `fd-name-mismatch`: the fd record's name is not the expected one.
    FdNameMismatch,
    /// `fd-name-too-long`: the fd record's name is 4096 bytes or longer.
    FdNameTooLong,
    /// `fd-name-invalid`: the fd record's name is empty, holds a NUL or is not UTF-8.
    FdNameInvalid,
    /// `unrepresentable`: the message cannot be expressed on runc's wire.
    Unrepresentable,
}

impl RuncErrorKind {
    /// The stable name (`"fd-name-mismatch"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            RuncErrorKind::Wire(k) => k.as_str(),
            RuncErrorKind::TooDeep => "too-deep",
            RuncErrorKind::WrongType => "wrong-type",
            RuncErrorKind::NumberOutOfRange => "number-out-of-range",
            RuncErrorKind::MissingField => "missing-field",
            RuncErrorKind::DuplicateField => "duplicate-field",
            RuncErrorKind::NoncanonicalKey => "noncanonical-key",
            RuncErrorKind::UnknownField => "unknown-field",
            RuncErrorKind::FdNameMismatch => "fd-name-mismatch",
            RuncErrorKind::FdNameTooLong => "fd-name-too-long",
            RuncErrorKind::FdNameInvalid => "fd-name-invalid",
            RuncErrorKind::Unrepresentable => "unrepresentable",
        }
    }
}

impl std::fmt::Display for RuncErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The message type an error is about, printed with runc's name, or
/// `record` before the type is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeContext(pub Option<MessageType>);

impl std::fmt::Display for TypeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(t) => f.write_str(type_name(t)),
            None => f.write_str("record"),
        }
    }
}

/// Why a received runc record was rejected. The peer caused every one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuncDecodeError {
    /// A record with no bytes (reads as EOF on a seqpacket socket).
    #[error("empty record")]
    Empty,
    /// The record is larger than the configured maximum; nothing was parsed.
    #[error("record of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The record's size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Not JSON: bad syntax, invalid UTF-8, a lone surrogate escape.
    #[error("malformed JSON at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset of the problem.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Arrays/objects nested deeper than allowed.
    #[error("JSON nested deeper than {max} levels")]
    TooDeep {
        /// The cap ([`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH)).
        max: usize,
    },
    /// A value of the wrong JSON type.
    #[error("{ty}: {field}: expected {expected}, got {got}")]
    WrongType {
        /// The message type, if known yet.
        ty: TypeContext,
        /// The key, as a dotted path (`arg.flags`).
        field: &'static str,
        /// What the key needs.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// An integer beyond its field's range.
    #[error("{ty}: {field}: {value} is out of range {min}..={max}")]
    NumberOutOfRange {
        /// The message type, if known yet.
        ty: TypeContext,
        /// The key, as a dotted path.
        field: &'static str,
        /// The literal (at most 40 characters of it).
        value: String,
        /// Smallest accepted value.
        min: i128,
        /// Largest accepted value.
        max: i128,
    },
    /// A required key is absent or `null`.
    #[error("{ty}: missing {field}")]
    MissingField {
        /// The message type, if known yet.
        ty: TypeContext,
        /// The key.
        field: &'static str,
    },
    /// A known key appears twice in one object (Go would silently take the last).
    #[error("{ty}: duplicate key {field}")]
    DuplicateField {
        /// The message type, if known yet.
        ty: TypeContext,
        /// The key, as a dotted path.
        field: &'static str,
    },
    /// A key equals a known key only when case is ignored (Go would accept it).
    #[error("{ty}: key {got:?} must be spelled {field:?}")]
    NoncanonicalKey {
        /// The message type, if known yet.
        ty: TypeContext,
        /// The canonical key, as a dotted path.
        field: &'static str,
        /// The key that came (at most 40 characters of it).
        got: String,
    },
    /// A key inside the `procMountPlease` argument that the selected
    /// [`MountShape`](super::MountShape) does not have: it may carry meaning
    /// (an id mapping in another layout) and is never dropped silently.
    #[error("{ty}: unknown key {got:?} in {object} for the {shape} layout")]
    UnknownField {
        /// The message type, if known yet.
        ty: TypeContext,
        /// The object holding the key, as a dotted path (`arg`, `arg.id_mapping`).
        object: &'static str,
        /// The key that came (at most 40 characters of it).
        got: String,
        /// The layout's name ([`MountShape::name`](super::MountShape::name)).
        shape: &'static str,
    },
    /// The `type` string is not one of runc's.
    #[error("unknown sync type {0:?}")]
    UnknownType(String),
    /// Flag bits other than HasFd are set.
    #[error("{ty}: reserved flag bits set: {flags:#x}")]
    ReservedFlags {
        /// The message type.
        ty: TypeContext,
        /// The flags value.
        flags: i64,
    },
    /// The fd record came without its fd.
    #[error("fd record carries no fd")]
    FdRecordMissingFd,
    /// The fd record carried more than one fd (all of them must be closed).
    #[error("fd record carries {count} fds, exactly 1 allowed")]
    FdRecordTooManyFds {
        /// How many fds arrived.
        count: usize,
    },
    /// The fd record's name is 4096 bytes or longer.
    #[error("fd record name of {len} bytes is too long (at most {MAX_FD_NAME_LEN})")]
    FdNameTooLong {
        /// The name's length.
        len: usize,
    },
    /// The fd record's name is empty, holds a NUL, or is not UTF-8.
    #[error("invalid fd record name: {reason}")]
    FdNameInvalid {
        /// What is wrong.
        reason: &'static str,
    },
    /// The fd record's name is not the one expected (for `procMountFd`, the
    /// requested mount's source).
    #[error("fd record name {got:?} does not match the expected {expected:?}")]
    FdNameMismatch {
        /// What was expected.
        expected: String,
        /// What came.
        got: String,
    },
    /// The message parsed but breaks a protocol rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

impl RuncDecodeError {
    /// The stable kind of this rejection.
    pub fn kind(&self) -> RuncErrorKind {
        use RuncErrorKind as K;
        match self {
            RuncDecodeError::Empty => K::Wire(ErrorKind::EmptyRecord),
            RuncDecodeError::TooLarge { .. } => K::Wire(ErrorKind::TooLarge),
            RuncDecodeError::Malformed { .. } => K::Wire(ErrorKind::MalformedBody),
            RuncDecodeError::TooDeep { .. } => K::TooDeep,
            RuncDecodeError::WrongType { .. } => K::WrongType,
            RuncDecodeError::NumberOutOfRange { .. } => K::NumberOutOfRange,
            RuncDecodeError::MissingField { .. } => K::MissingField,
            RuncDecodeError::DuplicateField { .. } => K::DuplicateField,
            RuncDecodeError::NoncanonicalKey { .. } => K::NoncanonicalKey,
            RuncDecodeError::UnknownField { .. } => K::UnknownField,
            RuncDecodeError::UnknownType(_) => K::Wire(ErrorKind::UnknownType),
            RuncDecodeError::ReservedFlags { .. } => K::Wire(ErrorKind::ReservedFlags),
            RuncDecodeError::FdRecordMissingFd => K::Wire(ErrorKind::MissingFd),
            RuncDecodeError::FdRecordTooManyFds { .. } => K::Wire(ErrorKind::TooManyFds),
            RuncDecodeError::FdNameTooLong { .. } => K::FdNameTooLong,
            RuncDecodeError::FdNameInvalid { .. } => K::FdNameInvalid,
            RuncDecodeError::FdNameMismatch { .. } => K::FdNameMismatch,
            RuncDecodeError::Invalid(v) => K::Wire(v.kind()),
        }
    }
}

/// Why a message could not be encoded for runc's wire. The local caller
/// caused every one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuncEncodeError {
    /// The message breaks a protocol rule; it is never sent. The rule is
    /// part of this error's text, not a separate `source()`, so an error
    /// chain names it once.
    #[error("refusing to send an invalid message: {0}")]
    Invalid(ValidationError),
    /// The message has no runc equivalent.
    #[error("{ty}: {field} cannot travel on runc's wire: {reason}")]
    Unrepresentable {
        /// The message type.
        ty: MessageType,
        /// The field, as a dotted path.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The fd name is not usable as an fd record (empty, or holds a NUL).
    #[error("{ty}: invalid fd name: {reason}")]
    FdName {
        /// The message type.
        ty: MessageType,
        /// What is wrong.
        reason: &'static str,
    },
    /// The fd name is 4096 bytes or longer (runc's reader refuses it).
    #[error("{ty}: fd name of {len} bytes is too long (at most {MAX_FD_NAME_LEN})")]
    FdNameTooLong {
        /// The message type.
        ty: MessageType,
        /// The name's length.
        len: usize,
    },
    /// A `procMountFd`'s fd name must equal its source (runc's child checks it).
    #[error("{ty}: fd name {fd_name:?} differs from the mount source {mount_source:?}")]
    FdNameMismatch {
        /// The message type.
        ty: MessageType,
        /// The payload's source.
        mount_source: String,
        /// The fd name given.
        fd_name: String,
    },
    /// The JSON record would exceed the configured maximum.
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

impl From<ValidationError> for RuncEncodeError {
    fn from(e: ValidationError) -> Self {
        RuncEncodeError::Invalid(e)
    }
}

impl RuncEncodeError {
    /// The stable kind of this refusal.
    pub fn kind(&self) -> RuncErrorKind {
        match self {
            RuncEncodeError::Invalid(v) => RuncErrorKind::Wire(v.kind()),
            RuncEncodeError::Unrepresentable { .. } => RuncErrorKind::Unrepresentable,
            RuncEncodeError::FdName { .. } => RuncErrorKind::FdNameInvalid,
            RuncEncodeError::FdNameTooLong { .. } => RuncErrorKind::FdNameTooLong,
            RuncEncodeError::FdNameMismatch { .. } => RuncErrorKind::FdNameMismatch,
            RuncEncodeError::TooLarge { .. } => RuncErrorKind::Wire(ErrorKind::TooLarge),
        }
    }
}

/// At most 40 characters of `s` (an ellipsis marks a cut), for error fields.
pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}
