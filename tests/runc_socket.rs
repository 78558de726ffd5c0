//! The runc wire on a real [`SyncSocket`] ([`Wire::Runc`]) within one
//! process, no Go needed: the records on the socket are runc's, a mount fd
//! round trip, refusals that send nothing, half messages, the expected-source
//! check, and native versus runc ends. (Split from `tests/runc_interop.rs`,
//! which runs the same wire against the Go peer across processes.)
#![cfg(feature = "runc-compat")]

mod support;

use std::fs::File;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use procsync::schema::{MessageType, Mount, MountSourceKind, SyncMessage};
use procsync::transport::{Origin, SyncSocket, TransportError, Wire};
use procsync::wire::runc::{MountShape, RuncDecodeError, RuncErrorKind};
use procsync::wire::{ErrorKind, ValidationError};

const SHAPES: [MountShape; 2] = [MountShape::V1_2, MountShape::V1_4];
const WAIT: Duration = Duration::from_secs(10);

use support::{fd_count, serial};

fn deadline() -> Option<Instant> {
    Some(Instant::now() + WAIT)
}

fn assert_same_file(fd: impl AsFd, path: &str) {
    let got = rustix::fs::fstat(fd).unwrap();
    let want = rustix::fs::stat(path).unwrap();
    assert_eq!(
        (got.st_dev, got.st_ino),
        (want.st_dev, want.st_ino),
        "the fd is not {path}"
    );
}

fn runc_pair(shape: MountShape) -> (SyncSocket, SyncSocket) {
    let (a, b) = SyncSocket::pair().unwrap();
    (
        a.with_wire(Wire::Runc(shape)),
        b.with_wire(Wire::Runc(shape)),
    )
}

#[test]
fn records_on_the_socket_are_runcs() {
    let _g = serial();
    let (mut child, parent) = runc_pair(MountShape::V1_4);
    let raw = SyncSocket::pair().unwrap();
    drop(raw);
    child
        .send(
            &SyncMessage::mount_please(Mount::bind("/srv", "/data")),
            None,
        )
        .unwrap();
    // Read it raw off the other end: one JSON record, runc 1.4's layout.
    let mut buf = Vec::new();
    let mut parent_raw = parent;
    let rec = parent_raw.recv_record(&mut buf, 0, deadline()).unwrap();
    assert!(rec.fds.is_empty());
    assert_eq!(
        std::str::from_utf8(&buf).unwrap(),
        r#"{"type":"procMountPlease","flags":0,"arg":{"source":"/srv","destination":"/data","device":"bind","flags":4096}}"#
    );
    // The reply: a JSON record, then the name record with the fd.
    let file = File::open("/").unwrap();
    parent_raw
        .send(
            &SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/srv"),
            Some(file.as_fd()),
        )
        .unwrap();
    let rec = child.recv_record(&mut buf, 1, deadline()).unwrap();
    assert!(rec.fds.is_empty());
    assert_eq!(
        buf,
        br#"{"type":"procMountFd","flags":1,"arg":{"type":"plain-open"}}"#
    );
    let rec = child.recv_record(&mut buf, 1, deadline()).unwrap();
    assert_eq!(buf, b"/srv");
    assert_eq!(rec.fds.len(), 1);
    assert_same_file(&rec.fds[0], "/");
}

#[test]
fn a_mount_fd_round_trip_in_process() {
    let _g = serial();
    for shape in SHAPES {
        let before = fd_count();
        let (mut child, mut parent) = runc_pair(shape);
        let req = SyncMessage::mount_please(Mount::bind("/tmp", "/data").recursive());
        child.send(&req, None).unwrap();
        let got = parent.recv().unwrap();
        assert_eq!(got.msg.mount(), req.mount());
        let dir = File::open("/tmp").unwrap();
        parent
            .send(
                &SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/tmp"),
                Some(dir.as_fd()),
            )
            .unwrap();
        let got = child.recv().unwrap();
        assert_eq!(got.msg.mount_fd_info().unwrap().source, "/tmp");
        assert_same_file(got.fd.as_ref().unwrap(), "/tmp");
        drop((got, dir, child, parent));
        assert_eq!(fd_count(), before);
    }
}

#[test]
fn send_refusals_are_local_and_send_nothing() {
    let _g = serial();
    let (mut a, mut b) = runc_pair(MountShape::V1_2);
    let file = File::open("/dev/null").unwrap();
    // runc sends a seccomp fd number, never the fd.
    let err = a
        .send(&SyncMessage::seccomp_attached(), Some(file.as_fd()))
        .unwrap_err();
    assert_eq!(err.origin(), Origin::Local);
    let TransportError::RuncEncode(e) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(e.kind(), RuncErrorKind::Unrepresentable);
    // MountFd without its fd.
    let err = a
        .send(
            &SyncMessage::mount_fd(MountSourceKind::OpenTree, "/x"),
            None,
        )
        .unwrap_err();
    assert!(matches!(err, TransportError::RuncEncode(_)), "{err:?}");
    assert_eq!(err.origin(), Origin::Local);
    // Ready with an fd.
    let err = a
        .send(&SyncMessage::ready(), Some(file.as_fd()))
        .unwrap_err();
    assert!(matches!(err, TransportError::RuncEncode(_)), "{err:?}");
    // A source whose name record would exceed the record limit.
    let mut small = SyncSocket::pair()
        .unwrap()
        .0
        .with_limits(procsync::wire::Limits::with_max_record(64))
        .with_wire(Wire::Runc(MountShape::V1_2));
    let long = format!("/{}", "s".repeat(100));
    let err = small
        .send(
            &SyncMessage::mount_fd(MountSourceKind::PlainOpen, long.as_str()),
            Some(file.as_fd()),
        )
        .unwrap_err();
    assert!(
        matches!(err, TransportError::RecordTooLarge { .. }),
        "{err:?}"
    );
    // Nothing reached the peer.
    let err = b
        .recv_deadline(Some(Instant::now() + Duration::from_millis(20)))
        .unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err:?}");
}

#[test]
fn half_messages_end_typed() {
    let _g = serial();
    let header = br#"{"type":"procMountFd","flags":1,"arg":{"type":"open_tree"}}"#;
    // The fd record does not come in time: Timeout.
    let (mut a, mut b) = runc_pair(MountShape::V1_2);
    a.send_record(header, None, None).unwrap();
    let err = b
        .recv_deadline(Some(Instant::now() + Duration::from_millis(50)))
        .unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err:?}");
    // The peer closes instead: missing-fd, not an orderly close.
    let (mut a, mut b) = runc_pair(MountShape::V1_2);
    a.send_record(header, None, None).unwrap();
    drop(a);
    let err = b.recv().unwrap_err();
    assert_eq!(err.origin(), Origin::Peer);
    match err {
        TransportError::RuncDecode(e) => {
            assert_eq!(e.kind(), RuncErrorKind::Wire(ErrorKind::MissingFd))
        }
        other => panic!("{other:?}"),
    }
    // After it, end-of-file reads as end-of-file.
    assert!(matches!(b.recv(), Err(TransportError::PeerClosed)));
    // A name record with a NUL, and one that is empty-after-HasFd on a
    // type without fds.
    let (mut a, mut b) = runc_pair(MountShape::V1_2);
    let file = File::open("/dev/null").unwrap();
    let before = fd_count();
    a.send_record(header, None, None).unwrap();
    a.send_record(b"/a\0b", Some(file.as_fd()), None).unwrap();
    let err = b.recv().unwrap_err();
    assert!(
        matches!(&err, TransportError::RuncDecode(e) if e.kind() == RuncErrorKind::FdNameInvalid),
        "{err:?}"
    );
    // An fd on a JSON record that is fine by itself.
    a.send_record(
        br#"{"type":"procReady","flags":0}"#,
        Some(file.as_fd()),
        None,
    )
    .unwrap();
    let err = b.recv().unwrap_err();
    assert!(
        matches!(
            &err,
            TransportError::RuncDecode(RuncDecodeError::Invalid(ValidationError::UnexpectedFd {
                ty: MessageType::Ready,
                ..
            }))
        ),
        "{err:?}"
    );
    assert_eq!(fd_count(), before);
    a.send_record(br#"{"type":"procRun","flags":1}"#, None, None)
        .unwrap();
    let err = b.recv().unwrap_err();
    assert!(
        matches!(&err, TransportError::RuncDecode(e) if e.kind() == RuncErrorKind::Wire(ErrorKind::UnexpectedFd)),
        "{err:?}"
    );
    assert_eq!(fd_count(), before);
}

#[test]
fn an_expected_source_is_checked_only_after_a_request() {
    let _g = serial();
    let (mut child, mut parent) = runc_pair(MountShape::V1_2);
    let dir = File::open("/").unwrap();
    // No MountPlease sent on this socket: any well-formed name is taken.
    parent
        .send(
            &SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/anything"),
            Some(dir.as_fd()),
        )
        .unwrap();
    assert_eq!(
        child.recv().unwrap().msg.mount_fd_info().unwrap().source,
        "/anything"
    );
    // After a request, only its source: the expectation is used once.
    child
        .send(&SyncMessage::mount_please(Mount::bind("/want", "/x")), None)
        .unwrap();
    parent.recv().unwrap();
    parent
        .send(
            &SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/other"),
            Some(dir.as_fd()),
        )
        .unwrap();
    let err = child.recv().unwrap_err();
    assert!(
        matches!(&err, TransportError::RuncDecode(RuncDecodeError::FdNameMismatch { expected, got }) if expected == "/want" && got == "/other"),
        "{err:?}"
    );
}

#[test]
fn native_and_runc_ends_do_not_understand_each_other() {
    let _g = serial();
    let (mut a, b) = SyncSocket::pair().unwrap();
    let mut b = b.with_wire(Wire::Runc(MountShape::V1_2));
    assert_eq!(a.wire(), Wire::Native);
    a.send(&SyncMessage::ready(), None).unwrap();
    let err = b.recv().unwrap_err();
    assert!(
        matches!(&err, TransportError::RuncDecode(e) if e.kind() == RuncErrorKind::Wire(ErrorKind::MalformedBody)),
        "{err:?}"
    );
    b.send(&SyncMessage::run(), None).unwrap();
    assert!(matches!(a.recv(), Err(TransportError::Decode(_))));
}
