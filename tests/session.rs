//! Parent and child sessions across real processes (the test binary
//! re-executed as the peer): the init and exec flows with real fds, remote
//! errors, policy refusals, handler failures, protocol violations, a stopped
//! child, a dead child whose grandchild holds the socket, a dead parent, and
//! `fail()` on a closed connection. Every test holds `common::serial()` and
//! checks that /proc/self/fd has as many entries afterwards as before.

mod common;
#[path = "common/session_peer.rs"]
mod session_peer;

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{fd_count, serial};
use procsync::policy::PolicyRefusal;
use procsync::schema::{MessageType, Mount, MountSourceKind, SyncMessage};
use procsync::session::{
    error_chain, Child, HandlerError, MountSource, Parent, ParentHandler, SeccompFd, SessionError,
    SessionErrorKind, Step, TRUNCATION_MARK,
};
use procsync::state::{Event, Flow, State};
use procsync::transport::{Origin, SyncSocket, TransportError};
use session_peer::*;

/// Not a test: the entry point of the peer processes the other tests spawn.
#[test]
#[ignore = "entry point of the peer processes the other tests spawn"]
fn session_peer_entry() {
    session_peer_main();
}

/// Temporary host directories, each holding one file; removed on drop.
struct TempDirs(Vec<PathBuf>);

impl TempDirs {
    fn new(n: usize) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dirs = (0..n)
            .map(|i| {
                let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let d = std::env::temp_dir()
                    .join(format!("procsync-session-{}-{k}-{i}", std::process::id()));
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("file.txt"), format!("dir {i}\n")).unwrap();
                d
            })
            .collect();
        TempDirs(dirs)
    }

    fn strs(&self) -> Vec<String> {
        self.0.iter().map(|d| d.display().to_string()).collect()
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![(DIRS_VAR, self.strs().join(":"))]
    }

    fn mounts(&self) -> Vec<Mount> {
        self.strs()
            .iter()
            .enumerate()
            .map(|(i, d)| mount_for(i, d))
            .collect()
    }
}

impl Drop for TempDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A parent handler that opens sources with `O_PATH` and records every call.
#[derive(Default)]
struct Recorder {
    mounts: Vec<String>,
    hooks: usize,
    ready: usize,
    /// What the seccomp fd held: the eventfd counter or the memfd text.
    seccomp: Option<Vec<u8>>,
    fail_mounts: bool,
}

impl ParentHandler for Recorder {
    fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
        self.mounts.push(req.source.clone());
        if self.fail_mounts {
            return Err(HandlerError::with_source(
                format!("open {:?}", req.source),
                std::io::Error::from_raw_os_error(libc::ENOENT),
            ));
        }
        use rustix::fs::{open, Mode, OFlags};
        let fd = open(
            req.source.as_str(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(MountSource {
            fd,
            kind: MountSourceKind::PlainOpen,
        })
    }

    fn hooks(&mut self) -> Result<(), HandlerError> {
        self.hooks += 1;
        Ok(())
    }

    fn ready(&mut self) -> Result<(), HandlerError> {
        self.ready += 1;
        Ok(())
    }

    fn seccomp(&mut self, fd: SeccompFd<'_>) -> Result<(), HandlerError> {
        let attached = matches!(fd, SeccompFd::Attached(_));
        let fd: OwnedFd = fd.into_owned()?;
        let mut buf = [0u8; 64];
        let n = if attached {
            rustix::io::pread(&fd, &mut buf, 0)?
        } else {
            rustix::io::read(&fd, &mut buf[..8])?
        };
        self.seccomp = Some(buf[..n].to_vec());
        Ok(())
    }
}

fn results(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .collect()
}

#[test]
fn init_flow_serves_real_fds_and_copies_the_child_seccomp_fd() {
    let _g = serial();
    let before = fd_count();
    let dirs = TempDirs::new(2);
    let (p, sock) = spawn_session_peer("init-full", &dirs.env());
    let mut parent = Parent::new(sock, Flow::Init, dirs.mounts())
        .with_child_process(&p)
        .unwrap()
        .with_deadline(Duration::from_secs(20));
    let mut h = Recorder::default();
    let report = parent.serve(&mut h).unwrap();
    assert_eq!(report.mounts, 2);
    assert!(report.hooks && report.ready && report.seccomp);
    assert_eq!(parent.state(), State::Closed);
    assert_eq!(h.mounts, dirs.strs());
    assert_eq!((h.hooks, h.ready), (1, 1));
    // The copy is the child's eventfd: it holds the value the child wrote.
    assert_eq!(h.seccomp, Some(EVENTFD_VALUE.to_ne_bytes().to_vec()));
    drop(parent);
    let (ok, out) = finish(p);
    assert!(ok, "child: {out}");
    assert_eq!(results(&out), ["mount 0 ok", "mount 1 ok", "done"]);
    assert_eq!(fd_count(), before);
}

#[test]
fn exec_flow_with_an_attached_seccomp_fd() {
    let _g = serial();
    let before = fd_count();
    let (p, sock) = spawn_session_peer("exec-attached", &[]);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut parent = Parent::new(sock, Flow::Exec, [])
        .with_child_process(&p)
        .unwrap()
        .with_observer(move |t| {
            let ty = t.msg.kind().unwrap();
            log.lock().unwrap().push((t.direction, ty, t.fd.is_some()));
        });
    let mut h = Recorder::default();
    let report = parent.serve(&mut h).unwrap();
    use procsync::state::Direction::{Recv, Send};
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (Recv, MessageType::Ready, false),
            (Send, MessageType::Run, false),
            (Recv, MessageType::Seccomp, true),
            (Send, MessageType::SeccompDone, false),
        ]
    );
    assert_eq!(report.mounts, 0);
    assert!(!report.hooks && report.ready && report.seccomp);
    assert_eq!(h.seccomp.as_deref(), Some(MEMFD_TEXT));
    drop(parent);
    let (ok, out) = finish(p);
    assert!(ok, "child: {out}");
    assert_eq!(results(&out), ["done"]);
    assert_eq!(fd_count(), before);
}

#[test]
fn a_child_error_reaches_the_parent_as_remote() {
    let _g = serial();
    let before = fd_count();
    let dirs = TempDirs::new(1);
    let (p, sock) = spawn_session_peer("fail-after-mount", &dirs.env());
    let mut parent = Parent::new(sock, Flow::Init, dirs.mounts());
    let mut h = Recorder::default();
    let e = parent.serve(&mut h).unwrap_err();
    assert!(
        matches!(&e, SessionError::Remote { message } if message == "cannot mount /mnt/0: EPERM"),
        "{e:?}"
    );
    assert_eq!(e.origin(), Origin::Peer);
    assert_eq!(
        e.to_string(),
        "the peer reported an error: cannot mount /mnt/0: EPERM"
    );
    assert_eq!(h.mounts.len(), 1);
    drop(parent);
    let (ok, out) = finish(p);
    assert!(ok, "child: {out}");
    assert_eq!(fd_count(), before);
}

#[test]
fn a_mount_outside_the_policy_is_refused_on_both_sides() {
    let _g = serial();
    let before = fd_count();
    let dirs = TempDirs::new(1);
    // The child asks for /etc at /mnt/0; only the temp dir is configured there.
    let (p, sock) = spawn_session_peer("expect-remote", &[(DIRS_VAR, "/etc".to_string())]);
    let mut parent = Parent::new(sock, Flow::Init, dirs.mounts());
    let mut h = Recorder::default();
    let e = parent.serve(&mut h).unwrap_err();
    match &e {
        SessionError::MountRefused(PolicyRefusal::NotConfigured {
            mount_source,
            nearest,
            ..
        }) => {
            assert_eq!(mount_source, "/etc");
            assert_eq!(*nearest, Some("source"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.origin(), Origin::Peer);
    assert!(h.mounts.is_empty(), "the handler never saw the request");
    drop(parent);
    let (ok, out) = finish(p);
    assert!(ok, "child: {out}");
    let r = results(&out);
    assert_eq!(r.len(), 1, "{out}");
    assert_eq!(
        r[0],
        "remote mount request refused: \"/etc\" -> \"/mnt/0\" is not one of the \
         container's configured mounts (the configured mount at \"/mnt/0\" differs in source)"
    );
    assert_eq!(fd_count(), before);
}

#[test]
fn a_handler_error_is_sent_to_the_child_and_returned() {
    let _g = serial();
    let before = fd_count();
    let dirs = TempDirs::new(1);
    let (p, sock) = spawn_session_peer("expect-remote", &dirs.env());
    let mut parent = Parent::new(sock, Flow::Init, dirs.mounts());
    let mut h = Recorder {
        fail_mounts: true,
        ..Recorder::default()
    };
    let e = parent.serve(&mut h).unwrap_err();
    assert!(
        matches!(&e, SessionError::Handler { request: MessageType::MountPlease, source } if source.message().starts_with("open ")),
        "{e:?}"
    );
    assert_eq!(e.origin(), Origin::Local);
    drop(parent);
    let (ok, out) = finish(p);
    assert!(ok, "child: {out}");
    let r = results(&out);
    let want = format!(
        "remote MountPlease failed in the parent: open {:?}: {}",
        dirs.strs()[0],
        std::io::Error::from_raw_os_error(libc::ENOENT)
    );
    assert_eq!(r, [want.as_str()]);
    assert_eq!(fd_count(), before);
}

#[test]
fn a_child_that_closes_without_ready_is_a_violation() {
    let _g = serial();
    let before = fd_count();
    let (p, sock) = spawn_session_peer("no-ready", &[]);
    let mut parent = Parent::new(sock, Flow::Init, []);
    let mut h = Recorder::default();
    let e = parent.serve(&mut h).unwrap_err();
    match &e {
        SessionError::Violation(se) => {
            assert_eq!(se.got(), Event::Close);
            assert_eq!(se.state(), State::BeforeReady);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.origin(), Origin::Peer);
    assert_eq!(e.kind(), SessionErrorKind::ProtocolViolation);
    assert_eq!(
        error_chain(&e),
        "protocol violation by the child: in state BeforeReady (init, parent): child closed \
         without Ready; expected Ready or Error from child"
    );
    assert_eq!(h.hooks, 1);
    drop(parent);
    let (ok, out) = finish(p);
    assert!(ok, "child: {out}");
    assert_eq!(fd_count(), before);
}

#[test]
fn a_mount_request_after_hooks_never_reaches_policy_or_handler() {
    let _g = serial();
    let before = fd_count();
    let dirs = TempDirs::new(1);
    let (p, sock) = spawn_session_peer("late-mount", &dirs.env());
    // A policy that counts what it is asked (and would serve anything).
    struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl procsync::policy::MountPolicy for Counting {
        fn check(&mut self, _req: &Mount) -> Result<(), PolicyRefusal> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut parent =
        Parent::new(sock, Flow::Init, dirs.mounts()).with_policy(Counting(asked.clone()));
    let mut h = Recorder::default();
    let e = parent.serve(&mut h).unwrap_err();
    match &e {
        SessionError::Violation(se) => {
            assert_eq!(se.got(), Event::Message(MessageType::MountPlease));
            assert_eq!(se.state(), State::BeforeReady);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.origin(), Origin::Peer);
    assert!(h.mounts.is_empty(), "handler called for a late request");
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "policy consulted"
    );
    assert_eq!(parent.state(), State::Closed);
    drop(parent);
    let (ok, out) = finish(p);
    assert!(ok, "child: {out}");
    assert_eq!(results(&out), ["parent closed"]);
    assert_eq!(fd_count(), before);
}

#[test]
fn a_stopped_child_runs_into_the_parent_deadline() {
    let _g = serial();
    let before = fd_count();
    let (mut p, sock) = spawn_session_peer("stop", &[]);
    let mut parent = Parent::new(sock, Flow::Exec, [])
        .with_child_process(&p)
        .unwrap()
        .with_deadline(Duration::from_millis(300));
    let start = Instant::now();
    let e = parent.serve(&mut Recorder::default()).unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(
            &e,
            SessionError::Transport {
                source: TransportError::Timeout { .. },
                state: State::BeforeReady,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.origin(), Origin::Peer);
    assert_eq!(
        e.to_string(),
        "waiting for Ready or Error in state BeforeReady"
    );
    assert!(
        error_chain(&e).starts_with("waiting for Ready or Error in state BeforeReady: no record")
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "{took:?}"
    );
    p.kill().unwrap();
    p.wait().unwrap();
    drop((p, parent));
    assert_eq!(fd_count(), before);
}

#[test]
fn a_killed_child_ends_serve_via_the_pidfd_though_a_grandchild_holds_the_socket() {
    let _g = serial();
    let before = fd_count();
    let (mut p, sock) = spawn_session_peer("spawn-holder", &[]);
    // The child's first RESULT line names the grandchild.
    let mut out = BufReader::new(p.stdout.as_mut().unwrap());
    let gc: i32 = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "child said nothing");
        if let Some(pid) = line.trim().strip_prefix("RESULT grandchild ") {
            break pid.parse().unwrap();
        }
    };
    let gc_pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(gc).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    let child_pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_child(&p),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    let mut parent = Parent::new(sock, Flow::Exec, [])
        .with_child_process(&p)
        .unwrap()
        .with_deadline(Duration::from_secs(20));
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        rustix::process::pidfd_send_signal(&child_pidfd, rustix::process::Signal::KILL).unwrap();
    });
    let start = Instant::now();
    let e = parent.serve(&mut Recorder::default()).unwrap_err();
    killer.join().unwrap();
    assert!(
        matches!(
            &e,
            SessionError::Transport {
                source: TransportError::PeerDied,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.origin(), Origin::Peer);
    assert!(start.elapsed() < Duration::from_secs(10));
    rustix::process::pidfd_send_signal(&gc_pidfd, rustix::process::Signal::KILL).unwrap();
    drop(gc_pidfd);
    p.wait().unwrap();
    drop(p);
    drop(parent);
    assert_eq!(fd_count(), before);
}

#[test]
fn a_dead_parent_ends_the_child_wait_for_run() {
    let _g = serial();
    let before = fd_count();
    let (p, sock) = spawn_session_peer("parent-dies", &[]);
    let mut child = Child::new(sock, Flow::Exec).with_deadline(Duration::from_secs(20));
    let start = Instant::now();
    let e = child.ready().unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10));
    match &e {
        SessionError::Violation(se) => assert_eq!(se.state(), State::AwaitRun),
        other => panic!("{other:?}"),
    }
    assert_eq!(e.origin(), Origin::Peer);
    assert_eq!(
        error_chain(&e),
        "protocol violation by the parent: in state AwaitRun (exec, child): parent closed while \
         Ready was pending; expected Run or Error from parent"
    );
    // The parent is gone: fail() writes nothing and says so.
    let e = child.fail("no Run").unwrap_err();
    assert!(matches!(e, SessionError::Closed { .. }), "{e:?}");
    drop(child);
    let _ = finish(p);
    assert_eq!(fd_count(), before);
}

#[test]
fn fail_never_writes_to_a_closed_connection() {
    let _g = serial();
    let before = fd_count();

    // The parent shut down its sending side: it reads no more.
    let (mut parent, sock) = SyncSocket::pair().unwrap();
    let mut child = Child::new(sock, Flow::Init);
    parent.shutdown_write().unwrap();
    let e = child.fail("mount failed").unwrap_err();
    assert!(
        matches!(
            e,
            SessionError::Closed {
                by: procsync::state::Origin::Peer
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.origin(), Origin::Peer);
    let nothing = parent.recv_deadline(Some(Instant::now() + Duration::from_millis(100)));
    assert!(
        matches!(nothing, Err(TransportError::Timeout { .. })),
        "{nothing:?}"
    );
    // And again: still refused, still nothing.
    assert!(matches!(
        child.fail("again"),
        Err(SessionError::Closed { .. })
    ));
    drop((parent, child));

    // The parent closed altogether.
    let (parent, sock) = SyncSocket::pair().unwrap();
    let mut child = Child::new(sock, Flow::Exec);
    drop(parent);
    assert!(matches!(child.fail("x"), Err(SessionError::Closed { .. })));
    drop(child);

    // The child saw the close while waiting for Run: Ready went out, then nothing.
    let (mut parent, sock) = SyncSocket::pair().unwrap();
    let mut child = Child::new(sock, Flow::Exec);
    parent.shutdown_write().unwrap();
    assert!(matches!(child.ready(), Err(SessionError::Violation(_))));
    assert!(matches!(child.fail("x"), Err(SessionError::Closed { .. })));
    assert_eq!(parent.recv().unwrap().msg, SyncMessage::ready());
    let nothing = parent.recv_deadline(Some(Instant::now() + Duration::from_millis(100)));
    assert!(
        matches!(nothing, Err(TransportError::Timeout { .. })),
        "{nothing:?}"
    );
    drop((parent, child));

    assert_eq!(fd_count(), before);
}

#[test]
fn a_call_the_protocol_forbids_is_refused_locally_and_not_sent() {
    let _g = serial();
    let before = fd_count();
    let (mut parent, sock) = SyncSocket::pair().unwrap();
    let mut child = Child::new(sock, Flow::Init);
    let e = child.ready().unwrap_err();
    assert!(matches!(e, SessionError::Misuse(_)), "{e:?}");
    assert_eq!(e.origin(), Origin::Local);
    assert_eq!(e.kind(), SessionErrorKind::Misuse);
    assert_eq!(
        error_chain(&e),
        "not allowed by the protocol here: in state Mounting (init, child): can send only \
         MountPlease, Hooks or Error to parent, not Ready"
    );
    assert_eq!(child.state(), State::Mounting);
    let e = child
        .seccomp(procsync::session::SeccompHandoff::ChildFd(3))
        .unwrap_err();
    assert!(matches!(e, SessionError::Misuse(_)), "{e:?}");
    let nothing = parent.recv_deadline(Some(Instant::now() + Duration::from_millis(50)));
    assert!(
        matches!(nothing, Err(TransportError::Timeout { .. })),
        "{nothing:?}"
    );
    drop((parent, child));
    assert_eq!(fd_count(), before);
}

#[test]
fn a_mount_fd_for_another_source_is_rejected_and_closed() {
    let _g = serial();
    let before = fd_count();
    let (mut parent, sock) = SyncSocket::pair().unwrap();
    let t = std::thread::spawn(move || {
        let req = parent.recv().unwrap();
        assert_eq!(req.msg.mount().unwrap().source, "/srv/a");
        let f = std::fs::File::open("/dev/null").unwrap();
        let reply = SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/srv/b");
        parent.send(&reply, Some(f.as_fd())).unwrap();
        parent
    });
    let mut child = Child::new(sock, Flow::Init).with_deadline(Duration::from_secs(10));
    let e = child
        .mount_source(&Mount::bind("/srv/a", "/a"))
        .unwrap_err();
    assert!(
        matches!(&e, SessionError::SourceMismatch { requested, got } if requested == "/srv/a" && got == "/srv/b"),
        "{e:?}"
    );
    assert_eq!(e.origin(), Origin::Peer);
    let parent = t.join().unwrap();
    drop((parent, child));
    assert_eq!(fd_count(), before);
}

#[test]
fn a_child_fd_without_a_pidfd_is_answered_with_error() {
    let _g = serial();
    let before = fd_count();
    let (sock, theirs) = SyncSocket::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut child = Child::new(theirs, Flow::Exec).with_deadline(Duration::from_secs(10));
        child.ready().unwrap();
        child.seccomp(procsync::session::SeccompHandoff::ChildFd(0))
    });
    let mut parent = Parent::new(sock, Flow::Exec, []).with_deadline(Duration::from_secs(10));
    let e = parent.serve(&mut Recorder::default()).unwrap_err();
    assert!(
        matches!(
            &e,
            SessionError::Handler {
                request: MessageType::Seccomp,
                ..
            }
        ),
        "{e:?}"
    );
    let child_side = t.join().unwrap().unwrap_err();
    assert_eq!(
        child_side.remote_message(),
        Some(
            "Seccomp failed in the parent: cannot copy the child's seccomp fd: the parent has no \
             pidfd for the child"
        )
    );
    assert!(matches!(
        parent.serve(&mut Recorder::default()),
        Err(SessionError::Closed { .. })
    ));
    drop(parent);
    assert_eq!(fd_count(), before);
}

#[test]
fn a_reply_this_side_cannot_send_still_answers_the_child() {
    let _g = serial();
    let before = fd_count();
    struct BadKind;
    impl ParentHandler for BadKind {
        fn mount(&mut self, _req: &Mount) -> Result<MountSource, HandlerError> {
            let fd = std::fs::File::open("/dev/null")?.into();
            Ok(MountSource {
                fd,
                kind: MountSourceKind::Unspecified,
            })
        }
    }
    let (sock, theirs) = SyncSocket::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut child = Child::new(theirs, Flow::Init).with_deadline(Duration::from_secs(10));
        child.mount_source(&Mount::bind("/srv/a", "/a")).map(drop)
    });
    let mut parent = Parent::new(sock, Flow::Init, [Mount::bind("/srv/a", "/a")]);
    let e = parent.serve(&mut BadKind).unwrap_err();
    assert!(
        matches!(
            &e,
            SessionError::Transport {
                step: Step::Send(MessageType::MountFd),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.origin(), Origin::Local);
    let child_side = t.join().unwrap().unwrap_err();
    let msg = child_side.remote_message().unwrap_or_default().to_string();
    assert!(
        msg.starts_with("MountPlease failed in the parent: cannot send MountFd: "),
        "{child_side:?}"
    );
    drop(parent);
    assert_eq!(fd_count(), before);
}

// ---- Error replies that do not fit, deadlines, chains, downgrades (issues 11, 12, 13) ----

/// Every error in `e`'s chain that this layer defines: its `Display` must
/// not repeat its source's (the Rust API guidelines; issue 12.7).
fn assert_no_repeated_cause(e: &(dyn std::error::Error + 'static)) {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(src) = c.source() {
            let (outer, inner) = (c.to_string(), src.to_string());
            assert!(
                !outer.contains(&inner),
                "{outer:?} repeats its source {inner:?}"
            );
        }
        cur = c.source();
    }
}

/// A parent that refuses a mount whose source is a 4000-byte path, under a
/// small record limit: the child still gets the refusal, cut and marked.
fn long_refusal_reaches_the_child(wire: procsync::transport::Wire) {
    let _g = serial();
    let before = fd_count();
    // A legal path (under PATH_MAX) of characters the refusal's quoting
    // expands sixfold (DEL prints as \u{7f}).
    let long = format!("/{}", "\u{7f}".repeat(1000));
    let req = Mount::bind(long.as_str(), "/mnt/long");
    // A limit the request fits and the refusal does not, measured with the
    // wire's own encoder.
    let msg = SyncMessage::mount_please(req.clone());
    let size = match wire {
        procsync::transport::Wire::Native => procsync::wire::native::encoded_len(&msg, false),
        #[cfg(feature = "runc-compat")]
        procsync::transport::Wire::Runc(shape) => {
            let mut out = Vec::new();
            let limits = procsync::wire::Limits::default();
            procsync::wire::runc::encode(&msg, None, shape, &limits, &mut out)
                .unwrap()
                .json
                .len()
        }
    };
    let limits = procsync::wire::Limits::with_max_record(size + 64);
    let (a, b) = SyncSocket::pair().unwrap();
    let (a, b) = (
        a.with_limits(limits).with_wire(wire),
        b.with_limits(limits).with_wire(wire),
    );
    let t = std::thread::spawn(move || {
        let mut child = Child::new(b, Flow::Init).with_deadline(Duration::from_secs(10));
        child.mount_source(&req).map(drop)
    });
    let mut parent = Parent::new(a, Flow::Init, [Mount::bind("/srv/a", "/a")]);
    let e = parent.serve(&mut Recorder::default()).unwrap_err();
    assert_eq!(e.kind(), SessionErrorKind::MountRefused);
    assert_eq!(e.origin(), Origin::Peer);
    let child_side = t.join().unwrap().unwrap_err();
    let msg = child_side
        .remote_message()
        .unwrap_or_else(|| panic!("child saw {child_side:?}"));
    assert!(msg.starts_with("mount request refused: "), "{msg:?}");
    assert!(msg.ends_with(TRUNCATION_MARK), "{msg:?}");
    drop(parent);
    assert_eq!(fd_count(), before);
}

#[test]
fn a_refusal_longer_than_the_record_limit_is_cut_to_fit_native() {
    long_refusal_reaches_the_child(procsync::transport::Wire::Native);
}

#[cfg(feature = "runc-compat")]
#[test]
fn a_refusal_longer_than_the_record_limit_is_cut_to_fit_runc() {
    use procsync::wire::runc::MountShape;
    long_refusal_reaches_the_child(procsync::transport::Wire::Runc(MountShape::V1_2));
    long_refusal_reaches_the_child(procsync::transport::Wire::Runc(MountShape::V1_4));
}

#[test]
fn a_handler_error_longer_than_the_default_limit_reaches_the_child() {
    let _g = serial();
    let before = fd_count();
    struct Verbose;
    impl ParentHandler for Verbose {
        fn hooks(&mut self) -> Result<(), HandlerError> {
            Err(HandlerError::new("x".repeat(100_000)))
        }
    }
    let (a, b) = SyncSocket::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut child = Child::new(b, Flow::Init).with_deadline(Duration::from_secs(10));
        child.hooks()
    });
    let e = Parent::new(a, Flow::Init, [])
        .serve(&mut Verbose)
        .unwrap_err();
    assert_eq!(e.kind(), SessionErrorKind::HandlerFailed);
    let child_side = t.join().unwrap().unwrap_err();
    let msg = child_side.remote_message().expect("an Error reply");
    assert!(msg.starts_with("Hooks failed in the parent: xxx"));
    assert!(msg.ends_with(TRUNCATION_MARK));
    assert!(msg.len() < procsync::wire::DEFAULT_MAX_RECORD);
    assert_eq!(fd_count(), before);
}

#[test]
fn a_child_fail_text_longer_than_the_limit_is_cut_to_fit() {
    let _g = serial();
    let (mut a, b) = SyncSocket::pair().unwrap();
    let limits = procsync::wire::Limits::with_max_record(64);
    let mut child = Child::new(b.with_limits(limits), Flow::Init);
    child.fail("é".repeat(1000)).unwrap();
    let got = a.recv().unwrap();
    let text = got.msg.error_message().unwrap();
    assert!(
        text.starts_with('é') && text.ends_with(TRUNCATION_MARK),
        "{text:?}"
    );
}

#[test]
fn a_deadline_past_the_end_of_time_is_no_deadline() {
    let _g = serial();
    let before = fd_count();
    let (a, b) = SyncSocket::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut child = Child::new(b, Flow::Exec).with_deadline(Duration::MAX);
        child.ready()?;
        child.close()
    });
    let mut parent = Parent::new(a, Flow::Exec, []).with_deadline(Duration::MAX);
    let report = parent.serve(&mut Recorder::default()).unwrap();
    assert!(report.ready);
    t.join().unwrap().unwrap();
    drop(parent);
    assert_eq!(fd_count(), before);
}

#[test]
fn error_chains_name_each_cause_once() {
    let _g = serial();
    let before = fd_count();
    let (a, b) = SyncSocket::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut child = Child::new(b, Flow::Init).with_deadline(Duration::from_secs(10));
        child.mount_source(&Mount::bind("/srv/a", "/a")).map(drop)
    });
    let mut h = Recorder {
        fail_mounts: true,
        ..Recorder::default()
    };
    let e = Parent::new(a, Flow::Init, [Mount::bind("/srv/a", "/a")])
        .serve(&mut h)
        .unwrap_err();
    assert_no_repeated_cause(&e);
    let enoent = std::io::Error::from_raw_os_error(libc::ENOENT).to_string();
    assert_eq!(
        error_chain(&e),
        format!("the handler failed MountPlease: open \"/srv/a\": {enoent}")
    );
    let child_side = t.join().unwrap().unwrap_err();
    assert_eq!(
        child_side.remote_message(),
        Some(format!("MountPlease failed in the parent: open \"/srv/a\": {enoent}").as_str())
    );
    // The refusal, the violation and the misuse say their cause once too.
    let (a, b) = SyncSocket::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut child = Child::new(b, Flow::Init).with_deadline(Duration::from_secs(10));
        let e = child.ready().unwrap_err();
        assert_no_repeated_cause(&e);
        child.mount_source(&Mount::bind("/etc", "/a")).map(drop)
    });
    let e = Parent::new(a, Flow::Init, [])
        .serve(&mut Recorder::default())
        .unwrap_err();
    assert_no_repeated_cause(&e);
    assert!(
        error_chain(&e).starts_with("refused a mount request: \"/etc\" -> \"/a\" is not one of"),
        "{}",
        error_chain(&e)
    );
    t.join().unwrap().unwrap_err();
    assert_eq!(fd_count(), before);
}

#[test]
fn session_error_kinds_are_stable_kebab_case_names() {
    let names: Vec<&str> = SessionErrorKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "protocol-violation",
            "misuse",
            "remote-error",
            "transport",
            "mount-refused",
            "handler-failed",
            "handler-overran",
            "source-mismatch",
            "source-downgraded",
            "closed",
            "os"
        ]
    );
    for k in SessionErrorKind::ALL {
        assert_eq!(k.to_string(), k.as_str());
    }
}

/// An id-mapped request, as a runtime asks for it.
fn id_mapped(source: &str) -> Mount {
    use procsync::schema::{IdMap, IdMapping};
    Mount::bind(source, "/mnt/idmap").with_id_mapping(IdMapping::ranges(
        vec![IdMap {
            container_id: 0,
            host_id: 100_000,
            size: 65536,
        }],
        vec![IdMap {
            container_id: 0,
            host_id: 100_000,
            size: 65536,
        }],
    ))
}

#[test]
fn an_id_mapped_request_answered_plain_is_a_typed_peer_error() {
    let _g = serial();
    let before = fd_count();
    let dir = TempDirs::new(1);
    let src = dir.strs()[0].clone();
    // A parent that does not know id-mapped mounts: it serves every request
    // with a plain O_PATH fd (the Recorder), as an old runc parent does.
    let (a, b) = SyncSocket::pair().unwrap();
    let parent = std::thread::spawn(move || {
        let mut parent = Parent::new(a, Flow::Init, [])
            .with_policy(procsync::policy::AllowAll)
            .with_deadline(Duration::from_secs(10));
        parent.serve(&mut Recorder::default())
    });
    let mut child = Child::new(b, Flow::Init).with_deadline(Duration::from_secs(10));
    let e = child.mount_source(&id_mapped(&src)).unwrap_err();
    assert_eq!(e.kind(), SessionErrorKind::SourceDowngraded);
    assert_eq!(e.origin(), Origin::Peer);
    assert!(
        matches!(&e, SessionError::SourceDowngraded { mount_source, got: MountSourceKind::PlainOpen } if *mount_source == src),
        "{e:?}"
    );
    // The plain fd was closed; the child tells the parent why it gives up.
    child.fail(e.to_string()).unwrap();
    let served = parent.join().unwrap().unwrap_err();
    assert_eq!(served.kind(), SessionErrorKind::RemoteError);
    drop(child);
    assert_eq!(fd_count(), before);
}

/// Sleeps in `hooks` until the deadline the parent set (honouring it, then
/// giving up) or `extra` past it (overrunning).
struct Slow {
    deadline: Option<Instant>,
    overrun_by: Option<Duration>,
}

impl ParentHandler for Slow {
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
    fn hooks(&mut self) -> Result<(), HandlerError> {
        let due = self.deadline.expect("the parent sets a deadline");
        match self.overrun_by {
            None => {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                Err(HandlerError::new(
                    "hooks did not finish by the deadline; gave up",
                ))
            }
            Some(extra) => {
                std::thread::sleep(due.saturating_duration_since(Instant::now()) + extra);
                Ok(())
            }
        }
    }
}

#[test]
fn a_slow_handler_that_honours_the_deadline_answers_the_child_in_time() {
    let _g = serial();
    let before = fd_count();
    let limit = Duration::from_millis(300);
    for overrun_by in [None, Some(Duration::from_millis(100))] {
        let (a, b) = SyncSocket::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut child = Child::new(b, Flow::Init).with_deadline(Duration::from_secs(10));
            let start = Instant::now();
            let r = child.hooks();
            (r, start.elapsed())
        });
        let mut parent = Parent::new(a, Flow::Init, []).with_deadline(limit);
        let mut h = Slow {
            deadline: None,
            overrun_by,
        };
        let e = parent.serve(&mut h).unwrap_err();
        let (child_side, took) = t.join().unwrap();
        let msg = child_side
            .unwrap_err()
            .remote_message()
            .unwrap()
            .to_string();
        match overrun_by {
            None => {
                assert_eq!(e.kind(), SessionErrorKind::HandlerFailed);
                assert!(msg.contains("gave up"), "{msg}");
                assert!(
                    took >= limit && took < limit + Duration::from_millis(250),
                    "{took:?}"
                );
            }
            Some(extra) => {
                assert_eq!(e.kind(), SessionErrorKind::HandlerOverran);
                assert_eq!(e.origin(), Origin::Local);
                assert!(msg.contains("overran its deadline"), "{msg}");
                assert!(took >= limit + extra && took < limit + extra + Duration::from_millis(250));
            }
        }
    }
    assert_eq!(fd_count(), before);
}
