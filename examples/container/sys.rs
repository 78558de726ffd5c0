//! The example's raw kernel calls that neither procsync nor rustix wrap:
//! `clone3` into new namespaces, the seccomp notify filter, the hostname,
//! credentials, `mount_setattr` and a monotonic clock readable across
//! processes. All of the example's `unsafe` code is here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use procsync::libc;
use procsync::oci::oci_spec::runtime::LinuxNamespaceType;

/// The `CLONE_NEW*` flag of an OCI namespace type (`linux.namespaces[].type`);
/// `None` for the time namespace, which this example does not set up.
pub fn clone_flag(ns: LinuxNamespaceType) -> Option<u64> {
    let flag = match ns {
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Time => return None,
    };
    Some(flag as u64)
}

/// `MS_NOSYMFOLLOW` (not in procsync's `schema::ms`).
#[allow(clippy::unnecessary_cast)] // c_ulong: u32 on 32-bit targets
pub const MS_NOSYMFOLLOW: u64 = libc::MS_NOSYMFOLLOW as u64;

/// The init process `clone3` made.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid in the parent's PID namespace.
    pub pid: i32,
    /// Its pidfd (`CLONE_PIDFD`, close-on-exec).
    pub pidfd: OwnedFd,
}

/// Everything the cloned child needs, prepared before `clone3` so that the
/// child runs only async-signal-safe system calls (no allocation, no lock):
/// the parent may have threads, whose locks the child would inherit held.
pub struct ExecPlan {
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl ExecPlan {
    /// `argv` and `envp` for the `execveat` of the init.
    pub fn new(argv: Vec<CString>, envp: Vec<CString>) -> Self {
        ExecPlan { argv, envp }
    }
}

/// Starts the container's init with `clone3(flags | CLONE_PIDFD)`.
///
/// The child closes `go_write` (its copy of the parent's end), waits for one
/// byte on `go_read` — the parent sends it once the id maps are written —
/// becomes uid/gid 0 of the new user namespace, clears close-on-exec on `keep_fd` (the sync socket) and `execveat`s
/// `exe` with the prepared argv/envp. If anything fails the child exits
/// 126 (the parent gave up before the go byte) or 127 (exec failed).
pub fn spawn_init(
    flags: u64,
    exe: BorrowedFd<'_>,
    plan: &ExecPlan,
    go_read: BorrowedFd<'_>,
    go_write: BorrowedFd<'_>,
    keep_fd: RawFd,
) -> io::Result<Spawned> {
    let mut argv: Vec<*mut libc::c_char> =
        plan.argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv.push(std::ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> =
        plan.envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp.push(std::ptr::null_mut());
    let empty = c"";
    let mut pidfd: libc::c_int = -1;
    // SAFETY: clone_args is a plain C struct; all-zero is its documented
    // "no option" value for every field we do not set.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = flags | libc::CLONE_PIDFD as u64;
    args.pidfd = &mut pidfd as *mut libc::c_int as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: clone3 without CLONE_VM behaves like fork: the child gets a
    // copy of this address space, so every pointer below stays valid in it.
    // The child branch only makes raw system calls (close, read, fcntl,
    // execveat, _exit) on memory prepared above, which is
    // async-signal-safe even if other threads held locks at the clone.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    if ret == 0 {
        // The child. SAFETY (whole block): raw system calls on valid fds
        // and the NUL-terminated arrays built before the clone.
        unsafe {
            libc::close(go_write.as_raw_fd());
            let mut byte = 0u8;
            loop {
                let n = libc::read(go_read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
                if n == 1 {
                    break;
                }
                if n < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                libc::_exit(126);
            }
            // Become the namespace's root (the maps are written now), so
            // the exec keeps the full capability set in the new user
            // namespace: exec recomputes capabilities from the euid.
            if libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
                || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0
                || libc::fcntl(keep_fd, libc::F_SETFD, 0) != 0
            {
                libc::_exit(127);
            }
            libc::execveat(
                exe.as_raw_fd(),
                empty.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            libc::_exit(127);
        }
    }
    // SAFETY: with CLONE_PIDFD the kernel stored a new fd owned by nobody
    // else in `pidfd` (clone3 sets O_CLOEXEC on it).
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Spawned {
        pid: ret as i32,
        pidfd,
    })
}

/// Marks every fd from 3 up close-on-exec (`close_range(3, ~0,
/// CLOSE_RANGE_CLOEXEC)`, Linux 5.11), so nothing this process inherited
/// or opened reaches the container's process — runc does the same before
/// its exec (an fd leaking into the container was CVE-2024-21626).
pub fn cloexec_from_3() -> io::Result<()> {
    // SAFETY: only sets FD_CLOEXEC; no fd is closed or reused, so every
    // owned fd in this process stays valid.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the
/// machine, so the parent's and the init's timestamps can be compared.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `sethostname(2)` (in the container's new UTS namespace).
pub fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes.
    let r = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Becomes `uid`/`gid` with `groups` as supplementary groups (ids as the
/// container's user namespace sees them). The init is single-threaded, so
/// the raw per-thread system calls change the whole process.
pub fn set_ids(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `groups`.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], {attr_set,
/// attr_clr, propagation})`: sets and clears `MOUNT_ATTR_*` bits and sets
/// the propagation (`MS_PRIVATE`, `MS_SLAVE`, `MS_SHARED`, `MS_UNBINDABLE`
/// or 0) of the mount `fd` is the root of.
pub fn mount_setattr(
    fd: BorrowedFd<'_>,
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    recursive: bool,
) -> io::Result<()> {
    let mut attr: libc::mount_attr = libc::mount_attr {
        attr_set,
        attr_clr,
        propagation,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: valid fd, NUL-terminated empty path, a mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &mut attr as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The audit architecture of this build (`AUDIT_ARCH_*` from
/// `<linux/audit.h>`: the ELF machine, `__AUDIT_ARCH_64BIT` 0x8000_0000 and
/// `__AUDIT_ARCH_LE` 0x4000_0000).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = libc::EM_X86_64 as u32 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = libc::EM_AARCH64 as u32 | 0x8000_0000 | 0x4000_0000;

/// Installs a seccomp filter that sends `mknodat(2)` to a user-space agent
/// (`SECCOMP_RET_USER_NOTIF`) and allows everything else; returns the
/// listener fd (`SECCOMP_FILTER_FLAG_NEW_LISTENER`, close-on-exec).
/// Needs CAP_SYS_ADMIN in the caller's user namespace or no_new_privs.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn seccomp_notify_mknodat() -> io::Result<OwnedFd> {
    use std::mem::offset_of;
    let arch_off = offset_of!(libc::seccomp_data, arch) as u32;
    let nr_off = offset_of!(libc::seccomp_data, nr) as u32;
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let stmt = |code, k| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code, k, jt, jf| libc::sock_filter { code, jt, jf, k };
    let prog = [
        // A foreign architecture: let it through untouched (a real
        // runtime would kill; this filter only watches one call).
        stmt(ld, arch_off),
        jump(jeq, AUDIT_ARCH, 0, 3),
        stmt(ld, nr_off),
        jump(jeq, libc::SYS_mknodat as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_USER_NOTIF),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new listener fd (close-on-exec) we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Seccomp user notification is wired for x86_64 and aarch64 only.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn seccomp_notify_mknodat() -> io::Result<OwnedFd> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}
