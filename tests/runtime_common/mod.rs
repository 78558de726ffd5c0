//! Shared helpers for the runtime integration tests: root check, a private
//! mount namespace per test thread, scratch dirs, fd counting once the
//! helper pool is drained. Fd and child counting and the serialising lock
//! (held by tests that count fds/children or use the global helper pool)
//! come from `tests/support`, re-exported here.
#![allow(dead_code, unused_imports)]

#[path = "../support/mod.rs"]
pub mod support;

use std::path::{Path, PathBuf};

pub use support::proc::children;
pub use support::{fd_count, serial};

/// True when root; otherwise prints why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!("{test}: skipped: needs root (user namespaces with host mappings, mounts)");
    false
}

/// Moves the calling thread into a new mount namespace with `/` made
/// recursively private, so nothing this test mounts reaches the host.
pub fn private_mount_ns() {
    // SAFETY: CLONE_NEWNS (which implies CLONE_FS) does not touch the fd
    // table, so no thread loses access to any fd.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .expect("unshare(CLONE_NEWNS)");
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .expect("make / rprivate");
}

/// A scratch directory under /tmp (on the root filesystem), removed on drop
/// after lazily unmounting anything mounted below it (in this thread's ns).
pub struct Scratch {
    pub path: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = PathBuf::from(format!(
            "/tmp/procsync-rt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("scratch dir");
        Scratch {
            path,
            mounts: Vec::new(),
        }
    }

    /// `self.path/rel`, created as a directory.
    pub fn dir(&self, rel: &str) -> PathBuf {
        let p = self.path.join(rel);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    }

    /// Mounts a fresh tmpfs at `self.path/rel`.
    pub fn tmpfs(&mut self, rel: &str) -> PathBuf {
        let p = self.dir(rel);
        rustix::mount::mount(
            "tmpfs",
            &p,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .expect("mount tmpfs");
        self.mounts.push(p.clone());
        p
    }

    /// Records a mount point to detach on drop.
    pub fn mounted(&mut self, p: &Path) {
        self.mounts.push(p.to_path_buf());
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A file at `path` with `content`, owned by `uid:gid`.
pub fn file_owned(path: &Path, content: &str, uid: u32, gid: u32) {
    std::fs::write(path, content).expect("write file");
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}

/// `(uid, gid)` of `path` (not following a final symlink).
pub fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).expect("stat");
    (m.uid(), m.gid())
}

/// Open fds once the userns helper pool is drained (pre-spawned helpers hold
/// pidfds); pre-spawning stays off until `set_prespawn` turns it back on.
pub fn settled_fd_count() -> usize {
    procsync::runtime::userns::drain();
    fd_count()
}
