//! `cargo run --example demo` — a parent and two real child processes speak
//! the sync protocol over a seqpacket socket, and both sides print what
//! they send and receive.
//!
//! The parent creates two temporary directories (a file in each) and
//! configures them as the container's bind mounts. The example re-executes
//! itself (`/proc/self/exe`) as the child:
//!
//! 1. a well-behaved init asks for both mount sources, gets real `O_PATH`
//!    fds, shows where they point and lists the files through them, runs
//!    Hooks, Ready → Run, and hands over a seccomp "notify fd" (an eventfd
//!    standing in) by number, which the parent copies with `pidfd_getfd(2)`;
//! 2. a "compromised" init asks for `/etc` instead; the mount policy
//!    refuses it, the parent opens nothing, and the child is told why.
//!
//! No root needed.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use procsync::policy::ConfiguredMounts;
use procsync::runtime::MountFdService;
use procsync::schema::Mount;
use procsync::session::{
    Child, HandlerError, Parent, ParentHandler, SeccompFd, SeccompHandoff, SessionError,
};
use procsync::state::Flow;
use procsync::transport::SyncSocket;

#[macro_use]
mod common;
use common::fd_target;

/// Set in the re-executed child: `init` or `compromised`.
const ROLE: &str = "PROCSYNC_DEMO_ROLE";
/// The two host directories, `data:config`.
const DIRS: &str = "PROCSYNC_DEMO_DIRS";

fn main() -> ExitCode {
    let result = match std::env::var(ROLE).as_deref() {
        Ok("init") => child_init(),
        Ok("compromised") => child_compromised(),
        _ => parent(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

// ---------------------------------------------------------------- parent

fn parent() -> Res {
    let base = std::env::temp_dir().join(format!("procsync-demo-{}", std::process::id()));
    let result = run_parent(&base);
    let _ = std::fs::remove_dir_all(&base);
    result
}

fn run_parent(base: &Path) -> Res {
    let data = make_dir(base, "data", "hello.txt", "hello from the host\n")?;
    let config = make_dir(base, "config", "app.conf", "answer = 42\n")?;
    let mounts = vec![
        Mount::bind(path_str(&data), "/data"),
        Mount::bind(path_str(&config), "/etc/app").recursive(),
    ];
    out!("procsync demo: parent pid {}", std::process::id());
    out!("configured mounts (the parent serves only these, each once):");
    for m in &mounts {
        out!("    {} -> {}", m.source, m.destination);
    }

    // The runtime layer makes the source fds: O_PATH for plain binds,
    // open_tree + mount_setattr for id-mapped ones. Every configured source
    // is pinned now, before any child exists: a request is served from the
    // pinned object, never by walking its path again (PROTOCOL.md §14).
    let service = MountFdService::pinned(&ConfiguredMounts::new(mounts.clone()))?;

    banner("child 1: a well-behaved container init");
    let dirs = format!("{}:{}", path_str(&data), path_str(&config));
    let (mut parent, mut proc) = start("init", &dirs, Flow::Init, mounts.clone())?;
    let report = parent.serve(&mut service.with_handler(Extras))?;
    drop(parent);
    let status = proc.wait()?;
    out!(
        "parent: served {} mounts, hooks {}, ready {}, seccomp {}; child exited with {}",
        report.mounts,
        yes(report.hooks),
        yes(report.ready),
        yes(report.seccomp),
        status.code().unwrap_or(-1)
    );
    if !status.success() || report.mounts != 2 || !report.ready {
        return Err("the well-behaved child did not finish".into());
    }

    banner("child 2: a compromised init asks for the host's /etc");
    let (mut parent, mut proc) = start("compromised", &dirs, Flow::Init, mounts)?;
    let outcome = parent.serve(&mut service.with_handler(Extras));
    drop(parent);
    let status = proc.wait()?;
    match outcome {
        Err(SessionError::MountRefused(refusal)) => {
            out!("parent: refused, opened nothing: {refusal}");
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    if !status.success() {
        return Err("the compromised child did not see the refusal".into());
    }
    out!("\ndone: one child served, one refused.");
    Ok(())
}

/// Spawns this program as the child `role` with the other end of a fresh
/// sync socket, and a parent session watching it.
fn start(
    role: &str,
    dirs: &str,
    flow: Flow,
    mounts: Vec<Mount>,
) -> Result<(Parent, std::process::Child), Box<dyn std::error::Error>> {
    let (sock, child_end) = SyncSocket::pair()?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.env(ROLE, role).env(DIRS, dirs);
    child_end.pass_to_child(&mut cmd)?;
    let proc = cmd.spawn()?;
    drop(child_end);
    let parent = Parent::new(sock, flow, mounts)
        .with_child_process(&proc)?
        .with_deadline(Duration::from_secs(10))
        .with_observer(|t| common::print_traffic("parent", t, 46));
    Ok((parent, proc))
}

/// Everything but the mounts (those go to the runtime's `MountFdService`,
/// which opens each policy-approved source with `O_PATH|O_CLOEXEC`): runs the
/// "hooks" and takes the seccomp fd by copying it out of the child.
struct Extras;

impl ParentHandler for Extras {
    fn hooks(&mut self) -> Result<(), HandlerError> {
        out!("parent:   (runs the prestart hooks)");
        Ok(())
    }

    fn ready(&mut self) -> Result<(), HandlerError> {
        out!("parent:   (child is set up: cgroups, rlimits... then Run)");
        Ok(())
    }

    fn seccomp(&mut self, fd: SeccompFd<'_>) -> Result<(), HandlerError> {
        let from = match &fd {
            SeccompFd::ChildFd(c) => format!("child fd {}", c.number()),
            SeccompFd::Attached(_) => "the record".to_string(),
        };
        let fd = fd.into_owned()?;
        out!(
            "parent:   pidfd_getfd copied {from} -> fd {} ({})",
            fd.as_raw_fd(),
            fd_target(fd.as_fd())
        );
        Ok(())
    }
}

// ---------------------------------------------------------------- children

fn child_session() -> Result<Child, SessionError> {
    // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
    Ok(unsafe { Child::from_env(Flow::Init) }?
        .with_deadline(Duration::from_secs(10))
        .with_observer(|t| common::print_traffic("child", t, 46)))
}

fn child_init() -> Res {
    let mut child = child_session()?;
    let dirs = std::env::var(DIRS)?;
    let (data, config) = dirs.split_once(':').ok_or("bad dirs")?;
    let wanted = [
        Mount::bind(data, "/data"),
        Mount::bind(config, "/etc/app").recursive(),
    ];
    for m in &wanted {
        let src = child.mount_source(m)?;
        out!(
            "child:    {} for {}: fd {} -> {}, holds {}",
            src.kind.name(),
            m.destination,
            src.fd.as_raw_fd(),
            fd_target(src.fd.as_fd()),
            list_dir(src.fd.as_fd())?.join(", ")
        );
    }
    child.hooks()?;
    child.ready()?;
    // An eventfd stands in for the seccomp notify fd; only its number travels.
    let notify =
        procsync::rustix::event::eventfd(0, procsync::rustix::event::EventfdFlags::CLOEXEC)?;
    child.seccomp(SeccompHandoff::ChildFd(notify.as_raw_fd()))?;
    child.close()?;
    Ok(())
}

fn child_compromised() -> Res {
    let mut child = child_session()?;
    match child.mount_source(&Mount::bind("/etc", "/data")) {
        Err(SessionError::Remote { message }) => {
            out!("child:    the parent said no: {message}");
            Ok(())
        }
        Ok(src) => Err(format!("the parent handed out /etc as fd {}!", src.fd.as_raw_fd()).into()),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------- output

/// The names in the directory `dir` (an `O_PATH` fd), read through the fd.
fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    use procsync::rustix::fs::{openat, Dir, Mode, OFlags};
    let fd = openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in Dir::read_from(&fd)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn make_dir(base: &Path, name: &str, file: &str, text: &str) -> std::io::Result<PathBuf> {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(file), text)?;
    Ok(dir)
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn banner(title: &str) {
    out!(
        "\n── {title} {}",
        "─".repeat(70usize.saturating_sub(title.len()))
    );
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
