//! `cargo run --features tokio --example async_parent` — one tokio runtime
//! (two worker threads) serving several container inits at once: each child
//! process (this example re-executed) runs the init flow — a mount source
//! fd, hooks, Ready → Run, the seccomp notify fd hand-off — against an
//! `AsyncParent` task. The parent's handler is the blocking kind (it opens
//! the mount source with `O_PATH`), run on tokio's blocking pool through
//! `BlockingHandler`, so no runtime worker ever blocks. No root needed.

use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use procsync::rustix;
use procsync::schema::{Mount, MountSourceKind};
use procsync::session::tokio::{AsyncParent, BlockingHandler};
use procsync::session::{
    Child, HandlerError, MountSource, ParentHandler, SeccompFd, SeccompHandoff,
};
use procsync::state::Flow;
use procsync::transport::SyncSocket;

#[macro_use]
mod common;

/// Set in the re-executed children: which one they are.
const ROLE: &str = "PROCSYNC_ASYNC_DEMO_CHILD";
/// How many containers start at once.
const CHILDREN: usize = 4;

fn main() -> ExitCode {
    let result = match std::env::var(ROLE) {
        Ok(n) => child(&n),
        Err(_) => parent(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("async_parent example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

/// The runtime's blocking handler: mount sources with `O_PATH`, the
/// seccomp fd read back to show it is the child's.
struct Runtime {
    deadline: Option<Instant>,
    note: String,
}

impl ParentHandler for Runtime {
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
    fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
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
    fn seccomp(&mut self, fd: SeccompFd<'_>) -> Result<(), HandlerError> {
        let fd: OwnedFd = fd.into_owned()?;
        let mut buf = [0u8; 64];
        let n = rustix::io::pread(&fd, &mut buf, 0)?;
        self.note = String::from_utf8_lossy(&buf[..n]).into_owned();
        Ok(())
    }
}

fn parent() -> Res {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let source = std::env::temp_dir().display().to_string();
    out!(
        "procsync async parent: pid {} starts {CHILDREN} container inits on one tokio runtime (2 workers)",
        std::process::id()
    );
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..CHILDREN {
            let (sock, child_end) = SyncSocket::pair()?;
            let mut cmd = Command::new("/proc/self/exe");
            cmd.env(ROLE, i.to_string()).env("SOURCE", &source);
            child_end.pass_to_child(&mut cmd)?;
            let mut proc = cmd.spawn()?;
            drop(child_end);
            let configured = [Mount::bind(source.as_str(), "/data")];
            let mut parent = AsyncParent::new(sock, Flow::Init, configured)?
                .with_child_process(&proc)?
                .with_deadline(Duration::from_secs(10));
            tasks.push(tokio::spawn(async move {
                let mut handler = BlockingHandler::new(Runtime {
                    deadline: None,
                    note: String::new(),
                });
                let report = parent.serve(&mut handler).await;
                let status = tokio::task::spawn_blocking(move || proc.wait()).await;
                (i, report, handler.into_inner().map(|h| h.note), status)
            }));
        }
        for t in tasks {
            let (i, report, note, status) = t.await?;
            let report = report?;
            out!(
                "  init {i}: {} mount fd, hooks {}, Run sent {}, seccomp fd {:?}; child {}",
                report.mounts,
                report.hooks,
                report.ready,
                note.unwrap_or_default(),
                status??
            );
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    out!(
        "all {CHILDREN} conversations done in {:?} on 2 runtime worker threads",
        start.elapsed()
    );
    Ok(())
}

fn child(n: &str) -> Res {
    // SAFETY: first thing in this process's main; the fd is ours alone.
    let mut child = unsafe { Child::from_env(Flow::Init) }?.with_deadline(Duration::from_secs(10));
    let source = std::env::var("SOURCE")?;
    let src = child.mount_source(&Mount::bind(source.as_str(), "/data"))?;
    drop(src); // a real init would attach it at /data
    child.hooks()?;
    child.ready()?;
    let note = rustix::fs::memfd_create("notify", rustix::fs::MemfdFlags::CLOEXEC)?;
    rustix::io::write(&note, format!("notify fd of init {n}").as_bytes())?;
    child.seccomp(SeccompHandoff::Attached(note.as_fd()))?;
    child.close()?;
    Ok(())
}
