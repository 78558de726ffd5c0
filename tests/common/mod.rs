//! Shared helpers for the transport and session tests: a peer process (the
//! test binary re-executed by `support::peer`, running the ignored
//! `peer_entry` test) and raw senders that break the protocol on purpose.
//! Fd counting, the serialising lock and bounded waits come from
//! `tests/support`, re-exported here.
#![allow(dead_code, unused_imports)]

#[path = "../support/mod.rs"]
pub mod support;

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use procsync::schema::{MountSourceKind, SyncMessage};
use procsync::transport::{SyncSocket, TransportError, ENV_SYNC_FD};
use procsync::wire::{native, Limits};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
pub use support::fds::{enable_socket_option, inheritable_fds, open_fds};
pub use support::peer::ROLE_VAR;
pub use support::{fd_count, serial};

/// A command that re-runs this test binary as a peer playing `role`.
pub fn peer_command(role: &str) -> Command {
    let mut cmd = support::peer::entry_command("peer_entry", role);
    cmd.stdout(Stdio::null());
    cmd
}

/// Spawns a peer playing `role` with the child end of a fresh pair; returns
/// the child and the parent end (the child end is closed in this process).
pub fn spawn_peer(role: &str) -> (Child, SyncSocket) {
    let (parent, child_end) = SyncSocket::pair().unwrap();
    let mut cmd = peer_command(role);
    child_end.pass_to_child(&mut cmd).unwrap();
    let child = cmd.spawn().unwrap();
    drop(child_end);
    (child, parent)
}

/// Waits for `child` (at most 20 s, then kills it) and says whether it exited 0.
pub fn reap(child: Child) -> bool {
    support::proc::reap(child, Duration::from_secs(20))
}

/// Sends `bytes` with `fds` as one raw record, bypassing every check.
pub fn raw_send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(64))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(anc.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let n =
        rustix::net::sendmsg(sock, &[IoSlice::new(bytes)], &mut anc, SendFlags::NOSIGNAL).unwrap();
    assert_eq!(n, bytes.len());
}

/// `msg` encoded by the native codec as if `with_fd` said whether an fd rides along.
pub fn encoded(msg: &SyncMessage, with_fd: bool) -> Vec<u8> {
    let mut b = BytesMut::new();
    native::encode(msg, with_fd, &mut b, &Limits::default()).unwrap();
    b.to_vec()
}

/// The entry point of a re-executed peer (see `peer_entry` in the test file).
pub fn peer_main() {
    support::peer::run(|role| match role {
        "from-env" => {
            // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
            let r = unsafe { SyncSocket::from_env() };
            let var = std::env::var_os(ENV_SYNC_FD).is_some();
            match r {
                Ok(s) => {
                    let cloexec = rustix::io::fcntl_getfd(&s)
                        .unwrap()
                        .contains(rustix::io::FdFlags::CLOEXEC);
                    println!("RESULT ok cloexec={cloexec} var={var}");
                }
                Err(e) => println!("RESULT {e:?} var={var}"),
            }
            0
        }
        "from-env-dup" => {
            let n: i32 = std::env::var(ENV_SYNC_FD)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1);
            let r = SyncSocket::from_env_dup();
            let var = std::env::var_os(ENV_SYNC_FD).is_some();
            // The named fd is left alone whatever happened.
            let orig_open = open_fds().contains(&n);
            match r {
                Ok(s) => println!(
                    "RESULT ok dup={} var={var} orig_open={orig_open}",
                    s.as_raw_fd() != n
                ),
                Err(e) => println!("RESULT {} var={var} orig_open={orig_open}", e.kind()),
            }
            0
        }
        "list-fds-plain" => {
            println!("FDS {:?}", open_fds());
            0
        }
        "hold" => {
            // A grandchild that inherited the socket and just keeps it open.
            // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
            let _s = unsafe { SyncSocket::from_env() }.unwrap();
            std::thread::sleep(Duration::from_secs(20));
            0
        }
        _ => {
            // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
            let sock = unsafe { SyncSocket::from_env() }.expect("peer: from_env");
            peer_role(role, sock)
        }
    });
}

fn peer_role(role: &str, mut sock: SyncSocket) -> i32 {
    let file = std::fs::File::open("/dev/null").unwrap();
    let f = file.as_fd();
    let mfd = SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/src");
    match role {
        "echo" => loop {
            match sock.recv() {
                Ok(r) => {
                    if let Some(fd) = &r.fd {
                        let flags = rustix::io::fcntl_getfd(fd).unwrap();
                        if !flags.contains(rustix::io::FdFlags::CLOEXEC) {
                            sock.send(&SyncMessage::error("fd not cloexec"), None)
                                .unwrap();
                            continue;
                        }
                    }
                    sock.send(&r.msg, r.fd.as_ref().map(|f| f.as_fd())).unwrap();
                }
                Err(TransportError::PeerClosed) => return 0,
                Err(e) => {
                    let _ = sock.send(&SyncMessage::error(format!("peer: {e}")), None);
                    return 1;
                }
            }
        },
        "list-fds" => {
            let var = std::env::var_os(ENV_SYNC_FD).is_some();
            let cloexec = rustix::io::fcntl_getfd(&sock)
                .unwrap()
                .contains(rustix::io::FdFlags::CLOEXEC);
            // /dev/null opened above is ours; leave it out.
            let fds: Vec<i32> = open_fds()
                .into_iter()
                .filter(|&n| n != file.as_raw_fd())
                .collect();
            let report = format!(
                "fds={fds:?} sock={} var={var} cloexec={cloexec}",
                sock.as_raw_fd()
            );
            sock.send_record(report.as_bytes(), None, None).unwrap();
            wait_closed(&mut sock)
        }
        "eintr" => {
            // A signal every 5 ms with a handler and no SA_RESTART: poll and
            // recvmsg keep failing with EINTR while we wait.
            interrupt_every_5ms();
            let start = std::time::Instant::now();
            let r = sock.recv_deadline(Some(start + Duration::from_millis(300)));
            let waited = start.elapsed();
            let first = match r {
                Err(TransportError::Timeout { .. }) if waited >= Duration::from_millis(300) => {
                    "timeout-ok".to_string()
                }
                other => format!("deadline: {other:?} after {waited:?}"),
            };
            sock.send_record(first.as_bytes(), None, None).unwrap();
            // Blocking recv (no deadline) across many signals.
            let second = match sock.recv() {
                Ok(r) if r.msg == SyncMessage::run() => "recv-ok".to_string(),
                other => format!("recv: {other:?}"),
            };
            sock.send_record(second.as_bytes(), None, None).unwrap();
            wait_closed(&mut sock)
        }
        "stall" => {
            let _ = sock.recv();
            std::thread::sleep(Duration::from_secs(30));
            0
        }
        "spawn-holder" => {
            let mut cmd = peer_command("hold");
            sock.pass_to_child(&mut cmd).unwrap();
            let mut gc = cmd.spawn().unwrap();
            sock.send_record(format!("{}", gc.id()).as_bytes(), None, None)
                .unwrap();
            // The test SIGKILLs us while we wait; the grandchild lives on.
            let _ = gc.wait();
            0
        }
        other => {
            let case = other.strip_prefix("raw:").expect("unknown role");
            let fd = sock.as_fd();
            match case {
                "hasfd-no-fd" => raw_send(fd, &encoded(&mfd, true), &[]),
                "fd-no-hasfd" => raw_send(fd, &encoded(&SyncMessage::ready(), false), &[f]),
                "two-fds" => raw_send(fd, &encoded(&mfd, true), &[f, f]),
                "three-fds" => {
                    raw_send(fd, &encoded(&mfd, true), &[f, f, f]);
                    raw_send(fd, &encoded(&mfd, true), &[f, f, f]);
                }
                "many-fds" => raw_send(fd, &encoded(&mfd, true), &[f; 32]),
                "big" => {
                    raw_send(fd, &vec![0x55; 100_000], &[f]);
                    raw_send(fd, &encoded(&SyncMessage::ready(), false), &[]);
                }
                "error-200" => {
                    raw_send(
                        fd,
                        &encoded(&SyncMessage::error("x".repeat(195)), false),
                        &[],
                    );
                    raw_send(fd, &encoded(&SyncMessage::ready(), false), &[]);
                }
                "zero" => {
                    raw_send(fd, &[], &[]);
                    raw_send(fd, &encoded(&SyncMessage::ready(), false), &[]);
                }
                "garbage-with-fd" => raw_send(fd, &[0x05, 0x08, 0x07], &[f]),
                _ => panic!("unknown raw case {case}"),
            }
            wait_closed(&mut sock)
        }
    }
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// Installs a no-op SIGALRM handler without `SA_RESTART` and sends
/// SIGALRM to the calling thread every 5 ms (from a helper thread, aimed at
/// this thread: the test harness runs us on a thread of its own), so its
/// blocking system calls keep failing with `EINTR`.
fn interrupt_every_5ms() {
    // SAFETY: a zeroed sigaction is valid; the handler is a no-op
    // `extern "C"` function (async-signal-safe); this runs in a peer
    // process that installs no other handler for SIGALRM.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as *const () as usize;
        sa.sa_flags = 0;
        assert_eq!(libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()), 0);
    }
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(5));
        // SAFETY: `me` is the thread that called us; it lives until the
        // process exits (the peer ends with process::exit).
        unsafe { libc::pthread_kill(me, libc::SIGALRM) };
    });
}

/// Keeps the socket open until the parent closes its end (at most 20 s).
fn wait_closed(sock: &mut SyncSocket) -> i32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match sock.recv_deadline(Some(deadline)) {
            Err(TransportError::PeerClosed) => return 0,
            Err(TransportError::Timeout { .. }) => return 2,
            _ => {}
        }
    }
}
