//! The many-children rig of `tests/async_scale.rs` and
//! `benches/async_scale.rs`: cheap child processes (the harness-less binary
//! re-executed with `PROCSYNC_SCALE_ROLE=child`) each running a full init
//! conversation with real fds — two mount sources, hooks, ready/run, an
//! attached seccomp stand-in (a memfd) — against either one tokio runtime
//! ([`serve_async`]) or a thread per child ([`serve_threads`]).
#![allow(dead_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child as Process, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use procsync::schema::{Mount, MountSourceKind};
use procsync::session::tokio::{AsyncParent, AsyncParentHandler};
use procsync::session::{
    Child, HandlerError, MountSource, Parent, ParentHandler, SeccompFd, SeccompHandoff, ServeReport,
};
use procsync::state::Flow;
use procsync::transport::SyncSocket;

/// Set in a re-executed child: its role.
pub const ROLE_VAR: &str = "PROCSYNC_SCALE_ROLE";
/// Colon-separated host directories the child asks to mount.
pub const DIRS_VAR: &str = "PROCSYNC_SCALE_DIRS";
/// What each child writes into its seccomp stand-in.
pub const STAND_IN: &[u8] = b"notify";

/// The mounts every child asks for (and the parent allows).
pub fn mounts(dirs: &[String]) -> Vec<Mount> {
    dirs.iter()
        .enumerate()
        .map(|(i, d)| Mount::bind(d.as_str(), format!("/mnt/{i}")))
        .collect()
}

/// The child process: the whole init flow, then exit (0 when all held).
pub fn child_main() -> ! {
    let code = match child_flow() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("scale child: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn child_flow() -> Result<(), Box<dyn std::error::Error>> {
    let dirs: Vec<String> = std::env::var(DIRS_VAR)?
        .split(':')
        .map(str::to_string)
        .collect();
    // SAFETY: first thing in this process's main; the fd is ours alone.
    let mut child = unsafe { Child::from_env(Flow::Init) }?.with_deadline(Duration::from_secs(60));
    for m in mounts(&dirs) {
        let src = child.mount_source(&m)?;
        let (a, b) = (
            rustix::fs::fstat(&src.fd)?,
            rustix::fs::stat(m.source.as_str())?,
        );
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
            return Err(format!("wrong fd for {}", m.source).into());
        }
    }
    child.hooks()?;
    child.ready()?;
    let mfd = rustix::fs::memfd_create("notify", rustix::fs::MemfdFlags::CLOEXEC)?;
    rustix::io::write(&mfd, STAND_IN)?;
    child.seccomp(SeccompHandoff::Attached(mfd.as_fd()))?;
    child.close()?;
    Ok(())
}

/// Raises the soft fd limit to the hard one (each child costs the parent a
/// socket and two pidfds while it lives).
pub fn raise_nofile() -> u64 {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let new = rustix::process::Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, new);
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Spawns `n` children (this binary re-executed) and returns each with the
/// parent's end of its socket. Eight spawning threads, so one child's exec
/// does not wait for the previous one's.
pub fn spawn_children(n: usize, dirs: &[String]) -> Vec<(Process, SyncSocket)> {
    let exe = std::env::current_exe().unwrap();
    let joined = dirs.join(":");
    let spawn_one = || {
        let (mine, theirs) = SyncSocket::pair().unwrap();
        let mut cmd = Command::new(&exe);
        cmd.env(ROLE_VAR, "child")
            .env(DIRS_VAR, &joined)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        theirs.pass_to_child(&mut cmd).unwrap();
        let p = cmd.spawn().unwrap();
        drop(theirs);
        (p, mine)
    };
    let spawners = 8;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..spawners)
            .map(|k| {
                let count = n / spawners + usize::from(k < n % spawners);
                s.spawn(move || (0..count).map(|_| spawn_one()).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Reaps every child; the number that exited 0.
pub fn reap(children: Vec<Process>) -> usize {
    children
        .into_iter()
        .filter_map(|mut p| p.wait().ok())
        .filter(|s| s.success())
        .count()
}

fn open_path(source: &str) -> Result<MountSource, HandlerError> {
    use rustix::fs::{open, Mode, OFlags};
    let fd = open(source, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    Ok(MountSource {
        fd,
        kind: MountSourceKind::PlainOpen,
    })
}

fn check_stand_in(fd: OwnedFd) -> Result<(), HandlerError> {
    let mut buf = [0u8; 16];
    let n = rustix::io::pread(&fd, &mut buf, 0)?;
    if &buf[..n] == STAND_IN {
        Ok(())
    } else {
        Err(HandlerError::new("wrong seccomp stand-in"))
    }
}

/// The async handler: O_PATH sources; `ready` waits until `gate` sessions
/// are all at Ready (every child alive and mid-conversation at once).
pub struct AsyncHandler {
    pub gate: Option<Arc<tokio::sync::Barrier>>,
}

impl AsyncParentHandler for AsyncHandler {
    async fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
        open_path(&req.source)
    }
    async fn ready(&mut self) -> Result<(), HandlerError> {
        if let Some(g) = &self.gate {
            g.wait().await;
        }
        Ok(())
    }
    async fn seccomp<'a>(&'a mut self, fd: SeccompFd<'a>) -> Result<(), HandlerError> {
        check_stand_in(fd.into_owned()?)
    }
}

/// The blocking handler, for the thread-per-child server.
pub struct BlockingScaleHandler {
    pub gate: Option<Arc<std::sync::Barrier>>,
}

impl ParentHandler for BlockingScaleHandler {
    fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
        open_path(&req.source)
    }
    fn ready(&mut self) -> Result<(), HandlerError> {
        if let Some(g) = &self.gate {
            g.wait();
        }
        Ok(())
    }
    fn seccomp(&mut self, fd: SeccompFd<'_>) -> Result<(), HandlerError> {
        check_stand_in(fd.into_owned()?)
    }
}

/// What one server run did.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Conversations that ended with a full report.
    pub served: usize,
    /// Children that exited 0.
    pub children_ok: usize,
    /// From the first serve to the last reap.
    pub wall: Duration,
    /// Most threads this process had, sampled every millisecond.
    pub peak_threads: usize,
}

fn full(r: &ServeReport) -> bool {
    r.mounts == 2 && r.hooks && r.ready && r.seccomp
}

/// Samples this process's thread count until dropped.
struct ThreadSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    t: Option<std::thread::JoinHandle<()>>,
}

fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

impl ThreadSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(threads_now()));
        let (s, p) = (stop.clone(), peak.clone());
        let t = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(threads_now(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        ThreadSampler {
            stop,
            peak,
            t: Some(t),
        }
    }
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.t.take().unwrap().join().unwrap();
        // The sampler itself is not part of the server.
        self.peak.load(Ordering::Relaxed).saturating_sub(1)
    }
}

/// Serves every child on one tokio runtime with `workers` worker threads,
/// one task per child. With `gate`, every session waits at Ready until all
/// are there.
pub fn serve_async(
    children: Vec<(Process, SyncSocket)>,
    mounts: &[Mount],
    workers: usize,
    gate: bool,
) -> Stats {
    let n = children.len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let sampler = ThreadSampler::start();
    let start = Instant::now();
    let barrier = gate.then(|| Arc::new(tokio::sync::Barrier::new(n)));
    let (procs, served) = rt.block_on(async {
        let mut tasks = Vec::with_capacity(n);
        let mut procs = Vec::with_capacity(n);
        for (p, sock) in children {
            let mut parent = AsyncParent::new(sock, Flow::Init, mounts.to_vec())
                .unwrap()
                .with_child_process(&p)
                .unwrap()
                .with_deadline(Duration::from_secs(60));
            procs.push(p);
            let gate = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let mut h = AsyncHandler { gate };
                parent.serve(&mut h).await
            }));
        }
        let mut served = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) if full(&r) => served += 1,
                Ok(r) => eprintln!("incomplete: {r:?}"),
                Err(e) => eprintln!("serve: {e}"),
            }
        }
        (procs, served)
    });
    let children_ok = reap(procs);
    let wall = start.elapsed();
    let peak_threads = sampler.finish();
    drop(rt);
    Stats {
        served,
        children_ok,
        wall,
        peak_threads,
    }
}

/// Serves every child with its own blocking `Parent` on its own thread.
pub fn serve_threads(children: Vec<(Process, SyncSocket)>, mounts: &[Mount], gate: bool) -> Stats {
    let n = children.len();
    let sampler = ThreadSampler::start();
    let start = Instant::now();
    let barrier = gate.then(|| Arc::new(std::sync::Barrier::new(n)));
    let mut threads = Vec::with_capacity(n);
    let mut procs = Vec::with_capacity(n);
    for (p, sock) in children {
        let mut parent = Parent::new(sock, Flow::Init, mounts.to_vec())
            .with_child_process(&p)
            .unwrap()
            .with_deadline(Duration::from_secs(60));
        procs.push(p);
        let gate = barrier.clone();
        threads.push(
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut h = BlockingScaleHandler { gate };
                    parent.serve(&mut h)
                })
                .unwrap(),
        );
    }
    let served = threads
        .into_iter()
        .filter(|_| true)
        .map(|t| t.join().unwrap())
        .filter(|r| r.as_ref().is_ok_and(full))
        .count();
    let children_ok = reap(procs);
    let wall = start.elapsed();
    Stats {
        served,
        children_ok,
        wall,
        peak_threads: sampler.finish(),
    }
}

/// Temporary host directories for the mount sources; removed on drop.
pub struct Dirs(pub Vec<String>);

impl Dirs {
    pub fn new(tag: &str) -> Self {
        let dirs = (0..2)
            .map(|i| {
                let d = std::env::temp_dir()
                    .join(format!("procsync-scale-{tag}-{}-{i}", std::process::id()));
                std::fs::create_dir_all(&d).unwrap();
                d.display().to_string()
            })
            .collect();
        Dirs(dirs)
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Peak resident set of this process so far (VmHWM), in KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Open fds of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
