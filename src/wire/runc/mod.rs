//! runc's own sync wire (`libcontainer/sync.go`, every runc that has
//! `procMountPlease`: commit ba0b5e269 onwards, v1.2.0 and later), as a sans-IO
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
//! * [`RuncProfile`] names the runc versions a peer may run and gives the
//!   two things that differ between them: the [`MountShape`] of
//!   `configs.Mount` and the exec [`Flow`](crate::state::Flow);
//! * [`encode`] prints a message (and names the fd record) in a
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
//! let header = runc::decode(recs.json, runc::MountShape::V1_2, &limits).unwrap();
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
//! UTF-8, and no key in the mount argument that the selected layout does not
//! have (`unknown-field`: such a key may carry meaning, such as another
//! layout's id mapping). Unknown keys elsewhere are ignored, as Go does.
//!
//! The code is split along its seams: `json` (the reader and Go's string
//! printing), `encode`, `decode` and `error`.

#![forbid(unsafe_code)]

mod decode;
mod encode;
mod error;
mod json;

pub use decode::{decode, decode_fd_record};
pub use encode::encode;
pub use error::{RuncDecodeError, RuncEncodeError, RuncErrorKind, TypeContext};

use crate::schema::{MessageType, Payload, SyncMessage};
use crate::wire::validate::{self, validate_with, Rules, PATH_MAX};
use crate::wire::ValidationError;

/// Arrays and objects may nest at most this deep in a record (the deepest
/// thing runc sends, an id-map entry, sits at depth 5).
pub const MAX_JSON_DEPTH: usize = 16;

/// The longest fd-record name, in bytes: runc reads the name into a
/// 4096-byte buffer and rejects a read that fills it.
pub const MAX_FD_NAME_LEN: usize = PATH_MAX - 1;

/// The validation allowances of runc's wire: an empty `procError` message
/// is valid (runc prints `{}`).
const RUNC_RULES: Rules = Rules {
    allow_empty_error: true,
    mount_fd_source_pending: false,
};

/// Which JSON layout of runc's `configs.Mount` a `procMountPlease` has.
/// Encoding prints it; decoding accepts exactly its keys (any other key in
/// the mount argument is `unknown-field`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MountShape {
    /// runc commits ba0b5e269 up to (not including) 3b57e45cb, never tagged:
    /// every field printed, and the id mapping as top-level `uid_mappings` /
    /// `gid_mappings` arrays (`omitempty`), applied non-recursively; no
    /// `id_mapping` object, so no user-namespace path.
    Seed,
    /// runc 1.2.x and 1.3.x (and v1.2.0-rc.1): every field printed (`null`
    /// for an absent `propagation_flags` or `rec_attr`), `relabel` included;
    /// `id_mapping` printed only when present, with `recursive` always
    /// inside it.
    #[default]
    V1_2,
    /// runc 1.4.x: `source`, `destination` and `device` always, every other
    /// field only when non-zero (Go's `omitempty`), inside `id_mapping` too.
    V1_4,
    /// runc 1.5.x and main: as v1.4, but without `relabel` (tagged
    /// `json:"-"`): never printed, and refused when received.
    V1_5,
}

impl MountShape {
    /// Every layout, oldest first.
    pub const ALL: [MountShape; 4] = [
        MountShape::Seed,
        MountShape::V1_2,
        MountShape::V1_4,
        MountShape::V1_5,
    ];

    /// The name used in the golden vectors (`"ba0b5e269"`, `"v1.2"`,
    /// `"v1.4"`, `"v1.5"`).
    pub const fn name(self) -> &'static str {
        match self {
            MountShape::Seed => "ba0b5e269",
            MountShape::V1_2 => "v1.2",
            MountShape::V1_4 => "v1.4",
            MountShape::V1_5 => "v1.5",
        }
    }

    /// Parses [`MountShape::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        MountShape::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A runc compatibility profile: the runc versions a peer may run, and what
/// procsync must do to speak with them — the `configs.Mount` layout
/// ([`RuncProfile::mount_shape`], for `Wire::Runc`) and the order of the
/// exec flow (`RuncProfile::exec_flow`, defined beside
/// [`Flow`](crate::state::Flow) in `state`, which sits above the wire).
/// Both ends agree on it out of band (runc has no negotiation). PROTOCOL.md §15 lists exactly which runc
/// versions each profile speaks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RuncProfile {
    /// runc commits ba0b5e269 (procMountPlease arrives) up to, not
    /// including, 3b57e45cb: [`MountShape::Seed`], exec without Ready/Run.
    Seed,
    /// runc v1.2.0-rc.1 (commits 3b57e45cb up to, not including,
    /// a853a8267): [`MountShape::V1_2`], exec without Ready/Run.
    V1_2Rc1,
    /// runc v1.2.0-rc.2 through 1.3.x: [`MountShape::V1_2`], exec with
    /// Ready → Run.
    #[default]
    V1_2,
    /// runc 1.4.x: [`MountShape::V1_4`], exec with Ready → Run.
    V1_4,
    /// runc 1.5.x and main: [`MountShape::V1_5`], exec with Ready → Run.
    V1_5,
}

impl RuncProfile {
    /// Every profile, oldest first.
    pub const ALL: [RuncProfile; 5] = [
        RuncProfile::Seed,
        RuncProfile::V1_2Rc1,
        RuncProfile::V1_2,
        RuncProfile::V1_4,
        RuncProfile::V1_5,
    ];

    /// The profile's name (`"ba0b5e269"`, `"v1.2.0-rc.1"`, `"v1.2"`,
    /// `"v1.4"`, `"v1.5"`), as the Go peer's `-profile` flag spells it.
    pub const fn name(self) -> &'static str {
        match self {
            RuncProfile::Seed => "ba0b5e269",
            RuncProfile::V1_2Rc1 => "v1.2.0-rc.1",
            RuncProfile::V1_2 => "v1.2",
            RuncProfile::V1_4 => "v1.4",
            RuncProfile::V1_5 => "v1.5",
        }
    }

    /// Parses [`RuncProfile::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        RuncProfile::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The `configs.Mount` layout these runc versions print and read.
    pub const fn mount_shape(self) -> MountShape {
        match self {
            RuncProfile::Seed => MountShape::Seed,
            RuncProfile::V1_2Rc1 | RuncProfile::V1_2 => MountShape::V1_2,
            RuncProfile::V1_4 => MountShape::V1_4,
            RuncProfile::V1_5 => MountShape::V1_5,
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
        validate_with(&msg, msg.flags, usize::from(msg.has_fd()), RUNC_RULES)?;
        Ok(msg)
    }
}
