//! The runtime layer's kernel interface: every `unsafe` block of the layer
//! lives here, each in a small function with a `// SAFETY:` comment.
//!
//! Everything else in `runtime` calls these wrappers (or rustix's safe API).

use std::alloc::{self, Layout};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// Size of the userns helper's stack. The helper runs three raw syscalls in
/// one frame; 16 KiB leaves ample room for glibc's `clone` trampoline.
const HELPER_STACK_SIZE: usize = 16 * 1024;
const HELPER_STACK_ALIGN: usize = 64;

/// A heap block used as the stack of a `CLONE_VM` helper. Rust never reads or
/// writes it; only the helper's kernel-started thread of execution does.
pub(crate) struct HelperStack {
    base: NonNull<u8>,
}

// SAFETY: the block is plain memory owned by this value; moving the owner to
// another thread (the reaper) is fine, nothing in Rust dereferences it.
unsafe impl Send for HelperStack {}

impl HelperStack {
    fn layout() -> Layout {
        // Both values are non-zero and the alignment is a power of two.
        Layout::from_size_align(HELPER_STACK_SIZE, HELPER_STACK_ALIGN).expect("static layout")
    }

    /// Allocates a fresh stack block.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc(Self::layout()) };
        NonNull::new(p)
            .map(|base| HelperStack { base })
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))
    }

    /// The initial stack pointer (stacks grow down on every Linux target we build for).
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: `base + SIZE` is one past the end of the same allocation.
        unsafe { self.base.as_ptr().add(HELPER_STACK_SIZE).cast() }
    }
}

impl Drop for HelperStack {
    fn drop(&mut self) {
        // SAFETY: `base` came from `alloc::alloc` with the same layout. The
        // owner (`Helper`) only drops the stack once the helper is reaped, or
        // leaks it (`mem::forget`) when it cannot prove that.
        unsafe { alloc::dealloc(self.base.as_ptr(), Self::layout()) }
    }
}

/// The helper's whole life: arrange to die with its parent, then sleep until
/// SIGKILL. It runs on a [`HelperStack`] sharing the parent's address space
/// (`CLONE_VM`), so it must not allocate, lock, or touch thread-local state:
/// only raw syscalls via `libc::syscall` (which is not a cancellation point),
/// and every signal is blocked (inherited all-ones mask, set with the raw
/// `rt_sigprocmask`), so no handler ever runs here.
extern "C" fn helper_main(arg: *mut libc::c_void) -> libc::c_int {
    let parent = arg as usize as libc::c_long;
    // SAFETY: raw syscalls with integer arguments; none dereference memory.
    unsafe {
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG as libc::c_long,
            libc::SIGKILL as libc::c_long,
        );
        // The parent may have died before PDEATHSIG was armed.
        if libc::syscall(libc::SYS_getppid) != parent {
            libc::syscall(libc::SYS_exit, 0 as libc::c_long);
        }
        loop {
            // ppoll(NULL, 0, NULL, NULL): sleep forever; only SIGKILL ends it.
            libc::syscall(
                libc::SYS_ppoll,
                std::ptr::null::<libc::c_void>(),
                0 as libc::c_long,
                std::ptr::null::<libc::c_void>(),
                std::ptr::null::<libc::c_void>(),
                0 as libc::c_long,
            );
        }
    }
}

/// The kernel's `sigset_t` is 64 bits on every Linux target we build for
/// (`_NSIG` = 64); `rt_sigprocmask` insists on that exact size.
type KernelSigset = u64;

/// `rt_sigprocmask(how, set, old, 8)` as a raw syscall: glibc's
/// `sigprocmask`/`pthread_sigmask` silently drop SIGCANCEL (32) and SIGSETXID
/// (33) from any mask, which is how a set*id broadcast could run glibc's
/// handler on a `CLONE_VM` helper's stack with the spawning thread's TLS.
fn raw_sigprocmask(
    how: libc::c_int,
    set: Option<&KernelSigset>,
    old: Option<&mut KernelSigset>,
) -> io::Result<()> {
    let set = set.map_or(std::ptr::null(), |s| s as *const KernelSigset);
    let old = old.map_or(std::ptr::null_mut(), |o| o as *mut KernelSigset);
    // SAFETY: `set` and `old` are null or point to live 8-byte values for the
    // duration of the call, and 8 is the kernel sigset size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how as libc::c_long,
            set,
            old,
            std::mem::size_of::<KernelSigset>() as libc::c_long,
        )
    };
    cvt_unit(r)
}

/// Clones a sleeping helper process in a new user namespace.
///
/// The helper shares our address space (`CLONE_VM`: no page-table copy, so
/// the clone is cheap), runs on `stack`, has exit signal 0 (so generic
/// `waitpid(-1)` callers do not reap it; reap with `__WALL`) and is returned
/// as `(pid, pidfd)`. It starts with **every** signal blocked (an all-ones
/// mask set with the raw syscall; the kernel keeps only SIGKILL and SIGSTOP
/// deliverable), so no handler ever runs on its stack. The caller must keep
/// `stack` alive until the helper is reaped.
pub(crate) fn clone_userns_helper(stack: &HelperStack) -> io::Result<(libc::pid_t, OwnedFd)> {
    let flags = libc::CLONE_VM | libc::CLONE_NEWUSER | libc::CLONE_PIDFD;
    let parent = std::process::id() as usize;
    let mut pidfd: libc::c_int = -1;
    let all: KernelSigset = !0;
    let mut old: KernelSigset = 0;
    // Block every signal in this thread so the helper inherits a full mask;
    // ours is restored right after the clone.
    raw_sigprocmask(libc::SIG_SETMASK, Some(&all), Some(&mut old))?;
    // SAFETY: `clone` runs `helper_main` (which only makes raw syscalls) on
    // `stack`, which stays allocated until the helper is reaped (caller's
    // contract); the kernel writes the pidfd into `pidfd` (CLONE_PIDFD uses
    // parent_tid).
    let pid = unsafe {
        libc::clone(
            helper_main,
            stack.top(),
            flags,
            parent as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    let err = io::Error::last_os_error();
    // Restoring the mask read above cannot fail: SIG_SETMASK, a valid
    // pointer and the kernel's sigset size leave no EINVAL or EFAULT. (An
    // error here must not drop a live helper whose stack the caller frees.)
    let _ = raw_sigprocmask(libc::SIG_SETMASK, Some(&old), None);
    if pid < 0 {
        return Err(err);
    }
    // SAFETY: on success the kernel stored a fresh pidfd that nothing else owns.
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// `waitid(P_PIDFD, pidfd, WEXITED | __WALL)`: reaps an exited child of any
/// exit signal, retrying on EINTR. (rustix's safe `waitid`; `__WALL` is not
/// one of its named flags and is passed as a raw bit.)
pub(crate) fn reap_pidfd(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::process::{waitid, WaitId, WaitIdOptions};
    let options = WaitIdOptions::EXITED | WaitIdOptions::from_bits_retain(libc::__WALL as u32);
    loop {
        match waitid(WaitId::PidFd(pidfd), options) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// An ioctl that takes no argument and returns a new fd (or an integer).
fn ioctl_none(fd: BorrowedFd<'_>, request: libc::Ioctl) -> io::Result<libc::c_int> {
    // SAFETY: the requests used here (PIDFD_GET_USER_NAMESPACE, NS_GET_NSTYPE)
    // take no argument and only return an integer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `ioctl(pidfd, PIDFD_GET_USER_NAMESPACE)` (Linux ≥ 6.11): an O_CLOEXEC fd
/// for the user namespace of the process behind `pidfd`.
pub(crate) fn pidfd_get_user_namespace(pidfd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let fd = ioctl_none(pidfd, libc::PIDFD_GET_USER_NAMESPACE)?;
    // SAFETY: the ioctl returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ioctl(fd, NS_GET_NSTYPE)`: the `CLONE_NEW*` type of a namespace fd.
pub(crate) fn ns_get_nstype(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    ioctl_none(fd, libc::NS_GET_NSTYPE)
}

fn cvt_unit(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | extra, {attr_set: MOUNT_ATTR_IDMAP,
/// userns_fd})`: makes the detached mount `fd` id-mapped. Hand-written:
/// rustix 1.1 has `open_tree`, `move_mount` and `fsmount` but no
/// `mount_setattr`.
pub(crate) fn mount_setattr_idmap(
    fd: BorrowedFd<'_>,
    userns: BorrowedFd<'_>,
    recursive: bool,
) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the path is a static empty C string, `attr` is a valid
    // mount_attr that outlives the call and its exact size is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd() as libc::c_long,
            c"".as_ptr(),
            flags as libc::c_long,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    cvt_unit(r)
}

/// `unshare(CLONE_FS)` for the calling thread: gives it its own root/cwd so a
/// later `setns(CLONE_NEWNS)` affects only this thread.
pub(crate) fn unshare_fs() -> io::Result<()> {
    // SAFETY: CLONE_FS only detaches root/cwd/umask from sibling threads; it
    // does not touch the fd table, so no fd ownership is invalidated.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
        .map_err(io::Error::from)
}

/// Puts the calling thread in `SCHED_IDLE`: it runs only when a CPU would
/// otherwise idle, so waking it never preempts the thread that woke it.
pub(crate) fn set_current_thread_sched_idle() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the duration of the call;
    // pid 0 names the calling thread.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `pidfd_send_signal(pidfd, 0)`: whether the process behind `pidfd` still
/// exists (running or not yet reaped). A live or zombie process keeps its pid,
/// so a `/proc/PID` opened before a successful check is that process's.
pub(crate) fn pidfd_alive(pidfd: BorrowedFd<'_>) -> bool {
    // SAFETY: signal 0 with a null siginfo only checks existence/permission.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd() as libc::c_long,
            0 as libc::c_long,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_long,
        )
    };
    r == 0
}

/// The pid of the process behind `pidfd`, from the `Pid:` line of its
/// `/proc/thread-self/fdinfo` entry (the kernel's own record; `-1` once the
/// process has exited or been reaped, or `0` outside its pid namespace).
pub(crate) fn pidfd_pid(pidfd: BorrowedFd<'_>) -> io::Result<libc::pid_t> {
    let text = std::fs::read_to_string(format!("/proc/thread-self/fdinfo/{}", pidfd.as_raw_fd()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "no Pid: line in the pidfd's fdinfo",
            )
        })
}
