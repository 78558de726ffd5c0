//! The fault matrix: real processes dying or stopping at every step of the
//! init flow, and what the surviving side's session call returns.
//!
//! * A child SIGKILLed just before and just after each of the eight steps
//!   (MountPlease, MountFd received, Hooks, HooksDone received, Ready, Run
//!   received, Seccomp, SeccompDone received) → `Parent::serve` returns the
//!   exact error the close rules of docs/PROTOCOL.md §9 call for (or `Ok`
//!   once the child closed in Running/AfterSeccomp), well within its
//!   deadline; plus two cases where a grandchild keeps the child's end open
//!   and only the pidfd tells.
//! * A child SIGSTOPped at the same points → the parent's 300 ms deadline
//!   fires in the state the parent waits in.
//! * A parent SIGKILLed just before and just after each step (and once with
//!   a helper holding its end) → the real `session::Child`, in a process of
//!   its own, reports how its call ended; the test asserts it.
//! * A live child that keeps asking and never reads its replies → the
//!   parent's send deadline fires (`SendTimeout`) instead of a hang.
//!
//! "Before"/"after" are seen from the process that dies: before a request
//! = before sending it; after a request = right after sending it (for the
//! child, the parent's handler then waits until the child is dead, so its
//! reply meets a closed socket every time); before a reply = the reply is
//! queued and unread (the dying side polled for it); after a reply = read
//! (child) or sent (parent; the surviving child makes its next call only
//! once the parent is dead).
//!
//! Every case: every wait bounded, the test process's /proc/self/fd count
//! unchanged, every process it started reaped (SIGKILL status checked) and
//! /proc/self/task/*/children empty afterwards.

#[path = "common/fault_peer.rs"]
mod fault_peer;
mod support;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child as Process, ExitStatus};
use std::time::{Duration, Instant};

use fault_peer::*;
use procsync::schema::Mount;
use procsync::session::{
    HandlerError, MountSource, Parent, ParentHandler, SeccompFd, ServeReport, SessionError,
    Step as SessionStep,
};
use procsync::state::{Flow, State};
use procsync::transport::{SyncSocket, TransportError};

/// Not a test: the entry point of the peer processes the other tests spawn.
#[test]
#[ignore = "entry point of the peer processes the other tests spawn"]
fn fault_peer_entry() {
    fault_peer_main();
}

/// The parent's deadline where a dead child must be noticed without it.
const LONG: Duration = Duration::from_secs(5);
/// The parent's deadline against a stopped child.
const SHORT: Duration = Duration::from_millis(300);

/// How `Parent::serve` must end.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The child's close broke the protocol in this state.
    Violation(State),
    /// The child closed in order: a report with seccomp taken or not.
    Done { seccomp: bool },
    /// The pidfd said the child died while the parent waited in this state.
    Died(State),
    /// The deadline fired while the parent waited in this state.
    Timeout(State),
}

impl Expect {
    fn text(self) -> String {
        match self {
            Expect::Violation(s) => format!("Violation(close) in {s:?}"),
            Expect::Done { seccomp } => {
                format!("Ok(mounts=1 hooks=true ready=true seccomp={seccomp})")
            }
            Expect::Died(s) => format!("PeerDied in {s:?}"),
            Expect::Timeout(s) => format!("Timeout in {s:?}"),
        }
    }
}

/// `serve`'s result in the same words as [`Expect::text`].
fn serve_outcome(r: &Result<ServeReport, SessionError>) -> String {
    match r {
        Ok(rep) => format!(
            "Ok(mounts={} hooks={} ready={} seccomp={})",
            rep.mounts, rep.hooks, rep.ready, rep.seccomp
        ),
        Err(SessionError::Violation(se)) => format!("Violation({}) in {:?}", se.got(), se.state()),
        Err(SessionError::Transport {
            step: SessionStep::Recv(_),
            state,
            source,
        }) => match source {
            TransportError::PeerDied => format!("PeerDied in {state:?}"),
            TransportError::Timeout { .. } => format!("Timeout in {state:?}"),
            other => format!("Transport({other:?}) in {state:?}"),
        },
        Err(other) => format!("{other:?}"),
    }
}

/// The parent's handler: serves the one mount with `O_PATH`, takes the
/// seccomp fd. For a child killed right after sending `dies_after`, it
/// first waits (bounded) until the child is dead, so the reply meets a
/// closed socket every time.
struct Handler {
    child: OwnedFd,
    dies_after: Option<Step>,
}

impl Handler {
    fn maybe_wait(&self, request: Step) -> Result<(), HandlerError> {
        if self.dies_after == Some(request) && !wait_readable(self.child.as_fd(), LONG) {
            return Err(HandlerError::new("the child did not die"));
        }
        Ok(())
    }
}

impl ParentHandler for Handler {
    fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
        self.maybe_wait(Step::MountPlease)?;
        use rustix::fs::{open, Mode, OFlags};
        let fd = open(
            req.source.as_str(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(MountSource {
            fd,
            kind: procsync::schema::MountSourceKind::PlainOpen,
        })
    }

    fn hooks(&mut self) -> Result<(), HandlerError> {
        self.maybe_wait(Step::Hooks)
    }

    fn ready(&mut self) -> Result<(), HandlerError> {
        self.maybe_wait(Step::Ready)
    }

    fn seccomp(&mut self, fd: SeccompFd<'_>) -> Result<(), HandlerError> {
        self.maybe_wait(Step::Seccomp)?;
        drop(fd.into_owned()?);
        Ok(())
    }
}

fn fd_entries() -> usize {
    fault_peer::fd_count()
}

/// Waits for `p` at most `limit` (then kills it and fails).
fn reap(p: &mut Process, limit: Duration) -> ExitStatus {
    support::proc::wait_bounded(p, limit)
        .unwrap_or_else(|_| panic!("process {} did not end within {limit:?}", p.id()))
}

/// The state letter of `/proc/<pid>/stat` (`T` = stopped).
fn proc_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .unwrap_or('?')
}

/// Reads `RESULT holder <pid>` from `p`'s stdout and opens its pidfd.
fn holder_of(p: &mut Process) -> OwnedFd {
    let mut out = BufReader::new(p.stdout.as_mut().unwrap());
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "no holder line");
        if let Some(pid) = line.trim().strip_prefix("RESULT holder ") {
            return pidfd(pid.parse().unwrap());
        }
    }
}

fn kill_holder(holder: OwnedFd) {
    rustix::process::pidfd_send_signal(&holder, rustix::process::Signal::KILL).unwrap();
    assert!(
        wait_readable(holder.as_fd(), LONG),
        "holder survived SIGKILL"
    );
}

struct Case {
    point: Point,
    fate: Fate,
    expect: Expect,
}

fn case(point: Point, fate: Fate, expect: Expect) -> Case {
    Case {
        point,
        fate,
        expect,
    }
}

/// Runs one child-side case against a real `Parent` in this process;
/// returns the row of the printed table.
fn run_child_case(c: &Case) -> String {
    let fds = fd_entries();
    let (mine, theirs) = SyncSocket::pair().unwrap();
    let mut cmd = fault_command("child");
    cmd.env(POINT_VAR, c.point.name())
        .env(FATE_VAR, c.fate.name());
    theirs.pass_to_child(&mut cmd).unwrap();
    let mut p = cmd.spawn().unwrap();
    drop(theirs);
    let holder = (c.fate == Fate::HolderKill).then(|| holder_of(&mut p));
    let deadline = if c.fate == Fate::Stop { SHORT } else { LONG };
    let mut parent = Parent::new(mine, Flow::Init, [the_mount()])
        .with_child_process(&p)
        .unwrap()
        .with_deadline(deadline);
    let dies_after =
        (c.fate == Fate::Kill && c.point.when == When::After && c.point.step.is_request())
            .then_some(c.point.step);
    let mut h = Handler {
        child: pidfd(p.id()),
        dies_after,
    };
    let start = Instant::now();
    let r = parent.serve(&mut h);
    let took = start.elapsed();
    let name = format!("child {} {}", c.fate.name(), c.point.name());
    let got = serve_outcome(&r);
    assert_eq!(got, c.expect.text(), "{name}: {r:?}");
    if let Err(e) = &r {
        assert_eq!(e.origin(), procsync::transport::Origin::Peer, "{name}");
    }
    assert_eq!(parent.state(), State::Closed, "{name}");
    match c.fate {
        Fate::Stop => {
            assert_eq!(proc_state(p.id()), 'T', "{name}: the child is not stopped");
            assert!(
                took >= SHORT && took < SHORT + Duration::from_secs(3),
                "{name}: {took:?}"
            );
            p.kill().unwrap();
        }
        _ => assert!(
            took < deadline,
            "{name}: took {took:?}, deadline {deadline:?}"
        ),
    }
    drop((parent, h));
    let st = reap(&mut p, LONG);
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{name}: {st:?}");
    if let Some(hold) = holder {
        kill_holder(hold);
    }
    drop(p);
    assert!(
        support::proc::children().is_empty(),
        "{name}: unreaped {:?}",
        support::proc::children()
    );
    assert_eq!(fd_entries(), fds, "{name}: fd leak");
    format!("| {name} | {got} | {} ms |", took.as_millis())
}

fn print_table(title: &str, rows: &[String]) {
    println!("\n{title}\n| case | outcome | time |\n|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

#[test]
fn a_child_killed_at_every_step_ends_serve_per_the_close_rules() {
    let _g = support::serial();
    use Expect::*;
    use Step::*;
    let (b, a) = (Point::before, Point::after);
    let k = Fate::Kill;
    let cases = [
        case(b(MountPlease), k, Violation(State::Mounting)),
        case(a(MountPlease), k, Violation(State::AwaitMountFd)),
        case(b(MountFd), k, Violation(State::Mounting)),
        case(a(MountFd), k, Violation(State::Mounting)),
        case(b(Hooks), k, Violation(State::Mounting)),
        case(a(Hooks), k, Violation(State::AwaitHooksDone)),
        case(b(HooksDone), k, Violation(State::BeforeReady)),
        case(a(HooksDone), k, Violation(State::BeforeReady)),
        case(b(Ready), k, Violation(State::BeforeReady)),
        case(a(Ready), k, Violation(State::AwaitRun)),
        // From Run on, the child's close is orderly (§9 Close).
        case(b(Run), k, Done { seccomp: false }),
        case(a(Run), k, Done { seccomp: false }),
        case(b(Seccomp), k, Done { seccomp: false }),
        case(a(Seccomp), k, Violation(State::AwaitSeccompDone)),
        case(b(SeccompDone), k, Done { seccomp: true }),
        case(a(SeccompDone), k, Done { seccomp: true }),
        // A grandchild holds the child's end: no end-of-file, the pidfd tells.
        case(b(Ready), Fate::HolderKill, Died(State::BeforeReady)),
        // Dead after Run: its close is orderly, whoever else holds the socket.
        case(a(Run), Fate::HolderKill, Done { seccomp: false }),
    ];
    let rows: Vec<String> = cases.iter().map(run_child_case).collect();
    print_table("child SIGKILLed (parent deadline 5 s)", &rows);
}

#[test]
fn a_child_stopped_at_every_step_runs_into_the_parent_deadline() {
    let _g = support::serial();
    use Step::*;
    // The state the parent waits in once it has handled everything the
    // child sent before stopping.
    let waits_in = |p: Point| match (p.when, p.step) {
        (When::Before, MountPlease | MountFd | Hooks) => State::Mounting,
        (When::After, MountPlease | MountFd) => State::Mounting,
        (When::After, Hooks) | (When::Before, HooksDone | Ready) => State::BeforeReady,
        (When::After, HooksDone) => State::BeforeReady,
        (When::After, Ready | Run) | (When::Before, Run | Seccomp) => State::Running,
        (_, Seccomp | SeccompDone) => State::AfterSeccomp,
    };
    let rows: Vec<String> = STEPS
        .into_iter()
        .flat_map(|s| [Point::before(s), Point::after(s)])
        .map(|p| run_child_case(&case(p, Fate::Stop, Expect::Timeout(waits_in(p)))))
        .collect();
    print_table("child SIGSTOPped (parent deadline 300 ms)", &rows);
}

/// Runs one parent-side case: a scripted parent process that dies at the
/// point, the real `session::Child` in another process. Returns the row.
fn run_parent_case(point: Point, fate: Fate, expect: &str) -> String {
    let fds = fd_entries();
    let name = format!("parent {} {}", fate.name(), point.name());
    let (p_end, c_end) = SyncSocket::pair().unwrap();
    let mut pcmd = fault_command("parent");
    pcmd.env(POINT_VAR, point.name()).env(FATE_VAR, fate.name());
    p_end.pass_to_child(&mut pcmd).unwrap();
    let mut pp = pcmd.spawn().unwrap();
    drop(p_end);
    let mut ccmd = fault_command("session-child");
    ccmd.env(POINT_VAR, point.name())
        .env(PEER_PID_VAR, pp.id().to_string());
    c_end.pass_to_child(&mut ccmd).unwrap();
    let mut cp = ccmd.spawn().unwrap();
    drop(c_end);
    let holder = (fate == Fate::HolderKill).then(|| holder_of(&mut pp));

    let start = Instant::now();
    let cst = reap(&mut cp, Duration::from_secs(20));
    let took = start.elapsed();
    let mut out = String::new();
    cp.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(cst.success(), "{name}: session child {cst:?}: {out}");
    let pst = reap(&mut pp, LONG);
    assert_eq!(pst.signal(), Some(libc::SIGKILL), "{name}: parent {pst:?}");
    if let Some(h) = holder {
        kill_holder(h);
    }
    drop((cp, pp));

    let lines: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .collect();
    assert_eq!(lines.len(), 2, "{name}: {out}");
    let (outcome, ms) = match lines[0].rsplit_once(" ms=") {
        Some((o, ms)) => (o, ms.parse::<u64>().unwrap()),
        None => (lines[0], 0),
    };
    assert_eq!(outcome, expect, "{name}");
    // The call ended because the parent died, long before the child's own
    // 10 s deadline.
    assert!(ms < 5_000, "{name}: the call took {ms} ms");
    let f: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!(f[0], "fds");
    // Only the inherited socket was open at the start; the session closed
    // it and every fd it received.
    let (at_start, at_end): (usize, usize) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    assert_eq!(at_end + 1, at_start, "{name}: the session child leaked fds");
    assert!(
        support::proc::children().is_empty(),
        "{name}: unreaped {:?}",
        support::proc::children()
    );
    assert_eq!(fd_entries(), fds, "{name}: fd leak");
    format!(
        "| {name} | {outcome} | {ms} ms (case {} ms) |",
        took.as_millis()
    )
}

#[test]
fn a_parent_killed_at_every_step_ends_the_child_call() {
    let _g = support::serial();
    use Step::*;
    let v = |call: &str, s: State| {
        format!("call={call} outcome=Violation state={s:?} got=close origin=Peer")
    };
    let (b, a) = (Point::before, Point::after);
    let k = Fate::Kill;
    let cases: Vec<(Point, Fate, String)> = vec![
        (b(MountPlease), k, v("mount_source", State::AwaitMountFd)),
        (a(MountPlease), k, v("mount_source", State::AwaitMountFd)),
        (b(MountFd), k, v("mount_source", State::AwaitMountFd)),
        // The reply arrived; the next request meets a closed socket, and a
        // parent closing before Run is a violation (§9 Close).
        (a(MountFd), k, v("hooks", State::Mounting)),
        (b(Hooks), k, v("hooks", State::AwaitHooksDone)),
        (a(Hooks), k, v("hooks", State::AwaitHooksDone)),
        (b(HooksDone), k, v("hooks", State::AwaitHooksDone)),
        (a(HooksDone), k, v("ready", State::BeforeReady)),
        (b(Ready), k, v("ready", State::AwaitRun)),
        (a(Ready), k, v("ready", State::AwaitRun)),
        (b(Run), k, v("ready", State::AwaitRun)),
        // After Run the parent's close is orderly, but the Seccomp request
        // cannot be sent.
        (
            a(Run),
            k,
            "call=seccomp outcome=Transport step=[sending Seccomp] state=Running \
             source=PeerClosed origin=Peer"
                .to_string(),
        ),
        (b(Seccomp), k, v("seccomp", State::AwaitSeccompDone)),
        (a(Seccomp), k, v("seccomp", State::AwaitSeccompDone)),
        (b(SeccompDone), k, v("seccomp", State::AwaitSeccompDone)),
        (a(SeccompDone), k, "call=close outcome=ok".to_string()),
        // A helper of the parent holds its end: only the pidfd tells.
        (
            a(Ready),
            Fate::HolderKill,
            "call=ready outcome=Transport step=[waiting for Run or Error] state=AwaitRun \
             source=PeerDied origin=Peer"
                .to_string(),
        ),
    ];
    let rows: Vec<String> = cases
        .iter()
        .map(|(p, f, e)| run_parent_case(*p, *f, e))
        .collect();
    print_table("parent SIGKILLed (child deadline 10 s)", &rows);
}

/// Serves any mount with an `O_PATH` fd of /dev/null.
struct AnyMount;

impl ParentHandler for AnyMount {
    fn mount(&mut self, _req: &Mount) -> Result<MountSource, HandlerError> {
        use rustix::fs::{open, Mode, OFlags};
        let fd = open("/dev/null", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
        Ok(MountSource {
            fd,
            kind: procsync::schema::MountSourceKind::PlainOpen,
        })
    }
}

#[test]
fn a_child_that_never_reads_its_replies_runs_into_the_send_deadline() {
    let _g = support::serial();
    let fds = fd_entries();
    let (mine, theirs) = SyncSocket::pair().unwrap();
    let mut cmd = fault_command("never-reads");
    theirs.pass_to_child(&mut cmd).unwrap();
    let mut p = cmd.spawn().unwrap();
    drop(theirs);
    let mut parent = Parent::new(mine, Flow::Init, [])
        .with_policy(procsync::policy::AllowAll)
        .with_child_process(&p)
        .unwrap()
        .with_deadline(SHORT);
    // serve in a thread, so a hang is reported (and ended by killing the
    // child, which the pidfd sees) instead of hanging the test.
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let start = Instant::now();
        let r = parent.serve(&mut AnyMount);
        let took = start.elapsed();
        let _ = tx.send(());
        (r, took, parent)
    });
    let hung = rx.recv_timeout(Duration::from_secs(10)).is_err();
    let pid = p.id();
    let alive = proc_state(pid) != 'Z';
    p.kill().unwrap();
    let (r, took, parent) = server.join().unwrap();
    assert!(
        !hung,
        "serve blocked sending to a live child that reads nothing: {r:?}"
    );
    assert!(alive, "the child died on its own");
    match &r {
        Err(SessionError::Transport {
            step: SessionStep::Send(procsync::schema::MessageType::MountFd),
            state: State::AwaitMountFd,
            source: TransportError::SendTimeout { .. },
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.as_ref().unwrap_err().origin(),
        procsync::transport::Origin::Peer
    );
    assert!(took >= SHORT && took < Duration::from_secs(5), "{took:?}");
    drop(parent);
    let st = reap(&mut p, LONG);
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    drop(p);
    assert!(support::proc::children().is_empty());
    assert_eq!(fd_entries(), fds);
}
