//! The runtime-spec's Linux mount options (config.md, "Linux mount
//! options"), as they apply to a bind mount. The constants come from the
//! `libc` crate (the kernel's `MS_*` and `MOUNT_ATTR_*`).

/// What one option does to the request.
#[derive(Debug, Clone, Copy)]
pub(super) enum Effect {
    /// Sets `MS_*` bits in `flags` (and removes them from `cleared_flags`).
    Set(u64),
    /// Clears `MS_*` bits: removed from `flags`, added to `cleared_flags`.
    Clear(u64),
    /// Appends a propagation change (`MS_PRIVATE`, … possibly `| MS_REC`).
    Propagation(u64),
    /// Sets a recursive `MOUNT_ATTR_*` (`rec_attr.attr_set`).
    RecSet(u64),
    /// Clears a recursive `MOUNT_ATTR_*` (`rec_attr.attr_clr`).
    RecClear(u64),
    /// `idmap` / `ridmap`: the mount is id-mapped (recursively for ridmap).
    IdMap { recursive: bool },
    /// Accepted, changes nothing (`defaults`).
    Nothing,
    /// Known to the runtime spec, meaningless for a bind mount.
    NotForBind,
}

/// `MOUNT_ATTR__ATIME`: the access-time field of `mount_setattr(2)`.
pub(super) const ATIME_MASK: u64 = libc::MOUNT_ATTR__ATIME;

/// Whether `attr` is an access-time mode (within the access-time field;
/// `MOUNT_ATTR_RELATIME` is 0).
pub(super) const fn is_atime(attr: u64) -> bool {
    attr & !ATIME_MASK == 0
}

/// `MS_*` as u64 (the libc type is `c_ulong`).
macro_rules! ms {
    ($($f:ident)|+) => { 0 $(| libc::$f as u64)+ };
}

/// Every option a bind mount may carry, with its effect; runc maps them the
/// same way (libcontainer/specconv).
const TABLE: &[(&str, Effect)] = &[
    // Flags, mount(8) semantics: "rw" clears what "ro" sets, and so on.
    ("async", Effect::Clear(ms!(MS_SYNCHRONOUS))),
    ("atime", Effect::Clear(ms!(MS_NOATIME))),
    ("bind", Effect::Set(ms!(MS_BIND))),
    ("defaults", Effect::Nothing),
    ("dev", Effect::Clear(ms!(MS_NODEV))),
    ("diratime", Effect::Clear(ms!(MS_NODIRATIME))),
    ("dirsync", Effect::Set(ms!(MS_DIRSYNC))),
    ("exec", Effect::Clear(ms!(MS_NOEXEC))),
    ("iversion", Effect::Set(ms!(MS_I_VERSION))),
    ("lazytime", Effect::Set(ms!(MS_LAZYTIME))),
    ("loud", Effect::Clear(ms!(MS_SILENT))),
    ("mand", Effect::Set(ms!(MS_MANDLOCK))),
    ("noatime", Effect::Set(ms!(MS_NOATIME))),
    ("nodev", Effect::Set(ms!(MS_NODEV))),
    ("nodiratime", Effect::Set(ms!(MS_NODIRATIME))),
    ("noexec", Effect::Set(ms!(MS_NOEXEC))),
    ("noiversion", Effect::Clear(ms!(MS_I_VERSION))),
    ("nolazytime", Effect::Clear(ms!(MS_LAZYTIME))),
    ("nomand", Effect::Clear(ms!(MS_MANDLOCK))),
    ("norelatime", Effect::Clear(ms!(MS_RELATIME))),
    ("nostrictatime", Effect::Clear(ms!(MS_STRICTATIME))),
    ("nosuid", Effect::Set(ms!(MS_NOSUID))),
    ("nosymfollow", Effect::Set(ms!(MS_NOSYMFOLLOW))),
    ("rbind", Effect::Set(ms!(MS_BIND | MS_REC))),
    ("relatime", Effect::Set(ms!(MS_RELATIME))),
    ("remount", Effect::Set(ms!(MS_REMOUNT))),
    ("ro", Effect::Set(ms!(MS_RDONLY))),
    ("rw", Effect::Clear(ms!(MS_RDONLY))),
    ("silent", Effect::Set(ms!(MS_SILENT))),
    ("strictatime", Effect::Set(ms!(MS_STRICTATIME))),
    ("suid", Effect::Clear(ms!(MS_NOSUID))),
    ("symfollow", Effect::Clear(ms!(MS_NOSYMFOLLOW))),
    ("sync", Effect::Set(ms!(MS_SYNCHRONOUS))),
    // Propagation, applied after the mount, in order.
    ("private", Effect::Propagation(ms!(MS_PRIVATE))),
    ("rprivate", Effect::Propagation(ms!(MS_PRIVATE | MS_REC))),
    ("shared", Effect::Propagation(ms!(MS_SHARED))),
    ("rshared", Effect::Propagation(ms!(MS_SHARED | MS_REC))),
    ("slave", Effect::Propagation(ms!(MS_SLAVE))),
    ("rslave", Effect::Propagation(ms!(MS_SLAVE | MS_REC))),
    ("unbindable", Effect::Propagation(ms!(MS_UNBINDABLE))),
    (
        "runbindable",
        Effect::Propagation(ms!(MS_UNBINDABLE | MS_REC)),
    ),
    // Recursive attributes (mount_setattr(2) with AT_RECURSIVE).
    ("rro", Effect::RecSet(libc::MOUNT_ATTR_RDONLY)),
    ("rrw", Effect::RecClear(libc::MOUNT_ATTR_RDONLY)),
    ("rnosuid", Effect::RecSet(libc::MOUNT_ATTR_NOSUID)),
    ("rsuid", Effect::RecClear(libc::MOUNT_ATTR_NOSUID)),
    ("rnodev", Effect::RecSet(libc::MOUNT_ATTR_NODEV)),
    ("rdev", Effect::RecClear(libc::MOUNT_ATTR_NODEV)),
    ("rnoexec", Effect::RecSet(libc::MOUNT_ATTR_NOEXEC)),
    ("rexec", Effect::RecClear(libc::MOUNT_ATTR_NOEXEC)),
    ("rnodiratime", Effect::RecSet(libc::MOUNT_ATTR_NODIRATIME)),
    ("rdiratime", Effect::RecClear(libc::MOUNT_ATTR_NODIRATIME)),
    ("rrelatime", Effect::RecSet(libc::MOUNT_ATTR_RELATIME)),
    ("rnorelatime", Effect::RecClear(libc::MOUNT_ATTR_RELATIME)),
    ("rnoatime", Effect::RecSet(libc::MOUNT_ATTR_NOATIME)),
    ("ratime", Effect::RecClear(libc::MOUNT_ATTR_NOATIME)),
    ("rstrictatime", Effect::RecSet(libc::MOUNT_ATTR_STRICTATIME)),
    (
        "rnostrictatime",
        Effect::RecClear(libc::MOUNT_ATTR_STRICTATIME),
    ),
    ("rnosymfollow", Effect::RecSet(libc::MOUNT_ATTR_NOSYMFOLLOW)),
    ("rsymfollow", Effect::RecClear(libc::MOUNT_ATTR_NOSYMFOLLOW)),
    // Id-mapped mounts (runtime-spec 1.1): never passed to mount(2).
    ("idmap", Effect::IdMap { recursive: false }),
    ("ridmap", Effect::IdMap { recursive: true }),
    // Copies the image's contents into a new tmpfs: not a bind mount's.
    ("tmpcopyup", Effect::NotForBind),
];

/// The effect of `option`, or `None` for an option procsync does not know.
pub(super) fn lookup(option: &str) -> Option<Effect> {
    TABLE
        .iter()
        .find(|(name, _)| *name == option)
        .map(|(_, e)| *e)
}

/// Every option name [`MountPlan`](super::MountPlan) accepts on a bind mount
/// (all of the runtime spec's Linux mount options except `tmpcopyup`,
/// which is a tmpfs option). Any other option on a bind mount is an
/// [`OciError::UnknownOption`](super::OciError::UnknownOption).
pub fn bind_options() -> impl Iterator<Item = &'static str> {
    TABLE
        .iter()
        .filter(|(_, e)| !matches!(e, Effect::NotForBind))
        .map(|(name, _)| *name)
}
