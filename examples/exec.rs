//! `cargo run --example exec` — the exec flow (`runc exec`): the child
//! joins an existing container, so there are no mounts and no hooks, only
//! Ready → Run and the seccomp notify fd hand-off, here with the fd attached
//! to the record (a memfd stands in for the notify fd). The example
//! re-executes itself as the child; both sides print what they send and
//! receive. No root needed.

use std::os::fd::{AsFd, AsRawFd};
use std::process::{Command, ExitCode};
use std::time::Duration;

use procsync::rustix;
use procsync::session::{Child, HandlerError, Parent, ParentHandler, SeccompFd, SeccompHandoff};
use procsync::state::Flow;
use procsync::transport::SyncSocket;

#[macro_use]
mod common;
use common::fd_target;

/// Set in the re-executed child.
const ROLE: &str = "PROCSYNC_EXEC_DEMO_ROLE";
/// What the stand-in notify fd holds, so the parent can show it got that file.
const NOTE: &[u8] = b"seccomp listener of the exec'd process";

fn main() -> ExitCode {
    let result = if std::env::var_os(ROLE).is_some() {
        child()
    } else {
        parent()
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("exec example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

fn parent() -> Res {
    let (sock, child_end) = SyncSocket::pair()?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.env(ROLE, "exec");
    child_end.pass_to_child(&mut cmd)?;
    out!(
        "procsync exec flow: parent pid {} starts a process joining the container",
        std::process::id()
    );
    let mut proc = cmd.spawn()?;
    drop(child_end);
    // The exec flow has no mounts: nothing configured, every request refused.
    let mut parent = Parent::new(sock, Flow::Exec, [])
        .with_child_process(&proc)?
        .with_deadline(Duration::from_secs(10))
        .with_observer(|t| common::print_traffic("parent", t, 16));
    let report = parent.serve(&mut Agent)?;
    drop(parent);
    let status = proc.wait()?;
    out!(
        "parent: ready {}, seccomp {}; child exited with {}",
        report.ready,
        report.seccomp,
        status.code().unwrap_or(-1)
    );
    if !status.success() || !report.ready || !report.seccomp {
        return Err("the exec flow did not finish".into());
    }
    Ok(())
}

/// A parent that plays seccomp agent: it keeps the notify fd it is given.
struct Agent;

impl ParentHandler for Agent {
    fn ready(&mut self) -> Result<(), HandlerError> {
        out!("parent:   (process joined the container; Run)");
        Ok(())
    }

    fn seccomp(&mut self, fd: SeccompFd<'_>) -> Result<(), HandlerError> {
        let fd = fd.into_owned()?;
        let mut buf = [0u8; 128];
        let n = rustix::io::pread(&fd, &mut buf, 0)?;
        out!(
            "parent:   took fd {} ({}) holding {:?}",
            fd.as_raw_fd(),
            fd_target(fd.as_fd()),
            String::from_utf8_lossy(&buf[..n])
        );
        Ok(())
    }
}

fn child() -> Res {
    // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
    let mut child = unsafe { Child::from_env(Flow::Exec) }?
        .with_deadline(Duration::from_secs(10))
        .with_observer(|t| common::print_traffic("child", t, 16));
    child.ready()?;
    let notify = rustix::fs::memfd_create("seccomp-notify", rustix::fs::MemfdFlags::CLOEXEC)?;
    rustix::io::write(&notify, NOTE)?;
    child.seccomp(SeccompHandoff::Attached(notify.as_fd()))?;
    child.close()?;
    out!("child:    closed the sync socket (a real init would exec now)");
    Ok(())
}
