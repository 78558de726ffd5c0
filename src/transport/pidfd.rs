//! Process fds (`pidfd_open(2)`, `pidfd_getfd(2)`): what sessions need to
//! watch the peer process and to copy an fd out of it, kept here so the
//! kernel interface stays in `transport`.
//!
//! A pidfd registered with [`SyncSocket::set_peer_pidfd`](super::SyncSocket::set_peer_pidfd)
//! ends every wait on the socket when the peer exits (runc issue #5087).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

/// Opens a pidfd for the child process `child` (`pidfd_open(2)`, Linux 5.3;
/// close-on-exec). Valid while `child` has not been reaped.
pub fn open(child: &std::process::Child) -> io::Result<OwnedFd> {
    rustix::process::pidfd_open(
        rustix::process::Pid::from_child(child),
        rustix::process::PidfdFlags::empty(),
    )
    .map_err(io::Error::from)
}

/// Opens a pidfd for process `pid` (`pidfd_open(2)`; close-on-exec). The
/// usual pid-reuse caveat applies: prefer [`open`] for a child, or open it
/// while the process is known to be alive (e.g. the parent's pid before it
/// can exit, as the child checks with `getppid`).
pub fn open_pid(pid: u32) -> io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).map_err(io::Error::from)
}

/// Copies fd number `fd` of the process behind `pidfd` into this process
/// (`pidfd_getfd(2)`, Linux 5.6; the copy is close-on-exec). Needs ptrace
/// access to that process (`PTRACE_MODE_ATTACH_REALCREDS`): a parent may
/// copy from its own child unless a security module forbids it.
pub fn get_fd(pidfd: BorrowedFd<'_>, fd: RawFd) -> io::Result<OwnedFd> {
    rustix::process::pidfd_getfd(pidfd, fd, rustix::process::PidfdGetfdFlags::empty())
        .map_err(io::Error::from)
}

/// Whether the process behind `pidfd` has exited, without waiting (the
/// pidfd is readable once it has).
pub fn exited(pidfd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut pfd = [rustix::event::PollFd::from_borrowed_fd(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match rustix::event::poll(&mut pfd, Some(&zero)) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
