//! runc's own sync wire (runc ≥ 1.2, `libcontainer/sync.go`), as a sans-IO
//! codec over the same [`SyncMessage`] types and the same
//! [validation](mod@crate::wire::validate) as the native wire.
//!
//! One message is one `SOCK_SEQPACKET` record of compact JSON, printed the
//! way Go's `encoding/json` prints runc's `syncT`:
//!
//! ```text
//! {"type":"procReady","flags":0}
//! {"type":"procSeccomp","flags":0,"arg":7}
//! {"type":"procMountFd","flags":1,"arg":{"type":"plain-open"}}   + fd record "/src"
//! ```
//!
//! Flags bit 0 is HasFd: then a *second* record follows whose payload is the
//! file's name (no NUL, under 4096 bytes) and which carries exactly one
//! `SCM_RIGHTS` fd. For `procMountFd` the name is the requested mount's source
//! and becomes [`MountFdInfo::source`](crate::schema::MountFdInfo).
//!
//! * [`encode`] prints a message (and names the fd record) in either
//!   [`MountShape`];
//! * [`decode`] parses the JSON record into a [`RuncHeader`];
//!   [`decode_fd_record`] checks the name record, and
//!   [`RuncHeader::finish`] joins the two into a validated [`SyncMessage`].
//!
//! ```
//! use procsync::schema::{Mount, SyncMessage, MountSourceKind};
//! use procsync::wire::{runc, Limits};
//!
//! let limits = Limits::default();
//! let mut out = Vec::new();
//! let recs = runc::encode(&SyncMessage::ready(), None, runc::MountShape::V1_2, &limits, &mut out).unwrap();
//! assert_eq!(recs.json, br#"{"type":"procReady","flags":0}"#);
//!
//! // A mount fd reply: the JSON record, then a name record carrying the fd.
//! let reply = SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/srv/data");
//! let mut out = Vec::new();
//! let recs = runc::encode(&reply, Some("/srv/data"), runc::MountShape::V1_2, &limits, &mut out).unwrap();
//! assert_eq!(recs.json, br#"{"type":"procMountFd","flags":1,"arg":{"type":"plain-open"}}"#);
//! assert_eq!(recs.fd_name, Some(&b"/srv/data"[..]));
//!
//! let header = runc::decode(recs.json, &limits).unwrap();
//! assert!(header.has_fd());
//! let name = runc::decode_fd_record(b"/srv/data", 1, Some("/srv/data")).unwrap();
//! let msg = header.finish(Some(name)).unwrap();
//! assert_eq!(msg.mount_fd_info(), reply.mount_fd_info());
//! assert!(msg.has_fd()); // decoded messages keep HasFd, as the native codec's do
//! ```
//!
//! Decoding is stricter than Go in the ways `docs/PROTOCOL.md` (runc
//! chapter) lists: exact-case keys, no duplicate known keys, integers only
//! and in the field's range, nesting at most [`MAX_JSON_DEPTH`], strict
//! UTF-8. Unknown keys are ignored, as Go does.

mod json;

use std::borrow::Cow;

use crate::schema::{
    ErrorInfo, FdAttached, IdMap, IdMapping, MessageType, Mount, MountAttr, MountFdInfo,
    MountSourceKind, Payload, SeccompInfo, SeccompTransfer, SyncMessage, FLAG_HAS_FD,
};
use crate::wire::validate::{validate_with_flags, PATH_MAX};
use crate::wire::{ErrorKind, Limits, ValidationError};

use json::{ParseError, Value};

/// Arrays and objects may nest at most this deep in a record (the deepest
/// thing runc sends, an id-map entry, sits at depth 5).
pub const MAX_JSON_DEPTH: usize = 16;

/// The longest fd-record name, in bytes: runc reads the name into a
/// 4096-byte buffer and rejects a read that fills it.
pub const MAX_FD_NAME_LEN: usize = PATH_MAX - 1;

/// Which JSON layout of runc's `configs.Mount` to print in a
/// `procMountPlease`. Decoding accepts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MountShape {
    /// runc 1.2.x and 1.3.x: every field printed (`null` for an absent
    /// `propagation_flags` or `rec_attr`), `relabel` included; `id_mapping`
    /// printed only when present, with `recursive` always inside it.
    #[default]
    V1_2,
    /// runc 1.4 and later: `source`, `destination` and `device` always,
    /// every other field only when non-zero (Go's `omitempty`), inside
    /// `id_mapping` too. runc ≥ 1.5 ignores `relabel`.
    V1_4,
}

impl MountShape {
    /// The name used in the golden vectors (`"v1.2"`, `"v1.4"`).
    pub const fn name(self) -> &'static str {
        match self {
            MountShape::V1_2 => "v1.2",
            MountShape::V1_4 => "v1.4",
        }
    }

    /// Parses [`MountShape::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "v1.2" => Some(MountShape::V1_2),
            "v1.4" => Some(MountShape::V1_4),
            _ => None,
        }
    }
}

/// runc's name for a message type (`"procMountPlease"`), as it travels in
/// the `type` key; `""` for [`MessageType::Unspecified`], which has none.
pub const fn type_name(ty: MessageType) -> &'static str {
    match ty {
        MessageType::Unspecified => "",
        MessageType::Error => "procError",
        MessageType::Ready => "procReady",
        MessageType::Run => "procRun",
        MessageType::Hooks => "procHooks",
        MessageType::HooksDone => "procHooksDone",
        MessageType::MountPlease => "procMountPlease",
        MessageType::MountFd => "procMountFd",
        MessageType::Seccomp => "procSeccomp",
        MessageType::SeccompDone => "procSeccompDone",
    }
}

/// The message type runc calls `name`, or `None` if runc has no such type.
pub fn type_from_name(name: &str) -> Option<MessageType> {
    MessageType::ALL.into_iter().find(|&t| type_name(t) == name)
}

/// A stable, language-neutral name for each rejection of the runc codec:
/// the native [`ErrorKind`]s where they fit, plus runc-specific ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuncErrorKind {
    /// A kind shared with the native wire (`too-large`, `malformed-body`,
    /// `unknown-type`, `missing-fd`, `missing-payload`, ...).
    Wire(ErrorKind),
    /// `too-deep`: arrays/objects nested deeper than [`MAX_JSON_DEPTH`].
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
        /// The cap ([`MAX_JSON_DEPTH`]).
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
    /// The message breaks a protocol rule; it is never sent.
    #[error("refusing to send an invalid message: {0}")]
    Invalid(#[from] ValidationError),
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

/// The records [`encode`] produced: the JSON record and, when an fd is
/// attached, the payload of the name record that must carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuncRecords<'a> {
    /// The JSON record (send with no fd).
    pub json: &'a [u8],
    /// The second record's payload, to send with exactly one `SCM_RIGHTS` fd.
    pub fd_name: Option<&'a [u8]>,
}

/// A decoded JSON record: the message and whether an fd record follows.
///
/// For `procMountFd` the source is not in the JSON; it is the name of the fd
/// record, so [`message`](Self::message) has an empty source until
/// [`finish`](Self::finish) fills it in.
#[derive(Debug, Clone, PartialEq)]
pub struct RuncHeader {
    msg: SyncMessage,
}

impl RuncHeader {
    /// The message type.
    pub fn message_type(&self) -> MessageType {
        // decode() only builds headers of known types.
        self.msg.kind().unwrap_or(MessageType::Unspecified)
    }

    /// Whether HasFd is set: a name record carrying one fd follows.
    pub fn has_fd(&self) -> bool {
        self.msg.has_fd()
    }

    /// The message as far as the JSON record tells it.
    pub fn message(&self) -> &SyncMessage {
        &self.msg
    }

    /// Completes the message with the name returned by [`decode_fd_record`]
    /// (`None` when no fd record was read) and validates the whole.
    ///
    /// A HasFd header without a name is `missing-fd` (the peer announced an
    /// fd it did not send); a name without HasFd is `unexpected-fd`.
    pub fn finish(self, fd_name: Option<&str>) -> Result<SyncMessage, RuncDecodeError> {
        let ty = self.message_type();
        let mut msg = self.msg;
        match (msg.has_fd(), fd_name) {
            (true, None) => return Err(ValidationError::MissingFd { ty }.into()),
            (false, Some(_)) => {
                return Err(ValidationError::UnexpectedFd {
                    ty,
                    flags: msg.flags,
                }
                .into())
            }
            _ => {}
        }
        if let (Some(Payload::MountFd(info)), Some(name)) = (&mut msg.payload, fd_name) {
            info.source = name.to_owned();
        }
        validate_relaxed(&msg, msg.flags, usize::from(msg.has_fd()), false)?;
        Ok(msg)
    }
}

/// Validates like [`crate::wire::validate`], with the runc codec's two
/// allowances: an empty error message (runc prints `{}`) and, before the fd
/// record is read, a `procMountFd` whose source is still unknown.
fn validate_relaxed(
    msg: &SyncMessage,
    flags: u32,
    nfds: usize,
    source_pending: bool,
) -> Result<MessageType, ValidationError> {
    let placeholder = match &msg.payload {
        Some(Payload::Error(e)) if e.message.is_empty() => Some(SyncMessage {
            payload: Some(Payload::Error(ErrorInfo {
                message: "-".into(),
            })),
            ..msg.clone()
        }),
        Some(Payload::MountFd(m)) if source_pending && m.source.is_empty() => Some(SyncMessage {
            payload: Some(Payload::MountFd(MountFdInfo {
                kind: m.kind,
                source: "/".into(),
            })),
            ..msg.clone()
        }),
        _ => None,
    };
    validate_with_flags(placeholder.as_ref().unwrap_or(msg), flags, nfds)
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// Encodes `msg` as runc's JSON record, appended to `out`.
///
/// `fd_name` says an fd travels with the message, in a second record whose
/// payload is that name; HasFd is set from it, whatever `msg.flags` says.
/// For `procMountFd` the name must equal the payload's source. The message
/// is validated first (an empty `procError` message is allowed and prints
/// as `{}`); `shape` picks the `configs.Mount` layout of a `procMountPlease`.
/// A seccomp fd *attached* to the record has no runc form (runc sends the fd
/// number and the parent uses `pidfd_getfd`): `unrepresentable`.
pub fn encode<'a>(
    msg: &SyncMessage,
    fd_name: Option<&'a str>,
    shape: MountShape,
    limits: &Limits,
    out: &'a mut Vec<u8>,
) -> Result<RuncRecords<'a>, RuncEncodeError> {
    let flags = (msg.flags & !FLAG_HAS_FD) | if fd_name.is_some() { FLAG_HAS_FD } else { 0 };
    let ty = validate_relaxed(msg, flags, usize::from(fd_name.is_some()), false)?;
    if let Some(name) = fd_name {
        check_fd_name_for_send(ty, name)?;
    }
    match &msg.payload {
        Some(Payload::MountFd(info)) if fd_name != Some(info.source.as_str()) => {
            return Err(RuncEncodeError::FdNameMismatch {
                ty,
                mount_source: info.source.clone(),
                fd_name: fd_name.unwrap_or_default().to_owned(),
            });
        }
        Some(Payload::Seccomp(SeccompInfo {
            transfer: Some(SeccompTransfer::Attached(FdAttached {})),
        })) => {
            return Err(RuncEncodeError::Unrepresentable {
                ty,
                field: "seccomp.transfer",
                reason: "runc sends the seccomp fd number for pidfd_getfd, never the fd itself",
            })
        }
        Some(Payload::MountPlease(m)) => check_go_ints(ty, m)?,
        _ => {}
    }

    let start = out.len();
    out.extend_from_slice(b"{\"type\":");
    json::write_str(out, type_name(ty));
    out.extend_from_slice(b",\"flags\":");
    json::write_int(out, flags);
    match &msg.payload {
        None => {}
        Some(p) => {
            out.extend_from_slice(b",\"arg\":");
            match p {
                Payload::Error(e) => {
                    if e.message.is_empty() {
                        out.extend_from_slice(b"{}");
                    } else {
                        out.extend_from_slice(b"{\"message\":");
                        json::write_str(out, &e.message);
                        out.push(b'}');
                    }
                }
                Payload::MountPlease(m) => write_mount(out, m, shape),
                Payload::MountFd(info) => {
                    out.extend_from_slice(b"{\"type\":");
                    // validate() accepted only the two known kinds.
                    let kind = MountSourceKind::try_from(info.kind)
                        .unwrap_or(MountSourceKind::Unspecified);
                    json::write_str(out, kind.name());
                    out.push(b'}');
                }
                Payload::Seccomp(s) => {
                    if let Some(SeccompTransfer::ChildFd(n)) = s.transfer {
                        json::write_int(out, n);
                    }
                }
            }
        }
    }
    out.push(b'}');
    let size = out.len() - start;
    if size > limits.max_record() {
        out.truncate(start);
        return Err(RuncEncodeError::TooLarge {
            ty,
            size,
            max: limits.max_record(),
        });
    }
    Ok(RuncRecords {
        json: &out[start..],
        fd_name: fd_name.map(str::as_bytes),
    })
}

fn check_fd_name_for_send(ty: MessageType, name: &str) -> Result<(), RuncEncodeError> {
    let reason = if name.is_empty() {
        "empty (a zero-length record reads as EOF)"
    } else if name.len() > MAX_FD_NAME_LEN {
        return Err(RuncEncodeError::FdNameTooLong {
            ty,
            len: name.len(),
        });
    } else if name.as_bytes().contains(&0) {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(RuncEncodeError::FdName { ty, reason })
}

/// runc's `flags`, `cleared_flags` and `propagation_flags` are Go `int`s.
fn check_go_ints(ty: MessageType, m: &Mount) -> Result<(), RuncEncodeError> {
    const GO_INT_MAX: u64 = i64::MAX as u64;
    let bad = |field| RuncEncodeError::Unrepresentable {
        ty,
        field,
        reason: "larger than a Go int",
    };
    if m.flags > GO_INT_MAX {
        return Err(bad("mount_please.flags"));
    }
    if m.cleared_flags > GO_INT_MAX {
        return Err(bad("mount_please.cleared_flags"));
    }
    if m.propagation_flags.iter().any(|&f| f > GO_INT_MAX) {
        return Err(bad("mount_please.propagation_flags"));
    }
    Ok(())
}

/// Starts a member: `"key":` preceded by a comma unless it is the first.
fn key(out: &mut Vec<u8>, first: &mut bool, k: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

fn write_mount(out: &mut Vec<u8>, m: &Mount, shape: MountShape) {
    let all = shape == MountShape::V1_2;
    let mut first = true;
    out.push(b'{');
    key(out, &mut first, "source");
    json::write_str(out, &m.source);
    key(out, &mut first, "destination");
    json::write_str(out, &m.destination);
    key(out, &mut first, "device");
    json::write_str(out, &m.device);
    if all || m.flags != 0 {
        key(out, &mut first, "flags");
        json::write_int(out, m.flags);
    }
    if all || m.cleared_flags != 0 {
        key(out, &mut first, "cleared_flags");
        json::write_int(out, m.cleared_flags);
    }
    if all || !m.propagation_flags.is_empty() {
        key(out, &mut first, "propagation_flags");
        write_int_array(out, &m.propagation_flags);
    }
    if all || !m.data.is_empty() {
        key(out, &mut first, "data");
        json::write_str(out, &m.data);
    }
    if all || !m.relabel.is_empty() {
        key(out, &mut first, "relabel");
        json::write_str(out, &m.relabel);
    }
    if all || m.rec_attr.is_some() {
        key(out, &mut first, "rec_attr");
        match &m.rec_attr {
            None => out.extend_from_slice(b"null"),
            Some(a) => {
                let mut f = true;
                out.push(b'{');
                key(out, &mut f, "Attr_set");
                json::write_int(out, a.attr_set);
                key(out, &mut f, "Attr_clr");
                json::write_int(out, a.attr_clr);
                key(out, &mut f, "Propagation");
                json::write_int(out, a.propagation);
                key(out, &mut f, "Userns_fd");
                json::write_int(out, a.userns_fd);
                out.push(b'}');
            }
        }
    }
    if all || m.extensions != 0 {
        key(out, &mut first, "extensions");
        json::write_int(out, m.extensions);
    }
    if let Some(idm) = &m.id_mapping {
        key(out, &mut first, "id_mapping");
        let mut f = true;
        out.push(b'{');
        if all || idm.recursive {
            key(out, &mut f, "recursive");
            out.extend_from_slice(if idm.recursive { b"true" } else { b"false" });
        }
        if !idm.userns_path.is_empty() {
            key(out, &mut f, "userns_path");
            json::write_str(out, &idm.userns_path);
        }
        if !idm.uid_mappings.is_empty() {
            key(out, &mut f, "uid_mappings");
            write_id_maps(out, &idm.uid_mappings);
        }
        if !idm.gid_mappings.is_empty() {
            key(out, &mut f, "gid_mappings");
            write_id_maps(out, &idm.gid_mappings);
        }
        out.push(b'}');
    }
    out.push(b'}');
}

fn write_int_array(out: &mut Vec<u8>, v: &[u64]) {
    if v.is_empty() {
        // A nil Go slice.
        out.extend_from_slice(b"null");
        return;
    }
    out.push(b'[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_int(out, x);
    }
    out.push(b']');
}

fn write_id_maps(out: &mut Vec<u8>, maps: &[IdMap]) {
    out.push(b'[');
    for (i, m) in maps.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"container_id\":");
        json::write_int(out, m.container_id);
        out.extend_from_slice(b",\"host_id\":");
        json::write_int(out, m.host_id);
        out.extend_from_slice(b",\"size\":");
        json::write_int(out, m.size);
        out.push(b'}');
    }
    out.push(b']');
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// Decodes runc's JSON record into a [`RuncHeader`].
///
/// The record's size is checked against `limits` before anything is parsed,
/// so allocation is bounded by it (the parse tree takes at worst about 32
/// bytes per record byte: 2 MiB at the default 64 KiB limit). Every
/// rejection is a typed [`RuncDecodeError`]; nothing panics. The JSON record
/// itself carries no fd: a transport that receives fds with it must close
/// them and reject the record (`unexpected-fd`).
pub fn decode(record: &[u8], limits: &Limits) -> Result<RuncHeader, RuncDecodeError> {
    if record.is_empty() {
        return Err(RuncDecodeError::Empty);
    }
    if record.len() > limits.max_record() {
        return Err(RuncDecodeError::TooLarge {
            size: record.len(),
            max: limits.max_record(),
        });
    }
    let root = json::parse(record, MAX_JSON_DEPTH).map_err(|e| match e {
        ParseError::Syntax { offset, reason } => RuncDecodeError::Malformed { offset, reason },
        ParseError::TooDeep { max } => RuncDecodeError::TooDeep { max },
    })?;
    let mut cx = Cx { ty: None };
    let members = cx.object(&root, "record")?;
    let [ty_v, flags_v, arg_v] = cx.fields(members, ["type", "flags", "arg"], TOP_PATHS)?;

    let ty = match ty_v {
        None => return Err(cx.missing("type")),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(ValidationError::UnspecifiedType.into())
        }
        Some(Value::String(s)) => {
            type_from_name(s).ok_or_else(|| RuncDecodeError::UnknownType(truncate(s)))?
        }
        Some(v) => return Err(cx.wrong("type", "string", v)),
    };
    cx.ty = Some(ty);
    let flags = match flags_v {
        None => return Err(cx.missing("flags")),
        Some(v) => cx.int(v, "flags", i128::from(i64::MIN), i128::from(i64::MAX))? as i64,
    };
    if flags & !i64::from(FLAG_HAS_FD) != 0 {
        return Err(RuncDecodeError::ReservedFlags {
            ty: TypeContext(Some(ty)),
            flags,
        });
    }
    let flags = flags as u32;

    let expected = match ty {
        MessageType::Error => Some("error"),
        MessageType::MountPlease => Some("mount_please"),
        MessageType::MountFd => Some("mount_fd"),
        MessageType::Seccomp => Some("seccomp"),
        _ => None,
    };
    let payload = match (arg_v, expected) {
        (None, None) => None,
        (None, Some(expected)) => {
            return Err(ValidationError::MissingPayload { ty, expected }.into())
        }
        (Some(_), None) => return Err(ValidationError::UnexpectedPayload { ty, got: "arg" }.into()),
        (Some(v), Some(_)) => Some(match ty {
            MessageType::Error => Payload::Error(cx.error_arg(v)?),
            MessageType::MountPlease => Payload::MountPlease(cx.mount(v)?),
            MessageType::MountFd => Payload::MountFd(cx.mount_fd_arg(v)?),
            _ => {
                let n = cx.int(v, "arg", i128::from(i32::MIN), i128::from(i32::MAX))?;
                Payload::Seccomp(SeccompInfo {
                    transfer: Some(SeccompTransfer::ChildFd(n as i32)),
                })
            }
        }),
    };
    let msg = SyncMessage {
        r#type: ty as i32,
        flags,
        payload,
    };
    // The fd (if announced) comes in the next record; check as if it will.
    validate_relaxed(&msg, flags, usize::from(msg.has_fd()), true)?;
    Ok(RuncHeader { msg })
}

/// Checks the record that follows a HasFd JSON record: `nfds` fds arrived
/// with it and its payload `name` is the file's name. Returns the name.
///
/// Exactly one fd (`missing-fd`, `too-many-fds`; the caller closes every fd
/// it received either way); a non-empty UTF-8 name under 4096 bytes without
/// NUL; equal to `expected_name` when given (for `procMountFd`, the source
/// of the mount that was requested: runc's child checks the same).
pub fn decode_fd_record<'a>(
    name: &'a [u8],
    nfds: usize,
    expected_name: Option<&str>,
) -> Result<&'a str, RuncDecodeError> {
    if nfds == 0 {
        return Err(RuncDecodeError::FdRecordMissingFd);
    }
    if nfds > 1 {
        return Err(RuncDecodeError::FdRecordTooManyFds { count: nfds });
    }
    if name.is_empty() {
        return Err(RuncDecodeError::FdNameInvalid { reason: "empty" });
    }
    if name.len() > MAX_FD_NAME_LEN {
        return Err(RuncDecodeError::FdNameTooLong { len: name.len() });
    }
    if name.contains(&0) {
        return Err(RuncDecodeError::FdNameInvalid {
            reason: "contains NUL",
        });
    }
    let name = std::str::from_utf8(name).map_err(|_| RuncDecodeError::FdNameInvalid {
        reason: "not UTF-8",
    })?;
    if let Some(expected) = expected_name {
        if name != expected {
            return Err(RuncDecodeError::FdNameMismatch {
                expected: truncate(expected),
                got: truncate(name),
            });
        }
    }
    Ok(name)
}

fn truncate(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

const TOP_PATHS: [&str; 3] = ["type", "flags", "arg"];

/// Decoding context: the message type, once known, for error messages.
struct Cx {
    ty: Option<MessageType>,
}

type Members<'v, 'a> = &'v [(Cow<'a, str>, Value<'a>)];

/// Case folding as Go's `encoding/json` applies it to keys (ASCII plus the
/// two non-ASCII characters that fold onto ASCII letters: KELVIN SIGN and
/// LATIN SMALL LETTER LONG S).
fn fold_eq(known: &str, key: &str) -> bool {
    let mut k = key.chars().map(|c| match c {
        '\u{212A}' => 'k',
        '\u{017F}' => 's',
        c => c.to_ascii_lowercase(),
    });
    let mut n = known.chars().map(|c| c.to_ascii_lowercase());
    loop {
        match (k.next(), n.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

impl Cx {
    fn tyc(&self) -> TypeContext {
        TypeContext(self.ty)
    }

    fn missing(&self, field: &'static str) -> RuncDecodeError {
        RuncDecodeError::MissingField {
            ty: self.tyc(),
            field,
        }
    }

    fn wrong(&self, field: &'static str, expected: &'static str, v: &Value) -> RuncDecodeError {
        RuncDecodeError::WrongType {
            ty: self.tyc(),
            field,
            expected,
            got: v.type_name(),
        }
    }

    fn object<'v, 'a>(
        &self,
        v: &'v Value<'a>,
        field: &'static str,
    ) -> Result<Members<'v, 'a>, RuncDecodeError> {
        match v {
            Value::Object(m) => Ok(m),
            other => Err(self.wrong(field, "object", other)),
        }
    }

    /// Picks the known keys `names` out of an object; `paths` are their
    /// dotted names for errors. `null` counts as absent (Go leaves the zero
    /// value); unknown keys are ignored; a known key twice, or a key equal
    /// to a known one only case-insensitively, is rejected.
    fn fields<'v, 'a, const N: usize>(
        &self,
        members: Members<'v, 'a>,
        names: [&'static str; N],
        paths: [&'static str; N],
    ) -> Result<[Option<&'v Value<'a>>; N], RuncDecodeError> {
        let mut out = [None; N];
        let mut seen = [false; N];
        for (k, v) in members {
            if let Some(i) = names.iter().position(|n| *n == k) {
                if seen[i] {
                    return Err(RuncDecodeError::DuplicateField {
                        ty: self.tyc(),
                        field: paths[i],
                    });
                }
                seen[i] = true;
                if !matches!(v, Value::Null) {
                    out[i] = Some(v);
                }
            } else if let Some(i) = names.iter().position(|n| fold_eq(n, k)) {
                return Err(RuncDecodeError::NoncanonicalKey {
                    ty: self.tyc(),
                    field: paths[i],
                    got: truncate(k),
                });
            }
        }
        Ok(out)
    }

    /// An integer literal within `min..=max` (Go's `encoding/json` refuses
    /// fractions and exponents for integer fields too).
    fn int(
        &self,
        v: &Value,
        field: &'static str,
        min: i128,
        max: i128,
    ) -> Result<i128, RuncDecodeError> {
        let Value::Number(text) = v else {
            return Err(self.wrong(field, "integer", v));
        };
        if text.contains(['.', 'e', 'E']) {
            return Err(RuncDecodeError::WrongType {
                ty: self.tyc(),
                field,
                expected: "integer",
                got: "non-integer number",
            });
        }
        let out_of_range = || RuncDecodeError::NumberOutOfRange {
            ty: self.tyc(),
            field,
            value: truncate(text),
            min,
            max,
        };
        // Go refuses "-0" for unsigned fields as well.
        if min >= 0 && text.starts_with('-') {
            return Err(out_of_range());
        }
        match text.parse::<i128>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(out_of_range()),
        }
    }

    fn u64_go_int(&self, v: Option<&Value>, field: &'static str) -> Result<u64, RuncDecodeError> {
        match v {
            None => Ok(0),
            Some(v) => Ok(self.int(v, field, 0, i128::from(i64::MAX))? as u64),
        }
    }

    fn u64_full(&self, v: Option<&Value>, field: &'static str) -> Result<u64, RuncDecodeError> {
        match v {
            None => Ok(0),
            Some(v) => Ok(self.int(v, field, 0, i128::from(u64::MAX))? as u64),
        }
    }

    fn u32(&self, v: Option<&Value>, field: &'static str) -> Result<u32, RuncDecodeError> {
        match v {
            None => Ok(0),
            Some(v) => Ok(self.int(v, field, 0, i128::from(u32::MAX))? as u32),
        }
    }

    fn string(&self, v: Option<&Value>, field: &'static str) -> Result<String, RuncDecodeError> {
        match v {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone().into_owned()),
            Some(v) => Err(self.wrong(field, "string", v)),
        }
    }

    fn error_arg(&self, v: &Value) -> Result<ErrorInfo, RuncDecodeError> {
        let m = self.object(v, "arg")?;
        let [msg] = self.fields(m, ["message"], ["arg.message"])?;
        Ok(ErrorInfo {
            message: self.string(msg, "arg.message")?,
        })
    }

    fn mount_fd_arg(&self, v: &Value) -> Result<MountFdInfo, RuncDecodeError> {
        let m = self.object(v, "arg")?;
        let [kind] = self.fields(m, ["type"], ["arg.type"])?;
        let kind = match self.string(kind, "arg.type")?.as_str() {
            "open_tree" => MountSourceKind::OpenTree as i32,
            "plain-open" => MountSourceKind::PlainOpen as i32,
            "" => MountSourceKind::Unspecified as i32,
            _ => {
                return Err(ValidationError::InvalidValue {
                    ty: MessageType::MountFd,
                    field: "mount_fd.kind",
                    reason: "unknown kind",
                }
                .into())
            }
        };
        Ok(MountFdInfo {
            kind,
            source: String::new(),
        })
    }

    fn mount(&self, v: &Value) -> Result<Mount, RuncDecodeError> {
        let m = self.object(v, "arg")?;
        let [source, destination, device, flags, cleared, prop, data, relabel, rec_attr, ext, idm] =
            self.fields(
                m,
                [
                    "source",
                    "destination",
                    "device",
                    "flags",
                    "cleared_flags",
                    "propagation_flags",
                    "data",
                    "relabel",
                    "rec_attr",
                    "extensions",
                    "id_mapping",
                ],
                [
                    "arg.source",
                    "arg.destination",
                    "arg.device",
                    "arg.flags",
                    "arg.cleared_flags",
                    "arg.propagation_flags",
                    "arg.data",
                    "arg.relabel",
                    "arg.rec_attr",
                    "arg.extensions",
                    "arg.id_mapping",
                ],
            )?;
        let propagation_flags = match prop {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|x| {
                    Ok(self.int(x, "arg.propagation_flags[]", 0, i128::from(i64::MAX))? as u64)
                })
                .collect::<Result<_, RuncDecodeError>>()?,
            Some(v) => return Err(self.wrong("arg.propagation_flags", "array", v)),
        };
        let rec_attr = match rec_attr {
            None => None,
            Some(v) => {
                let a = self.object(v, "arg.rec_attr")?;
                let [set, clr, prop, userns] = self.fields(
                    a,
                    ["Attr_set", "Attr_clr", "Propagation", "Userns_fd"],
                    [
                        "arg.rec_attr.Attr_set",
                        "arg.rec_attr.Attr_clr",
                        "arg.rec_attr.Propagation",
                        "arg.rec_attr.Userns_fd",
                    ],
                )?;
                Some(MountAttr {
                    attr_set: self.u64_full(set, "arg.rec_attr.Attr_set")?,
                    attr_clr: self.u64_full(clr, "arg.rec_attr.Attr_clr")?,
                    propagation: self.u64_full(prop, "arg.rec_attr.Propagation")?,
                    userns_fd: self.u64_full(userns, "arg.rec_attr.Userns_fd")?,
                })
            }
        };
        let id_mapping = match idm {
            None => None,
            Some(v) => Some(self.id_mapping(v)?),
        };
        Ok(Mount {
            source: self.string(source, "arg.source")?,
            destination: self.string(destination, "arg.destination")?,
            device: self.string(device, "arg.device")?,
            flags: self.u64_go_int(flags, "arg.flags")?,
            cleared_flags: self.u64_go_int(cleared, "arg.cleared_flags")?,
            propagation_flags,
            data: self.string(data, "arg.data")?,
            rec_attr,
            id_mapping,
            extensions: self.u32(ext, "arg.extensions")?,
            relabel: self.string(relabel, "arg.relabel")?,
        })
    }

    fn id_mapping(&self, v: &Value) -> Result<IdMapping, RuncDecodeError> {
        let m = self.object(v, "arg.id_mapping")?;
        let [recursive, userns, uids, gids] = self.fields(
            m,
            ["recursive", "userns_path", "uid_mappings", "gid_mappings"],
            [
                "arg.id_mapping.recursive",
                "arg.id_mapping.userns_path",
                "arg.id_mapping.uid_mappings",
                "arg.id_mapping.gid_mappings",
            ],
        )?;
        let recursive = match recursive {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(self.wrong("arg.id_mapping.recursive", "bool", v)),
        };
        Ok(IdMapping {
            recursive,
            userns_path: self.string(userns, "arg.id_mapping.userns_path")?,
            uid_mappings: self.id_maps(uids, "arg.id_mapping.uid_mappings", UID_PATHS)?,
            gid_mappings: self.id_maps(gids, "arg.id_mapping.gid_mappings", GID_PATHS)?,
        })
    }

    fn id_maps(
        &self,
        v: Option<&Value>,
        field: &'static str,
        paths: [&'static str; 3],
    ) -> Result<Vec<IdMap>, RuncDecodeError> {
        let items = match v {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(v) => return Err(self.wrong(field, "array", v)),
        };
        items
            .iter()
            .map(|item| {
                let o = self.object(item, field)?;
                let [c, h, s] = self.fields(o, ["container_id", "host_id", "size"], paths)?;
                Ok(IdMap {
                    container_id: self.u32(c, paths[0])?,
                    host_id: self.u32(h, paths[1])?,
                    size: self.u32(s, paths[2])?,
                })
            })
            .collect()
    }
}

const UID_PATHS: [&str; 3] = [
    "arg.id_mapping.uid_mappings[].container_id",
    "arg.id_mapping.uid_mappings[].host_id",
    "arg.id_mapping.uid_mappings[].size",
];
const GID_PATHS: [&str; 3] = [
    "arg.id_mapping.gid_mappings[].container_id",
    "arg.id_mapping.gid_mappings[].host_id",
    "arg.id_mapping.gid_mappings[].size",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_matches_go_rules() {
        assert!(fold_eq("type", "TYPE"));
        assert!(fold_eq("Attr_set", "attr_SET"));
        assert!(fold_eq("userns_path", "u\u{017F}erns_path"));
        assert!(fold_eq("Userns_fd", "u\u{017F}erns_fd"));
        assert!(fold_eq("kind", "\u{212A}ind"));
        assert!(!fold_eq("type", "typ"));
        assert!(!fold_eq("type", "types"));
    }

    #[test]
    fn truncate_is_char_safe() {
        let s = "é".repeat(50);
        let t = truncate(&s);
        assert_eq!(t.chars().count(), 41);
    }
}
