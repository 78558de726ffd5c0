//! The message types of the sync protocol, generated at build time from
//! `proto/procsync/v1/sync.proto`, plus small constructors and accessors so
//! everyday code never touches prost internals.
//!
//! Every message is a [`SyncMessage`]: a [`MessageType`], a flags word whose
//! bit 0 is [`FLAG_HAS_FD`], and one typed payload. Build messages with the
//! constructors ([`SyncMessage::ready`], [`SyncMessage::mount_please`], …)
//! and read them with the accessors ([`SyncMessage::kind`],
//! [`SyncMessage::mount`], …). The wire layer ([`crate::wire`]) decides
//! whether a message is valid; nothing here validates.

#![forbid(unsafe_code)]

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/procsync.v1.rs"));
}

pub use generated::seccomp_info::Transfer as SeccompTransfer;
pub use generated::sync_message::Payload;
pub use generated::{
    ErrorInfo, FdAttached, IdMap, IdMapping, MessageType, Mount, MountAttr, MountFdInfo,
    MountSourceKind, SeccompInfo, SyncMessage,
};

/// The schema as a serialized `google.protobuf.FileDescriptorSet`, for
/// reflection (dynamic messages, proto3 JSON) without `protoc`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/procsync_descriptor.bin"));

/// Flags bit 0: exactly one fd travels as `SCM_RIGHTS` in the same record.
pub const FLAG_HAS_FD: u32 = 1;

/// Every flag bit this version knows; any other bit is rejected.
pub const KNOWN_FLAGS: u32 = FLAG_HAS_FD;

/// `mount(2)` flag values used in [`Mount::flags`] (Linux ABI, all arches).
pub mod ms {
    /// `MS_RDONLY`.
    pub const RDONLY: u64 = 0x1;
    /// `MS_NOSUID`.
    pub const NOSUID: u64 = 0x2;
    /// `MS_NODEV`.
    pub const NODEV: u64 = 0x4;
    /// `MS_NOEXEC`.
    pub const NOEXEC: u64 = 0x8;
    /// `MS_BIND`.
    pub const BIND: u64 = 0x1000;
    /// `MS_REC`.
    pub const REC: u64 = 0x4000;
    /// `MS_UNBINDABLE`.
    pub const UNBINDABLE: u64 = 1 << 17;
    /// `MS_PRIVATE`.
    pub const PRIVATE: u64 = 1 << 18;
    /// `MS_SLAVE`.
    pub const SLAVE: u64 = 1 << 19;
    /// `MS_SHARED`.
    pub const SHARED: u64 = 1 << 20;
}

impl MessageType {
    /// Every valid (non-zero) type, in wire-value order.
    pub const ALL: [MessageType; 9] = [
        MessageType::Error,
        MessageType::Ready,
        MessageType::Run,
        MessageType::Hooks,
        MessageType::HooksDone,
        MessageType::MountPlease,
        MessageType::MountFd,
        MessageType::Seccomp,
        MessageType::SeccompDone,
    ];

    /// The short name used in errors and transcripts (`"MountPlease"`).
    pub const fn name(self) -> &'static str {
        match self {
            MessageType::Unspecified => "Unspecified",
            MessageType::Error => "Error",
            MessageType::Ready => "Ready",
            MessageType::Run => "Run",
            MessageType::Hooks => "Hooks",
            MessageType::HooksDone => "HooksDone",
            MessageType::MountPlease => "MountPlease",
            MessageType::MountFd => "MountFd",
            MessageType::Seccomp => "Seccomp",
            MessageType::SeccompDone => "SeccompDone",
        }
    }

    /// The reply a request expects, or `None` if this type is not a request.
    pub const fn reply(self) -> Option<MessageType> {
        match self {
            MessageType::Ready => Some(MessageType::Run),
            MessageType::Hooks => Some(MessageType::HooksDone),
            MessageType::MountPlease => Some(MessageType::MountFd),
            MessageType::Seccomp => Some(MessageType::SeccompDone),
            _ => None,
        }
    }

    /// Whether the child sends this type to the parent as a request.
    pub const fn is_request(self) -> bool {
        self.reply().is_some()
    }
}

/// Which `payload` member a message carries: the one table both wires use
/// to decide which types need a payload, and of what kind (PROTOCOL.md §5,
/// rule 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// [`ErrorInfo`], carried by ERROR.
    Error,
    /// [`Mount`], carried by MOUNT_PLEASE.
    MountPlease,
    /// [`MountFdInfo`], carried by MOUNT_FD.
    MountFd,
    /// [`SeccompInfo`], carried by SECCOMP.
    Seccomp,
}

impl PayloadKind {
    /// The `oneof` member's name (`"mount_please"`), as used in errors.
    pub const fn name(self) -> &'static str {
        match self {
            PayloadKind::Error => "error",
            PayloadKind::MountPlease => "mount_please",
            PayloadKind::MountFd => "mount_fd",
            PayloadKind::Seccomp => "seccomp",
        }
    }
}

impl MessageType {
    /// The payload this type must carry, or `None` for a type that carries none.
    pub const fn payload(self) -> Option<PayloadKind> {
        match self {
            MessageType::Error => Some(PayloadKind::Error),
            MessageType::MountPlease => Some(PayloadKind::MountPlease),
            MessageType::MountFd => Some(PayloadKind::MountFd),
            MessageType::Seccomp => Some(PayloadKind::Seccomp),
            _ => None,
        }
    }
}

impl Payload {
    /// Which member this is.
    pub const fn kind(&self) -> PayloadKind {
        match self {
            Payload::Error(_) => PayloadKind::Error,
            Payload::MountPlease(_) => PayloadKind::MountPlease,
            Payload::MountFd(_) => PayloadKind::MountFd,
            Payload::Seccomp(_) => PayloadKind::Seccomp,
        }
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl MountSourceKind {
    /// The short name used in transcripts (`"open_tree"`, `"plain-open"`, as runc spells them).
    pub const fn name(self) -> &'static str {
        match self {
            MountSourceKind::Unspecified => "unspecified",
            MountSourceKind::OpenTree => "open_tree",
            MountSourceKind::PlainOpen => "plain-open",
        }
    }
}

impl SyncMessage {
    /// A message of `ty` with no payload and no flags.
    pub fn new(ty: MessageType) -> Self {
        SyncMessage {
            r#type: ty as i32,
            flags: 0,
            payload: None,
        }
    }

    /// An Error carrying `message`.
    pub fn error(message: impl Into<String>) -> Self {
        SyncMessage {
            payload: Some(Payload::Error(ErrorInfo {
                message: message.into(),
            })),
            ..Self::new(MessageType::Error)
        }
    }

    /// A Ready (child: set-up done, waiting for Run).
    pub fn ready() -> Self {
        Self::new(MessageType::Ready)
    }

    /// A Run (parent: reply to Ready).
    pub fn run() -> Self {
        Self::new(MessageType::Run)
    }

    /// A Hooks (child: run the hooks now).
    pub fn hooks() -> Self {
        Self::new(MessageType::Hooks)
    }

    /// A HooksDone (parent: reply to Hooks).
    pub fn hooks_done() -> Self {
        Self::new(MessageType::HooksDone)
    }

    /// A MountPlease asking for a source fd for `mount`.
    pub fn mount_please(mount: Mount) -> Self {
        SyncMessage {
            payload: Some(Payload::MountPlease(mount)),
            ..Self::new(MessageType::MountPlease)
        }
    }

    /// A MountFd reply for `source`; the fd itself travels beside the record.
    pub fn mount_fd(kind: MountSourceKind, source: impl Into<String>) -> Self {
        SyncMessage {
            payload: Some(Payload::MountFd(MountFdInfo {
                kind: kind as i32,
                source: source.into(),
            })),
            ..Self::new(MessageType::MountFd)
        }
    }

    /// A Seccomp whose notify fd travels beside the record.
    pub fn seccomp_attached() -> Self {
        SyncMessage {
            payload: Some(Payload::Seccomp(SeccompInfo {
                transfer: Some(SeccompTransfer::Attached(FdAttached {})),
            })),
            ..Self::new(MessageType::Seccomp)
        }
    }

    /// A Seccomp naming the child's fd number for the parent to `pidfd_getfd`.
    pub fn seccomp_child_fd(fd: i32) -> Self {
        SyncMessage {
            payload: Some(Payload::Seccomp(SeccompInfo {
                transfer: Some(SeccompTransfer::ChildFd(fd)),
            })),
            ..Self::new(MessageType::Seccomp)
        }
    }

    /// A SeccompDone (parent: reply to Seccomp).
    pub fn seccomp_done() -> Self {
        Self::new(MessageType::SeccompDone)
    }

    /// The message type, or `None` if the raw value is unknown.
    pub fn kind(&self) -> Option<MessageType> {
        MessageType::try_from(self.r#type).ok()
    }

    /// Whether the HasFd flag is set.
    pub fn has_fd(&self) -> bool {
        self.flags & FLAG_HAS_FD != 0
    }

    /// The Error payload's message, if this carries one.
    pub fn error_message(&self) -> Option<&str> {
        match &self.payload {
            Some(Payload::Error(e)) => Some(&e.message),
            _ => None,
        }
    }

    /// The MountPlease payload, if this carries one.
    pub fn mount(&self) -> Option<&Mount> {
        match &self.payload {
            Some(Payload::MountPlease(m)) => Some(m),
            _ => None,
        }
    }

    /// The MountFd payload, if this carries one.
    pub fn mount_fd_info(&self) -> Option<&MountFdInfo> {
        match &self.payload {
            Some(Payload::MountFd(m)) => Some(m),
            _ => None,
        }
    }

    /// The Seccomp transfer, if this carries one.
    pub fn seccomp_transfer(&self) -> Option<SeccompTransfer> {
        match &self.payload {
            Some(Payload::Seccomp(s)) => s.transfer,
            _ => None,
        }
    }

    /// A one-line human summary of the payload (for logs and transcripts).
    pub fn summary(&self) -> String {
        match &self.payload {
            None => String::new(),
            Some(Payload::Error(e)) => format!("{:?}", e.message),
            Some(Payload::MountPlease(m)) => {
                let mut s = format!("{} -> {}", m.source, m.destination);
                if let Some(idm) = &m.id_mapping {
                    if idm.userns_path.is_empty() {
                        s.push_str(&format!(
                            " idmap uid×{} gid×{}",
                            idm.uid_mappings.len(),
                            idm.gid_mappings.len()
                        ));
                    } else {
                        s.push_str(&format!(" idmap userns={}", idm.userns_path));
                    }
                    if idm.recursive {
                        s.push_str(" recursive");
                    }
                }
                s
            }
            Some(Payload::MountFd(m)) => {
                let kind = MountSourceKind::try_from(m.kind)
                    .map(MountSourceKind::name)
                    .unwrap_or("unknown");
                format!("{kind} {}", m.source)
            }
            Some(Payload::Seccomp(s)) => match s.transfer {
                Some(SeccompTransfer::Attached(_)) => "fd attached".to_string(),
                Some(SeccompTransfer::ChildFd(n)) => format!("child fd {n}"),
                None => "no transfer".to_string(),
            },
        }
    }
}

impl Mount {
    /// A bind mount (`MS_BIND`) of `source` at `destination`.
    pub fn bind(source: impl Into<String>, destination: impl Into<String>) -> Self {
        Mount {
            source: source.into(),
            destination: destination.into(),
            device: "bind".to_string(),
            flags: ms::BIND,
            ..Default::default()
        }
    }

    /// Adds `MS_REC`: bind the whole tree below the source.
    pub fn recursive(mut self) -> Self {
        self.flags |= ms::REC;
        self
    }

    /// Makes this an id-mapped mount with `mapping`.
    pub fn with_id_mapping(mut self, mapping: IdMapping) -> Self {
        self.id_mapping = Some(mapping);
        self
    }

    /// Whether this is a bind mount (`MS_BIND` set).
    pub fn is_bind(&self) -> bool {
        self.flags & ms::BIND != 0
    }
}

impl IdMapping {
    /// An id mapping with explicit uid and gid ranges.
    pub fn ranges(uid_mappings: Vec<IdMap>, gid_mappings: Vec<IdMap>) -> Self {
        IdMapping {
            uid_mappings,
            gid_mappings,
            ..Default::default()
        }
    }

    /// An id mapping taken from an existing user namespace at `path`.
    pub fn userns(path: impl Into<String>) -> Self {
        IdMapping {
            userns_path: path.into(),
            ..Default::default()
        }
    }

    /// Sets the recursive switch (apply to the whole mount tree).
    pub fn recursive(mut self, on: bool) -> Self {
        self.recursive = on;
        self
    }
}

impl IdMap {
    /// One mapping line: `size` ids from `container_id` map to `host_id`.
    pub const fn new(container_id: u32, host_id: u32, size: u32) -> Self {
        IdMap {
            container_id,
            host_id,
            size,
        }
    }
}
