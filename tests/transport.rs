//! The seqpacket transport against real processes and real sockets: round
//! trips of every message kind with and without an fd, every malformed
//! record a peer can send (each with its exact error and no fd leaked),
//! peer death (with and without a pidfd), deadlines, and the env-var hand-off.
//!
//! Every test holds `common::serial()`: fd counts and fd listings of
//! spawned children must not see other tests' fds.

mod common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use procsync::schema::{
    IdMap, IdMapping, MessageType, Mount, MountSourceKind, SyncMessage, FLAG_HAS_FD,
};
use procsync::transport::{
    deadline_after, pidfd, Origin, SyncSocket, TransportError, TransportErrorKind, ENV_SYNC_FD,
};
use procsync::wire::ErrorKind;
use procsync::wire::{native, DecodeError, EncodeError, Limits, ValidationError};
use rustix::io::FdFlags;

/// Not a test: the entry point of the peer processes the tests spawn (this
/// binary re-executed with `PROCSYNC_TEST_ROLE` set).
#[test]
#[ignore = "entry point of the peer processes the other tests spawn"]
fn peer_entry() {
    peer_main();
}

fn soon(ms: u64) -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(ms))
}

fn is_cloexec(fd: impl AsFd) -> bool {
    rustix::io::fcntl_getfd(fd)
        .unwrap()
        .contains(FdFlags::CLOEXEC)
}

fn same_file(a: impl AsFd, b: impl AsFd) -> bool {
    let (a, b) = (rustix::fs::fstat(a).unwrap(), rustix::fs::fstat(b).unwrap());
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

#[test]
fn every_kind_round_trips_across_processes() {
    let _g = serial();
    let (child, mut parent) = spawn_peer("echo");
    let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
    let mount = Mount::bind("/var/lib/data", "/data")
        .recursive()
        .with_id_mapping(IdMapping::ranges(
            vec![IdMap::new(0, 100000, 65536)],
            vec![IdMap::new(0, 100000, 65536)],
        ));
    let cases: Vec<(SyncMessage, bool)> = vec![
        (SyncMessage::error("mount failed: EPERM"), false),
        (SyncMessage::ready(), false),
        (SyncMessage::run(), false),
        (SyncMessage::hooks(), false),
        (SyncMessage::hooks_done(), false),
        (SyncMessage::mount_please(mount), false),
        (
            SyncMessage::mount_fd(MountSourceKind::OpenTree, "/var/lib/data"),
            true,
        ),
        (
            SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/var/lib/data"),
            true,
        ),
        (SyncMessage::seccomp_attached(), true),
        (SyncMessage::seccomp_child_fd(7), false),
        (SyncMessage::seccomp_done(), false),
    ];
    let mut kinds = std::collections::BTreeSet::new();
    for (msg, with_fd) in cases {
        let before = fd_count();
        parent.send(&msg, with_fd.then(|| file.as_fd())).unwrap();
        let got = parent
            .recv_deadline(soon(10_000))
            .unwrap_or_else(|e| panic!("{}: {e}", msg.kind().unwrap()));
        let mut want = msg.clone();
        want.flags = if with_fd { FLAG_HAS_FD } else { 0 };
        assert_eq!(got.msg, want, "echo of {}", msg.kind().unwrap());
        assert_eq!(got.fd.is_some(), with_fd);
        if let Some(fd) = &got.fd {
            assert!(same_file(fd, &file), "the fd names the same file");
            assert!(is_cloexec(fd), "received fd is close-on-exec");
            assert_ne!(fd.as_raw_fd(), file.as_raw_fd());
        }
        drop(got);
        assert_eq!(fd_count(), before);
        kinds.insert(msg.r#type);
    }
    assert_eq!(kinds.len(), MessageType::ALL.len(), "every kind covered");
    drop(parent);
    assert!(reap(child), "echo peer exits cleanly on end-of-file");
}

#[test]
fn has_fd_is_set_by_the_codec_iff_an_fd_is_attached() {
    let _g = serial();
    let (mut a, mut b) = SyncSocket::pair().unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let mut buf = Vec::new();

    // A caller-set HasFd without an fd is not announced on the wire.
    let mut ready = SyncMessage::ready();
    ready.flags = FLAG_HAS_FD;
    a.send(&ready, None).unwrap();
    let rec = b.recv_record(&mut buf, 1, soon(1000)).unwrap();
    assert!(rec.fds.is_empty());
    assert_eq!(
        native::decode(&buf, 0, &Limits::default()).unwrap().flags,
        0
    );

    // With an fd, HasFd is on the wire and the fd rides in the same record.
    a.send(&SyncMessage::seccomp_attached(), Some(file.as_fd()))
        .unwrap();
    let rec = b.recv_record(&mut buf, 1, soon(1000)).unwrap();
    assert_eq!(rec.fds.len(), 1);
    assert_eq!(rec.len, buf.len());
    assert_eq!(
        native::decode(&buf, 1, &Limits::default()).unwrap().flags,
        FLAG_HAS_FD
    );

    // Types that need (or forbid) an fd are refused locally, nothing sent.
    let before = fd_count();
    let e = a
        .send(
            &SyncMessage::mount_fd(MountSourceKind::OpenTree, "/a"),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            TransportError::Encode(EncodeError::Invalid(ValidationError::MissingFd {
                ty: MessageType::MountFd
            }))
        ),
        "{e:?}"
    );
    assert_eq!(e.origin(), Origin::Local);
    let e = a.send(&SyncMessage::run(), Some(file.as_fd())).unwrap_err();
    assert!(
        matches!(
            e,
            TransportError::Encode(EncodeError::Invalid(ValidationError::UnexpectedFd {
                ty: MessageType::Run,
                ..
            }))
        ),
        "{e:?}"
    );
    assert!(matches!(
        b.recv_deadline(soon(50)),
        Err(TransportError::Timeout { .. })
    ));
    assert_eq!(fd_count(), before);
}

#[test]
fn oversize_and_empty_records_are_refused_before_any_syscall() {
    let _g = serial();
    let (mut a, mut b) = SyncSocket::pair().unwrap();
    let e = a
        .send(&SyncMessage::error("x".repeat(70_000)), None)
        .unwrap_err();
    assert!(
        matches!(
            e,
            TransportError::Encode(EncodeError::TooLarge {
                ty: MessageType::Error,
                max: 65536,
                ..
            })
        ),
        "{e:?}"
    );
    assert_eq!(e.origin(), Origin::Local);
    let e = a.send_record(&[1u8; 70_000], None, None).unwrap_err();
    assert!(
        matches!(
            e,
            TransportError::RecordTooLarge {
                size: 70_000,
                max: 65536
            }
        ),
        "{e:?}"
    );
    let e = a.send_record(&[], None, None).unwrap_err();
    assert!(matches!(e, TransportError::EmptyRecord), "{e:?}");
    // A tighter limit applies to sending too.
    let mut a = a.with_limits(Limits::with_max_record(64));
    assert_eq!(a.limits().max_record(), 64);
    let e = a
        .send(&SyncMessage::error("y".repeat(100)), None)
        .unwrap_err();
    assert!(
        matches!(
            e,
            TransportError::Encode(EncodeError::TooLarge { max: 64, .. })
        ),
        "{e:?}"
    );
    // Nothing reached the peer.
    assert!(matches!(
        b.recv_deadline(soon(50)),
        Err(TransportError::Timeout { .. })
    ));
}

/// Spawns the raw peer `case`, receives with `recv` and checks the error
/// and that no fd stayed open.
fn malformed(
    case: &str,
    limits: Limits,
    check: impl Fn(&TransportError) -> bool,
) -> (std::process::Child, SyncSocket) {
    let (child, parent) = spawn_peer(&format!("raw:{case}"));
    let mut parent = parent.with_limits(limits);
    let before = fd_count();
    let e = parent.recv_deadline(soon(10_000)).unwrap_err();
    assert!(check(&e), "{case}: unexpected error {e:?}");
    assert_eq!(fd_count(), before, "{case}: fds leaked");
    (child, parent)
}

fn finish(child: std::process::Child, parent: SyncSocket) {
    drop(parent);
    assert!(reap(child), "raw peer exits cleanly");
}

#[test]
fn has_fd_without_an_fd_is_a_peer_error() {
    let _g = serial();
    let (c, p) = malformed("hasfd-no-fd", Limits::default(), |e| {
        matches!(
            e,
            TransportError::Decode(DecodeError::Invalid(ValidationError::MissingFd {
                ty: MessageType::MountFd
            }))
        ) && e.origin() == Origin::Peer
    });
    finish(c, p);
}

#[test]
fn an_fd_without_has_fd_is_a_peer_error_and_is_closed() {
    let _g = serial();
    let (c, p) = malformed("fd-no-hasfd", Limits::default(), |e| {
        matches!(
            e,
            TransportError::Decode(DecodeError::Invalid(ValidationError::UnexpectedFd {
                ty: MessageType::Ready,
                flags: 0
            }))
        )
    });
    finish(c, p);
}

#[test]
fn two_fds_in_one_record_are_rejected_and_closed() {
    let _g = serial();
    let (c, p) = malformed("two-fds", Limits::default(), |e| {
        matches!(
            e,
            TransportError::Decode(DecodeError::Invalid(ValidationError::TooManyFds {
                ty: MessageType::MountFd,
                count: 2
            }))
        )
    });
    finish(c, p);
}

#[test]
fn three_fds_into_a_one_fd_buffer_are_counted_and_closed() {
    let _g = serial();
    // Through recv(): the codec names the type and the real count.
    let (c, mut p) = malformed("three-fds", Limits::default(), |e| {
        matches!(
            e,
            TransportError::Decode(DecodeError::Invalid(ValidationError::TooManyFds {
                count: 3,
                ..
            }))
        )
    });
    // Through the raw layer with max_fds = 1.
    let before = fd_count();
    let mut buf = Vec::new();
    let e = p.recv_record(&mut buf, 1, soon(10_000)).unwrap_err();
    assert!(
        matches!(e, TransportError::TooManyFds { count: 3, max: 1 }),
        "{e:?}"
    );
    assert!(buf.is_empty());
    assert_eq!(fd_count(), before);
    finish(c, p);
}

#[test]
fn fds_beyond_the_control_buffer_are_control_truncated_and_closed() {
    let _g = serial();
    let (c, p) = malformed("many-fds", Limits::default(), |e| {
        matches!(e, TransportError::ControlTruncated) && e.origin() == Origin::Peer
    });
    finish(c, p);
}

#[test]
fn an_oversize_record_is_drained_and_its_fd_closed() {
    let _g = serial();
    let (c, mut p) = malformed("big", Limits::default(), |e| {
        matches!(
            e,
            TransportError::Truncated {
                size: 100_000,
                max: 65536
            }
        )
    });
    // It was consumed: the next record is intact.
    let next = p.recv_deadline(soon(10_000)).unwrap();
    assert_eq!(next.msg, SyncMessage::ready());
    finish(c, p);
}

#[test]
fn a_record_larger_than_the_receive_buffer_is_truncated() {
    let _g = serial();
    let size = native::encoded_len(&SyncMessage::error("x".repeat(195)), false);
    let (c, mut p) = malformed(
        "error-200",
        Limits::with_max_record(64),
        |e| matches!(e, TransportError::Truncated { size: s, max: 64 } if *s == size),
    );
    assert_eq!(
        p.recv_deadline(soon(10_000)).unwrap().msg,
        SyncMessage::ready()
    );
    finish(c, p);
}

#[test]
fn a_zero_length_record_reads_as_peer_closed() {
    let _g = serial();
    let (mut c, mut p) = malformed("zero", Limits::default(), |e| {
        matches!(e, TransportError::PeerClosed)
    });
    // The socket is still open: the empty record alone read as EOF, and
    // the record after it arrives.
    assert_eq!(
        p.recv_deadline(soon(10_000)).unwrap().msg,
        SyncMessage::ready()
    );
    assert!(c.try_wait().unwrap().is_none());
    finish(c, p);
}

#[test]
fn garbage_with_an_fd_is_a_decode_error_and_the_fd_is_closed() {
    let _g = serial();
    let (c, p) = malformed("garbage-with-fd", Limits::default(), |e| {
        matches!(
            e,
            TransportError::Decode(DecodeError::LengthMismatch {
                declared: 5,
                actual: 2
            })
        )
    });
    finish(c, p);
}

#[test]
fn credentials_control_messages_are_skipped() {
    let _g = serial();
    let (mut a, mut b) = SyncSocket::pair().unwrap();
    rustix::net::sockopt::set_socket_passcred(&b, true).unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let before = fd_count();
    a.send(
        &SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/dev/null"),
        Some(file.as_fd()),
    )
    .unwrap();
    let got = b.recv_deadline(soon(1000)).unwrap();
    assert!(same_file(got.fd.as_ref().unwrap(), &file));
    a.send(&SyncMessage::ready(), None).unwrap();
    assert_eq!(
        b.recv_deadline(soon(1000)).unwrap().msg,
        SyncMessage::ready()
    );
    drop(got);
    assert_eq!(fd_count(), before);
}

#[test]
fn from_fd_refuses_anything_but_a_unix_seqpacket_socket() {
    let _g = serial();
    let before = fd_count();
    let (s1, _s2) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let e = SyncSocket::from_fd(s1).unwrap_err();
    assert!(
        matches!(&e, TransportError::NotSeqpacket { found, .. } if found == "SOCK_STREAM"),
        "{e:?}"
    );
    assert_eq!(e.origin(), Origin::Local);
    let (d1, _d2) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let e = SyncSocket::from_fd(d1).unwrap_err();
    assert!(
        matches!(&e, TransportError::NotSeqpacket { found, .. } if found == "SOCK_DGRAM"),
        "{e:?}"
    );
    let (r, _w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let e = SyncSocket::from_fd(r).unwrap_err();
    assert!(
        matches!(&e, TransportError::NotSeqpacket { found, .. } if found == "not a socket"),
        "{e:?}"
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let e = SyncSocket::from_fd(OwnedFd::from(udp)).unwrap_err();
    assert!(
        matches!(&e, TransportError::NotSeqpacket { found, .. } if found.starts_with("address family")),
        "{e:?}"
    );
    drop((_s2, _d2, _w));
    assert_eq!(fd_count(), before, "refused fds are closed");

    // A real seqpacket socket is accepted and made close-on-exec.
    let (x, _y) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::empty(),
        None,
    )
    .unwrap();
    let s = SyncSocket::from_fd(x).unwrap();
    assert!(is_cloexec(&s));
}

#[test]
fn a_sigkilled_peer_ends_the_wait_instead_of_hanging() {
    let _g = serial();
    let (mut child, mut parent) = spawn_peer("stall");
    parent
        .send(&SyncMessage::mount_please(Mount::bind("/a", "/b")), None)
        .unwrap();
    let start = Instant::now();
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    // SIGKILL the peer while this thread waits in recv (no pidfd registered).
    let k = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL).unwrap();
    });
    let e = parent.recv_deadline(soon(20_000)).unwrap_err();
    k.join().unwrap();
    assert!(matches!(e, TransportError::PeerClosed), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(15));
    let _ = child.wait();
}

#[test]
fn the_deadline_is_honoured() {
    let _g = serial();
    let (child, mut parent) = spawn_peer("stall");
    let start = Instant::now();
    let e = parent.recv_deadline(soon(150)).unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(e, TransportError::Timeout { waited } if waited >= Duration::from_millis(150)),
        "{e:?}"
    );
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(e.origin(), Origin::Peer);
    // A deadline already past still takes a record that is there.
    let (mut a, mut b) = SyncSocket::pair().unwrap();
    a.send(&SyncMessage::hooks(), None).unwrap();
    assert_eq!(
        b.recv_deadline(Some(Instant::now())).unwrap().msg,
        SyncMessage::hooks()
    );
    assert!(matches!(
        b.recv_deadline(Some(Instant::now())),
        Err(TransportError::Timeout { .. })
    ));
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn signals_during_a_wait_neither_end_it_early_nor_break_it() {
    let _g = serial();
    let (child, mut parent) = spawn_peer("eintr");
    let mut buf = Vec::new();
    parent.recv_record(&mut buf, 0, soon(10_000)).unwrap();
    assert_eq!(std::str::from_utf8(&buf).unwrap(), "timeout-ok");
    std::thread::sleep(Duration::from_millis(100));
    parent.send(&SyncMessage::run(), None).unwrap();
    parent.recv_record(&mut buf, 0, soon(10_000)).unwrap();
    assert_eq!(std::str::from_utf8(&buf).unwrap(), "recv-ok");
    drop(parent);
    assert!(reap(child));
}

#[test]
fn peer_death_via_pidfd_while_a_grandchild_holds_the_socket() {
    let _g = serial();
    let (mut child, mut parent) = spawn_peer("spawn-holder");
    let child_pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    let mut buf = Vec::new();
    parent.recv_record(&mut buf, 0, soon(10_000)).unwrap();
    let gc: i32 = std::str::from_utf8(&buf).unwrap().parse().unwrap();
    let gc_pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(gc).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();

    child.kill().unwrap();
    child.wait().unwrap();
    // Without a pidfd the grandchild's copy keeps the socket open: no EOF.
    let e = parent.recv_deadline(soon(200)).unwrap_err();
    assert!(matches!(e, TransportError::Timeout { .. }), "{e:?}");
    // With it, the wait ends at once with PeerDied (no deadline given).
    parent.set_peer_pidfd(child_pidfd);
    let start = Instant::now();
    let e = parent.recv().unwrap_err();
    assert!(matches!(e, TransportError::PeerDied), "{e:?}");
    assert_eq!(e.origin(), Origin::Peer);
    assert!(start.elapsed() < Duration::from_secs(5));

    // A send that would block on the full socket (nobody reads it any
    // more) ends the same way instead of hanging.
    let big = SyncMessage::error("z".repeat(8000));
    let mut sent = 0;
    let e = loop {
        match parent.send(&big, None) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100_000, "socket never filled");
    };
    assert!(
        matches!(e, TransportError::PeerDied),
        "{e:?} after {sent} sends"
    );

    rustix::process::pidfd_send_signal(&gc_pidfd, rustix::process::Signal::KILL).unwrap();
}

#[test]
fn pass_to_child_hands_over_exactly_one_fd() {
    let _g = serial();
    // Some unrelated open fds in the parent, all close-on-exec as std makes them.
    let _f1 = std::fs::File::open("/dev/null").unwrap();
    let _p = SyncSocket::pair().unwrap();
    let (mut parent, child_end) = SyncSocket::pair().unwrap();
    let mut cmd = peer_command("list-fds");
    child_end.pass_to_child(&mut cmd).unwrap();
    let child = cmd.spawn().unwrap();
    assert!(
        is_cloexec(&child_end),
        "the parent's copy stays close-on-exec"
    );
    let n = child_end.as_raw_fd();
    drop(child_end);

    // What every child inherits anyway: stdio plus whatever this test
    // process was itself started with without close-on-exec.
    let mut base: Vec<i32> = inheritable_fds().into_iter().filter(|&f| f > 2).collect();
    base.extend([0, 1, 2]);
    base.sort_unstable();

    // Another child spawned meanwhile inherits nothing more.
    let plain = peer_command("list-fds-plain")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let out = String::from_utf8(plain.stdout).unwrap();
    assert!(out.contains(&format!("FDS {base:?}\n")), "{out}");

    let mut buf = Vec::new();
    parent.recv_record(&mut buf, 0, soon(10_000)).unwrap();
    let report = String::from_utf8(buf).unwrap();
    let mut want = base.clone();
    want.push(n);
    want.sort_unstable();
    assert_eq!(
        report,
        format!("fds={want:?} sock={n} var=false cloexec=true")
    );
    drop(parent);
    assert!(reap(child));
}

fn from_env_with(value: Option<&str>, extra: Option<&OwnedFd>) -> String {
    let mut cmd = peer_command("from-env");
    if let Some(v) = value {
        cmd.env(ENV_SYNC_FD, v);
    }
    if let Some(fd) = extra {
        // Make it inheritable just for this spawn (tests are serialized).
        rustix::io::fcntl_setfd(fd, FdFlags::empty()).unwrap();
    }
    let out = cmd.stdout(Stdio::piped()).output().unwrap();
    if let Some(fd) = extra {
        rustix::io::fcntl_setfd(fd, FdFlags::CLOEXEC).unwrap();
    }
    let s = String::from_utf8(out.stdout).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no result in {s:?}"))
        .to_string()
}

#[test]
fn from_env_validates_and_removes_the_variable() {
    let _g = serial();
    let r = from_env_with(None, None);
    assert!(r.contains("reason: \"not set\""), "{r}");
    for (v, reason) in [
        ("", "not a decimal fd number"),
        ("abc", "not a decimal fd number"),
        ("+5", "not a decimal fd number"),
        (" 5", "not a decimal fd number"),
        ("-1", "not a decimal fd number"),
        ("99999999999", "fd number out of range"),
        ("2", "fd 0, 1 and 2 are stdio"),
        ("0", "fd 0, 1 and 2 are stdio"),
        ("1", "fd 0, 1 and 2 are stdio"),
        ("00", "leading zero"),
        ("007", "leading zero"),
        ("0100", "leading zero"),
        ("1000", "not an open fd"),
    ] {
        let r = from_env_with(Some(v), None);
        assert!(
            r.starts_with("Env {") && r.contains(reason) && r.ends_with("var=false"),
            "{v:?}: {r}"
        );
    }
    let (pr, _pw) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let r = from_env_with(Some(&pr.as_raw_fd().to_string()), Some(&pr));
    assert!(
        r.starts_with("NotSeqpacket {") && r.contains("not a socket"),
        "{r}"
    );
    let (s1, _s2) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let r = from_env_with(Some(&s1.as_raw_fd().to_string()), Some(&s1));
    assert!(r.contains("SOCK_STREAM"), "{r}");
    let (q1, _q2) = SyncSocket::pair().unwrap();
    let q1 = OwnedFd::from(q1);
    let r = from_env_with(Some(&q1.as_raw_fd().to_string()), Some(&q1));
    assert_eq!(r, "ok cloexec=true var=false");
}

#[test]
fn shutdown_write_ends_the_protocol_but_not_the_other_direction() {
    let _g = serial();
    let (mut parent, mut child) = SyncSocket::pair().unwrap();
    parent.send(&SyncMessage::run(), None).unwrap();
    parent.shutdown_write().unwrap();
    assert_eq!(
        child.recv_deadline(soon(1000)).unwrap().msg,
        SyncMessage::run()
    );
    assert!(matches!(
        child.recv_deadline(soon(1000)),
        Err(TransportError::PeerClosed)
    ));
    let e = parent.send(&SyncMessage::run(), None).unwrap_err();
    assert!(matches!(e, TransportError::WriteShutdown) && e.origin() == Origin::Local);
    child.send(&SyncMessage::error("late"), None).unwrap();
    assert_eq!(
        parent
            .recv_deadline(soon(1000))
            .unwrap()
            .msg
            .error_message(),
        Some("late")
    );
    drop(child);
    let e = parent.recv_deadline(soon(1000)).unwrap_err();
    assert!(matches!(e, TransportError::PeerClosed));
}

#[test]
fn a_non_blocking_fd_still_blocks_in_recv() {
    let _g = serial();
    let (mut a, b) = SyncSocket::pair().unwrap();
    let b = OwnedFd::from(b);
    rustix::io::ioctl_fionbio(&b, true).unwrap();
    let mut b = SyncSocket::from_fd(b).unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        a.send(&SyncMessage::ready(), None).unwrap();
        a
    });
    assert_eq!(b.recv().unwrap().msg, SyncMessage::ready());
    let a = t.join().unwrap();
    drop(a);
    assert!(matches!(b.recv(), Err(TransportError::PeerClosed)));
}

#[test]
fn send_to_a_closed_peer_is_peer_closed_not_sigpipe() {
    let _g = serial();
    let (mut a, b) = SyncSocket::pair().unwrap();
    drop(b);
    let e = a.send(&SyncMessage::ready(), None).unwrap_err();
    assert!(matches!(e, TransportError::PeerClosed), "{e:?}");
}

/// A raw record with `fds` attached, sent by hand (tests/common's raw_send).
fn raw(sock: &SyncSocket, bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) {
    raw_send(sock.as_fd(), bytes, fds);
}

/// Regression (issue 12.1): `SCM_PIDFD` was spelled with `SO_PASSPIDFD`'s
/// option number, so with `SO_PASSPIDFD` on the receiver every record
/// failed as unexpected-control and the pidfd leaked, zero-length records
/// included.
#[test]
fn so_passpidfd_on_the_receiver_closes_the_pidfd_and_accepts_records() {
    let _g = serial();
    let (mut a, mut b) = SyncSocket::pair().unwrap();
    if let Err(e) = enable_socket_option(&b, libc::SO_PASSPIDFD) {
        println!("SKIP: SO_PASSPIDFD needs Linux 6.5: {e}");
        return;
    }
    let file = std::fs::File::open("/dev/null").unwrap();
    let before = fd_count();
    for _ in 0..3 {
        a.send(
            &SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/dev/null"),
            Some(file.as_fd()),
        )
        .unwrap();
        let got = b.recv_deadline(soon(1000)).unwrap();
        assert!(same_file(got.fd.as_ref().unwrap(), &file));
        drop(got);
        a.send(&SyncMessage::ready(), None).unwrap();
        assert_eq!(
            b.recv_deadline(soon(1000)).unwrap().msg,
            SyncMessage::ready()
        );
        assert_eq!(fd_count(), before, "the pidfds are closed");
    }
    // Raw records too, and a zero-length one: end-of-file, pidfd closed,
    // the socket still usable.
    let mut buf = Vec::new();
    raw(&a, b"x", &[]);
    b.recv_record(&mut buf, 0, soon(1000)).unwrap();
    raw(&a, &[], &[]);
    let e = b.recv_deadline(soon(1000)).unwrap_err();
    assert!(matches!(e, TransportError::PeerClosed), "{e:?}");
    assert_eq!(fd_count(), before, "the empty record's pidfd is closed");
    // An invalid record's pidfd is closed with its fds.
    raw(&a, &[0x05, 0x08, 0x07], &[file.as_fd()]);
    let e = b.recv_deadline(soon(1000)).unwrap_err();
    assert_eq!(
        e.kind(),
        TransportErrorKind::Wire(ErrorKind::LengthMismatch)
    );
    assert_eq!(fd_count(), before);
}

/// Regression (issue 12.1): `SCM_SECURITY` was spelled `0x1d`, which is
/// `SCM_TIMESTAMP`, so with `SO_TIMESTAMP` on the receiver a timestamp
/// control message was accepted. The protocol knows no timestamp: it is
/// `unexpected-control` (origin os), and the record's fds are closed.
#[test]
fn so_timestamp_on_the_receiver_is_unexpected_control_and_fds_are_closed() {
    let _g = serial();
    let (mut a, mut b) = SyncSocket::pair().unwrap();
    enable_socket_option(&b, libc::SO_TIMESTAMP).unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let before = fd_count();
    a.send(
        &SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/dev/null"),
        Some(file.as_fd()),
    )
    .unwrap();
    let e = b.recv_deadline(soon(1000)).unwrap_err();
    assert!(
        matches!(e, TransportError::UnexpectedControl { level, kind }
            if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMP),
        "{e:?}"
    );
    assert_eq!(e.kind(), TransportErrorKind::UnexpectedControl);
    assert_eq!(e.kind().as_str(), "unexpected-control");
    assert_eq!(e.origin(), Origin::Os);
    assert_eq!(fd_count(), before, "the fd that came with it is closed");
}

/// `SO_PASSSEC`: the kernel adds `SCM_SECURITY` (type 3, no fd) only when a
/// security module labels the peer; either way records are accepted.
#[test]
fn so_passsec_on_the_receiver_accepts_records() {
    let _g = serial();
    let (mut a, mut b) = SyncSocket::pair().unwrap();
    enable_socket_option(&b, libc::SO_PASSSEC).unwrap();
    enable_socket_option(&b, libc::SO_PASSCRED).unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let before = fd_count();
    a.send(
        &SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/dev/null"),
        Some(file.as_fd()),
    )
    .unwrap();
    let got = b.recv_deadline(soon(1000)).unwrap();
    assert!(same_file(got.fd.as_ref().unwrap(), &file));
    drop(got);
    assert_eq!(fd_count(), before);
}

/// Regression (issue 12.14): a zero-length record that carries fds is the
/// peer's violation, `empty-record` (§3 rule 1 comes first), not
/// end-of-file and not `too-many-fds`; every fd is closed, and the socket
/// stays usable.
#[test]
fn a_zero_length_record_with_fds_is_empty_record_and_all_fds_are_closed() {
    let _g = serial();
    let (a, mut b) = SyncSocket::pair().unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let before = fd_count();
    for n in [1usize, 3, 20, 60] {
        let fds = vec![file.as_fd(); n];
        raw(&a, &[], &fds);
        let e = b.recv_deadline(soon(1000)).unwrap_err();
        assert!(
            matches!(e, TransportError::Decode(DecodeError::Empty)),
            "{n} fds: {e:?}"
        );
        assert_eq!(e.kind().as_str(), "empty-record");
        assert_eq!(e.origin(), Origin::Peer);
        assert_eq!(fd_count(), before, "{n} fds: all closed");
    }
    raw(&a, &encoded(&SyncMessage::ready(), false), &[]);
    assert_eq!(
        b.recv_deadline(soon(1000)).unwrap().msg,
        SyncMessage::ready()
    );
}

/// Regression (issue 12.5): `send_record` had no deadline and blocked for
/// ever on a full socket.
#[test]
fn send_record_is_bounded_by_its_deadline() {
    let _g = serial();
    let (mut a, _b) = SyncSocket::pair().unwrap();
    let rec = vec![7u8; 8000];
    let mut sent = 0;
    let start = Instant::now();
    let e = loop {
        match a.send_record(&rec, None, soon(200)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100_000, "socket never filled");
    };
    assert!(matches!(e, TransportError::SendTimeout { .. }), "{e:?}");
    assert_eq!(e.kind().as_str(), "send-timeout");
    assert!(start.elapsed() < Duration::from_secs(10));
}

/// Regression (issue 12.4, transport part): a deadline past the end of
/// time is no deadline, never a panic.
#[test]
fn huge_deadlines_saturate() {
    let _g = serial();
    assert_eq!(deadline_after(Duration::MAX), None);
    assert!(deadline_after(Duration::from_secs(5)).is_some());
    let (mut a, mut b) = SyncSocket::pair().unwrap();
    a.send_deadline(&SyncMessage::ready(), None, deadline_after(Duration::MAX))
        .unwrap();
    assert_eq!(
        b.recv_deadline(deadline_after(Duration::MAX)).unwrap().msg,
        SyncMessage::ready()
    );
}

/// The single-attempt primitives: `try_recv` is `None` on an empty
/// socket; `try_send` on a full one is `WouldBlock` with nothing sent, and
/// every record that did go arrives whole.
#[test]
fn try_send_and_try_recv_never_wait_and_never_half_send() {
    let _g = serial();
    let (mut a, mut b) = SyncSocket::pair().unwrap();
    assert!(b.try_recv().unwrap().is_none());
    let mut buf = Vec::new();
    assert!(b.try_recv_record(&mut buf, 0).unwrap().is_none());
    let file = std::fs::File::open("/dev/null").unwrap();
    let before = fd_count();
    let msg = SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/x".repeat(1000));
    let mut sent = 0usize;
    let e = loop {
        match a.try_send(&msg, Some(file.as_fd())) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100_000, "socket never filled");
    };
    assert!(matches!(e, TransportError::WouldBlock), "{e:?}");
    assert_eq!(e.kind().as_str(), "would-block");
    assert!(!a.has_pending_send());
    let e = a.try_send_record(b"x", None).unwrap_err();
    assert!(matches!(e, TransportError::WouldBlock), "{e:?}");
    let mut got = 0usize;
    while let Some(r) = b.try_recv().unwrap() {
        assert_eq!(
            r.msg.mount_fd_info().unwrap().source,
            msg.mount_fd_info().unwrap().source
        );
        assert!(r.fd.is_some());
        got += 1;
    }
    assert_eq!(
        got, sent,
        "every record that was sent arrived, nothing else"
    );
    assert_eq!(fd_count(), before);
    // Room again: a single attempt goes through.
    a.try_send(&SyncMessage::ready(), None).unwrap();
    assert_eq!(b.try_recv().unwrap().unwrap().msg, SyncMessage::ready());
}

#[test]
fn peer_hung_up_sees_close_and_shutdown_without_reading() {
    let _g = serial();
    let (mut a, b) = SyncSocket::pair().unwrap();
    assert!(!b.peer_hung_up().unwrap());
    a.send(&SyncMessage::ready(), None).unwrap();
    a.shutdown_write().unwrap();
    assert!(b.peer_hung_up().unwrap());
    let mut b = b;
    // The record sent before is still there.
    assert_eq!(
        b.recv_deadline(soon(1000)).unwrap().msg,
        SyncMessage::ready()
    );
    let (c, d) = SyncSocket::pair().unwrap();
    drop(c);
    assert!(d.peer_hung_up().unwrap());
}

#[test]
fn pidfd_helpers_open_watch_and_copy() {
    let _g = serial();
    let mut child = peer_command("hold").stdout(Stdio::null()).spawn().unwrap();
    let pfd = pidfd::open(&child).unwrap();
    assert!(!pidfd::exited(pfd.as_fd()).unwrap());
    // Copy the child's stdin (fd 0) into this process.
    let copy = pidfd::get_fd(pfd.as_fd(), 0).unwrap();
    assert!(is_cloexec(&copy));
    let by_pid = pidfd::open_pid(child.id()).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(pidfd::exited(pfd.as_fd()).unwrap());
    assert!(pidfd::exited(by_pid.as_fd()).unwrap());
    let (mut s, _t) = SyncSocket::pair().unwrap();
    assert!(s.peer_pidfd().is_none());
    s.set_peer_pidfd(pfd);
    assert!(s.peer_pidfd().is_some());
    let e = s.recv().unwrap_err();
    assert!(matches!(e, TransportError::PeerDied), "{e:?}");
    assert_eq!(e.kind().as_str(), "peer-died");
}

/// Regression (issue 12.6): an `O_PATH` fd is `not-seqpacket`, not `io`.
#[test]
fn an_o_path_fd_is_not_seqpacket() {
    let _g = serial();
    let before = fd_count();
    let fd = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let e = SyncSocket::from_fd(fd).unwrap_err();
    assert!(
        matches!(&e, TransportError::NotSeqpacket { found, .. } if found.contains("O_PATH")),
        "{e:?}"
    );
    assert_eq!(e.kind().as_str(), "not-seqpacket");
    assert_eq!(fd_count(), before);
}

fn from_env_dup_with(value: &str, extra: &OwnedFd) -> String {
    let mut cmd = peer_command("from-env-dup");
    cmd.env(ENV_SYNC_FD, value);
    rustix::io::fcntl_setfd(extra, FdFlags::empty()).unwrap();
    let out = cmd.stdout(Stdio::piped()).output().unwrap();
    rustix::io::fcntl_setfd(extra, FdFlags::CLOEXEC).unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no result in {s:?}"))
        .to_string()
}

/// Regression (issue 12.6): the safe variant never closes the fd it is
/// pointed at, and leaves the environment alone.
#[test]
fn from_env_dup_never_closes_the_named_fd() {
    let _g = serial();
    let (pr, _pw) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let r = from_env_dup_with(&pr.as_raw_fd().to_string(), &pr);
    assert_eq!(r, "not-seqpacket var=true orig_open=true");
    let (q1, _q2) = SyncSocket::pair().unwrap();
    let q1 = OwnedFd::from(q1);
    let r = from_env_dup_with(&q1.as_raw_fd().to_string(), &q1);
    assert_eq!(r, "ok dup=true var=true orig_open=true");
    let r = from_env_dup_with("0", &q1);
    assert_eq!(r, "env-invalid var=true orig_open=true");
}

#[test]
fn error_kinds_have_stable_names() {
    use TransportErrorKind as K;
    for (k, name) in [
        (K::PeerClosed, "peer-closed"),
        (K::PeerDied, "peer-died"),
        (K::Timeout, "timeout"),
        (K::SendTimeout, "send-timeout"),
        (K::WouldBlock, "would-block"),
        (K::UnexpectedControl, "unexpected-control"),
        (K::NotSeqpacket, "not-seqpacket"),
        (K::EnvNotSet, "env-not-set"),
        (K::EnvInvalid, "env-invalid"),
        (K::WriteShutdown, "write-shutdown"),
        (K::StdioFd, "stdio-fd"),
        (K::Io, "io"),
        (K::Wire(ErrorKind::TooManyFds), "too-many-fds"),
    ] {
        assert_eq!(k.as_str(), name);
        assert_eq!(k.to_string(), name);
    }
    let e = TransportError::Truncated { size: 9, max: 8 };
    assert_eq!((e.kind().as_str(), e.origin()), ("too-large", Origin::Peer));
    let e = TransportError::ControlTruncated;
    assert_eq!(
        (e.kind().as_str(), e.origin()),
        ("too-many-fds", Origin::Peer)
    );
    let e = TransportError::RecordTooLarge { size: 9, max: 8 };
    assert_eq!(
        (e.kind().as_str(), e.origin()),
        ("too-large", Origin::Local)
    );
    let e = TransportError::EmptyRecord;
    assert_eq!(
        (e.kind().as_str(), e.origin()),
        ("empty-record", Origin::Local)
    );
    // Display does not repeat the source's text.
    let e = TransportError::Io {
        op: "recvmsg",
        source: std::io::Error::from_raw_os_error(libc::EBADF),
    };
    assert_eq!(e.to_string(), "recvmsg failed");
    assert!(std::error::Error::source(&e).is_some());
}

/// Regression (issue 12.3): on the runc wire a send into a full socket is
/// bounded by its deadline like on the native wire (it used to block on a
/// lock another sender held, ignoring the deadline).
#[cfg(feature = "runc-compat")]
#[test]
fn runc_wire_sends_are_bounded_and_receives_resume() {
    use procsync::transport::Wire;
    use procsync::wire::runc::MountShape;
    let _g = serial();
    let (a, b) = SyncSocket::pair().unwrap();
    let mut a = a.with_wire(Wire::Runc(MountShape::V1_2));
    let mut b = b.with_wire(Wire::Runc(MountShape::V1_2));
    let big = SyncMessage::error("z".repeat(8000));
    let start = Instant::now();
    let mut sent = 0;
    let e = loop {
        match a.send_deadline(&big, None, soon(200)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100_000, "socket never filled");
    };
    assert!(matches!(e, TransportError::SendTimeout { .. }), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    let mut got = 0;
    while let Some(r) = b.try_recv().unwrap() {
        assert_eq!(r.msg, big);
        got += 1;
    }
    assert_eq!(got, sent);

    // A receive that has the JSON record of a HasFd message but not yet its
    // fd record keeps the first and resumes (single attempt and deadline).
    let file = std::fs::File::open("/dev/null").unwrap();
    let before = fd_count();
    b.send(
        &SyncMessage::mount_please(Mount::bind("/dev/null", "/x")),
        None,
    )
    .unwrap();
    assert!(a.recv_deadline(soon(1000)).unwrap().msg.mount().is_some());
    let header = br#"{"type":"procMountFd","flags":1,"arg":{"type":"open_tree"}}"#;
    a.send_record(header, None, soon(1000)).unwrap();
    assert!(b.try_recv().unwrap().is_none());
    let e = b.recv_deadline(soon(30)).unwrap_err();
    assert!(matches!(e, TransportError::Timeout { .. }), "{e:?}");
    a.send_record(b"/dev/null", Some(file.as_fd()), soon(1000))
        .unwrap();
    let r = b
        .try_recv()
        .unwrap()
        .expect("the fd record completes the message");
    assert_eq!(r.msg.mount_fd_info().unwrap().source, "/dev/null");
    assert!(same_file(r.fd.as_ref().unwrap(), &file));
    drop(r);
    assert_eq!(fd_count(), before);
}

/// `try_send` on the runc wire: when the JSON record fits but the fd
/// record does not, the message is committed and the fd record (with a
/// duplicate of the fd) waits for `try_flush`; nothing is lost or sent
/// twice, and the receiver gets the whole message.
#[cfg(feature = "runc-compat")]
#[test]
fn runc_wire_try_send_keeps_the_fd_record_pending() {
    use procsync::transport::Wire;
    use procsync::wire::runc::MountShape;
    let _g = serial();
    let (a, b) = SyncSocket::pair().unwrap();
    let mut a = a.with_wire(Wire::Runc(MountShape::V1_2));
    let mut b = b.with_wire(Wire::Runc(MountShape::V1_2));
    let file = std::fs::File::open("/dev/null").unwrap();
    let before = fd_count();
    // The child asked for /dev/null: the reply's fd record must carry it.
    b.send(
        &SyncMessage::mount_please(Mount::bind("/dev/null", "/x")),
        None,
    )
    .unwrap();
    a.recv_deadline(soon(1000)).unwrap();
    // Fill a's send side with tiny raw records, then make room for one.
    let mut filler = 0usize;
    while a.try_send_record(b"{}", None).is_ok() {
        filler += 1;
        assert!(filler < 1_000_000, "socket never filled");
    }
    let mut buf = Vec::new();
    let mut drain_one = |b: &mut SyncSocket| {
        let r = b.try_recv_record(&mut buf, 0).unwrap();
        assert!(r.is_some());
    };
    drain_one(&mut b);
    filler -= 1;
    let reply = SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/dev/null");
    let dup = file.try_clone().unwrap();
    a.try_send(&reply, Some(dup.as_fd())).unwrap();
    // Closing the caller's fd does not matter: a duplicate waits.
    drop(dup);
    // The kernel admits a send while the sender's queued bytes are below
    // its buffer: room for the JSON record, none left for the fd record.
    assert!(a.has_pending_send());
    // The fd record still has no room: flushing waits for the reader.
    assert!(matches!(a.try_flush(), Err(TransportError::WouldBlock)));
    // Anything else sent now would overtake it: it goes first, so nothing
    // else is started either.
    assert!(matches!(
        a.try_send(&SyncMessage::run(), None),
        Err(TransportError::WouldBlock)
    ));
    for _ in 0..filler {
        drain_one(&mut b);
    }
    a.try_flush().unwrap();
    assert!(!a.has_pending_send());
    let r = b.recv_deadline(soon(1000)).unwrap();
    assert_eq!(r.msg.mount_fd_info().unwrap().source, "/dev/null");
    assert!(same_file(r.fd.as_ref().unwrap(), &file));
    drop(r);
    assert!(b.try_recv().unwrap().is_none(), "nothing sent twice");
    assert_eq!(fd_count(), before);
}
