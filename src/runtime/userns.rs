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

    /// Writes the mapping files and returns the namespace fd, proving along
    /// the way that both are the helper's (not those of a process that got
    /// its pid after it was reaped behind our back):
    ///
    /// 1. the pidfd's fdinfo names `pid` — checked before anything is written;
    /// 2. the helper is still alive after `/proc/PID` was opened, so that
    ///    directory (which stays bound to its process) is the helper's;
    /// 3. the namespace from `PIDFD_GET_USER_NAMESPACE` (kernel-resolved from
    ///    the pidfd) is the one behind `/proc/PID/ns/user`, whose maps were
    ///    written; without the ioctl (Linux < 6.11), the helper is still
    ///    alive after `ns/user` was opened.
    pub(crate) fn map_and_take_ns(&self, uid: &str, gid: &str) -> Result<OwnedFd, UsernsError> {
        let pid = self.pid;
        let identity = |reason| UsernsError::Identity { pid, reason };
        match sys::pidfd_pid(self.pidfd.as_fd()) {
            Ok(p) if p == pid => {}
            Ok(_) => return Err(identity("the pidfd names another process")),
            Err(err) => return Err(UsernsError::Proc { pid, err }),
        }
        let dir = rustix::fs::open(
            format!("/proc/{pid}"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| UsernsError::Proc { pid, err: e.into() })?;
        if !sys::pidfd_alive(self.pidfd.as_fd()) {
            return Err(identity(
                "the helper exited before its /proc directory was pinned",
            ));
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
        let via_proc = rustix::fs::openat(
            &dir,
            "ns/user",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| UsernsError::NamespaceFd { pid, err: e.into() })?;
        match sys::pidfd_get_user_namespace(self.pidfd.as_fd()) {
            Ok(fd) => {
                let same = match (rustix::fs::fstat(&fd), rustix::fs::fstat(&via_proc)) {
                    (Ok(a), Ok(b)) => (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
                    (Err(e), _) | (_, Err(e)) => {
                        return Err(UsernsError::NamespaceFd { pid, err: e.into() })
                    }
                };
                if !same {
                    return Err(identity(
                        "the pidfd's user namespace is not the one whose maps were written",
                    ));
                }
                Ok(fd)
            }
            Err(_) => {
                if !sys::pidfd_alive(self.pidfd.as_fd()) {
                    return Err(identity(
                        "the helper exited before its namespace was opened",
                    ));
                }
                Ok(via_proc)
            }
        }
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

/// The helper pool of one process.
///
/// Lifecycle around `fork` and `execve`, by design rather than by caller
/// discipline:
///
/// * **fork**: the pool belongs to the process that created it (`owner`). A
///   forked child never touches it — not even its lock, which another thread
///   may have held at the fork — so no lock is ever taken across a fork; in
///   the child [`create`] clones, uses, kills and reaps its own helper, and
///   [`set_prespawn`]/[`drain`] do nothing. The parent's helpers are not the
///   child's to kill; their inherited pidfds are close-on-exec.
/// * **execve**: stock helpers are cloned by the pool's thread, and the
///   kernel sends a helper its `PR_SET_PDEATHSIG` (SIGKILL) when the thread
///   that cloned it ends — which `execve` does to every other thread. A used
///   helper is killed as soon as its namespace fd is taken, whoever cloned
///   it; only the reap is left to the pool's thread. So no live helper
///   outlives an `execve`; at most an already-killed one can remain a zombie
///   of the new image (exit signal 0: invisible to `waitpid(-1)` without
///   `__WALL`). [`drain`] before `execve` leaves none.
struct Pool {
    /// The process this pool belongs to.
    owner: u32,
    state: Mutex<PoolState>,
    /// Wakes the background thread.
    work: Condvar,
    /// Signals that the background thread went idle.
    idle: Condvar,
}

impl Pool {
    /// This process's pool; `None` in a child forked from its owner.
    fn get() -> Option<&'static Pool> {
        static POOL: OnceLock<Pool> = OnceLock::new();
        let pool = POOL.get_or_init(|| Pool {
            owner: std::process::id(),
            state: Mutex::new(PoolState {
                stock: Vec::new(),
                retired: Vec::new(),
                target: DEFAULT_PRESPAWN,
                started: false,
                busy: false,
            }),
            work: Condvar::new(),
            idle: Condvar::new(),
        });
        (pool.owner == std::process::id()).then_some(pool)
    }

    /// Locks the state (only ever in the owner process: see [`Pool::get`]).
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Helpers are plain values; a panic elsewhere cannot corrupt the lists.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Kills a used helper now and hands it to the background thread to be
    /// reaped; reaps it here when the backlog is full or the thread cannot run.
    fn retire(&'static self, helper: Helper) {
        let _ = rustix::process::pidfd_send_signal(&helper.pidfd, rustix::process::Signal::KILL);
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
    let Some(pool) = Pool::get() else {
        return;
    };
    pool.lock().target = n;
    pool.work.notify_one();
}

/// Stops pre-spawning (like `set_prespawn(0)`), then kills and reaps every
/// helper not in use — the stock and the retired backlog — before returning.
///
/// Nothing requires it: no live helper survives an `execve` and a forked
/// child never uses the pool (see the lifecycle note on the pool in the
/// module source and PROTOCOL.md §14). Call it to leave no helper process —
/// not even a killed one awaiting its reap — behind, e.g. right before
/// `execve` or in tests that count children. Later [`create`] calls still
/// work; they clone and reap on their own until [`set_prespawn`] turns the
/// stock back on. In a child forked from the pool's owner it does nothing.
pub fn drain() {
    let Some(pool) = Pool::get() else {
        return;
    };
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
    let Some(pool) = Pool::get() else {
        // A child forked from the pool's owner: a helper of its own, killed
        // and reaped (by `Drop`) before returning.
        let helper = Helper::spawn().map_err(UsernsError::Spawn)?;
        return helper.map_and_take_ns(uid, gid);
    };
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

impl UsernsKey {
    /// The key's mapping lines as [`IdMap`]s (sorted), uid side then gid side.
    fn maps(&self) -> (Vec<IdMap>, Vec<IdMap>) {
        let to = |v: &[(u32, u32, u32)]| v.iter().map(|&(c, h, n)| IdMap::new(c, h, n)).collect();
        (to(&self.uid), to(&self.gid))
    }
}

/// How many mapping sets a [`UsernsCache`] keeps by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 64;

struct Entry {
    fd: OwnedFd,
    /// Tick of the last hit (or of the insertion), for LRU eviction.
    used: u64,
}

struct CacheState {
    map: HashMap<UsernsKey, Entry>,
    tick: u64,
}

/// A bounded cache of user namespace fds keyed by mapping set.
///
/// [`get`](UsernsCache::get) returns a close-on-exec duplicate of the cached
/// fd (the caller owns and closes it); the cache keeps its own fd — and with
/// it the namespace — until it is evicted, [`release`](UsernsCache::release)d
/// or [`clear`](UsernsCache::clear)ed (or the cache is dropped).
///
/// A namespace is only ever stored under the mappings it was made with: it
/// is created from the key's own lines. The cache holds at most
/// [`capacity`](UsernsCache::capacity) mapping sets
/// ([`DEFAULT_CACHE_CAPACITY`] by default); inserting one more evicts the
/// least recently used, so a child asking for ever new mappings (under a
/// permissive policy) cannot pin more than that many namespaces here —
/// user namespaces count against `max_user_namespaces`. Thread-safe;
/// creation happens outside the lock, so two threads missing on the same key
/// may both create one and the first one stored wins.
pub struct UsernsCache {
    state: Mutex<CacheState>,
    capacity: usize,
}

impl std::fmt::Debug for UsernsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsernsCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for UsernsCache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CACHE_CAPACITY)
    }
}

impl UsernsCache {
    /// An empty cache of [`DEFAULT_CACHE_CAPACITY`] mapping sets.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache of at most `capacity` mapping sets (`0`: nothing is
    /// kept; every call creates a namespace).
    pub fn with_capacity(capacity: usize) -> Self {
        UsernsCache {
            state: Mutex::new(CacheState {
                map: HashMap::new(),
                tick: 0,
            }),
            capacity,
        }
    }

    /// The most mapping sets this cache keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A user namespace fd for this mapping set: a duplicate of the cached one,
    /// or a new namespace (see [`create`]) that is cached first.
    pub fn get(&self, uid: &[IdMap], gid: &[IdMap]) -> Result<OwnedFd, UsernsError> {
        self.get_key(&UsernsKey::new(uid, gid))
    }

    /// Like [`get`](UsernsCache::get) with a key the caller already built
    /// (saves the sort on hot paths). A miss creates the namespace from the
    /// key's own lines, so what is stored under a key always has its mappings.
    pub fn get_key(&self, key: &UsernsKey) -> Result<OwnedFd, UsernsError> {
        {
            let mut st = self.lock();
            st.tick += 1;
            let tick = st.tick;
            if let Some(e) = st.map.get_mut(key) {
                e.used = tick;
                return dup(e.fd.as_fd());
            }
        }
        let (uid, gid) = key.maps();
        let fresh = create(&uid, &gid)?;
        if self.capacity == 0 {
            return Ok(fresh);
        }
        let mut st = self.lock();
        st.tick += 1;
        let tick = st.tick;
        if !st.map.contains_key(key) && st.map.len() >= self.capacity {
            let lru = st
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = lru {
                st.map.remove(&k);
            }
        }
        let e = st.map.entry(key.clone()).or_insert(Entry {
            fd: fresh,
            used: tick,
        });
        e.used = tick;
        dup(e.fd.as_fd())
    }

    /// Drops the cached fd for `key`; returns whether there was one. Fds
    /// already handed out stay valid.
    pub fn release(&self, key: &UsernsKey) -> bool {
        self.lock().map.remove(key).is_some()
    }

    /// Drops every cached fd.
    pub fn clear(&self) {
        self.lock().map.clear();
    }

    /// How many mapping sets are cached.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.lock().map.is_empty()
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
    fn helper_blocks_every_signal_glibc_would_leave_open() {
        let Ok(h) = Helper::spawn() else {
            eprintln!("skipped: cannot clone a user-namespace helper here");
            return;
        };
        let status = std::fs::read_to_string(format!("/proc/{}/status", h.pid)).unwrap();
        let blk = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .unwrap()
            .trim()
            .to_string();
        let blk = u64::from_str_radix(&blk, 16).unwrap();
        // Every signal but SIGKILL (9) and SIGSTOP (19), which the kernel
        // never lets a process block — including glibc's SIGCANCEL (32) and
        // SIGSETXID (33), which pthread_sigmask would have left open.
        let unblockable = (1u64 << (libc::SIGKILL - 1)) | (1u64 << (libc::SIGSTOP - 1));
        assert_eq!(blk, !unblockable, "SigBlk {blk:#x}");
        // And the spawning thread got its own mask back.
        let me = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let mine = me
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .unwrap()
            .trim()
            .to_string();
        assert_ne!(u64::from_str_radix(&mine, 16).unwrap(), !unblockable);
    }

    #[test]
    fn a_pid_that_is_not_the_pidfds_is_refused_before_any_write() {
        if !is_root() {
            eprintln!("skipped: needs root to write id maps");
            return;
        }
        let (Ok(a), Ok(b)) = (Helper::spawn(), Helper::spawn()) else {
            eprintln!("skipped: cannot clone user-namespace helpers here");
            return;
        };
        // What a reaped-and-reused pid looks like from here: /proc/PID is
        // another process than the one behind the pidfd.
        let fake = Helper {
            pid: b.pid,
            pidfd: a.pidfd.try_clone().unwrap(),
            stack: None,
        };
        let e = fake
            .map_and_take_ns("0 1000 1\n", "0 1000 1\n")
            .unwrap_err();
        assert!(matches!(e, UsernsError::Identity { .. }), "{e}");
        assert_eq!(e.kind(), UsernsErrorKind::Identity);
        let b_map = std::fs::read_to_string(format!("/proc/{}/uid_map", b.pid)).unwrap();
        assert!(
            b_map.trim().is_empty(),
            "wrote {b_map:?} into the other process"
        );
        drop(fake);
    }

    #[test]
    fn a_forked_child_never_takes_the_pool_lock() {
        if !is_root() {
            eprintln!("skipped: needs root to create mapped user namespaces");
            return;
        }
        let Some(pool) = Pool::get() else {
            return;
        };
        // Another thread holds the pool's lock at the moment of the fork.
        let guard = pool.lock();
        // SAFETY: the child only creates one user namespace (which may
        // allocate: glibc's malloc is fork-safe) and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = create_from_text("0 1000 1\n", "0 1000 1\n").is_ok();
            // SAFETY: ends the forked child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        drop(guard);
        let t0 = std::time::Instant::now();
        let mut status = 0;
        loop {
            // SAFETY: polls the child forked above; `status` is a valid out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            if t0.elapsed() > std::time::Duration::from_secs(5) {
                // SAFETY: kills and reaps the hung child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                panic!("the forked child deadlocked on the pool's lock");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }

    #[test]
    fn cache_is_bounded_and_evicts_the_least_recently_used() {
        if !is_root() {
            eprintln!("skipped: needs root to create mapped user namespaces");
            return;
        }
        let key = |h: u32| {
            let m = [IdMap::new(0, h, 10)];
            UsernsKey::new(&m, &m)
        };
        let ino = |fd: OwnedFd| rustix::fs::fstat(&fd).unwrap().st_ino;
        let cache = UsernsCache::with_capacity(2);
        let a = ino(cache.get_key(&key(100_000)).unwrap());
        let _b = ino(cache.get_key(&key(200_000)).unwrap());
        assert_eq!(ino(cache.get_key(&key(100_000)).unwrap()), a, "a hit");
        // A third set evicts the least recently used one (200000), not `a`.
        let _c = ino(cache.get_key(&key(300_000)).unwrap());
        assert_eq!(cache.len(), 2);
        assert_eq!(ino(cache.get_key(&key(100_000)).unwrap()), a);
        assert!(!cache.release(&key(200_000)), "200000 was evicted");
        // Capacity 0 keeps nothing.
        let none = UsernsCache::with_capacity(0);
        drop(none.get_key(&key(100_000)).unwrap());
        assert!(none.is_empty());
    }

    #[test]
    fn key_ignores_line_order() {
        let a = [IdMap::new(0, 1000, 1), IdMap::new(1, 2000, 5)];
        let b = [IdMap::new(1, 2000, 5), IdMap::new(0, 1000, 1)];
        assert_eq!(UsernsKey::new(&a, &b), UsernsKey::new(&b, &a));
        assert_ne!(UsernsKey::new(&a, &a[..1]), UsernsKey::new(&a, &a));
    }
}
