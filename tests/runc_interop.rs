//! The runc wire on a real [`SyncSocket`] ([`Wire::Runc`]) against the
//! independent Go peer (`go/runcpeer`), in both roles, across real
//! processes, with real fds:
//!
//! * procsync parent (socket + [`Machine`]) ⇄ Go runc-style child: init flow
//!   with mount fds (plain `O_PATH` and, as root, `open_tree`), hooks, Ready,
//!   seccomp via `pidfd_getfd` (root); exec flow; remote procError; a
//!   refused mount;
//! * Go runc-style parent ⇄ procsync child: the same flows, the child
//!   proving each mount fd is the requested directory (`st_dev`/`st_ino`);
//! * a misbehaving Go parent (`-misbehave`): every broken fd record is a
//!   typed error and every fd that arrived is closed (`/proc/self/fd` counted);
//! * both `configs.Mount` shapes on the wire;
//! * every runc compatibility profile: the exec flow in both roles, and the
//!   seed commit's id-mapped request.
//!
//! The Go peer is built with `go build` into cargo's test tmpdir. Without
//! Go the tests skip with a printed reason, or fail when `CI=true`. The
//! in-process tests of the runc wire (no Go) are in `tests/runc_socket.rs`.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
mod go_build;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use procsync::schema::{MessageType, Mount, MountSourceKind, SeccompTransfer, SyncMessage};
use procsync::session::{
    Child as SessionChild, HandlerError, MountSource, Parent, ParentHandler, SeccompFd,
    SeccompHandoff, SessionError, REFUSAL_PREFIX,
};
use procsync::state::{Flow, Machine, Role, State};
use procsync::transport::{Origin, SyncSocket, TransportError, Wire};
use procsync::wire::runc::{MountShape, RuncDecodeError, RuncErrorKind, RuncProfile};
use procsync::wire::{ErrorKind, ValidationError};

const SHAPES: [MountShape; 2] = [MountShape::V1_2, MountShape::V1_4];
const WAIT: Duration = Duration::from_secs(10);

use support::{fd_count, serial};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn deadline() -> Option<Instant> {
    Some(Instant::now() + WAIT)
}

/// The Go peer, built once per test binary; `None` (skip) without Go.
fn peer_bin() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    go_build::go_binary(&BIN, "runcpeer")
}

/// A running Go peer and our end of its sync socket (runc wire, its pidfd
/// registered so no wait outlives it).
struct GoPeer {
    sock: SyncSocket,
    child: Child,
}

impl GoPeer {
    /// Starts `runcpeer ARGS` with the far end of a fresh socket pair in
    /// `_LIBCONTAINER_SYNCPIPE`, as runc hands it over.
    fn spawn(args: &[&str], shape: MountShape) -> GoPeer {
        let (ours, theirs) = SyncSocket::pair().unwrap();
        let mut cmd = Command::new(peer_bin().unwrap());
        cmd.args(args)
            .env("_LIBCONTAINER_SYNCPIPE", theirs.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        theirs.pass_to_child(&mut cmd).unwrap();
        let child = cmd.spawn().unwrap();
        drop(theirs);
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
        let mut sock = ours.with_wire(Wire::Runc(shape));
        sock.set_peer_pidfd(pidfd);
        assert_eq!(sock.wire(), Wire::Runc(shape));
        GoPeer { sock, child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes our end, waits for the peer: (exit code, stdout + stderr).
    fn finish(self) -> (Option<i32>, String) {
        drop(self.sock);
        wait_go(self.child)
    }

    /// Waits for a peer that exits by itself (a misbehaving parent), then
    /// closes our end: closing first could fail the peer's last send.
    fn finish_after_exit(self) -> (Option<i32>, String) {
        let r = wait_go(self.child);
        drop(self.sock);
        r
    }
}

/// Waits for a Go peer: (exit code, stdout + stderr).
fn wait_go(child: Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// A directory removed on drop.
struct TempDir(String);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("procsync-runc2-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d.to_str().unwrap().to_owned())
    }
}

impl std::ops::Deref for TempDir {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Asserts that `fd` is the directory at `path` (same device and inode).
fn assert_same_file(fd: impl AsFd, path: &str) {
    let got = rustix::fs::fstat(fd).unwrap();
    let want = rustix::fs::stat(path).unwrap();
    assert_eq!(
        (got.st_dev, got.st_ino),
        (want.st_dev, want.st_ino),
        "the fd is not {path}"
    );
}

/// How the procsync parent answers.
#[derive(Default)]
struct ParentPlan<'a> {
    /// Refuse a MountPlease for this source with Error.
    refuse: Option<&'a str>,
    /// Serve this source with `open_tree(OPEN_TREE_CLONE)` instead of `O_PATH`.
    open_tree: Option<&'a str>,
}

/// The procsync parent's side over the runc wire: the socket and the state
/// machine, every message checked by the machine, until the child closes.
/// Returns the transcript.
fn serve(peer: &mut GoPeer, flow: Flow, plan: &ParentPlan<'_>) -> Vec<String> {
    let peer_pid = peer.pid();
    let sock = &mut peer.sock;
    let mut m = Machine::new(Role::Parent, flow);
    let mut t = Vec::new();
    loop {
        let rec = match sock.recv_deadline(deadline()) {
            Ok(rec) => rec,
            Err(TransportError::PeerClosed) => {
                m.on_peer_closed().expect("orderly close");
                t.push("eof".to_string());
                return t;
            }
            Err(e) => panic!("parent recv in {:?}: {e}", m.state()),
        };
        let ty = rec.msg.kind().unwrap();
        m.on_recv(ty).unwrap();
        assert!(
            rec.fd.is_none(),
            "no child message carries an fd on runc's wire"
        );
        let (reply, fd): (SyncMessage, Option<OwnedFd>) = match ty {
            MessageType::MountPlease => {
                let mount = rec.msg.mount().unwrap();
                assert!(mount.is_bind(), "{mount:?}");
                let src = mount.source.clone();
                if plan.refuse == Some(src.as_str()) {
                    t.push(format!("refuse {src}"));
                    (
                        SyncMessage::error(format!("mount request refused: {src}")),
                        None,
                    )
                } else if plan.open_tree == Some(src.as_str()) {
                    use rustix::mount::{open_tree, OpenTreeFlags};
                    let fd = open_tree(
                        rustix::fs::CWD,
                        src.as_str(),
                        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
                    )
                    .unwrap();
                    t.push(format!("mount {src} -> {} open_tree", mount.destination));
                    (
                        SyncMessage::mount_fd(MountSourceKind::OpenTree, src.as_str()),
                        Some(fd),
                    )
                } else {
                    use rustix::fs::{open, Mode, OFlags};
                    let fd =
                        open(src.as_str(), OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
                    t.push(format!("mount {src} -> {} plain-open", mount.destination));
                    (
                        SyncMessage::mount_fd(MountSourceKind::PlainOpen, src.as_str()),
                        Some(fd),
                    )
                }
            }
            MessageType::Seccomp => {
                let Some(SeccompTransfer::ChildFd(n)) = rec.msg.seccomp_transfer() else {
                    panic!("runc's procSeccomp names the child's fd: {:?}", rec.msg);
                };
                let pid = rustix::process::Pid::from_raw(peer_pid as i32).unwrap();
                let pidfd =
                    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
                let copy = rustix::process::pidfd_getfd(
                    &pidfd,
                    n,
                    rustix::process::PidfdGetfdFlags::empty(),
                )
                .unwrap();
                // The Go child's fd 2 is the write end of our stderr pipe.
                let ours = peer.child.stderr.as_ref().unwrap();
                let (a, b) = (
                    rustix::fs::fstat(&copy).unwrap(),
                    rustix::fs::fstat(ours).unwrap(),
                );
                assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
                t.push(format!("seccomp {n}"));
                (SyncMessage::seccomp_done(), None)
            }
            MessageType::Error => {
                t.push(format!("error {:?}", rec.msg.error_message().unwrap()));
                assert_eq!(m.state(), State::Failed);
                continue;
            }
            other => {
                t.push(other.name().to_string());
                (SyncMessage::new(other.reply().unwrap()), None)
            }
        };
        m.on_send(reply.kind().unwrap()).unwrap();
        sock.send(&reply, fd.as_ref().map(|f| f.as_fd())).unwrap();
    }
}

#[test]
fn procsync_parent_serves_go_child_init() {
    // Lock first: building the peer opens fds the other tests would count.
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    let (d1, d2) = (TempDir::new("p1"), TempDir::new("p2"));
    for shape in SHAPES {
        let before = fd_count();
        let (m1, m2) = (format!("{}:/one", &*d1), format!("{}:/two", &*d2));
        let mut args = vec!["child", "-mode", "init", "-shape", shape.name()];
        args.extend(["-mount", &m1, "-mount", &m2]);
        if is_root() {
            args.extend(["-seccomp-fd", "2"]);
        }
        let mut peer = GoPeer::spawn(&args, shape);
        let plan = ParentPlan {
            open_tree: is_root().then_some(&*d2),
            ..Default::default()
        };
        let t = serve(&mut peer, Flow::Init, &plan);
        let (code, out) = peer.finish();
        assert_eq!(code, Some(0), "{shape:?}: go child failed:\n{out}");
        let kind2 = if is_root() { "open_tree" } else { "plain-open" };
        let mut want = vec![
            format!("mount {} -> /one plain-open", &*d1),
            format!("mount {} -> /two {kind2}", &*d2),
            "Hooks".into(),
            "Ready".into(),
        ];
        if is_root() {
            want.push("seccomp 2".into());
        } else {
            eprintln!("not root: seccomp hand-off (pidfd_getfd) and open_tree not exercised");
        }
        want.push("eof".into());
        assert_eq!(t, want, "{shape:?}");
        // The Go child checked name and inode of each fd.
        assert!(
            out.contains(&format!("mountfd {} plain-open ok", &*d1)),
            "{out}"
        );
        assert!(
            out.contains(&format!("mountfd {} {kind2} ok", &*d2)),
            "{out}"
        );
        assert_eq!(fd_count(), before, "{shape:?}: fd leaked");
    }
}

#[test]
fn procsync_parent_serves_go_child_exec() {
    // Lock first: building the peer opens fds the other tests would count.
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    let before = fd_count();
    let mut peer = GoPeer::spawn(&["child", "-mode", "exec"], MountShape::V1_4);
    let t = serve(&mut peer, Flow::Exec, &ParentPlan::default());
    let (code, out) = peer.finish();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(t, ["Ready", "eof"]);
    assert!(out.contains("child: run"), "{out}");
    assert_eq!(fd_count(), before);
}

#[test]
fn go_child_error_reaches_procsync_parent() {
    // Lock first: building the peer opens fds the other tests would count.
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    let msg = "container_linux.go:42: starting init: <boom> & \"quoted\"";
    let mut peer = GoPeer::spawn(
        &["child", "-mode", "error", "-error-msg", msg],
        MountShape::V1_2,
    );
    let t = serve(&mut peer, Flow::Init, &ParentPlan::default());
    assert_eq!(t, [format!("error {msg:?}"), "eof".into()]);
    let (code, out) = peer.finish();
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn procsync_parent_refusal_reaches_go_child() {
    // Lock first: building the peer opens fds the other tests would count.
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    let d = TempDir::new("refuse");
    let m = format!("{}:/x", &*d);
    let mut peer = GoPeer::spawn(&["child", "-mode", "init", "-mount", &m], MountShape::V1_2);
    let plan = ParentPlan {
        refuse: Some(&d),
        ..Default::default()
    };
    let t = serve(&mut peer, Flow::Init, &plan);
    assert_eq!(t, [format!("refuse {}", &*d), "eof".into()]);
    let (code, out) = peer.finish();
    assert_eq!(code, Some(3), "the Go child reports procError:\n{out}");
    assert!(out.contains("mount request refused"), "{out}");
}

/// The procsync child's side over the runc wire against the Go parent.
struct ChildSide {
    m: Machine,
}

impl ChildSide {
    fn new(flow: Flow) -> ChildSide {
        ChildSide {
            m: Machine::new(Role::Child, flow),
        }
    }

    fn request(
        &mut self,
        sock: &mut SyncSocket,
        msg: SyncMessage,
    ) -> Result<procsync::transport::Received, TransportError> {
        self.m.on_send(msg.kind().unwrap()).unwrap();
        sock.send(&msg, None)?;
        let rec = sock.recv_deadline(deadline())?;
        self.m.on_recv(rec.msg.kind().unwrap()).unwrap();
        Ok(rec)
    }
}

#[test]
fn procsync_child_against_go_parent_init() {
    // Lock first: building the peer opens fds the other tests would count.
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    let (d1, d2) = (TempDir::new("c1"), TempDir::new("c2"));
    let seccomp_src = File::open("/dev/null").unwrap();
    for shape in SHAPES {
        let before = fd_count();
        let me = std::process::id().to_string();
        let mut peer = GoPeer::spawn(&["parent", "-child-pid", &me], shape);
        let mut c = ChildSide::new(Flow::Init);
        for (d, dst) in [(&d1, "/one"), (&d2, "/two")] {
            let req = SyncMessage::mount_please(Mount::bind(&**d, dst).recursive());
            let rec = c.request(&mut peer.sock, req).unwrap();
            let info = rec.msg.mount_fd_info().unwrap();
            assert_eq!(info.source, &**d);
            assert_eq!(info.kind(), MountSourceKind::PlainOpen);
            assert!(rec.msg.has_fd());
            assert_same_file(rec.fd.as_ref().unwrap(), d);
        }
        let rec = c.request(&mut peer.sock, SyncMessage::hooks()).unwrap();
        assert_eq!(rec.msg.kind(), Some(MessageType::HooksDone));
        let rec = c.request(&mut peer.sock, SyncMessage::ready()).unwrap();
        assert_eq!(rec.msg.kind(), Some(MessageType::Run));
        let n = seccomp_src.as_raw_fd();
        if is_root() {
            let rec = c
                .request(&mut peer.sock, SyncMessage::seccomp_child_fd(n))
                .unwrap();
            assert_eq!(rec.msg.kind(), Some(MessageType::SeccompDone));
        }
        c.m.check_close().unwrap();
        c.m.on_close();
        let (code, out) = peer.finish();
        assert_eq!(code, Some(0), "{shape:?}: go parent failed:\n{out}");
        for (d, dst) in [(&d1, "/one"), (&d2, "/two")] {
            assert!(
                out.contains(&format!("procMountPlease {} -> {dst}", &**d)),
                "{out}"
            );
        }
        if is_root() {
            assert!(out.contains(&format!("procSeccomp fd {n} copied")), "{out}");
        }
        assert!(out.contains("parent: eof"), "{out}");
        assert_eq!(fd_count(), before, "{shape:?}: fd leaked");
    }
}

#[test]
fn procsync_child_against_go_parent_exec() {
    // Lock first: building the peer opens fds the other tests would count.
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    let mut peer = GoPeer::spawn(&["parent"], MountShape::V1_2);
    let mut c = ChildSide::new(Flow::Exec);
    let rec = c.request(&mut peer.sock, SyncMessage::ready()).unwrap();
    assert_eq!(rec.msg.kind(), Some(MessageType::Run));
    assert_eq!(c.m.state(), State::Running);
    let (code, out) = peer.finish();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("parent: procReady"), "{out}");
    assert!(out.contains("parent: eof"), "{out}");
}

#[test]
fn errors_between_go_parent_and_procsync_child() {
    // Lock first: building the peer opens fds the other tests would count.
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    // The Go parent refuses a mount: procError reaches the procsync child.
    let d = TempDir::new("fail");
    let mut peer = GoPeer::spawn(&["parent", "-fail-on", &d], MountShape::V1_4);
    let mut c = ChildSide::new(Flow::Init);
    let rec = c
        .request(
            &mut peer.sock,
            SyncMessage::mount_please(Mount::bind(&*d, "/x")),
        )
        .unwrap();
    assert_eq!(rec.msg.kind(), Some(MessageType::Error));
    assert!(
        rec.msg
            .error_message()
            .unwrap()
            .contains(&format!("refusing mount source {}", &*d)),
        "{:?}",
        rec.msg
    );
    assert_eq!(c.m.state(), State::Failed);
    let (code, _) = peer.finish();
    assert_eq!(code, Some(1), "the Go parent reports the refused mount");

    // The procsync child fails: procError reaches the Go parent.
    let mut peer = GoPeer::spawn(&["parent"], MountShape::V1_2);
    let mut m = Machine::new(Role::Child, Flow::Init);
    m.on_send(MessageType::Error).unwrap();
    peer.sock
        .send(&SyncMessage::error("cannot mount /proc: EPERM"), None)
        .unwrap();
    let (code, out) = peer.finish();
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains(r#"procError "cannot mount /proc: EPERM""#),
        "{out}"
    );
}

/// The typed error a broken reply from `runcpeer parent -misbehave MODE`
/// must produce, with every fd that arrived closed.
#[test]
fn broken_fd_records_are_typed_errors_without_leaks() {
    // Lock first: building the peer opens fds the other tests would count.
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    let d = TempDir::new("bad");
    let cases: [(&str, RuncErrorKind); 7] = [
        ("no-fd-record", RuncErrorKind::Wire(ErrorKind::MissingFd)),
        ("fd-record-no-fd", RuncErrorKind::Wire(ErrorKind::MissingFd)),
        ("name-mismatch", RuncErrorKind::FdNameMismatch),
        ("long-name", RuncErrorKind::FdNameTooLong),
        ("two-fds", RuncErrorKind::Wire(ErrorKind::TooManyFds)),
        ("fd-on-json", RuncErrorKind::Wire(ErrorKind::UnexpectedFd)),
        ("not-json", RuncErrorKind::Wire(ErrorKind::MalformedBody)),
    ];
    for (mode, kind) in cases {
        let baseline = fd_count();
        let mut peer = GoPeer::spawn(&["parent", "-misbehave", mode], MountShape::V1_2);
        let with_peer = fd_count();
        peer.sock
            .send(&SyncMessage::mount_please(Mount::bind(&*d, "/x")), None)
            .unwrap();
        let err = peer.sock.recv_deadline(deadline()).unwrap_err();
        assert_eq!(
            fd_count(),
            with_peer,
            "{mode}: a received fd was not closed"
        );
        assert_eq!(err.origin(), Origin::Peer, "{mode}: {err}");
        let TransportError::RuncDecode(e) = &err else {
            panic!("{mode}: not a runc decode error: {err:?}");
        };
        assert_eq!(e.kind(), kind, "{mode}: {e}");
        match (mode, e) {
            ("no-fd-record", RuncDecodeError::Invalid(ValidationError::MissingFd { ty })) => {
                assert_eq!(*ty, MessageType::MountFd)
            }
            ("fd-record-no-fd", RuncDecodeError::FdRecordMissingFd) => {}
            ("name-mismatch", RuncDecodeError::FdNameMismatch { got, .. }) => {
                assert!(got.ends_with("-other"), "{got}")
            }
            ("long-name", RuncDecodeError::FdNameTooLong { len }) => assert_eq!(*len, 4096),
            ("two-fds", RuncDecodeError::FdRecordTooManyFds { count }) => assert_eq!(*count, 2),
            ("fd-on-json", RuncDecodeError::Invalid(ValidationError::UnexpectedFd { ty, .. })) => {
                assert_eq!(*ty, MessageType::MountFd)
            }
            ("not-json", RuncDecodeError::Malformed { .. }) => {}
            _ => panic!("{mode}: unexpected error {e:?}"),
        }
        let (code, out) = peer.finish_after_exit();
        assert_eq!(code, Some(1), "{mode}: {out}");
        assert!(out.contains(&format!("misbehaved: {mode}")), "{out}");
        assert_eq!(fd_count(), baseline, "{mode}: fd leaked");
    }
}

// ---------------------------------------------------------------------------
// Sessions on the runc wire: the very Parent/Child (and so the very state
// machine and mount policy) that serve the native wire, unchanged.
// ---------------------------------------------------------------------------

/// A parent handler as a runtime would write it: `O_PATH` for plain bind
/// mounts, `open_tree` for the chosen source; takes the seccomp fd by
/// `pidfd_getfd` and proves it is the Go child's stderr (our pipe).
struct Handler<'a> {
    open_tree: Option<&'a str>,
    stderr: Option<rustix::fs::Stat>,
    seccomp_taken: bool,
}

impl ParentHandler for Handler<'_> {
    fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
        use rustix::fs::{open, Mode, OFlags};
        use rustix::mount::{open_tree, OpenTreeFlags};
        if self.open_tree == Some(req.source.as_str()) {
            let fd = open_tree(
                rustix::fs::CWD,
                req.source.as_str(),
                OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
            )?;
            return Ok(MountSource {
                fd,
                kind: MountSourceKind::OpenTree,
            });
        }
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

    fn seccomp(&mut self, fd: SeccompFd<'_>) -> Result<(), HandlerError> {
        assert!(matches!(fd, SeccompFd::ChildFd(_)), "runc sends a number");
        let fd = fd.into_owned()?;
        let (got, want) = (rustix::fs::fstat(&fd).unwrap(), self.stderr.unwrap());
        assert_eq!((got.st_dev, got.st_ino), (want.st_dev, want.st_ino));
        self.seccomp_taken = true;
        Ok(())
    }
}

/// Starts the Go peer for a session: (socket on the runc wire, process).
fn spawn_go(args: &[&str], shape: MountShape) -> (SyncSocket, Child) {
    let GoPeer { sock, child } = GoPeer::spawn(args, shape);
    (sock, child)
}

#[test]
fn session_parent_serves_go_child() {
    // Lock first: building the peer opens fds the other tests would count.
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    let (d1, d2) = (TempDir::new("sp1"), TempDir::new("sp2"));
    for shape in SHAPES {
        let before = fd_count();
        let (m1, m2) = (format!("{}:/one", &*d1), format!("{}:/two", &*d2));
        let mut args = vec!["child", "-mode", "init", "-shape", shape.name()];
        args.extend(["-mount", &m1, "-mount", &m2]);
        if is_root() {
            args.extend(["-seccomp-fd", "2"]);
        }
        let (sock, child) = spawn_go(&args, shape);
        // The container's configuration: exactly what the Go child asks for.
        let configured = [
            Mount::bind(&*d1, "/one").recursive(),
            Mount::bind(&*d2, "/two").recursive(),
        ];
        let mut parent = Parent::new(sock, Flow::Init, configured)
            .with_deadline(WAIT)
            .with_child_process(&child)
            .unwrap();
        let mut h = Handler {
            open_tree: is_root().then_some(&*d2),
            stderr: Some(rustix::fs::fstat(child.stderr.as_ref().unwrap()).unwrap()),
            seccomp_taken: false,
        };
        let report = parent.serve(&mut h).unwrap();
        assert_eq!(parent.state(), State::Closed);
        drop(parent);
        let (code, out) = wait_go(child);
        assert_eq!(code, Some(0), "{shape:?}: go child failed:\n{out}");
        assert_eq!(report.mounts, 2);
        assert!(report.hooks && report.ready);
        assert_eq!(report.seccomp, is_root());
        assert_eq!(h.seccomp_taken, is_root());
        let kind2 = if is_root() { "open_tree" } else { "plain-open" };
        assert!(
            out.contains(&format!("mountfd {} plain-open ok", &*d1)),
            "{out}"
        );
        assert!(
            out.contains(&format!("mountfd {} {kind2} ok", &*d2)),
            "{out}"
        );
        assert_eq!(fd_count(), before, "{shape:?}: fd leaked");
    }
}

#[test]
fn session_parent_exec_flow_and_errors_with_go_child() {
    // Lock first: building the peer opens fds the other tests would count.
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    let before = fd_count();
    // Exec: Ready -> Run, then the child's close.
    let (sock, child) = spawn_go(&["child", "-mode", "exec"], MountShape::V1_2);
    let mut parent = Parent::new(sock, Flow::Exec, [])
        .with_deadline(WAIT)
        .with_child_process(&child)
        .unwrap();
    let report = parent.serve(&mut Handler {
        open_tree: None,
        stderr: None,
        seccomp_taken: false,
    });
    drop(parent);
    let (code, out) = wait_go(child);
    assert_eq!(code, Some(0), "{out}");
    let report = report.unwrap();
    assert!(report.ready && !report.hooks && report.mounts == 0);

    // The Go child's procError ends serve() as Remote, the peer's doing.
    let (sock, child) = spawn_go(
        &[
            "child",
            "-mode",
            "error",
            "-error-msg",
            "exec: \"/bin/sh\": ENOENT",
        ],
        MountShape::V1_2,
    );
    let mut parent = Parent::new(sock, Flow::Init, []).with_deadline(WAIT);
    let err = parent.serve(&mut Handler {
        open_tree: None,
        stderr: None,
        seccomp_taken: false,
    });
    drop(parent);
    assert_eq!(wait_go(child).0, Some(0));
    match err.unwrap_err() {
        SessionError::Remote { message } => assert_eq!(message, "exec: \"/bin/sh\": ENOENT"),
        other => panic!("{other:?}"),
    }

    // A mount outside the configuration: the policy refuses, the Go child
    // gets procError with the refusal and fails.
    let d = TempDir::new("spr");
    let m = format!("{}:/x", &*d);
    let (sock, child) = spawn_go(&["child", "-mode", "init", "-mount", &m], MountShape::V1_4);
    let mut parent =
        Parent::new(sock, Flow::Init, [Mount::bind("/elsewhere", "/x")]).with_deadline(WAIT);
    let err = parent
        .serve(&mut Handler {
            open_tree: None,
            stderr: None,
            seccomp_taken: false,
        })
        .unwrap_err();
    drop(parent);
    assert!(matches!(err, SessionError::MountRefused(_)), "{err:?}");
    let (code, out) = wait_go(child);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains(REFUSAL_PREFIX.trim_end()), "{out}");
    assert_eq!(fd_count(), before);
}

#[test]
fn session_child_against_go_parent() {
    // Lock first: building the peer opens fds the other tests would count.
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    let (d1, d2) = (TempDir::new("sc1"), TempDir::new("sc2"));
    let seccomp_src = File::open("/dev/null").unwrap();
    let me = std::process::id().to_string();
    for shape in SHAPES {
        let before = fd_count();
        let (sock, go) = spawn_go(&["parent", "-child-pid", &me], shape);
        let mut child = SessionChild::new(sock, Flow::Init).with_deadline(WAIT);
        for (d, dst) in [(&d1, "/one"), (&d2, "/two")] {
            let src = child
                .mount_source(&Mount::bind(&**d, dst).recursive())
                .unwrap();
            assert_eq!(src.kind, MountSourceKind::PlainOpen);
            assert_same_file(&src.fd, d);
        }
        child.hooks().unwrap();
        child.ready().unwrap();
        let n = seccomp_src.as_raw_fd();
        if is_root() {
            child.seccomp(SeccompHandoff::ChildFd(n)).unwrap();
            assert_eq!(child.state(), State::AfterSeccomp);
        }
        child.close().unwrap();
        let (code, out) = wait_go(go);
        assert_eq!(code, Some(0), "{shape:?}: go parent failed:\n{out}");
        if is_root() {
            assert!(out.contains(&format!("procSeccomp fd {n} copied")), "{out}");
        }
        assert!(out.contains("parent: eof"), "{out}");
        assert_eq!(fd_count(), before, "{shape:?}: fd leaked");
    }
    // Exec.
    let (sock, go) = spawn_go(&["parent"], MountShape::V1_2);
    let mut child = SessionChild::new(sock, Flow::Exec).with_deadline(WAIT);
    child.ready().unwrap();
    child.close().unwrap();
    let (code, out) = wait_go(go);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn session_child_sees_go_parent_errors_typed() {
    // Lock first: building the peer opens fds the other tests would count.
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    let d = TempDir::new("sce");
    // A refused mount: Remote, with runc's message.
    let (sock, go) = spawn_go(&["parent", "-fail-on", &d], MountShape::V1_2);
    let mut child = SessionChild::new(sock, Flow::Init).with_deadline(WAIT);
    match child.mount_source(&Mount::bind(&*d, "/x")).unwrap_err() {
        SessionError::Remote { message } => {
            assert!(message.contains("refusing mount source"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    drop(child);
    assert_eq!(wait_go(go).0, Some(1));
    // The child fails: the Go parent gets procError.
    let (sock, go) = spawn_go(&["parent"], MountShape::V1_2);
    let mut child = SessionChild::new(sock, Flow::Init).with_deadline(WAIT);
    child.fail("mounting /proc: EPERM").unwrap();
    drop(child);
    let (code, out) = wait_go(go);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains(r#"procError "mounting /proc: EPERM""#),
        "{out}"
    );
    // A broken fd record: a Transport error from the peer, fd closed.
    for mode in ["name-mismatch", "two-fds", "no-fd-record"] {
        let (sock, go) = spawn_go(&["parent", "-misbehave", mode], MountShape::V1_4);
        let with_peer = fd_count();
        let mut child = SessionChild::new(sock, Flow::Init).with_deadline(WAIT);
        let err = child.mount_source(&Mount::bind(&*d, "/x")).unwrap_err();
        assert_eq!(fd_count(), with_peer, "{mode}: fd leaked");
        assert_eq!(err.origin(), Origin::Peer, "{mode}: {err}");
        assert!(
            matches!(
                &err,
                SessionError::Transport {
                    source: TransportError::RuncDecode(_),
                    ..
                }
            ),
            "{mode}: {err:?}"
        );
        drop(child);
        assert_eq!(wait_go(go).0, Some(1));
    }
}

/// Issue 12.19: `runc exec` in every compatibility profile, procsync as the
/// parent of a Go runc-style child speaking that profile. Before
/// v1.2.0-rc.2 the child sends no Ready and the parent answers none.
#[test]
fn procsync_parent_serves_go_exec_child_in_every_profile() {
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    for profile in RuncProfile::ALL {
        let before = fd_count();
        let mut peer = GoPeer::spawn(
            &["child", "-mode", "exec", "-profile", profile.name()],
            profile.mount_shape(),
        );
        let t = serve(&mut peer, profile.exec_flow(), &ParentPlan::default());
        let (code, out) = peer.finish();
        assert_eq!(code, Some(0), "{}: {out}", profile.name());
        match profile.exec_flow() {
            Flow::ExecNoReady => {
                assert_eq!(t, ["eof"], "{}", profile.name());
                assert!(out.contains("child: exec without ready"), "{out}");
            }
            _ => {
                assert_eq!(t, ["Ready", "eof"], "{}", profile.name());
                assert!(out.contains("child: run"), "{out}");
            }
        }
        assert_eq!(fd_count(), before, "{}", profile.name());
    }
}

/// Issue 12.19, the other role: a procsync child runs `runc exec`'s order of
/// each profile against a Go runc-style parent of that profile. An old
/// parent refuses Ready (runc panicked on it); the newer child's Ready is
/// what it must not get.
#[test]
fn procsync_exec_child_against_go_parent_in_every_profile() {
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    for profile in RuncProfile::ALL {
        let mut peer = GoPeer::spawn(
            &["parent", "-mode", "exec", "-profile", profile.name()],
            profile.mount_shape(),
        );
        let mut c = ChildSide::new(profile.exec_flow());
        if profile.exec_flow() == Flow::Exec {
            let rec = c.request(&mut peer.sock, SyncMessage::ready()).unwrap();
            assert_eq!(rec.msg.kind(), Some(MessageType::Run));
        }
        assert_eq!(c.m.state(), State::Running, "{}", profile.name());
        c.m.check_close().unwrap();
        let (code, out) = peer.finish();
        assert_eq!(code, Some(0), "{}: {out}", profile.name());
        assert!(out.contains("parent: eof"), "{out}");
    }
    // The mismatch the issue reports: a newer child's Ready to an old parent.
    let mut peer = GoPeer::spawn(
        &["parent", "-mode", "exec", "-profile", "ba0b5e269"],
        MountShape::Seed,
    );
    peer.sock.send(&SyncMessage::ready(), None).unwrap();
    let (code, out) = peer.finish_after_exit();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("unexpected procReady in setns"), "{out}");
}

/// Issue 12.17 over a real socket: the seed commit's id-mapped request (Go
/// child, `-profile ba0b5e269`) reaches a procsync parent of that profile
/// as the id mapping it is, and a parent expecting v1.2 refuses it typed
/// instead of reading a plain bind.
#[test]
fn seed_id_mapped_request_is_read_or_refused_never_dropped() {
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    let dir = TempDir::new("seed");
    let args = [
        "child",
        "-mode",
        "init",
        "-profile",
        "ba0b5e269",
        "-mount",
        &format!("{}:/mnt", &*dir),
        "-idmap-range",
        "0:100000:65536",
    ];
    // The seed child's id mapping is non-recursive (the Go peer clears the
    // switch for that layout); read the request and check it.
    for (shape, ok) in [(MountShape::Seed, true), (MountShape::V1_2, false)] {
        let mut peer = GoPeer::spawn(&args, shape);
        let got = peer.sock.recv_deadline(deadline());
        match (ok, got) {
            (true, Ok(rec)) => {
                let m = rec.msg.mount().expect("a mount request").clone();
                let idm = m.id_mapping.expect("the id mapping is kept");
                assert_eq!(
                    idm.uid_mappings,
                    [procsync::schema::IdMap::new(0, 100000, 65536)]
                );
                assert!(!idm.recursive);
            }
            (false, Err(TransportError::RuncDecode(e))) => {
                assert_eq!(e.kind(), RuncErrorKind::UnknownField, "{e}");
            }
            (_, other) => panic!("{shape:?}: {other:?}"),
        }
        let _ = peer.finish();
    }
}

/// The session layer (what a runtime uses) in the exec flow of every
/// profile: a procsync `Parent` of that profile's exec flow serves a Go
/// runc-style exec child of that profile to the end, Ready or not.
#[test]
fn session_parent_serves_go_exec_child_in_every_profile() {
    let _g = serial();
    if peer_bin().is_none() {
        return;
    }
    for profile in RuncProfile::ALL {
        let before = fd_count();
        let (sock, child) = spawn_go(
            &["child", "-mode", "exec", "-profile", profile.name()],
            profile.mount_shape(),
        );
        let mut parent = Parent::new(sock, profile.exec_flow(), [])
            .with_deadline(WAIT)
            .with_child_process(&child)
            .unwrap();
        let report = parent.serve(&mut Handler {
            open_tree: None,
            stderr: None,
            seccomp_taken: false,
        });
        drop(parent);
        let (code, out) = wait_go(child);
        assert_eq!(code, Some(0), "{}: {out}", profile.name());
        let report = report.unwrap_or_else(|e| panic!("{}: {e}", profile.name()));
        assert_eq!(
            report.ready,
            profile.exec_flow() == Flow::Exec,
            "{}",
            profile.name()
        );
        assert_eq!(fd_count(), before, "{}", profile.name());
    }
}
