//! The peer processes of `tests/fault_matrix.rs`: the test binary
//! re-executed as a peer (`support::peer`), running the ignored
//! `fault_peer_entry` test.
//!
//! * `child` — a scripted child that speaks the init flow correctly at the
//!   transport level and dies (SIGKILL), stops (SIGSTOP) or dies while a
//!   grandchild holds its end of the socket, exactly at one [`Point`]. It is
//!   scripted (not a `session::Child`) so the point can sit between a send
//!   and the next receive.
//! * `parent` — a scripted parent that answers the init flow and dies at one
//!   [`Point`] (optionally leaving a helper process holding its end).
//! * `session-child` — the real `session::Child` under test, against the
//!   dying scripted parent; prints `RESULT` lines naming how its call ended.
//! * `never-reads` — a child that keeps asking for mounts and never reads
//!   a reply (the parent's sends must hit its deadline).
//! * `hold` — a grandchild that keeps the inherited socket open.
#![allow(dead_code)]

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Command, Stdio};

pub use crate::support::fd_count;
use std::time::{Duration, Instant};

use procsync::schema::{MessageType, Mount, MountSourceKind, SyncMessage};
use procsync::session::{Child, SeccompHandoff, SessionError};
use procsync::state::Flow;
use procsync::transport::{SyncSocket, TransportError};

/// Where the peer dies or stops: `before:MountPlease`, `after:Run`, ...
pub const POINT_VAR: &str = "PROCSYNC_FAULT_POINT";
/// What happens at the point: `kill`, `stop` or `holder-kill`.
pub const FATE_VAR: &str = "PROCSYNC_FAULT_FATE";
/// The pid of the (scripted) parent, for the session child's pidfd.
pub const PEER_PID_VAR: &str = "PROCSYNC_FAULT_PEER_PID";

/// Every bounded wait in the peers (they never outlive a broken test long).
pub const PEER_WAIT: Duration = Duration::from_secs(10);

/// The eight messages of the init flow, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    MountPlease,
    MountFd,
    Hooks,
    HooksDone,
    Ready,
    Run,
    Seccomp,
    SeccompDone,
}

/// The init flow with one mount and an attached seccomp fd.
pub const STEPS: [Step; 8] = [
    Step::MountPlease,
    Step::MountFd,
    Step::Hooks,
    Step::HooksDone,
    Step::Ready,
    Step::Run,
    Step::Seccomp,
    Step::SeccompDone,
];

impl Step {
    /// Sent by the child (a request) rather than by the parent (a reply).
    pub fn is_request(self) -> bool {
        matches!(
            self,
            Step::MountPlease | Step::Hooks | Step::Ready | Step::Seccomp
        )
    }

    /// The message type on the wire.
    pub fn ty(self) -> MessageType {
        match self {
            Step::MountPlease => MessageType::MountPlease,
            Step::MountFd => MessageType::MountFd,
            Step::Hooks => MessageType::Hooks,
            Step::HooksDone => MessageType::HooksDone,
            Step::Ready => MessageType::Ready,
            Step::Run => MessageType::Run,
            Step::Seccomp => MessageType::Seccomp,
            Step::SeccompDone => MessageType::SeccompDone,
        }
    }

    fn parse(s: &str) -> Option<Step> {
        STEPS.into_iter().find(|st| format!("{st:?}") == s)
    }
}

/// Just before or just after a step, seen from the process that dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Before,
    After,
}

/// One point of the init flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub when: When,
    pub step: Step,
}

impl Point {
    pub const fn before(step: Step) -> Self {
        Point {
            when: When::Before,
            step,
        }
    }

    pub const fn after(step: Step) -> Self {
        Point {
            when: When::After,
            step,
        }
    }

    /// `before:MountPlease`: the env value and the case's name.
    pub fn name(self) -> String {
        let w = match self.when {
            When::Before => "before",
            When::After => "after",
        };
        format!("{w}:{:?}", self.step)
    }

    fn parse(s: &str) -> Option<Point> {
        let (w, st) = s.split_once(':')?;
        let when = match w {
            "before" => When::Before,
            "after" => When::After,
            _ => return None,
        };
        Some(Point {
            when,
            step: Step::parse(st)?,
        })
    }
}

/// What the peer does at its point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// SIGKILL itself.
    Kill,
    /// SIGSTOP itself (the test kills it afterwards).
    Stop,
    /// Start a helper that inherits its end of the socket first, then SIGKILL
    /// itself at the point: end-of-file never comes, only the pidfd tells.
    HolderKill,
}

impl Fate {
    pub fn name(self) -> &'static str {
        match self {
            Fate::Kill => "kill",
            Fate::Stop => "stop",
            Fate::HolderKill => "holder-kill",
        }
    }

    fn parse(s: &str) -> Option<Fate> {
        [Fate::Kill, Fate::Stop, Fate::HolderKill]
            .into_iter()
            .find(|f| f.name() == s)
    }
}

/// The one mount of the scripted init flow (the parent's configured mount).
pub fn the_mount() -> Mount {
    Mount::bind(std::env::temp_dir().display().to_string(), "/mnt/0").recursive()
}

/// A command re-running this test binary as a fault peer playing `role`.
pub fn fault_command(role: &str) -> Command {
    crate::support::peer::entry_command("fault_peer_entry", role)
}

/// Waits until `fd` is readable (a record, end-of-file, or — for a pidfd —
/// the process's exit), at most `limit`. Whether it became readable.
pub fn wait_readable(fd: BorrowedFd<'_>, limit: Duration) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut pfd = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut pfd, Some(&ts)) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// A pidfd for `pid`.
pub fn pidfd(pid: u32) -> OwnedFd {
    rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap()
}

fn result(line: impl std::fmt::Display) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "RESULT {line}");
    let _ = o.flush();
}

fn env_point() -> Option<Point> {
    std::env::var(POINT_VAR).ok().and_then(|s| Point::parse(&s))
}

fn env_fate() -> Fate {
    std::env::var(FATE_VAR)
        .ok()
        .and_then(|s| Fate::parse(&s))
        .unwrap_or(Fate::Kill)
}

/// Meets this process's fate at its point. Never returns.
fn meet(fate: Fate) -> ! {
    use rustix::process::{getpid, kill_process, Signal};
    let sig = match fate {
        Fate::Kill | Fate::HolderKill => Signal::KILL,
        Fate::Stop => Signal::STOP,
    };
    kill_process(getpid(), sig).unwrap();
    // Only a stopped peer gets here, once the test has let it go on (it
    // kills it instead): leave with a code the test would notice.
    std::thread::sleep(PEER_WAIT);
    std::process::exit(3)
}

/// Starts the `hold` helper with `sock` inherited; prints its pid.
fn spawn_holder(sock: &SyncSocket) {
    let mut cmd = fault_command("hold");
    // Not our stdout: the test reads ours to end-of-file.
    cmd.stdout(Stdio::null());
    sock.pass_to_child(&mut cmd).unwrap();
    let h = cmd.spawn().unwrap();
    result(format!("holder {}", h.id()));
    // Never waited for: we die first; init reaps it.
    std::mem::forget(h);
}

/// The entry point of a re-executed fault peer.
pub fn fault_peer_main() {
    crate::support::peer::run(|role| match role {
        "child" => scripted_child(),
        "parent" => scripted_parent(),
        "session-child" => session_child(),
        "never-reads" => never_reads(),
        "hold" => {
            // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
            let _s = unsafe { SyncSocket::from_env() }.unwrap();
            std::thread::sleep(Duration::from_secs(20));
            0
        }
        other => {
            result(format!("unknown role {other}"));
            1
        }
    });
}

/// A child speaking the init flow correctly, meeting its fate at the point.
fn scripted_child() -> i32 {
    // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
    let mut sock = unsafe { SyncSocket::from_env() }.unwrap();
    let point = env_point();
    let fate = env_fate();
    if fate == Fate::HolderKill {
        spawn_holder(&sock);
    }
    let notify = rustix::fs::memfd_create("notify", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    for step in STEPS {
        if point == Some(Point::before(step)) {
            if !step.is_request() {
                // The reply is there, unread.
                assert!(wait_readable(sock.as_fd(), PEER_WAIT), "no {step:?}");
            }
            meet(fate);
        }
        if step.is_request() {
            let (msg, fd) = match step {
                Step::MountPlease => (SyncMessage::mount_please(the_mount()), None),
                Step::Hooks => (SyncMessage::hooks(), None),
                Step::Ready => (SyncMessage::ready(), None),
                _ => (SyncMessage::seccomp_attached(), Some(notify.as_fd())),
            };
            sock.send(&msg, fd).unwrap();
        } else {
            let r = sock
                .recv_deadline(Some(Instant::now() + PEER_WAIT))
                .unwrap();
            if r.msg.kind() != Some(step.ty()) {
                result(format!("expected {step:?}, got {:?}", r.msg.kind()));
                return 1;
            }
        }
        if point == Some(Point::after(step)) {
            meet(fate);
        }
    }
    // No point: the orderly end (close after SeccompDone).
    0
}

/// How many MountPlease the `never-reads` child sends.
pub const NEVER_READS_REQUESTS: usize = 5000;

/// A child that asks for many mounts (each a different source) and never
/// reads a reply: the parent's replies pile up in its receive queue until
/// the parent's sends would block. It stays alive (blocked in its own send
/// or asleep) until the test kills it.
fn never_reads() -> i32 {
    // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
    let mut sock = unsafe { SyncSocket::from_env() }.unwrap();
    for i in 0..NEVER_READS_REQUESTS {
        let m = Mount::bind(format!("/srv/{i}"), format!("/mnt/{i}"));
        if sock.send(&SyncMessage::mount_please(m), None).is_err() {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(20));
    0
}

/// A parent answering the init flow, meeting its fate at the point.
fn scripted_parent() -> i32 {
    // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
    let mut sock = unsafe { SyncSocket::from_env() }.unwrap();
    let point = env_point();
    let fate = env_fate();
    if fate == Fate::HolderKill {
        spawn_holder(&sock);
    }
    let open_source = || {
        use rustix::fs::{open, Mode, OFlags};
        open(
            the_mount().source.as_str(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    };
    for step in STEPS {
        if point == Some(Point::before(step)) {
            if step.is_request() {
                // The request is there, unread.
                assert!(wait_readable(sock.as_fd(), PEER_WAIT), "no {step:?}");
            } else if step == Step::MountFd {
                // The source is made, not yet sent: it dies with us.
                std::mem::forget(open_source());
            }
            meet(fate);
        }
        if step.is_request() {
            let r = sock
                .recv_deadline(Some(Instant::now() + PEER_WAIT))
                .unwrap();
            if r.msg.kind() != Some(step.ty()) {
                result(format!("expected {step:?}, got {:?}", r.msg.kind()));
                return 1;
            }
        } else {
            match step {
                Step::MountFd => {
                    let fd = open_source();
                    let reply =
                        SyncMessage::mount_fd(MountSourceKind::PlainOpen, the_mount().source);
                    sock.send(&reply, Some(fd.as_fd())).unwrap();
                }
                Step::HooksDone => sock.send(&SyncMessage::hooks_done(), None).unwrap(),
                Step::Run => sock.send(&SyncMessage::run(), None).unwrap(),
                _ => sock.send(&SyncMessage::seccomp_done(), None).unwrap(),
            }
        }
        if point == Some(Point::after(step)) {
            meet(fate);
        }
    }
    sock.shutdown_write().unwrap();
    match sock.recv_deadline(Some(Instant::now() + PEER_WAIT)) {
        Err(TransportError::PeerClosed) => 0,
        other => {
            result(format!("after SeccompDone: {other:?}"));
            1
        }
    }
}

/// How a session call ended, in one line the test compares exactly.
pub fn describe(e: &SessionError) -> String {
    let what = match e {
        SessionError::Violation(se) => {
            format!("Violation state={:?} got={}", se.state(), se.got())
        }
        SessionError::Transport {
            step,
            state,
            source,
        } => {
            let src = match source {
                TransportError::PeerClosed => "PeerClosed".to_string(),
                TransportError::PeerDied => "PeerDied".to_string(),
                TransportError::Timeout { .. } => "Timeout".to_string(),
                other => format!("{other:?}"),
            };
            format!("Transport step=[{step}] state={state:?} source={src}")
        }
        other => format!("{other:?}"),
    };
    format!("{what} origin={:?}", e.origin())
}

/// The real session child against a parent that dies: runs the init flow
/// and prints `RESULT call=<call> outcome=<...> ms=<n>` for the call that
/// ended it (`call=close outcome=ok` if none failed), then
/// `RESULT fds <at start> <at end>`: at start the inherited socket is open,
/// at end the session (socket, pidfd, every fd received) is gone.
fn session_child() -> i32 {
    let start_fds = fd_count();
    let point = env_point();
    let peer: u32 = std::env::var(PEER_PID_VAR).unwrap().parse().unwrap();
    let watch = pidfd(peer);
    // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
    let child = unsafe { Child::from_env(Flow::Init) }
        .unwrap()
        .with_deadline(PEER_WAIT)
        .with_peer_pidfd(pidfd(peer));
    let notify = rustix::fs::memfd_create("notify", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    // The reply after which the parent dies: the next call is made only
    // once it is dead, so that call meets a closed socket every time.
    let dead_after = match point {
        Some(Point {
            when: When::After,
            step,
        }) if !step.is_request() => Some(step),
        _ => None,
    };
    let line = match run_session_child(child, notify.as_fd(), dead_after, watch.as_fd()) {
        Ok(()) => "call=close outcome=ok".to_string(),
        Err(line) => line,
    };
    result(line);
    drop((watch, notify));
    result(format!("fds {start_fds} {}", fd_count()));
    0
}

fn run_session_child(
    mut child: Child,
    notify: BorrowedFd<'_>,
    dead_after: Option<Step>,
    watch: BorrowedFd<'_>,
) -> Result<(), String> {
    let wait_if = |reply: Step| {
        if dead_after == Some(reply) {
            assert!(wait_readable(watch, PEER_WAIT), "the parent is still alive");
        }
    };
    let failed = |call: &'static str, start: Instant| {
        move |e: SessionError| {
            format!(
                "call={call} outcome={} ms={}",
                describe(&e),
                start.elapsed().as_millis()
            )
        }
    };
    let t = Instant::now();
    let source = child
        .mount_source(&the_mount())
        .map_err(failed("mount_source", t))?;
    drop(source);
    wait_if(Step::MountFd);
    let t = Instant::now();
    child.hooks().map_err(failed("hooks", t))?;
    wait_if(Step::HooksDone);
    let t = Instant::now();
    child.ready().map_err(failed("ready", t))?;
    wait_if(Step::Run);
    let t = Instant::now();
    child
        .seccomp(SeccompHandoff::Attached(notify))
        .map_err(failed("seccomp", t))?;
    wait_if(Step::SeccompDone);
    let t = Instant::now();
    child.close().map_err(failed("close", t))
}
