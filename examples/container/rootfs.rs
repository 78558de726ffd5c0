//! The init's work inside the rootfs: every path is resolved from the
//! rootfs fd with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)`, never walked as a host path string, so a
//! symlink planted in the container image cannot redirect a mount onto the
//! host (the CVE-2021-30465 class).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use procsync::runtime::MountSource;
use procsync::rustix::fs::{Mode, OFlags, ResolveFlags};
use procsync::rustix::mount::{MoveMountFlags, UnmountFlags};

use super::bundle::FsMount;

/// How every in-root lookup resolves: `/` and `..` stay in the rootfs, and
/// no symlink (magic or not) is followed.
fn resolve() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

fn err(what: &str, path: &Path, e: impl Into<io::Error>) -> io::Error {
    let e: io::Error = e.into();
    let hint = match e.raw_os_error() {
        Some(e) if e == procsync::rustix::io::Errno::LOOP.raw_os_error() => {
            " (a symlink on the way: not followed)"
        }
        _ => "",
    };
    io::Error::new(e.kind(), format!("{what} {}: {e}{hint}", path.display()))
}

/// Opens `path` (inside the rootfs) as an `O_PATH` fd.
pub fn open_in_root(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    procsync::rustix::fs::openat2(
        root,
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        resolve(),
    )
    .map_err(|e| err("open in rootfs", path, e))
}

/// Creates `path` inside the rootfs if missing — its parents as
/// directories, the last component as a directory (`dir`) or an empty file
/// (a bind mount of a file needs a file to land on) — and returns it as an
/// `O_PATH` fd. Each component is created and then opened relative to its
/// parent's fd, refusing symlinks.
pub fn make_in_root(root: BorrowedFd<'_>, path: &Path, dir: bool) -> io::Result<OwnedFd> {
    let names: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::RootDir | Component::CurDir => None,
            Component::ParentDir | Component::Prefix(_) => Some(Err(())),
        })
        .collect::<Result<_, _>>()
        .map_err(|()| err("mount destination", path, io::ErrorKind::InvalidInput))?;
    let mut cur = procsync::rustix::io::fcntl_dupfd_cloexec(root, 0)?;
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        let made = if last && !dir {
            procsync::rustix::fs::openat(
                &cur,
                *name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        } else {
            procsync::rustix::fs::mkdirat(&cur, *name, Mode::from_raw_mode(0o755))
        };
        match made {
            Ok(()) | Err(procsync::rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(err("create in rootfs", path, e)),
        }
        // RESOLVE_NO_SYMLINKS refuses a symlink here with ELOOP.
        let mut flags = OFlags::PATH | OFlags::CLOEXEC;
        if !last || dir {
            flags |= OFlags::DIRECTORY;
        }
        cur = procsync::rustix::fs::openat2(&cur, *name, flags, Mode::empty(), resolve())
            .map_err(|e| err("open in rootfs", path, e))?;
    }
    Ok(cur)
}

/// Attaches a served source at `destination` inside the rootfs and closes
/// the source fd: the destination (made by [`make_in_root`], which refuses
/// any symlink on the way) is resolved from the rootfs fd with
/// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` and the source goes
/// onto that fd (`procsync::runtime::attach_in_root`: `move_mount` for a
/// detached tree, a bind of `/proc/thread-self/fd/N` for an `O_PATH`
/// source), never onto a host path walked again.
pub fn attach_in_root(
    source: MountSource,
    root: BorrowedFd<'_>,
    destination: &Path,
    recursive: bool,
) -> io::Result<()> {
    procsync::runtime::attach_in_root(source, root, destination, recursive)
        .map_err(|e| io::Error::other(super::chain(&e)))
}

/// Makes a filesystem mount (`proc`, `tmpfs`, …) with the new mount API and
/// moves it onto its destination fd: `fsopen`, `fsconfig` per option,
/// `fsmount` with the `MOUNT_ATTR_*` bits, `move_mount`. A `proc` made here
/// belongs to the init's PID namespace.
pub fn mount_fs(root: BorrowedFd<'_>, m: &FsMount) -> io::Result<()> {
    let dest_path = Path::new(&m.destination);
    let dest = make_in_root(root, dest_path, true)?;
    let ctx = |what: &str, e: procsync::rustix::io::Errno| {
        err(&format!("{} ({what}) at", m.fstype), dest_path, e)
    };
    let fs = procsync::rustix::mount::fsopen(
        m.fstype.as_str(),
        procsync::rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC,
    )
    .map_err(|e| ctx("fsopen", e))?;
    if !m.source.is_empty() {
        procsync::rustix::mount::fsconfig_set_string(&fs, "source", m.source.as_str())
            .map_err(|e| ctx("fsconfig source", e))?;
    }
    for opt in &m.data {
        match opt.split_once('=') {
            Some((k, v)) => procsync::rustix::mount::fsconfig_set_string(&fs, k, v),
            None => procsync::rustix::mount::fsconfig_set_flag(&fs, opt.as_str()),
        }
        .map_err(|e| ctx(&format!("fsconfig {opt}"), e))?;
    }
    procsync::rustix::mount::fsconfig_create(&fs).map_err(|e| ctx("fsconfig create", e))?;
    let mnt = procsync::rustix::mount::fsmount(
        &fs,
        procsync::rustix::mount::FsMountFlags::FSMOUNT_CLOEXEC,
        m.attrs,
    )
    .map_err(|e| ctx("fsmount", e))?;
    procsync::rustix::mount::move_mount(
        &mnt,
        "",
        &dest,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| ctx("move_mount", e))
}

/// Makes the rootfs the process's root: `fchdir(root)`, `pivot_root(".",
/// ".")`, then detaches the old root stacked under it (runc's trick: no
/// directory for the old root needed) and `chdir("/")`.
pub fn pivot(root: BorrowedFd<'_>) -> io::Result<()> {
    procsync::rustix::process::fchdir(root).map_err(|e| err("fchdir", Path::new("rootfs"), e))?;
    procsync::rustix::process::pivot_root(".", ".")
        .map_err(|e| err("pivot_root", Path::new("."), e))?;
    procsync::rustix::mount::unmount(".", UnmountFlags::DETACH)
        .map_err(|e| err("umount2(MNT_DETACH) of the old root", Path::new("."), e))?;
    procsync::rustix::process::chdir("/").map_err(|e| err("chdir", Path::new("/"), e))?;
    Ok(())
}
