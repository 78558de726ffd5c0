//! The peer processes of `tests/session.rs`: the test binary re-executed
//! as a peer (`support::peer`), running the ignored
//! `session_peer_entry` test. Child roles drive a real `Child` session (or
//! break the protocol on purpose with a bare `SyncSocket`); parent roles
//! play a parent that dies. Each prints `RESULT ...` lines on stdout and
//! exits 0 only if everything it checked held.
#![allow(dead_code)]

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child as Process, Command, Stdio};
use std::time::{Duration, Instant};

use procsync::schema::{Mount, MountSourceKind, SyncMessage};
use procsync::session::{Child, SeccompHandoff, SessionError};
use procsync::state::Flow;
use procsync::transport::SyncSocket;

use crate::common::support;
/// Colon-separated host directories the child asks to mount.
pub const DIRS_VAR: &str = "PROCSYNC_SESSION_DIRS";

/// Where a test directory is mounted in the container: `/mnt/<index>`.
pub fn destination(i: usize) -> String {
    format!("/mnt/{i}")
}

/// The mount the child requests for `dir` at index `i` (also the parent's
/// configured mount).
pub fn mount_for(i: usize, dir: &str) -> Mount {
    Mount::bind(dir, destination(i)).recursive()
}

/// The value the child writes to the seccomp stand-in eventfd.
pub const EVENTFD_VALUE: u64 = 7;
/// What the child writes into the seccomp stand-in memfd.
pub const MEMFD_TEXT: &[u8] = b"seccomp notify stand-in";

/// A command re-running this test binary as a session peer playing `role`.
pub fn session_command(role: &str) -> Command {
    support::peer::entry_command("session_peer_entry", role)
}

/// Spawns a session peer playing `role` (with `env` set) on the other end
/// of a fresh pair; returns the process and this side's end.
pub fn spawn_session_peer(role: &str, env: &[(&str, String)]) -> (Process, SyncSocket) {
    let (mine, theirs) = SyncSocket::pair().unwrap();
    let mut cmd = session_command(role);
    for (k, v) in env {
        cmd.env(k, v);
    }
    theirs.pass_to_child(&mut cmd).unwrap();
    let child = cmd.spawn().unwrap();
    drop(theirs);
    (child, mine)
}

/// Waits for `p` (at most 20 s, then kills it); its exit status and stdout.
pub fn finish(mut p: Process) -> (bool, String) {
    let ok =
        support::proc::wait_bounded(&mut p, Duration::from_secs(20)).is_ok_and(|st| st.success());
    let mut out = String::new();
    if let Some(mut so) = p.stdout.take() {
        use std::io::Read;
        let _ = so.read_to_string(&mut out);
    }
    (ok, out)
}

fn result(line: impl std::fmt::Display) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "RESULT {line}");
    let _ = o.flush();
}

fn dirs() -> Vec<String> {
    std::env::var(DIRS_VAR)
        .unwrap_or_default()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Checks that `source.fd` names exactly `dir` (same device and inode).
fn same_as_dir(source: &procsync::session::MountSource, dir: &str) -> bool {
    let a = rustix::fs::fstat(&source.fd).unwrap();
    let b = rustix::fs::stat(dir).unwrap();
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

/// The entry point of a re-executed session peer.
pub fn session_peer_main() {
    support::peer::run(|role| match run_role(role) {
        Ok(()) => 0,
        Err(e) => {
            result(format!("FAILED {e}"));
            1
        }
    });
}

type R = Result<(), String>;

fn check(cond: bool, what: impl std::fmt::Display) -> R {
    if cond {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

fn run_role(role: &str) -> R {
    let s = |e: SessionError| e.to_string();
    match role {
        "init-full" => {
            // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
            let mut child = unsafe { Child::from_env(Flow::Init) }
                .map_err(s)?
                .with_deadline(Duration::from_secs(20));
            for (i, dir) in dirs().iter().enumerate() {
                let src = child.mount_source(&mount_for(i, dir)).map_err(s)?;
                check(same_as_dir(&src, dir), format!("fd {i} is not {dir}"))?;
                check(
                    src.kind == MountSourceKind::PlainOpen,
                    format!("kind {:?}", src.kind),
                )?;
                let cloexec = rustix::io::fcntl_getfd(&src.fd)
                    .unwrap()
                    .contains(rustix::io::FdFlags::CLOEXEC);
                check(cloexec, "mount fd not close-on-exec")?;
                result(format!("mount {i} ok"));
            }
            child.hooks().map_err(s)?;
            child.ready().map_err(s)?;
            let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
            rustix::io::write(&efd, &EVENTFD_VALUE.to_ne_bytes()).unwrap();
            child
                .seccomp(SeccompHandoff::ChildFd(efd.as_raw_fd()))
                .map_err(s)?;
            drop(efd);
            child.close().map_err(s)?;
            result("done");
            Ok(())
        }
        "exec-attached" => {
            // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
            let mut child = unsafe { Child::from_env(Flow::Exec) }
                .map_err(s)?
                .with_deadline(Duration::from_secs(20));
            let misuse = child.hooks().unwrap_err();
            check(
                matches!(misuse, SessionError::Misuse(_)),
                format!("hooks in exec: {misuse:?}"),
            )?;
            child.ready().map_err(s)?;
            let mfd = rustix::fs::memfd_create("notify", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
            rustix::io::write(&mfd, MEMFD_TEXT).unwrap();
            child
                .seccomp(SeccompHandoff::Attached(mfd.as_fd()))
                .map_err(s)?;
            child.close().map_err(s)?;
            result("done");
            Ok(())
        }
        "fail-after-mount" => {
            // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
            let mut child = unsafe { Child::from_env(Flow::Init) }.map_err(s)?;
            let dir = &dirs()[0];
            let src = child.mount_source(&mount_for(0, dir)).map_err(s)?;
            drop(src);
            child.fail("cannot mount /mnt/0: EPERM").map_err(s)?;
            // Terminal: nothing more may be sent.
            let e = child.ready().unwrap_err();
            check(matches!(e, SessionError::Misuse(_)), format!("{e:?}"))?;
            result("failed as asked");
            Ok(())
        }
        "expect-remote" => {
            // Asks for dirs[0] at /mnt/0 and expects the parent's Error reply.
            // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
            let mut child = unsafe { Child::from_env(Flow::Init) }
                .map_err(s)?
                .with_deadline(Duration::from_secs(20));
            let dir = &dirs()[0];
            match child.mount_source(&mount_for(0, dir)) {
                Err(SessionError::Remote { message }) => {
                    result(format!("remote {message}"));
                    // After the parent's Error the conversation is over.
                    let e = child.fail("too late").unwrap_err();
                    check(
                        matches!(e, SessionError::Misuse(_) | SessionError::Closed { .. }),
                        format!("fail after Error: {e:?}"),
                    )
                }
                other => Err(format!("expected Remote, got {other:?}")),
            }
        }
        "no-ready" => {
            // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
            let mut child = unsafe { Child::from_env(Flow::Init) }.map_err(s)?;
            child.hooks().map_err(s)?;
            let e = child.close().unwrap_err();
            check(
                matches!(e, SessionError::Misuse(_)),
                format!("close before Ready: {e:?}"),
            )?;
            result("closed without Ready");
            Ok(())
        }
        "late-mount" => {
            // Bypasses the state machine: MountPlease after Hooks.
            // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
            let mut sock = unsafe { SyncSocket::from_env() }.map_err(|e| e.to_string())?;
            sock.send(&SyncMessage::hooks(), None).unwrap();
            let r = sock.recv().unwrap();
            check(r.msg == SyncMessage::hooks_done(), "HooksDone")?;
            let dir = &dirs()[0];
            sock.send(&SyncMessage::mount_please(mount_for(0, dir)), None)
                .unwrap();
            // The parent answers nothing and closes.
            let end = sock.recv_deadline(Some(Instant::now() + Duration::from_secs(20)));
            check(
                matches!(end, Err(procsync::transport::TransportError::PeerClosed)),
                format!("after the late request: {end:?}"),
            )?;
            result("parent closed");
            Ok(())
        }
        "stop" => {
            // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
            let _child = unsafe { Child::from_env(Flow::Exec) }.map_err(s)?;
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP)
                .unwrap();
            std::thread::sleep(Duration::from_secs(20));
            Ok(())
        }
        "spawn-holder" => {
            // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
            let sock = unsafe { SyncSocket::from_env() }.map_err(|e| e.to_string())?;
            let mut cmd = session_command("hold");
            cmd.stdout(Stdio::null());
            sock.pass_to_child(&mut cmd).unwrap();
            let mut gc = cmd.spawn().unwrap();
            result(format!("grandchild {}", gc.id()));
            // The test SIGKILLs us while we wait; the grandchild lives on.
            let _ = gc.wait();
            Ok(())
        }
        "hold" => {
            // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
            let _sock = unsafe { SyncSocket::from_env() }.map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_secs(20));
            Ok(())
        }
        "parent-dies" => {
            // A parent that takes one request and dies without answering.
            // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
            let mut sock = unsafe { SyncSocket::from_env() }.map_err(|e| e.to_string())?;
            let _ = sock.recv();
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
                .unwrap();
            Ok(())
        }
        other => Err(format!("unknown role {other}")),
    }
}
