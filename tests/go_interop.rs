//! Cross-process interoperability with the Go implementation: the Go peer
//! program (`go/cmd/procsync-peer`, built with `go build` into
//! `CARGO_TARGET_TMPDIR`) on one end of a real sync socket, a Rust session
//! on the other.
//!
//! * Rust parent ⇄ Go child and Go parent ⇄ Rust child: the init flow with
//!   real fds for two temporary directories (the receiver proves each fd is
//!   the directory: fstat st_dev/st_ino against stat of the path), the exec
//!   flow, the seccomp hand-off (attached fd, and a child fd number copied
//!   with `pidfd_getfd(2)`), a remote Error, a refused mount request (the
//!   same refusal text from both implementations);
//! * a peer dying mid-flow: the Go side (`-die-after`) → the Rust side gets
//!   an error, not a hang; the Rust side (this test binary re-executed, and
//!   once with a grandchild holding the socket so no EOF comes) → the Go
//!   peer exits non-zero in bounded time.
//!
//! Without `go` on the PATH the tests print why and pass, unless `CI=true`
//! (then they fail). Every test holds one lock (fd counts) and checks that
//! /proc/self/fd has as many entries afterwards as before.

mod go_build;
mod support;

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child as Process, Command, Stdio};
use std::sync::{MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use procsync::policy::{ConfiguredMounts, MountPolicy, PolicyRefusal};
use procsync::schema::{Mount, MountSourceKind};
use procsync::session::{
    error_reply, refusal_text, Child, HandlerError, MountSource, Parent, ParentHandler, SeccompFd,
    SeccompHandoff, SessionError, REFUSAL_PREFIX, TRUNCATION_MARK,
};
use procsync::state::{Flow, State};
use procsync::transport::{Origin, SyncSocket, Wire, ENV_SYNC_FD};
use procsync::wire::Limits;

/// The directory the re-executed Rust peer mounts / serves.
const DIR_VAR: &str = "PROCSYNC_GO_INTEROP_DIR";

/// How long any one wait may take before the test calls it a hang.
const BOUND: Duration = Duration::from_secs(15);

use support::{fd_count, serial};

/// The Go peer binary, built once per test run; `None` (with the reason
/// printed) when Go is not installed and this is not CI.
fn go_peer() -> Option<&'static Path> {
    static PEER: OnceLock<Option<PathBuf>> = OnceLock::new();
    go_build::go_binary(&PEER, "cmd/procsync-peer")
}

/// Holds the lock, builds the peer and remembers the fd count; checks the
/// count again when dropped at the end of a passing test.
struct Guard {
    _lock: MutexGuard<'static, ()>,
    fds: usize,
}

fn start() -> Option<(Guard, &'static Path)> {
    let lock = serial();
    let peer = go_peer()?;
    Some((
        Guard {
            _lock: lock,
            fds: fd_count(),
        },
        peer,
    ))
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_eq!(fd_count(), self.fds, "fds leaked");
        }
    }
}

/// Two fresh directories; removed on drop.
struct Dirs(Vec<PathBuf>);

impl Dirs {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Dirs(
            (0..2)
                .map(|i| {
                    let d = std::env::temp_dir().join(format!(
                        "procsync-go-interop-{}-{k}-{i}",
                        std::process::id()
                    ));
                    std::fs::create_dir_all(&d).unwrap();
                    d
                })
                .collect(),
        )
    }

    fn get(&self, i: usize) -> String {
        self.0[i].display().to_string()
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The mount the Go peer's `-mount SRC:DST` stands for.
fn bind(src: &str, dst: &str) -> Mount {
    Mount::bind(src, dst)
}

/// Spawns the Go peer with `end` as its sync socket (`-fd-env`).
fn spawn_go(peer: &Path, end: &SyncSocket, args: &[&str]) -> Process {
    let mut cmd = Command::new(peer);
    cmd.arg("-fd-env")
        .args(["-timeout", "10s"])
        .args(args)
        .env_remove(ENV_SYNC_FD)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    end.pass_to_child(&mut cmd).unwrap();
    cmd.spawn().unwrap()
}

/// A process's exit code, stdout and stderr; kills it after [`BOUND`]
/// (which fails the test: it hung).
struct Exit {
    code: Option<i32>,
    out: String,
    err: String,
    took: Duration,
}

impl Exit {
    fn lines(&self) -> Vec<&str> {
        self.out.lines().collect()
    }

    fn has_line(&self, line: &str) -> bool {
        self.out.lines().any(|l| l == line)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.took, self.out, self.err
        )
    }
}

fn finish(mut p: Process) -> Exit {
    let start = Instant::now();
    let status = support::proc::wait_bounded(&mut p, BOUND).unwrap_or_else(|st| {
        eprintln!("peer hung; killed after {BOUND:?}");
        st
    });
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = p.stdout.take() {
        o.read_to_string(&mut out).unwrap();
    }
    if let Some(mut e) = p.stderr.take() {
        e.read_to_string(&mut err).unwrap();
    }
    Exit {
        code: status.code(),
        out,
        err,
        took: start.elapsed(),
    }
}

/// Proves `fd` is the directory at `path`: same st_dev and st_ino.
fn same_dir(fd: &OwnedFd, path: &str) {
    let st = rustix::fs::fstat(fd).unwrap();
    let md = std::fs::metadata(path).unwrap();
    assert!(md.is_dir());
    assert_eq!(
        (st.st_dev, st.st_ino),
        (md.dev(), md.ino()),
        "the fd is not {path}"
    );
}

/// The Go child's `verify` line for `path`.
fn verify_line(path: &str) -> String {
    let md = std::fs::metadata(path).unwrap();
    format!(
        "verify source={path} fd-target={path} dev:ino={}:{} ok",
        md.dev(),
        md.ino()
    )
}

/// A Rust parent handler: O_PATH sources, records what it did; the
/// seccomp fd's file type.
#[derive(Default)]
struct Handler {
    mounts: Vec<String>,
    hooks: usize,
    seccomp_mode: Option<u32>,
}

impl ParentHandler for Handler {
    fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
        use rustix::fs::{open, Mode, OFlags};
        self.mounts.push(req.source.clone());
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

    fn seccomp(&mut self, fd: SeccompFd<'_>) -> Result<(), HandlerError> {
        let fd = fd.into_owned()?;
        let st = rustix::fs::fstat(&fd)?;
        self.seccomp_mode = Some(st.st_mode & libc::S_IFMT);
        Ok(())
    }
}

/// A Rust parent for `proc` on `sock`, bounded by its pidfd and a deadline.
fn rust_parent(sock: SyncSocket, flow: Flow, mounts: Vec<Mount>, proc: &Process) -> Parent {
    Parent::new(sock, flow, mounts)
        .with_child_process(proc)
        .unwrap()
        .with_deadline(Duration::from_secs(10))
}

fn rust_child(sock: SyncSocket, flow: Flow) -> Child {
    Child::new(sock, flow).with_deadline(Duration::from_secs(10))
}

// ---------------------------------------------------------------------------
// Rust parent ⇄ Go child
// ---------------------------------------------------------------------------

#[test]
fn rust_parent_go_child_init_flow_with_real_fds() {
    let Some((_g, peer)) = start() else { return };
    let dirs = Dirs::new();
    let (a, b) = (dirs.get(0), dirs.get(1));
    let (sock, end) = SyncSocket::pair().unwrap();
    let go = spawn_go(
        peer,
        &end,
        &[
            "-role",
            "child",
            "-mount",
            &format!("{a}:/a"),
            "-mount",
            &format!("{b}:/b"),
        ],
    );
    drop(end);
    let mut h = Handler::default();
    let mut parent = rust_parent(sock, Flow::Init, vec![bind(&a, "/a"), bind(&b, "/b")], &go);
    let report = parent.serve(&mut h);
    let exit = finish(go);
    let report = report.unwrap_or_else(|e| panic!("serve: {e}\n{exit}"));
    assert_eq!(exit.code, Some(0), "{exit}");
    assert_eq!((report.mounts, report.hooks, report.ready), (2, true, true));
    assert_eq!(h.mounts, [a.clone(), b.clone()]);
    assert_eq!(parent.state(), State::Closed);
    // The Go child proved each fd is the directory it asked for.
    assert!(exit.has_line(&verify_line(&a)), "{exit}");
    assert!(exit.has_line(&verify_line(&b)), "{exit}");
    assert_eq!(exit.lines().last().copied(), Some("done"), "{exit}");
}

#[test]
fn rust_parent_go_child_exec_flow_with_an_attached_seccomp_fd() {
    let Some((_g, peer)) = start() else { return };
    let (sock, end) = SyncSocket::pair().unwrap();
    let go = spawn_go(
        peer,
        &end,
        &["-role", "child", "-flow", "exec", "-seccomp", "attached"],
    );
    drop(end);
    let mut h = Handler::default();
    let report = rust_parent(sock, Flow::Exec, vec![], &go).serve(&mut h);
    let exit = finish(go);
    let report = report.unwrap_or_else(|e| panic!("serve: {e}\n{exit}"));
    assert_eq!(exit.code, Some(0), "{exit}");
    assert!(report.ready && report.seccomp && !report.hooks);
    // The Go child attaches a pipe as its notify-fd stand-in.
    assert_eq!(h.seccomp_mode, Some(libc::S_IFIFO));
    assert!(
        exit.has_line("send Seccomp transfer=attached fd=1"),
        "{exit}"
    );
}

#[test]
fn rust_parent_copies_the_go_childs_seccomp_fd_with_pidfd_getfd() {
    let Some((_g, peer)) = start() else { return };
    let (sock, end) = SyncSocket::pair().unwrap();
    let go = spawn_go(peer, &end, &["-role", "child", "-seccomp", "child-fd"]);
    drop(end);
    let mut h = Handler::default();
    let report = rust_parent(sock, Flow::Init, vec![], &go).serve(&mut h);
    let exit = finish(go);
    let report = report.unwrap_or_else(|e| panic!("serve: {e}\n{exit}"));
    assert_eq!(exit.code, Some(0), "{exit}");
    assert!(report.seccomp);
    // The Go child names its stderr (fd 2): our pipe.
    assert_eq!(h.seccomp_mode, Some(libc::S_IFIFO));
    assert!(exit.has_line("send Seccomp child-fd=2"), "{exit}");
}

#[test]
fn a_go_childs_error_reaches_the_rust_parent() {
    let Some((_g, peer)) = start() else { return };
    let (sock, end) = SyncSocket::pair().unwrap();
    let go = spawn_go(
        peer,
        &end,
        &["-role", "child", "-fail-with", "cannot pivot_root: EINVAL"],
    );
    drop(end);
    let r = rust_parent(sock, Flow::Init, vec![], &go).serve(&mut Handler::default());
    let exit = finish(go);
    match r {
        Err(SessionError::Remote { message }) => assert_eq!(message, "cannot pivot_root: EINVAL"),
        other => panic!("got {other:?}\n{exit}"),
    }
    assert_eq!(exit.code, Some(0), "{exit}");
}

/// An Error text too long for the sender's record limit is cut the same
/// way by both languages (PROTOCOL §11: at a UTF-8 boundary, the longest
/// prefix that fits with ` […truncated]`, without the mark under a limit
/// with no room for it and four more bytes): the Go child's `Fail` under a
/// small limit arrives as exactly what the Rust session would have sent.
#[test]
fn a_long_error_text_is_cut_alike_in_both_languages() {
    let Some((_g, peer)) = start() else { return };
    let text = format!("cannot pivot_root: {}", "\u{e9}".repeat(5000));
    // 16–31: limits too small for the mark plus a character (the text is
    // cut without it) and the band around that edge.
    for max in [
        16usize, 17, 20, 21, 22, 25, 26, 27, 30, 31, 32, 64, 128, 4096, 65536,
    ] {
        let (sock, end) = SyncSocket::pair().unwrap();
        let limit = max.to_string();
        let go = spawn_go(
            peer,
            &end,
            &["-role", "child", "-max-record", &limit, "-fail-with", &text],
        );
        drop(end);
        let r = rust_parent(sock, Flow::Init, vec![], &go).serve(&mut Handler::default());
        let exit = finish(go);
        let want = error_reply(&text, Wire::Native, &Limits::with_max_record(max));
        let want = want.error_message().unwrap();
        match r {
            Err(SessionError::Remote { message }) => {
                assert_eq!(message, want, "limit {max}");
                assert!(!message.is_empty(), "limit {max}");
                if (32..65536).contains(&max) {
                    assert!(message.ends_with(TRUNCATION_MARK), "limit {max}");
                }
            }
            other => panic!("limit {max}: got {other:?}\n{exit}"),
        }
        assert_eq!(exit.code, Some(0), "{exit}");
    }
}

#[test]
fn the_rust_parent_refuses_an_unlisted_mount_and_the_go_child_gets_the_reason() {
    let Some((_g, peer)) = start() else { return };
    let dirs = Dirs::new();
    let (a, b) = (dirs.get(0), dirs.get(1));
    let (sock, end) = SyncSocket::pair().unwrap();
    // The child asks for b at /a: not configured (differs in source).
    let go = spawn_go(
        peer,
        &end,
        &[
            "-role",
            "child",
            "-mount",
            &format!("{a}:/a"),
            "-request-unlisted",
            &format!("{b}:/a"),
        ],
    );
    drop(end);
    let mut h = Handler::default();
    let r = rust_parent(sock, Flow::Init, vec![bind(&a, "/a")], &go).serve(&mut h);
    let exit = finish(go);
    let refusal = match r {
        Err(SessionError::MountRefused(r @ PolicyRefusal::NotConfigured { .. })) => r,
        other => panic!("got {other:?}\n{exit}"),
    };
    assert_eq!(h.mounts, [a], "the refused source was opened");
    assert_eq!(exit.code, Some(0), "{exit}");
    let text = refusal_text(&refusal);
    assert!(text.ends_with("(the configured mount at \"/a\" differs in source)"));
    assert!(
        exit.has_line(&format!("refused source={b} message={text:?}")),
        "want {text:?}\n{exit}"
    );
}

#[test]
fn a_go_child_dying_mid_flow_ends_serve_with_an_error() {
    let Some((_g, peer)) = start() else { return };
    let dirs = Dirs::new();
    let a = dirs.get(0);
    // Not "Ready": a child that dies right after Ready may still be sent
    // Run, and its close in Running is orderly.
    for step in ["start", "MountPlease", "MountFd", "Hooks"] {
        let (sock, end) = SyncSocket::pair().unwrap();
        let go = spawn_go(
            peer,
            &end,
            &[
                "-role",
                "child",
                "-mount",
                &format!("{a}:/a"),
                "-die-after",
                step,
            ],
        );
        drop(end);
        let started = Instant::now();
        let r =
            rust_parent(sock, Flow::Init, vec![bind(&a, "/a")], &go).serve(&mut Handler::default());
        assert!(started.elapsed() < Duration::from_secs(5), "{step}: slow");
        let exit = finish(go);
        assert_eq!(exit.code, Some(3), "{step}: {exit}");
        match r {
            Err(e) => assert_eq!(e.origin(), Origin::Peer, "{step}: {e}"),
            Ok(rep) => panic!("{step}: served {rep:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Go parent ⇄ Rust child
// ---------------------------------------------------------------------------

fn my_pid() -> String {
    std::process::id().to_string()
}

#[test]
fn go_parent_rust_child_init_flow_with_real_fds() {
    let Some((_g, peer)) = start() else { return };
    let dirs = Dirs::new();
    let (a, b) = (dirs.get(0), dirs.get(1));
    let (sock, end) = SyncSocket::pair().unwrap();
    let go = spawn_go(
        peer,
        &end,
        &[
            "-role",
            "parent",
            "-mount",
            &format!("{a}:/a"),
            "-mount",
            &format!("{b}:/b"),
        ],
    );
    drop(end);
    let mut child = rust_child(sock, Flow::Init);
    for (src, dst) in [(&a, "/a"), (&b, "/b")] {
        let source = child.mount_source(&bind(src, dst)).unwrap();
        assert_eq!(source.kind, MountSourceKind::PlainOpen);
        same_dir(&source.fd, src);
    }
    child.hooks().unwrap();
    child.ready().unwrap();
    assert_eq!(child.state(), State::Running);
    child.close().unwrap();
    let exit = finish(go);
    assert_eq!(exit.code, Some(0), "{exit}");
    assert!(
        exit.has_line(&format!("send MountFd kind=plain-open source={b} fd=1")),
        "{exit}"
    );
    assert_eq!(exit.lines().last().copied(), Some("done"), "{exit}");
}

#[test]
fn go_parent_rust_child_exec_flow_with_an_attached_seccomp_fd() {
    let Some((_g, peer)) = start() else { return };
    let (sock, end) = SyncSocket::pair().unwrap();
    let go = spawn_go(peer, &end, &["-role", "parent", "-flow", "exec"]);
    drop(end);
    let mut child = rust_child(sock, Flow::Exec);
    child.ready().unwrap();
    let (r, w) = rustix::pipe::pipe().unwrap();
    child.seccomp(SeccompHandoff::Attached(w.as_fd())).unwrap();
    assert_eq!(child.state(), State::AfterSeccomp);
    child.close().unwrap();
    drop((r, w));
    let exit = finish(go);
    assert_eq!(exit.code, Some(0), "{exit}");
    assert!(exit.has_line("seccomp fd ok mode=010000"), "{exit}");
}

#[test]
fn the_go_parent_copies_the_rust_childs_seccomp_fd_with_pidfd_getfd() {
    let Some((_g, peer)) = start() else { return };
    let (sock, end) = SyncSocket::pair().unwrap();
    let go = spawn_go(
        peer,
        &end,
        &["-role", "parent", "-flow", "exec", "-peer-pid", &my_pid()],
    );
    drop(end);
    let mut child = rust_child(sock, Flow::Exec);
    child.ready().unwrap();
    let (r, w) = rustix::pipe::pipe().unwrap();
    use std::os::fd::AsRawFd;
    let n = w.as_raw_fd();
    child.seccomp(SeccompHandoff::ChildFd(n)).unwrap();
    child.close().unwrap();
    drop((r, w));
    let exit = finish(go);
    assert_eq!(exit.code, Some(0), "{exit}");
    assert!(
        exit.has_line(&format!("seccomp child-fd={n} copied mode=010000 ok")),
        "{exit}"
    );
}

#[test]
fn a_rust_childs_error_reaches_the_go_parent() {
    let Some((_g, peer)) = start() else { return };
    let (sock, end) = SyncSocket::pair().unwrap();
    let go = spawn_go(peer, &end, &["-role", "parent"]);
    drop(end);
    let mut child = rust_child(sock, Flow::Init);
    child.hooks().unwrap();
    child.fail("rootfs: mount /proc: EPERM").unwrap();
    assert_eq!(child.state(), State::Failed);
    child.close().unwrap();
    let exit = finish(go);
    assert_eq!(exit.code, Some(5), "{exit}");
    assert!(
        exit.has_line(r#"child-failed message="rootfs: mount /proc: EPERM""#),
        "{exit}"
    );
}

#[test]
fn the_go_parent_refuses_an_unlisted_mount_with_the_same_refusal_kind() {
    let Some((_g, peer)) = start() else { return };
    let dirs = Dirs::new();
    let (a, b) = (dirs.get(0), dirs.get(1));
    // What the Rust policy decides for the same configuration and requests:
    // the refusal's kind is the contract; each language words the text its
    // own way after the spec's prefix (PROTOCOL.md §10).
    let mut policy = ConfiguredMounts::new([bind(&a, "/a")]);
    policy.check(&bind(&a, "/a")).unwrap();
    // Already served; differs in source; not configured at all; and a
    // path whose quoting needs escapes.
    let cases = [
        bind(&a, "/a"),
        bind(&b, "/a"),
        bind(&b, "/b"),
        bind("/no\"such\\dir\t\u{e9}\u{1b}\n", "/a"),
    ];
    let want: Vec<&str> = cases
        .iter()
        .map(|m| policy.check(m).unwrap_err().kind().as_str())
        .collect();
    // One conversation per refusal (the parent ends after refusing).
    for (req, want) in cases.iter().zip(&want) {
        let (sock, end) = SyncSocket::pair().unwrap();
        let go = spawn_go(
            peer,
            &end,
            &["-role", "parent", "-mount", &format!("{a}:/a")],
        );
        drop(end);
        let mut child = rust_child(sock, Flow::Init);
        let first = child.mount_source(&bind(&a, "/a")).unwrap();
        same_dir(&first.fd, &a);
        drop(first);
        let got = child.mount_source(req);
        match &got {
            Err(SessionError::Remote { message }) => {
                assert!(message.starts_with(REFUSAL_PREFIX), "{message}")
            }
            other => panic!("{req:?}: got {other:?}"),
        }
        assert_eq!(child.state(), State::Failed);
        child.close().unwrap();
        let exit = finish(go);
        assert_eq!(exit.code, Some(4), "{exit}");
        // (The transcript is not escaped: search the whole text.)
        assert!(
            exit.out
                .contains(&format!("\nrefuse MountPlease source={} ", req.source))
                && exit.out.contains(&format!(" kind={want} ")),
            "{exit}"
        );
    }
}

#[test]
fn a_go_parent_dying_mid_flow_fails_the_rust_child() {
    let Some((_g, peer)) = start() else { return };
    let dirs = Dirs::new();
    let a = dirs.get(0);
    for step in ["MountPlease", "Hooks", "Ready"] {
        let (sock, end) = SyncSocket::pair().unwrap();
        let go = spawn_go(
            peer,
            &end,
            &[
                "-role",
                "parent",
                "-mount",
                &format!("{a}:/a"),
                "-die-after",
                step,
            ],
        );
        drop(end);
        let mut child = rust_child(sock, Flow::Init);
        let started = Instant::now();
        let r = (|| {
            drop(child.mount_source(&bind(&a, "/a"))?);
            child.hooks()?;
            child.ready()
        })();
        assert!(started.elapsed() < Duration::from_secs(5), "{step}: slow");
        match r {
            Err(SessionError::Violation(e)) => {
                assert_eq!(e.state().awaited_request().map(|t| t.name()), Some(step));
            }
            other => panic!("{step}: got {other:?}"),
        }
        let exit = finish(go);
        assert_eq!(exit.code, Some(3), "{step}: {exit}");
    }
}

// ---------------------------------------------------------------------------
// The Rust side dying (this binary re-executed as the Rust peer)
// ---------------------------------------------------------------------------

/// Not a test: the entry point of the Rust peer processes the tests spawn.
#[test]
#[ignore = "entry point of the Rust peer processes the other tests spawn"]
fn rust_peer_entry() {
    support::peer::run(play_rust_peer);
}

/// The Rust peer playing `role` (it always exits the process itself).
fn play_rust_peer(role: &str) -> i32 {
    let dir = std::env::var(DIR_VAR).unwrap();
    // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
    let sock = unsafe { SyncSocket::from_env() }.expect("rust peer: from_env");
    match role {
        "parent-dies-at-hooks" => {
            struct DieAtHooks;
            impl ParentHandler for DieAtHooks {
                fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
                    Handler::default().mount(req)
                }
                fn hooks(&mut self) -> Result<(), HandlerError> {
                    std::process::exit(3)
                }
            }
            let _ = Parent::new(sock, Flow::Init, [bind(&dir, "/a")]).serve(&mut DieAtHooks);
            std::process::exit(1)
        }
        "child-dies-after-mount-held" => {
            // A grandchild inherits the socket and keeps it open: the Go
            // parent never reads EOF and must notice our death by pidfd.
            let mut holder = Command::new("sleep");
            holder
                .arg("30")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            sock.pass_to_child(&mut holder).unwrap();
            let holder = holder.spawn().unwrap();
            println!("HOLDER {}", holder.id());
            let mut child = Child::new(sock, Flow::Init);
            let source = child.mount_source(&bind(&dir, "/a")).unwrap();
            same_dir(&source.fd, &dir);
            std::process::exit(3)
        }
        other => panic!("unknown role {other}"),
    }
}

fn spawn_rust_peer(role: &str, dir: &str, end: &SyncSocket) -> Process {
    let mut cmd = support::peer::entry_command("rust_peer_entry", role);
    cmd.env(DIR_VAR, dir).stderr(Stdio::piped());
    end.pass_to_child(&mut cmd).unwrap();
    cmd.spawn().unwrap()
}

#[test]
fn a_rust_parent_dying_mid_flow_fails_the_go_child_in_bounded_time() {
    let Some((_g, peer)) = start() else { return };
    let dirs = Dirs::new();
    let a = dirs.get(0);
    let (parent_end, child_end) = SyncSocket::pair().unwrap();
    let rust = spawn_rust_peer("parent-dies-at-hooks", &a, &parent_end);
    drop(parent_end);
    let go = spawn_go(
        peer,
        &child_end,
        &["-role", "child", "-mount", &format!("{a}:/a")],
    );
    drop(child_end);
    let go_exit = finish(go);
    let rust_exit = finish(rust);
    assert_eq!(rust_exit.code, Some(3), "{rust_exit}");
    assert_eq!(go_exit.code, Some(1), "{go_exit}");
    assert!(go_exit.took < Duration::from_secs(5), "{go_exit}");
    assert!(go_exit.has_line(&verify_line(&a)), "{go_exit}");
    assert!(
        go_exit
            .err
            .contains("parent closed while Hooks was pending"),
        "{go_exit}"
    );
}

#[test]
fn a_rust_child_dying_while_a_grandchild_holds_the_socket_fails_the_go_parent() {
    let Some((_g, peer)) = start() else { return };
    let dirs = Dirs::new();
    let a = dirs.get(0);
    let (parent_end, child_end) = SyncSocket::pair().unwrap();
    let rust = spawn_rust_peer("child-dies-after-mount-held", &a, &child_end);
    drop(child_end);
    let rust_pid = rust.id().to_string();
    let go = spawn_go(
        peer,
        &parent_end,
        &[
            "-role",
            "parent",
            "-mount",
            &format!("{a}:/a"),
            "-peer-pid",
            &rust_pid,
        ],
    );
    drop(parent_end);
    let rust_exit = finish(rust);
    let go_exit = finish(go);
    // Stop the holder before judging anything.
    let holder: Option<i32> = rust_exit
        .out
        .lines()
        .find_map(|l| l.strip_prefix("HOLDER ")?.trim().parse().ok());
    if let Some(pid) = holder {
        // SAFETY: kill(2) with a pid our peer reported for its own child;
        // no memory is involved.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(holder.is_some(), "{rust_exit}");
    assert_eq!(rust_exit.code, Some(3), "{rust_exit}");
    assert_eq!(go_exit.code, Some(1), "{go_exit}");
    assert!(go_exit.took < Duration::from_secs(5), "{go_exit}");
    assert!(go_exit.err.contains("peer process died"), "{go_exit}");
}
