//! Every `unsafe` line of the transport: `sendmsg(2)`/`recvmsg(2)` with
//! `SCM_RIGHTS`, taking ownership of fds the kernel installed, the inherited
//! fd of the env-var hand-off, and the `pre_exec` hook that lets exactly one
//! fd survive into a child. Each function is small and says why it is sound.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `SCM_SECURITY` (control-message *type* 3, `include/linux/socket.h`): an
/// LSM label, delivered when the receiver set `SO_PASSSEC` and a security
/// module supplies one. Not exported by the `libc` crate (it is not in the
/// uapi headers either), so spelled out here; `tests/transport.rs` checks it
/// against the kernel with a real `SO_PASSSEC` socket where an LSM labels it.
pub(crate) const SCM_SECURITY: i32 = 0x03;
/// `SCM_PIDFD` (control-message *type* 4, `include/linux/socket.h`, Linux
/// 6.5): a pidfd of the sender that the kernel installs when the *receiver*
/// set `SO_PASSPIDFD` (the socket *option*, 76 — a different number). Not
/// exported by the `libc` crate, so spelled out here; the unit test
/// `scm_pidfd_is_what_the_kernel_sends` checks it with a real socket.
pub(crate) const SCM_PIDFD: i32 = 0x04;

/// The kernel's `struct cmsghdr` header size (`cmsg_len` is a `size_t`).
const CMSG_HDR: usize = size_of::<usize>() + 2 * size_of::<i32>();

/// `CMSG_ALIGN`: control messages are aligned to `size_t`.
pub(crate) const fn cmsg_align(len: usize) -> usize {
    (len + size_of::<usize>() - 1) & !(size_of::<usize>() - 1)
}

/// `CMSG_SPACE(len)`: the room one control message with `len` data bytes takes.
pub(crate) const fn cmsg_space(len: usize) -> usize {
    cmsg_align(CMSG_HDR) + cmsg_align(len)
}

/// `CMSG_LEN(len)`: the `cmsg_len` of a control message with `len` data bytes.
#[cfg(test)]
const fn cmsg_len(len: usize) -> usize {
    cmsg_align(CMSG_HDR) + len
}

/// Bytes of the largest receive control buffer (see [`ctrl_len`]).
const CTRL_MAX: usize = ctrl_len(super::MAX_RECV_FDS);

/// A control buffer, aligned so a `cmsghdr` fits at offset 0.
#[repr(C, align(8))]
pub(crate) struct CtrlBuf<const N: usize>([u8; N]);

/// The receive control buffer (zeroed: 160 bytes on 64-bit).
pub(crate) type RecvCtrl = CtrlBuf<CTRL_MAX>;

impl<const N: usize> CtrlBuf<N> {
    /// A zeroed buffer.
    pub(crate) const fn new() -> Self {
        CtrlBuf([0; N])
    }
}

/// Control-buffer bytes for a record that may carry `max_fds` fds: room for
/// [`super::SPARE_FDS`] more fds than allowed (so an excess is seen and
/// closed rather than silently dropped by the kernel), plus one
/// `SCM_CREDENTIALS` and one `SCM_PIDFD` message, which the kernel adds
/// when the receiver enabled `SO_PASSCRED`/`SO_PASSPIDFD` (credentials
/// before the fds, the pidfd after them on Linux 6.18; either way all three
/// share this buffer).
pub(crate) const fn ctrl_len(max_fds: usize) -> usize {
    cmsg_space((max_fds + super::SPARE_FDS) * size_of::<i32>())
        + cmsg_space(size_of::<libc::ucred>())
        + cmsg_space(size_of::<i32>())
}

/// What one `recvmsg(2)` returned.
pub(crate) struct RecvOutcome {
    /// The record's full length (`MSG_TRUNC` was passed in, so this may be
    /// larger than what fit in the buffer).
    pub len: usize,
    /// `msg_flags` on return (`MSG_TRUNC`, `MSG_CTRUNC`).
    pub flags: i32,
    /// Every fd the kernel installed, already owned.
    pub fds: Vec<OwnedFd>,
    /// The first control message that is neither fds nor a known,
    /// fd-free kind: `(cmsg_level, cmsg_type)`.
    pub unexpected: Option<(i32, i32)>,
}

/// One `recvmsg(2)` of at most `max` bytes appended to the (cleared) `buf`,
/// with a control buffer of `ctrl_bytes` bytes.
///
/// Hand-written rather than `rustix::net::recvmsg` with a
/// `RecvAncillaryBuffer` (checked in rustix 1.1.6, `net/send_recv/msg.rs`):
/// rustix's drain yields only `SCM_RIGHTS` and `SCM_CREDENTIALS` and skips
/// every other control message silently, so the pidfd of an `SCM_PIDFD`
/// message (`SO_PASSPIDFD`) would stay installed and unowned — a leak — and
/// an unknown control message could not be reported as
/// `unexpected-control`. (Its `SCM_RIGHTS` handling — owning every fd,
/// truncated payloads rounded down, closing undrained fds on drop — would
/// be fine.)
///
/// `flags` always gets `MSG_CMSG_CLOEXEC | MSG_TRUNC` added. On success
/// `buf.len()` is the number of bytes stored (at most `max`) and every fd
/// the kernel installed is in the returned `fds`, even when `MSG_CTRUNC`
/// is set, so dropping the outcome closes them all. The returned `fds` is
/// the Vec passed in as `fds` (taken, so a caller can reuse its
/// allocation: the receive path keeps one per socket).
pub(crate) fn recvmsg(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    max: usize,
    ctrl: &mut RecvCtrl,
    ctrl_bytes: usize,
    flags: i32,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<RecvOutcome> {
    buf.clear();
    buf.reserve_exact(max);
    let ctrl_bytes = ctrl_bytes.min(CTRL_MAX);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: max,
    };
    // SAFETY: an all-zero msghdr is a valid value (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.0.as_mut_ptr().cast();
    msg.msg_controllen = ctrl_bytes as _;
    // SAFETY: `iov` points at `max` bytes of `buf`'s spare capacity (reserved
    // above) and `msg_control` at `ctrl_bytes <= CTRL_MAX` bytes
    // of `ctrl`; both outlive the call, and the kernel writes only within them.
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            flags | libc::MSG_CMSG_CLOEXEC | libc::MSG_TRUNC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = n as usize;
    // SAFETY: the kernel wrote `min(len, max)` bytes at the start of the
    // spare capacity (with MSG_TRUNC `len` is the full record size, of which
    // only `max` bytes were copied); `max <= buf.capacity()`.
    unsafe { buf.set_len(len.min(max)) };
    let used = (msg.msg_controllen as usize).min(ctrl_bytes);
    // Anything left in `fds` belongs to no record: close it.
    fds.clear();
    let unexpected = take_control_into(&ctrl.0[..used], fds);
    Ok(RecvOutcome {
        len,
        flags: msg.msg_flags,
        fds: std::mem::take(fds),
        unexpected,
    })
}

/// Walks the control messages in `ctrl` with bounds checks at every step,
/// takes ownership of every fd in each `SCM_RIGHTS` message, closes the
/// pidfd of an `SCM_PIDFD` message, and notes the first control message it
/// does not know.
///
/// The only control messages the kernel delivers on an `AF_UNIX` socket are
/// `SCM_RIGHTS` (fds), `SCM_CREDENTIALS` (`SO_PASSCRED`), `SCM_SECURITY`
/// (`SO_PASSSEC`), `SCM_PIDFD` (`SO_PASSPIDFD`, an fd) and the timestamps
/// (`SO_TIMESTAMP*`, no fd). An unknown message is never assumed to be
/// fd-free: should a future kernel add another fd-carrying kind, its fds
/// stay installed and unreachable — which is why every known fd-carrying
/// kind is listed here and an unknown one is an error that ends the
/// conversation.
fn take_control_into(ctrl: &[u8], fds: &mut Vec<OwnedFd>) -> Option<(i32, i32)> {
    let mut unexpected = None;
    let mut off = 0;
    while off + CMSG_HDR <= ctrl.len() {
        let word = size_of::<usize>();
        let len = usize::from_ne_bytes(ctrl[off..off + word].try_into().unwrap_or_default());
        let level = i32::from_ne_bytes(
            ctrl[off + word..off + word + 4]
                .try_into()
                .unwrap_or_default(),
        );
        let kind = i32::from_ne_bytes(
            ctrl[off + word + 4..off + word + 8]
                .try_into()
                .unwrap_or_default(),
        );
        if len < CMSG_HDR || len > ctrl.len() - off {
            // Cannot happen with a kernel-written buffer; stop rather than
            // guess where the next header is.
            unexpected.get_or_insert((level, kind));
            break;
        }
        let data_start = (off + cmsg_align(CMSG_HDR)).min(off + len);
        let data = &ctrl[data_start..off + len];
        match (level, kind) {
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => own_fds(data, fds),
            (libc::SOL_SOCKET, SCM_PIDFD) => {
                // A pidfd is not a protocol fd: own it, then close it at once.
                let mut pidfd = Vec::new();
                own_fds(data, &mut pidfd);
            }
            (libc::SOL_SOCKET, libc::SCM_CREDENTIALS | SCM_SECURITY) => {}
            _ => {
                unexpected.get_or_insert((level, kind));
            }
        }
        off += cmsg_align(len);
    }
    unexpected
}

/// [`take_control_into`] into a new Vec.
#[cfg(test)]
fn take_control(ctrl: &[u8]) -> (Vec<OwnedFd>, Option<(i32, i32)>) {
    let mut fds = Vec::new();
    let unexpected = take_control_into(ctrl, &mut fds);
    (fds, unexpected)
}

/// Takes ownership of every fd number in the data of an fd-carrying control
/// message.
fn own_fds(data: &[u8], out: &mut Vec<OwnedFd>) {
    for chunk in data.chunks_exact(size_of::<i32>()) {
        let raw = i32::from_ne_bytes(chunk.try_into().unwrap_or([0xff; 4]));
        if raw >= 0 {
            // SAFETY: the kernel just installed `raw` in our fd table for
            // this message; nothing else refers to it and it is taken once.
            out.push(unsafe { OwnedFd::from_raw_fd(raw) });
        }
    }
}

/// One `sendmsg(2)` of `bytes` as a single record, with `fd` (if any) as a
/// single `SCM_RIGHTS` control message in the same record.
///
/// Sending uses `rustix::net::sendmsg`: its `SendAncillaryBuffer` builds
/// exactly the one `SCM_RIGHTS` message, borrows the fd and needs no
/// `unsafe` here. (Receiving does not: see [`recvmsg`].)
pub(crate) fn sendmsg(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
    flags: i32,
) -> io::Result<usize> {
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = rustix::net::SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        // The buffer is sized for exactly this message: it always fits.
        if !anc.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
        }
    }
    let mut f = rustix::net::SendFlags::empty();
    if flags & libc::MSG_NOSIGNAL != 0 {
        f |= rustix::net::SendFlags::NOSIGNAL;
    }
    if flags & libc::MSG_DONTWAIT != 0 {
        f |= rustix::net::SendFlags::DONTWAIT;
    }
    rustix::net::sendmsg(sock, &[io::IoSlice::new(bytes)], &mut anc, f).map_err(io::Error::from)
}

/// Takes ownership of fd number `raw`, inherited from the process that
/// started us (the env-var hand-off), after checking that it is open.
///
/// # Safety
///
/// If `raw` is open, nothing else in the process owns or uses it: the
/// returned `OwnedFd` is its only owner and closes it when dropped.
pub(crate) unsafe fn claim_inherited_fd(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the fd flags of `raw`; an unopened number
    // yields EBADF.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is open and, by the caller's contract, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A close-on-exec duplicate of fd number `raw` (`F_DUPFD_CLOEXEC`, at 3 or
/// above), taking nothing: `raw` itself is neither read, written, closed nor
/// changed, whoever owns it.
pub(crate) fn dup_inherited_fd(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC creates a new fd referring to the same open
    // file description and does not alter `raw` (an unopened number yields
    // EBADF); the new fd is ours alone.
    let n = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` was just created by this call and nothing else refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Arranges for fd `raw` (whose `fstat` is `dev`/`ino`) to survive `exec`
/// in the child `cmd` spawns: `FD_CLOEXEC` is cleared in the child only,
/// after `fork`, so the parent's copy stays close-on-exec and no other
/// child inherits it. The child refuses to start (`EBADF`) if `raw` no
/// longer names the same socket by then.
pub(crate) fn keep_fd_in_child(cmd: &mut Command, raw: RawFd, dev: u64, ino: u64) {
    let hook = move || -> io::Result<()> {
        // SAFETY: an all-zero `stat` is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes into `st`, which is valid and ours;
        // async-signal-safe.
        if unsafe { libc::fstat(raw, &mut st) } < 0 {
            return Err(io::Error::last_os_error());
        }
        if st.st_dev as u64 != dev || st.st_ino as u64 != ino {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        // SAFETY: F_SETFD on an fd of the (single-threaded) forked child;
        // async-signal-safe.
        if unsafe { libc::fcntl(raw, libc::F_SETFD, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec and only calls fstat and
    // fcntl, both async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(hook);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written `CMSG_*` arithmetic against libc's macros, and the
    /// control buffer size PROTOCOL.md §8 states.
    #[test]
    fn cmsg_arithmetic_matches_libc() {
        assert_eq!(CMSG_HDR, size_of::<libc::cmsghdr>());
        for n in 0..64u32 {
            // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
            let (space, len) = unsafe { (libc::CMSG_SPACE(n), libc::CMSG_LEN(n)) };
            assert_eq!(cmsg_space(n as usize), space as usize);
            assert_eq!(cmsg_len(n as usize), len as usize);
        }
        // SAFETY: as above.
        let want = unsafe {
            libc::CMSG_SPACE(5 * 4)
                + libc::CMSG_SPACE(size_of::<libc::ucred>() as u32)
                + libc::CMSG_SPACE(4)
        };
        assert_eq!(ctrl_len(crate::wire::MAX_FDS_PER_RECORD), want as usize);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(ctrl_len(crate::wire::MAX_FDS_PER_RECORD), 96);
    }

    #[test]
    fn control_walk_is_bounds_checked() {
        // A header claiming more bytes than the buffer holds is not followed.
        let mut b = vec![0u8; cmsg_space(4)];
        b[..size_of::<usize>()].copy_from_slice(&1000usize.to_ne_bytes());
        let (fds, unexpected) = take_control(&b);
        assert!(fds.is_empty());
        assert!(unexpected.is_some());
        // A short tail (less than a header) is ignored.
        let (fds, unexpected) = take_control(&b[..CMSG_HDR - 1]);
        assert!(fds.is_empty() && unexpected.is_none());
        // SCM_CREDENTIALS is skipped without being read as fds.
        let mut c = vec![0u8; cmsg_space(size_of::<libc::ucred>())];
        let w = size_of::<usize>();
        c[..w].copy_from_slice(&cmsg_len(size_of::<libc::ucred>()).to_ne_bytes());
        c[w..w + 4].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        c[w + 4..w + 8].copy_from_slice(&libc::SCM_CREDENTIALS.to_ne_bytes());
        let (fds, unexpected) = take_control(&c);
        assert!(fds.is_empty() && unexpected.is_none());
        // An unknown level is reported.
        c[w..w + 4].copy_from_slice(&libc::IPPROTO_IP.to_ne_bytes());
        let (_, unexpected) = take_control(&c);
        assert_eq!(unexpected, Some((libc::IPPROTO_IP, libc::SCM_CREDENTIALS)));
    }

    /// `SCM_PIDFD` and `SCM_SECURITY` are not in the `libc` crate: check the
    /// hand-written numbers against the kernel. With `SO_PASSPIDFD` on the
    /// receiver the kernel adds a control message of type [`SCM_PIDFD`]
    /// holding a pidfd; [`take_control`] closes it and reports nothing
    /// unexpected. ([`SCM_SECURITY`] needs a security module that labels
    /// sockets; `tests/transport.rs` runs `SO_PASSSEC` for real.)
    #[test]
    fn scm_pidfd_is_what_the_kernel_sends() {
        assert_eq!(SCM_SECURITY, 3);
        assert_ne!(SCM_PIDFD, libc::SO_PASSPIDFD);
        let (a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads an int from `one`, which outlives the call.
        let r = unsafe {
            libc::setsockopt(
                b.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSPIDFD,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            println!("SKIP: SO_PASSPIDFD needs Linux 6.5");
            return;
        }
        use std::os::fd::AsFd;
        assert_eq!(
            sendmsg(a.as_fd(), b"x", None, libc::MSG_NOSIGNAL).unwrap(),
            1
        );
        let mut buf: Vec<u8> = Vec::new();
        let mut ctrl = RecvCtrl::new();
        // Read the raw control data with our own recvmsg, then walk it.
        buf.reserve_exact(8);
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: 8,
        };
        // SAFETY: an all-zero msghdr is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctrl.0.as_mut_ptr().cast();
        msg.msg_controllen = CTRL_MAX as _;
        // SAFETY: iov and control point at live buffers of the given sizes.
        let n = unsafe { libc::recvmsg(b.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        assert_eq!(n, 1);
        let used = msg.msg_controllen as usize;
        let w = size_of::<usize>();
        let level = i32::from_ne_bytes(ctrl.0[w..w + 4].try_into().unwrap());
        let kind = i32::from_ne_bytes(ctrl.0[w + 4..w + 8].try_into().unwrap());
        assert_eq!((level, kind), (libc::SOL_SOCKET, SCM_PIDFD));
        let data = cmsg_align(CMSG_HDR);
        let pidfd = i32::from_ne_bytes(ctrl.0[data..data + 4].try_into().unwrap());
        let link = std::fs::read_link(format!("/proc/self/fd/{pidfd}")).unwrap();
        assert_eq!(link.to_str(), Some("anon_inode:[pidfd]"));
        let (fds, unexpected) = take_control(&ctrl.0[..used]);
        assert!(fds.is_empty() && unexpected.is_none());
        assert!(
            std::fs::read_link(format!("/proc/self/fd/{pidfd}")).is_err(),
            "the pidfd is closed"
        );
    }
}
