//! Double-forking runtimes (issue 11.7): runc's nsexec clones twice, so the
//! process that speaks the sync protocol is a *grandchild* of the runtime,
//! and the process the runtime spawned has exited by then. The parent must
//! follow the real peer: register the grandchild's pidfd
//! (`Parent::with_peer_pidfd`, from `pidfd_open` of the pid the intermediate
//! process reports) so that
//!
//! * the intermediate process's exit is not taken for the peer's death,
//! * the seccomp fd sent by number (`SeccompHandoff::ChildFd`) is copied out
//!   of the grandchild (`pidfd_getfd`), not out of anyone else, and
//! * the grandchild's death ends the conversation at once even while a
//!   great-grandchild still holds a copy of the socket (runc #5087).
//!
//! Real processes: this test binary re-executed as the intermediate process
//! (`ROLE=middle`), which spawns the grandchild (`ROLE=peer`), prints its
//! pid and exits. No privilege needed.

mod support;

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procsync::schema::Mount;
use procsync::session::{Child, HandlerError, Parent, ParentHandler, SeccompFd, SeccompHandoff};
use procsync::state::Flow;
use procsync::transport::SyncSocket;

use support::fd_count;
use support::peer::ROLE_VAR as ROLE;
const PEER_KIND: &str = "PROCSYNC_GRANDCHILD_PEER";
/// What the grandchild writes into the pipe whose read end it hands over as
/// its "seccomp fd", so the parent can tell whose fd it copied.
const MARK: &[u8] = b"grandchild's fd";

/// Not a test: the entry point of the processes the tests spawn.
#[test]
#[ignore = "entry point of the processes the other tests spawn"]
fn grandchild_entry() {
    support::peer::run(|role| match role {
        "middle" => middle(),
        "peer" => peer(),
        "holder" => {
            // Holds the inherited socket copy for a while, then goes.
            std::thread::sleep(Duration::from_secs(10));
            0
        }
        _ => 2,
    });
}

fn respawn(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "grandchild_entry", "--ignored", "--nocapture"])
        .args(["--test-threads=1", "-q"])
        .env(ROLE, role);
    cmd
}

/// The intermediate process: spawns the real peer (which inherits the sync
/// socket through `PROCSYNC_SYNC_FD`), reports its pid, and exits at once.
fn middle() -> i32 {
    let peer = respawn("peer").stdout(Stdio::null()).spawn().unwrap();
    println!("peer-pid {}", peer.id());
    // Exit without waiting (the double fork: the peer is reparented).
    std::mem::forget(peer);
    0
}

/// The real peer, a grandchild of the test.
fn peer() -> i32 {
    if std::env::var(PEER_KIND).as_deref() == Ok("die") {
        // Leave a great-grandchild holding a copy of the socket (inherited:
        // the fd is still the one exec passed down), then die before Ready:
        // the parent must notice this process's death.
        let holder = respawn("holder").stdout(Stdio::null()).spawn().unwrap();
        // Not waited for: it outlives this process on purpose.
        std::mem::forget(holder);
        std::process::exit(0);
    }
    let sock = SyncSocket::from_env_dup().unwrap();
    let mut child = Child::new(sock, Flow::Init).with_deadline(Duration::from_secs(20));
    let (r, w) = rustix::pipe::pipe().unwrap();
    rustix::io::write(&w, MARK).unwrap();
    child.hooks().unwrap();
    child.ready().unwrap();
    child
        .seccomp(SeccompHandoff::ChildFd(r.as_raw_fd()))
        .unwrap();
    child.close().unwrap();
    0
}

/// Takes the seccomp fd by number and reads the mark from it.
#[derive(Default)]
struct TakeSeccomp {
    got: Option<Vec<u8>>,
}

impl ParentHandler for TakeSeccomp {
    fn seccomp(&mut self, fd: SeccompFd<'_>) -> Result<(), HandlerError> {
        let SeccompFd::ChildFd(n) = fd else {
            return Err(HandlerError::new("expected a child fd number"));
        };
        let fd = n.copy()?;
        let mut buf = [0u8; 64];
        let len =
            rustix::io::read(&fd, &mut buf).map_err(|e| HandlerError::with_source("read", e))?;
        self.got = Some(buf[..len].to_vec());
        Ok(())
    }
}

/// Spawns the intermediate process with the socket; returns the
/// grandchild's pidfd once the intermediate process has exited.
fn spawn_double_fork(child_end: &SyncSocket, kind: &str) -> std::os::fd::OwnedFd {
    let mut cmd = respawn("middle");
    cmd.env(PEER_KIND, kind).stdout(Stdio::piped());
    child_end.pass_to_child(&mut cmd).unwrap();
    let mut middle = cmd.spawn().unwrap();
    let out = middle.stdout.take().unwrap();
    let mut pid = None;
    for line in BufReader::new(out).lines() {
        if let Some(p) = line.unwrap().strip_prefix("peer-pid ") {
            pid = Some(p.parse::<i32>().unwrap());
        }
    }
    assert!(
        middle.wait().unwrap().success(),
        "the intermediate process failed"
    );
    let pid = rustix::process::Pid::from_raw(pid.expect("no peer pid")).unwrap();
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap()
}

#[test]
fn parent_follows_the_grandchild_not_the_process_it_spawned() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    let _g = support::serial();
    let fds0 = fd_count();
    {
        let (sock, child_end) = SyncSocket::pair().unwrap();
        let pidfd = spawn_double_fork(&child_end, "full");
        drop(child_end);
        let mut handler = TakeSeccomp::default();
        // The process we spawned has exited already; the peer is the
        // grandchild whose pidfd we register.
        let report = Parent::new(sock, Flow::Init, Vec::<Mount>::new())
            .with_peer_pidfd(pidfd)
            .unwrap()
            .with_deadline(Duration::from_secs(20))
            .serve(&mut handler)
            .expect("the conversation with the grandchild");
        assert!(report.ready && report.seccomp);
        assert_eq!(
            handler.got.as_deref(),
            Some(MARK),
            "the seccomp fd was not copied out of the grandchild"
        );
    }
    assert_eq!(fd_count(), fds0, "fds leaked");
}

#[test]
fn grandchild_death_ends_the_wait_while_a_descendant_holds_the_socket() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    let _g = support::serial();
    let fds0 = fd_count();
    {
        let (sock, child_end) = SyncSocket::pair().unwrap();
        let pidfd = spawn_double_fork(&child_end, "die");
        drop(child_end);
        let t0 = Instant::now();
        let r = Parent::new(sock, Flow::Init, Vec::<Mount>::new())
            .with_peer_pidfd(pidfd.try_clone().unwrap())
            .unwrap()
            .with_deadline(Duration::from_secs(20))
            .serve(&mut TakeSeccomp::default());
        let took = t0.elapsed();
        let e = r.expect_err("the peer died before Ready");
        assert!(
            took < Duration::from_secs(2),
            "the peer's death was noticed only after {took:?} ({e})"
        );
        // The holder (which exits on its own) still had the socket: only the
        // pidfd could tell.
        drop(pidfd);
    }
    assert_eq!(fd_count(), fds0, "fds leaked");
}
