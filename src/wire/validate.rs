//! The rules every message must satisfy on the wire, whatever the wire format:
//! a known type, no reserved flag bits, the HasFd/fd-count rule, the payload
//! that fits the type, and sane values. Checks never allocate.
//!
//! The same function guards both directions: the decoder runs it on what the
//! peer sent, the encoder on what the local caller wants to send.

use crate::schema::{
    IdMap, IdMapping, MessageType, Mount, MountSourceKind, Payload, SeccompTransfer, SyncMessage,
    FLAG_HAS_FD, KNOWN_FLAGS,
};
use crate::wire::{ErrorKind, MAX_FDS_PER_RECORD};

/// The kernel's limit on lines in `uid_map`/`gid_map` (`UID_GID_MAP_MAX_EXTENTS`).
pub const MAX_ID_MAP_LINES: usize = 340;

/// `PATH_MAX`: a path (without its NUL) must be shorter than this.
pub const PATH_MAX: usize = 4096;

/// A message that breaks a protocol rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The type field is absent or zero.
    #[error("message has no type")]
    UnspecifiedType,
    /// The type value is not one this version knows.
    #[error("unknown message type {0}")]
    UnknownType(i32),
    /// A reserved flag bit is set.
    #[error("{ty}: reserved flag bits set: {flags:#x}")]
    ReservedFlags {
        /// The message type.
        ty: MessageType,
        /// The offending flags word.
        flags: u32,
    },
    /// HasFd is set (or the type requires an fd) but no fd came.
    #[error("{ty}: expected an fd, got none")]
    MissingFd {
        /// The message type.
        ty: MessageType,
    },
    /// An fd came that the flags or the type do not allow.
    #[error("{ty}: unexpected fd (flags {flags:#x})")]
    UnexpectedFd {
        /// The message type.
        ty: MessageType,
        /// The flags word.
        flags: u32,
    },
    /// More fds came than one record may carry.
    #[error("{ty}: {count} fds in one record, at most 1 allowed")]
    TooManyFds {
        /// The message type.
        ty: MessageType,
        /// How many fds arrived.
        count: usize,
    },
    /// The type needs a payload and has none.
    #[error("{ty}: missing {expected} payload")]
    MissingPayload {
        /// The message type.
        ty: MessageType,
        /// The payload the type needs.
        expected: &'static str,
    },
    /// The message carries a payload its type does not allow.
    #[error("{ty}: unexpected {got} payload")]
    UnexpectedPayload {
        /// The message type.
        ty: MessageType,
        /// The payload that came.
        got: &'static str,
    },
    /// A field holds a value the protocol forbids.
    #[error("{ty}: invalid {field}: {reason}")]
    InvalidValue {
        /// The message type.
        ty: MessageType,
        /// The field, as a dotted path (`mount_please.source`).
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ValidationError {
    /// The stable kind of this rejection.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ValidationError::UnspecifiedType => ErrorKind::UnspecifiedType,
            ValidationError::UnknownType(_) => ErrorKind::UnknownType,
            ValidationError::ReservedFlags { .. } => ErrorKind::ReservedFlags,
            ValidationError::MissingFd { .. } => ErrorKind::MissingFd,
            ValidationError::UnexpectedFd { .. } => ErrorKind::UnexpectedFd,
            ValidationError::TooManyFds { .. } => ErrorKind::TooManyFds,
            ValidationError::MissingPayload { .. } => ErrorKind::MissingPayload,
            ValidationError::UnexpectedPayload { .. } => ErrorKind::UnexpectedPayload,
            ValidationError::InvalidValue { .. } => ErrorKind::InvalidValue,
        }
    }
}

/// Allowances a wire format makes to the rules. The native wire makes none
/// ([`Rules::STRICT`]); runc's wire allows an empty error message (runc
/// prints `{}`) and checks a `procMountFd`'s source only once its fd record
/// (which carries it) has arrived (PROTOCOL.md §15, *Mapping*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rules {
    /// An ERROR whose message is empty is valid.
    pub allow_empty_error: bool,
    /// A MOUNT_FD whose source is empty is valid (the source is not known yet).
    pub mount_fd_source_pending: bool,
}

impl Rules {
    /// Every rule of PROTOCOL.md §5, no allowance.
    pub const STRICT: Rules = Rules {
        allow_empty_error: false,
        mount_fd_source_pending: false,
    };
}

/// Checks `msg` as it would travel with `nfds` fds in its record.
///
/// Order of checks (the first failure wins, so every implementation reports
/// the same kind): type, flags, HasFd versus fd count, payload presence,
/// whether the type may carry an fd, then field values.
pub fn validate(msg: &SyncMessage, nfds: usize) -> Result<MessageType, ValidationError> {
    validate_with_flags(msg, msg.flags, nfds)
}

/// [`validate`] as if `msg.flags` were `flags` (the encoder sets HasFd itself).
pub fn validate_with_flags(
    msg: &SyncMessage,
    flags: u32,
    nfds: usize,
) -> Result<MessageType, ValidationError> {
    validate_with(msg, flags, nfds, Rules::STRICT)
}

/// [`validate_with_flags`] with a wire format's allowances.
pub fn validate_with(
    msg: &SyncMessage,
    flags: u32,
    nfds: usize,
    rules: Rules,
) -> Result<MessageType, ValidationError> {
    let ty = match MessageType::try_from(msg.r#type) {
        Ok(MessageType::Unspecified) => return Err(ValidationError::UnspecifiedType),
        Ok(t) => t,
        Err(_) => return Err(ValidationError::UnknownType(msg.r#type)),
    };
    if flags & !KNOWN_FLAGS != 0 {
        return Err(ValidationError::ReservedFlags { ty, flags });
    }
    let has_fd = flags & FLAG_HAS_FD != 0;
    if nfds > MAX_FDS_PER_RECORD {
        return Err(ValidationError::TooManyFds { ty, count: nfds });
    }
    if has_fd && nfds == 0 {
        return Err(ValidationError::MissingFd { ty });
    }
    if !has_fd && nfds > 0 {
        return Err(ValidationError::UnexpectedFd { ty, flags });
    }

    // Payload presence and shape (the schema's type → payload table).
    match (&msg.payload, ty.payload()) {
        (None, Some(expected)) => {
            return Err(ValidationError::MissingPayload {
                ty,
                expected: expected.name(),
            })
        }
        (Some(p), expected) if Some(p.kind()) != expected => {
            return Err(ValidationError::UnexpectedPayload {
                ty,
                got: p.kind().name(),
            })
        }
        _ => {}
    }

    // Which types carry an fd.
    let fd_required = match &msg.payload {
        Some(Payload::MountFd(_)) => true,
        Some(Payload::Seccomp(s)) => matches!(s.transfer, Some(SeccompTransfer::Attached(_))),
        _ => false,
    };
    if fd_required && !has_fd {
        return Err(ValidationError::MissingFd { ty });
    }
    if !fd_required && has_fd {
        return Err(ValidationError::UnexpectedFd { ty, flags });
    }

    let invalid = |field: &'static str, reason: &'static str| ValidationError::InvalidValue {
        ty,
        field,
        reason,
    };
    match &msg.payload {
        None => {}
        Some(Payload::Error(e)) if e.message.is_empty() && !rules.allow_empty_error => {
            return Err(invalid("error.message", "empty"));
        }
        Some(Payload::Error(_)) => {}
        Some(Payload::MountPlease(m)) => validate_mount(m).map_err(|(f, r)| invalid(f, r))?,
        Some(Payload::MountFd(m)) => {
            match MountSourceKind::try_from(m.kind) {
                Ok(MountSourceKind::OpenTree | MountSourceKind::PlainOpen) => {}
                Ok(MountSourceKind::Unspecified) => {
                    return Err(invalid("mount_fd.kind", "unspecified"))
                }
                Err(_) => return Err(invalid("mount_fd.kind", "unknown kind")),
            }
            if !(rules.mount_fd_source_pending && m.source.is_empty()) {
                check_abs_path(&m.source).map_err(|r| invalid("mount_fd.source", r))?;
            }
        }
        Some(Payload::Seccomp(s)) => match s.transfer {
            None => return Err(invalid("seccomp.transfer", "unset")),
            Some(SeccompTransfer::ChildFd(n)) if n < 0 => {
                return Err(invalid("seccomp.child_fd", "negative"))
            }
            Some(_) => {}
        },
    }
    Ok(ty)
}

fn check_no_nul(s: &str) -> Result<(), &'static str> {
    if has_nul(s.as_bytes()) {
        Err("contains NUL")
    } else {
        Ok(())
    }
}

/// Whether `b` holds a zero byte: whether its smallest byte is zero. A
/// minimum without an early exit has no set-up cost (paths are short, and
/// this runs on every send and receive, where `memchr`'s set-up cost
/// dominated; an eight-bytes-at-a-time word check measured no better).
fn has_nul(b: &[u8]) -> bool {
    b.iter().fold(u8::MAX, |min, &x| min.min(x)) == 0
}

fn check_abs_path(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if !s.starts_with('/') {
        return Err("not an absolute path");
    }
    if s.len() >= PATH_MAX {
        return Err("longer than PATH_MAX");
    }
    check_no_nul(s)
}

/// Checks a MountPlease payload; on failure returns `(field, reason)`.
pub fn validate_mount(m: &Mount) -> Result<(), (&'static str, &'static str)> {
    check_abs_path(&m.source).map_err(|r| ("mount_please.source", r))?;
    check_abs_path(&m.destination).map_err(|r| ("mount_please.destination", r))?;
    check_no_nul(&m.device).map_err(|r| ("mount_please.device", r))?;
    check_no_nul(&m.data).map_err(|r| ("mount_please.data", r))?;
    check_no_nul(&m.relabel).map_err(|r| ("mount_please.relabel", r))?;
    if let Some(idm) = &m.id_mapping {
        validate_id_mapping(idm)?;
    }
    Ok(())
}

/// Checks an id mapping; on failure returns `(field, reason)`.
pub fn validate_id_mapping(idm: &IdMapping) -> Result<(), (&'static str, &'static str)> {
    let has_ranges = !idm.uid_mappings.is_empty() || !idm.gid_mappings.is_empty();
    if !idm.userns_path.is_empty() {
        if has_ranges {
            return Err((
                "mount_please.id_mapping",
                "both userns_path and id ranges set",
            ));
        }
        return check_abs_path(&idm.userns_path)
            .map_err(|r| ("mount_please.id_mapping.userns_path", r));
    }
    if idm.uid_mappings.is_empty() {
        return Err(("mount_please.id_mapping.uid_mappings", "empty"));
    }
    if idm.gid_mappings.is_empty() {
        return Err(("mount_please.id_mapping.gid_mappings", "empty"));
    }
    check_ranges(&idm.uid_mappings).map_err(|r| ("mount_please.id_mapping.uid_mappings", r))?;
    check_ranges(&idm.gid_mappings).map_err(|r| ("mount_please.id_mapping.gid_mappings", r))
}

/// Checks one side's id-map lines the way the kernel does: at most 340
/// lines, no empty range, no range past 2^32, no overlap on either side.
pub fn check_ranges(maps: &[IdMap]) -> Result<(), &'static str> {
    if maps.len() > MAX_ID_MAP_LINES {
        return Err("more than 340 lines");
    }
    for m in maps {
        if m.size == 0 {
            return Err("empty range");
        }
        if u64::from(m.container_id) + u64::from(m.size) > 1 << 32
            || u64::from(m.host_id) + u64::from(m.size) > 1 << 32
        {
            return Err("range overflows u32");
        }
    }
    let overlaps = |a: u32, b: u32, n: u32, m: u32| {
        let (a, b, n, m) = (u64::from(a), u64::from(b), u64::from(n), u64::from(m));
        a < b + m && b < a + n
    };
    for (i, x) in maps.iter().enumerate() {
        for y in &maps[i + 1..] {
            if overlaps(x.container_id, y.container_id, x.size, y.size) {
                return Err("overlapping container ranges");
            }
            if overlaps(x.host_id, y.host_id, x.size, y.size) {
                return Err("overlapping host ranges");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::has_nul;

    #[test]
    fn has_nul_finds_every_zero_byte() {
        for len in 0..40 {
            assert!(!has_nul(&vec![b'a'; len]));
            // Bytes that trip naive word tricks: 0x80 and 0x01 around a zero.
            assert!(!has_nul(&vec![0x80; len]));
            assert!(!has_nul(&vec![0x01; len]));
            for at in 0..len {
                for fill in [b'a', 0x80, 0x01, 0xff] {
                    let mut v = vec![fill; len];
                    v[at] = 0;
                    assert!(has_nul(&v), "len {len}, zero at {at}, fill {fill:#x}");
                }
            }
        }
    }
}
