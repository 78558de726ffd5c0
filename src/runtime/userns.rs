//! User namespace fds with given uid/gid mappings, for `MOUNT_ATTR_IDMAP`.
//!
//! runc gets such an fd by spawning `/proc/self/exe` with `CLONE_NEWUSER` and
//! `PTRACE_TRACEME` (a fork + exec per namespace, about a millisecond). Here a
//! helper is cloned with `CLONE_VM | CLONE_NEWUSER | CLONE_PIDFD` onto a small
//! heap stack: no page-table copy, no exec, and the helper never has to run
//! before we use it. The caller then writes `uid_map`, `setgroups` (`deny`)
//! and `gid_map`, takes the namespace fd from the pidfd
//! (`PIDFD_GET_USER_NAMESPACE`, falling back to `/proc/PID/ns/user`) and hands
//! the helper to a reaper thread that kills and reaps it off the caller's path.
//! Every error path kills and reaps the helper before returning.
//!
//! [`UsernsCache`] keeps one fd per mapping set (order-independent) and hands
//! out close-on-exec duplicates.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use rustix::fs::{Mode, OFlags};

use super::sys;
use crate::schema::IdMap;
use crate::wire::validate::{check_ranges, MAX_ID_MAP_LINES};

/// Which id map file a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapSide {
    /// `uid_map`.
    Uid,
    /// `gid_map`.
    Gid,
}

impl MapSide {
    /// The `/proc/PID/` file name for this side.
    pub const fn file(self) -> &'static str {
        match self {
            MapSide::Uid => "uid_map",
            MapSide::Gid => "gid_map",
        }
    }
}

impl std::fmt::Display for MapSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.file())
    }
}

/// The stable name of a [`UsernsError`] (PROTOCOL.md §14); `Display`
/// prints the same kebab-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UsernsErrorKind {
    /// [`UsernsError::EmptyMapping`].
    EmptyMapping,
    /// [`UsernsError::InvalidMapping`].
    InvalidMapping,
    /// [`UsernsError::MappingTooLong`].
    MappingTooLong,
    /// [`UsernsError::Spawn`].
    Spawn,
    /// [`UsernsError::Proc`].
    Proc,
    /// [`UsernsError::WriteMap`].
    WriteMap,
    /// [`UsernsError::NamespaceFd`].
    NamespaceFd,
    /// [`UsernsError::Identity`].
    Identity,
    /// [`UsernsError::Dup`].
    Dup,
}

impl UsernsErrorKind {
    /// The kind's stable kebab-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            UsernsErrorKind::EmptyMapping => "empty-mapping",
            UsernsErrorKind::InvalidMapping => "invalid-mapping",
            UsernsErrorKind::MappingTooLong => "mapping-too-long",
            UsernsErrorKind::Spawn => "spawn",
            UsernsErrorKind::Proc => "proc",
            UsernsErrorKind::WriteMap => "write-map",
            UsernsErrorKind::NamespaceFd => "namespace-fd",
            UsernsErrorKind::Identity => "identity",
            UsernsErrorKind::Dup => "dup",
        }
    }
}

impl std::fmt::Display for UsernsErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a user namespace fd could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsernsError {
    /// The caller (or the peer whose request it forwards) gave no lines for one side.
    #[error("invalid id mapping: {side} is empty (a user namespace needs at least one line)")]
    EmptyMapping {
        /// The empty side.
        side: MapSide,
    },
    /// The caller's mapping breaks a kernel rule (see `wire::validate::check_ranges`).
    #[error("invalid id mapping: {side}: {reason}")]
    InvalidMapping {
        /// The offending side.
        side: MapSide,
        /// What is wrong (too many lines, empty range, overflow, overlap).
        reason: &'static str,
    },
    /// The mapping text is longer than the kernel accepts in one write (less than a page).
    #[error("invalid id mapping: {side} text is {len} bytes; the kernel takes less than {limit}")]
    MappingTooLong {
        /// The offending side.
        side: MapSide,
        /// Formatted length in bytes.
        len: usize,
        /// The limit (the page size).
        limit: usize,
    },
    /// OS: cloning the helper process failed (EPERM without privilege,
    /// ENOSPC at the user-namespace limit, EAGAIN/ENOMEM under pressure).
    #[error("cloning the user-namespace helper (clone CLONE_NEWUSER) failed")]
    Spawn(#[source] io::Error),
    /// OS: opening the helper's `/proc/PID` directory failed.
    #[error("opening /proc/{pid} of the user-namespace helper failed (is /proc mounted?)")]
    Proc {
        /// Helper pid.
        pid: i32,
        /// The OS error.
        #[source]
        err: io::Error,
    },
    /// OS: writing `/proc/PID/{file}` failed.
    #[error("writing /proc/{pid}/{file} failed")]
    WriteMap {
        /// Helper pid.
        pid: i32,
        /// The file: `uid_map`, `setgroups` or `gid_map`.
        file: &'static str,
        /// The OS error.
        #[source]
        err: io::Error,
    },
    /// OS: getting the namespace fd failed (pidfd ioctl and `/proc/PID/ns/user`).
    #[error("opening the user namespace of helper {pid} failed")]
    NamespaceFd {
        /// Helper pid.
        pid: i32,
        /// The OS error.
        #[source]
        err: io::Error,
    },
    /// OS: the namespace fd could not be proven to be the helper's own
    /// (the helper died, or its pid now names another process).
    #[error("the user namespace of helper {pid} could not be proven to be the helper's: {reason}")]
    Identity {
        /// Helper pid.
        pid: i32,
        /// Which check failed.
        reason: &'static str,
    },
    /// OS: duplicating a cached fd (`F_DUPFD_CLOEXEC`) failed, e.g. EMFILE.
    #[error("duplicating the cached user namespace fd failed")]
    Dup(#[source] io::Error),
}

impl UsernsError {
    /// The error's stable kind (PROTOCOL.md §14).
    pub fn kind(&self) -> UsernsErrorKind {
        match self {
            UsernsError::EmptyMapping { .. } => UsernsErrorKind::EmptyMapping,
            UsernsError::InvalidMapping { .. } => UsernsErrorKind::InvalidMapping,
            UsernsError::MappingTooLong { .. } => UsernsErrorKind::MappingTooLong,
            UsernsError::Spawn(_) => UsernsErrorKind::Spawn,
            UsernsError::Proc { .. } => UsernsErrorKind::Proc,
            UsernsError::WriteMap { .. } => UsernsErrorKind::WriteMap,
            UsernsError::NamespaceFd { .. } => UsernsErrorKind::NamespaceFd,
            UsernsError::Identity { .. } => UsernsErrorKind::Identity,
            UsernsError::Dup(_) => UsernsErrorKind::Dup,
        }
    }

    /// Who caused this error: [`Origin::Peer`](crate::Origin::Peer) for an
    /// invalid mapping (it comes from the request), [`Origin::Os`](crate::Origin::Os)
    /// otherwise.
    pub fn origin(&self) -> crate::Origin {
        if self.is_invalid_mapping() {
            crate::Origin::Peer
        } else {
            crate::Origin::Os
        }
    }

    /// Whether the mapping itself is at fault (rather than the OS).
    pub fn is_invalid_mapping(&self) -> bool {
        matches!(
            self,
            UsernsError::EmptyMapping { .. }
                | UsernsError::InvalidMapping { .. }
                | UsernsError::MappingTooLong { .. }
        )
    }
}

/// Checks both sides of a mapping and formats them as `uid_map`/`gid_map` text.
fn format_maps(uid: &[IdMap], gid: &[IdMap]) -> Result<(String, String), UsernsError> {
    let limit = rustix::param::page_size();
    let one = |side: MapSide, maps: &[IdMap]| -> Result<String, UsernsError> {
        if maps.is_empty() {
            return Err(UsernsError::EmptyMapping { side });
        }
        check_ranges(maps).map_err(|reason| UsernsError::InvalidMapping { side, reason })?;
        let mut s = String::with_capacity(maps.len() * 24);
        for m in maps {
            // Writing into a String cannot fail.
            let _ = writeln!(s, "{} {} {}", m.container_id, m.host_id, m.size);
        }
        if s.len() >= limit {
            return Err(UsernsError::MappingTooLong {
                side,
                len: s.len(),
                limit,
            });
        }
        Ok(s)
    };
    Ok((one(MapSide::Uid, uid)?, one(MapSide::Gid, gid)?))
}

/// A live helper process in a fresh user namespace. Dropping it kills and
/// reaps the helper synchronously, then frees its stack.
pub(crate) struct Helper {
    pid: i32,
    pidfd: OwnedFd,
    stack: Option<sys::HelperStack>,
}

impl Helper {
    /// Clones a new helper in a new, still unmapped, user namespace.
    pub(crate) fn spawn() -> io::Result<Helper> {
        let stack = sys::HelperStack::new()?;
        let (pid, pidfd) = sys::clone_userns_helper(&stack)?;
        Ok(Helper {
            pid,
            pidfd,
            stack: Some(stack),
        })
    }

    /// Writes the mapping files and returns the namespace fd.
    pub(crate) fn map_and_take_ns(&self, uid: &str, gid: &str) -> Result<OwnedFd, UsernsError> {
        let pid = self.pid;
        let dir = rustix::fs::open(
            format!("/proc/{pid}"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| UsernsError::Proc { pid, err: e.into() })?;
        // If the helper had been reaped behind our back, PID could now name
        // another process: only a helper still alive after the open proves
        // that `dir` is its directory.
        if !sys::pidfd_alive(self.pidfd.as_fd()) {
            return Err(UsernsError::Proc {
                pid,
                err: io::Error::from_raw_os_error(libc::ESRCH),
            });
        }
        let write = |file: &'static str, text: &str| -> Result<(), UsernsError> {
            let wrap = |e: rustix::io::Errno| UsernsError::WriteMap {
                pid,
                file,
                err: e.into(),
            };
            let fd =
                rustix::fs::openat(&dir, file, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
                    .map_err(wrap)?;
            let n = rustix::io::write(&fd, text.as_bytes()).map_err(wrap)?;
            if n != text.len() {
                return Err(UsernsError::WriteMap {
                    pid,
                    file,
                    err: io::Error::new(io::ErrorKind::WriteZero, "short write"),
                });
            }
            Ok(())
        };
        write("uid_map", uid)?;
        write("setgroups", "deny")?;
        write("gid_map", gid)?;
        match sys::pidfd_get_user_namespace(self.pidfd.as_fd()) {
            Ok(fd) => Ok(fd),
            Err(_) => rustix::fs::openat(
                &dir,
                "ns/user",
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| UsernsError::NamespaceFd { pid, err: e.into() }),
        }
    }

    /// Lets go of a helper this process does not own (inherited over fork):
    /// closes the pidfd without killing; the stack here is our private copy.
    fn abandon(mut self) {
        drop(self.stack.take());
    }

    /// Kills and reaps the helper now; frees the stack only when the reap
    /// proves the helper is gone.
    fn finish(&mut self) {
        let Some(stack) = self.stack.take() else {
            return;
        };
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
        match sys::reap_pidfd(self.pidfd.as_fd()) {
            // ECHILD: someone else reaped it, so it is gone as well.
            Ok(()) => drop(stack),
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => drop(stack),
            // Cannot prove the helper no longer uses the stack: leak 16 KiB
            // rather than free memory another task may still touch.
            Err(_) => std::mem::forget(stack),
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Helpers pre-spawned by default (see [`set_prespawn`]).
pub const DEFAULT_PRESPAWN: usize = 2;
/// Retired helpers allowed to wait for the background thread; past this the
/// caller kills and reaps its helper itself, so the backlog stays bounded.
const MAX_BACKLOG: usize = 16;

struct PoolState {
    /// The process the helpers belong to; after a fork the child does not use them.
    owner: u32,
    /// Pre-spawned helpers, namespace not yet mapped.
    stock: Vec<Helper>,
    /// Used helpers waiting to be killed and reaped.
    retired: Vec<Helper>,
    /// How many helpers to keep in stock.
    target: usize,
    /// Whether the background thread runs.
    started: bool,
    /// Whether the background thread is between taking work and storing results.
    busy: bool,
}

struct Pool {
    state: Mutex<PoolState>,
    /// Wakes the background thread.
    work: Condvar,
    /// Signals that the background thread went idle.
    idle: Condvar,
}

impl Pool {
    fn get() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| Pool {
            state: Mutex::new(PoolState {
                owner: std::process::id(),
                stock: Vec::new(),
                retired: Vec::new(),
                target: DEFAULT_PRESPAWN,
                started: false,
                busy: false,
            }),
            work: Condvar::new(),
            idle: Condvar::new(),
        })
    }

    /// Locks the state. In a child forked from the owner, first lets go of
    /// the inherited helpers (they are the parent's: closed, not killed) and
    /// adopts the pool; the background thread did not survive the fork.
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Helpers are plain values; a panic elsewhere cannot corrupt the lists.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let me = std::process::id();
        if st.owner != me {
            st.stock.drain(..).for_each(Helper::abandon);
            st.retired.drain(..).for_each(Helper::abandon);
            st.owner = me;
            st.started = false;
            st.busy = false;
        }
        st
    }

    /// Starts the background thread once; false when it cannot run.
    fn ensure_started(&'static self, st: &mut PoolState) -> bool {
        if !st.started {
            st.started = std::thread::Builder::new()
                .name("procsync-userns".into())
                .stack_size(64 * 1024)
                .spawn(move || self.run())
                .is_ok();
        }
        st.started
    }

    /// The background thread: reaps retired helpers and keeps the stock full.
    /// It runs SCHED_IDLE so waking it never delays the caller.
    fn run(&self) {
        let _ = sys::set_current_thread_sched_idle();
        let mut backoff = std::time::Duration::from_millis(10);
        loop {
            let (retired, need) = {
                let mut st = self.lock();
                while st.retired.is_empty() && st.stock.len() >= st.target {
                    st.busy = false;
                    self.idle.notify_all();
                    st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                st.busy = true;
                (
                    std::mem::take(&mut st.retired),
                    st.target.saturating_sub(st.stock.len()),
                )
            };
            kill_all(retired);
            let mut fresh: Vec<Helper> = (0..need).filter_map(|_| Helper::spawn().ok()).collect();
            let spawned = fresh.len();
            let extra = {
                let mut st = self.lock();
                let room = st.target.saturating_sub(st.stock.len());
                let extra = fresh.split_off(room.min(fresh.len()));
                st.stock.append(&mut fresh);
                extra
            };
            kill_all(extra);
            if spawned < need {
                // Spawning fails (e.g. at the user namespace limit): back off
                // rather than spin; callers spawn on their own meanwhile.
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
            } else {
                backoff = std::time::Duration::from_millis(10);
            }
        }
    }

    /// A helper from stock (None when empty, unusable after fork, or no thread).
    fn take(&'static self) -> Option<Helper> {
        let mut st = self.lock();
        if st.target == 0 || !self.ensure_started(&mut st) {
            return None;
        }
        let h = st.stock.pop();
        if st.stock.len() < st.target {
            self.work.notify_one();
        }
        h
    }

    /// Hands a used helper to the background thread; kills and reaps it here
    /// when the backlog is full or the thread cannot run.
    fn retire(&'static self, helper: Helper) {
        let mut st = self.lock();
        if st.retired.len() < MAX_BACKLOG && self.ensure_started(&mut st) {
            st.retired.push(helper);
            self.work.notify_one();
            return;
        }
        drop(st);
        drop(helper);
    }
}

/// Kills every helper first, then reaps each, so their exits overlap.
fn kill_all(helpers: Vec<Helper>) {
    for h in &helpers {
        let _ = rustix::process::pidfd_send_signal(&h.pidfd, rustix::process::Signal::KILL);
    }
    drop(helpers);
}

/// Sets how many helper processes are kept pre-spawned (default
/// [`DEFAULT_PRESPAWN`]); `0` turns pre-spawning off.
///
/// A pre-spawned helper is a sleeping process in a fresh, unmapped user
/// namespace; it takes the clone (tens of µs) off [`create`]'s path. The
/// helpers share this process's memory (no copy) and die with it.
pub fn set_prespawn(n: usize) {
    let pool = Pool::get();
    pool.lock().target = n;
    pool.work.notify_one();
}

/// Stops pre-spawning (like `set_prespawn(0)`), then kills and reaps every
/// helper not in use — the stock and the retired backlog — before returning.
///
/// Call it before `execve` in this process (helpers cloned by the exec'ing
/// thread would outlive the image as unreaped children), before `fork`
/// without exec, or to leave no helper process behind (tests count children). Later [`create`] calls still work; they clone and
/// reap on their own until [`set_prespawn`] turns the stock back on.
pub fn drain() {
    let pool = Pool::get();
    let mut st = pool.lock();
    st.target = 0;
    pool.work.notify_one();
    while st.busy {
        st = pool.idle.wait(st).unwrap_or_else(|p| p.into_inner());
    }
    let mut all = std::mem::take(&mut st.stock);
    all.append(&mut st.retired);
    drop(st);
    kill_all(all);
}

/// Makes a new user namespace with these mappings and returns an O_CLOEXEC fd
/// for it.
///
/// Both sides must be non-empty and pass the kernel's rules (at most 340
/// lines, no empty or overflowing range, no overlaps); `setgroups` is set to
/// `deny`. Needs CAP_SETUID/CAP_SETGID over the host ids (root). The helper
/// process comes pre-spawned from a small stock when one is ready (see
/// [`set_prespawn`]) and is killed and reaped by a background thread after the
/// fd is taken; on every error it is killed and reaped before this returns.
pub fn create(uid: &[IdMap], gid: &[IdMap]) -> Result<OwnedFd, UsernsError> {
    let (uid_text, gid_text) = format_maps(uid, gid)?;
    create_from_text(&uid_text, &gid_text)
}

/// `create` without validation: the kernel is the judge. Used by tests of
/// the post-spawn error path.
pub(crate) fn create_from_text(uid: &str, gid: &str) -> Result<OwnedFd, UsernsError> {
    let pool = Pool::get();
    // A stock helper that cannot be used (killed from outside, say) costs
    // one retry with a freshly cloned one.
    if let Some(helper) = pool.take() {
        if let Ok(fd) = helper.map_and_take_ns(uid, gid) {
            pool.retire(helper);
            return Ok(fd);
        }
    }
    let helper = Helper::spawn().map_err(UsernsError::Spawn)?;
    // On error `helper` drops here: killed and reaped synchronously.
    let fd = helper.map_and_take_ns(uid, gid)?;
    pool.retire(helper);
    Ok(fd)
}

/// A cache key: a mapping set with its lines sorted, so the same set in any
/// order hits the same entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsernsKey {
    uid: Box<[(u32, u32, u32)]>,
    gid: Box<[(u32, u32, u32)]>,
}

impl UsernsKey {
    /// The key for a uid/gid mapping set (line order does not matter).
    pub fn new(uid: &[IdMap], gid: &[IdMap]) -> Self {
        let norm = |maps: &[IdMap]| {
            let mut v: Vec<(u32, u32, u32)> = maps
                .iter()
                .map(|m| (m.container_id, m.host_id, m.size))
                .collect();
            v.sort_unstable();
            v.into_boxed_slice()
        };
        UsernsKey {
            uid: norm(uid),
            gid: norm(gid),
        }
    }
}

/// A cache of user namespace fds keyed by mapping set.
///
/// [`get`](UsernsCache::get) returns a close-on-exec duplicate of the cached
/// fd (the caller owns and closes it); the cache keeps its own fd — and with
/// it the namespace — until [`release`](UsernsCache::release) or
/// [`clear`](UsernsCache::clear) (or drop). Thread-safe; creation happens
/// outside the lock, so two threads missing on the same key may both create
/// one and the first one stored wins.
#[derive(Debug, Default)]
pub struct UsernsCache {
    map: Mutex<HashMap<UsernsKey, OwnedFd>>,
}

impl UsernsCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UsernsKey, OwnedFd>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A user namespace fd for this mapping set: a duplicate of the cached one,
    /// or a new namespace (see [`create`]) that is cached first.
    pub fn get(&self, uid: &[IdMap], gid: &[IdMap]) -> Result<OwnedFd, UsernsError> {
        self.get_key(&UsernsKey::new(uid, gid), uid, gid)
    }

    /// Like [`get`](UsernsCache::get) with a key the caller already built
    /// (saves the sort on hot paths). `key` must be `UsernsKey::new(uid, gid)`.
    pub fn get_key(
        &self,
        key: &UsernsKey,
        uid: &[IdMap],
        gid: &[IdMap],
    ) -> Result<OwnedFd, UsernsError> {
        if let Some(fd) = self.lock().get(key) {
            return dup(fd.as_fd());
        }
        let fresh = create(uid, gid)?;
        let mut map = self.lock();
        let fd = map.entry(key.clone()).or_insert(fresh);
        dup(fd.as_fd())
    }

    /// Drops the cached fd for `key`; returns whether there was one. Fds
    /// already handed out stay valid.
    pub fn release(&self, key: &UsernsKey) -> bool {
        self.lock().remove(key).is_some()
    }

    /// Drops every cached fd.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many mapping sets are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd, UsernsError> {
    rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(|e| UsernsError::Dup(e.into()))
}

/// The most lines one side may have (the kernel's limit), re-exported for callers.
pub const MAX_LINES: usize = MAX_ID_MAP_LINES;

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// Children of this process that live in another user namespace: our helpers.
    fn foreign_userns_children() -> usize {
        let me = std::fs::read_link("/proc/self/ns/user").unwrap();
        let mut n = 0;
        for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let Ok(s) = std::fs::read_to_string(t.path().join("children")) else {
                continue;
            };
            for pid in s.split_whitespace() {
                if let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/user")) {
                    if ns != me {
                        n += 1;
                    }
                }
            }
        }
        n
    }

    #[test]
    fn kernel_rejected_mapping_kills_and_reaps_helper() {
        if !is_root() {
            eprintln!("skipped: needs root to create mapped user namespaces");
            return;
        }
        drain();
        let before = foreign_userns_children();
        set_prespawn(DEFAULT_PRESPAWN);
        // Size 0 passes no validation here; the kernel refuses it (EINVAL)
        // after the helper exists: the error path must clean up.
        let err = create_from_text("0 1000 0\n", "0 1000 1\n").unwrap_err();
        match &err {
            UsernsError::WriteMap { file, err, .. } => {
                assert_eq!(*file, "uid_map");
                assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
            }
            other => panic!("unexpected error {other}"),
        }
        // The failed helper was killed and reaped on the error path; drain()
        // only removes the stock and the retired backlog.
        drain();
        assert_eq!(foreign_userns_children(), before);
    }

    #[test]
    fn format_rejects_long_text_and_bad_ranges() {
        let many: Vec<IdMap> = (0..300)
            .map(|i| IdMap::new(4_000_000_000 + i * 10, 4_000_000_000 + i * 10, 1))
            .collect();
        let one = [IdMap::new(0, 1000, 1)];
        assert!(matches!(
            format_maps(&many, &one),
            Err(UsernsError::MappingTooLong {
                side: MapSide::Uid,
                ..
            })
        ));
        assert!(matches!(
            format_maps(&one, &[]),
            Err(UsernsError::EmptyMapping { side: MapSide::Gid })
        ));
        let (u, g) = format_maps(&one, &[IdMap::new(1, 2, 3)]).unwrap();
        assert_eq!(u, "0 1000 1\n");
        assert_eq!(g, "1 2 3\n");
    }

    #[test]
    fn key_ignores_line_order() {
        let a = [IdMap::new(0, 1000, 1), IdMap::new(1, 2000, 5)];
        let b = [IdMap::new(1, 2000, 5), IdMap::new(0, 1000, 1)];
        assert_eq!(UsernsKey::new(&a, &b), UsernsKey::new(&b, &a));
        assert_ne!(UsernsKey::new(&a, &a[..1]), UsernsKey::new(&a, &a));
    }
}
