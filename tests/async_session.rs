//! Async sessions (feature `tokio`) across real processes and sockets: the
//! async parent serving re-executed child processes (the same peers as
//! `tests/session.rs`), the async child against the blocking parent, a
//! handler that overruns its deadline, peer death through the pidfd, and
//! cancellation at every await point (each future dropped after 0, 1, 2, …
//! pending polls) with `/proc/self/fd` counted before and after.

mod common;
#[path = "common/session_peer.rs"]
mod session_peer;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{fd_count, serial};
use procsync::schema::{Mount, MountSourceKind, SyncMessage};
use procsync::session::tokio::{AsyncChild, AsyncParent, AsyncParentHandler, BlockingHandler};
use procsync::session::{
    Child, HandlerError, MountSource, Parent, ParentHandler, SeccompFd, SeccompHandoff,
    SessionError, SessionErrorKind,
};
use procsync::state::{Flow, State};
use procsync::transport::tokio::AsyncSocket;
use procsync::transport::{SyncSocket, TransportError};
use procsync::Origin;
use session_peer::*;

/// Not a test: the entry point of the peer processes the other tests spawn.
#[test]
#[ignore = "entry point of the peer processes the other tests spawn"]
fn session_peer_entry() {
    session_peer_main();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Temporary host directories, each holding one file; removed on drop.
struct TempDirs(Vec<PathBuf>);

impl TempDirs {
    fn new(n: usize) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dirs = (0..n)
            .map(|i| {
                let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let d = std::env::temp_dir()
                    .join(format!("procsync-async-{}-{k}-{i}", std::process::id()));
                std::fs::create_dir_all(&d).unwrap();
                d
            })
            .collect();
        TempDirs(dirs)
    }
    fn strs(&self) -> Vec<String> {
        self.0.iter().map(|d| d.display().to_string()).collect()
    }
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![(DIRS_VAR, self.strs().join(":"))]
    }
    fn mounts(&self) -> Vec<Mount> {
        self.strs()
            .iter()
            .enumerate()
            .map(|(i, d)| mount_for(i, d))
            .collect()
    }
}

impl Drop for TempDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn open_path(source: &str) -> Result<MountSource, HandlerError> {
    use rustix::fs::{open, Mode, OFlags};
    let fd = open(source, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    Ok(MountSource {
        fd,
        kind: MountSourceKind::PlainOpen,
    })
}

/// Reads what a seccomp stand-in fd holds: an eventfd counter or memfd text.
fn read_stand_in(fd: &OwnedFd) -> Result<Vec<u8>, HandlerError> {
    let mut buf = [0u8; 64];
    let n = match rustix::io::pread(fd, &mut buf, 0) {
        Ok(n) => n,
        Err(rustix::io::Errno::SPIPE) => rustix::io::read(fd, &mut buf[..8])?,
        Err(e) => return Err(e.into()),
    };
    Ok(buf[..n].to_vec())
}

/// A native async handler: O_PATH sources, records what it saw.
#[derive(Default)]
struct AsyncRecorder {
    mounts: Vec<String>,
    hooks: usize,
    ready: usize,
    seccomp: Option<Vec<u8>>,
}

impl AsyncParentHandler for AsyncRecorder {
    async fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
        self.mounts.push(req.source.clone());
        tokio::task::yield_now().await;
        open_path(&req.source)
    }
    async fn hooks(&mut self) -> Result<(), HandlerError> {
        self.hooks += 1;
        Ok(())
    }
    async fn ready(&mut self) -> Result<(), HandlerError> {
        self.ready += 1;
        Ok(())
    }
    async fn seccomp<'a>(&'a mut self, fd: SeccompFd<'a>) -> Result<(), HandlerError> {
        let fd = fd.into_owned()?;
        self.seccomp = Some(read_stand_in(&fd)?);
        Ok(())
    }
}

/// The same, blocking (run through `BlockingHandler`).
#[derive(Default)]
struct Recorder {
    mounts: usize,
    seccomp: Option<Vec<u8>>,
}

impl ParentHandler for Recorder {
    fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
        self.mounts += 1;
        open_path(&req.source)
    }
    fn seccomp(&mut self, fd: SeccompFd<'_>) -> Result<(), HandlerError> {
        let fd = fd.into_owned()?;
        self.seccomp = Some(read_stand_in(&fd)?);
        Ok(())
    }
}

fn results(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .collect()
}

#[test]
fn async_parent_serves_a_child_process_with_real_fds() {
    let _g = serial();
    let before = fd_count();
    let rt = runtime();
    let dirs = TempDirs::new(2);
    let (p, sock) = spawn_session_peer("init-full", &dirs.env());
    let mut h = AsyncRecorder::default();
    let report = rt.block_on(async {
        let mut parent = AsyncParent::new(sock, Flow::Init, dirs.mounts())
            .unwrap()
            .with_child_process(&p)
            .unwrap()
            .with_deadline(Duration::from_secs(20));
        let report = parent.serve(&mut h).await.unwrap();
        assert_eq!(parent.state(), State::Closed);
        report
    });
    assert_eq!(report.mounts, 2);
    assert!(report.hooks && report.ready && report.seccomp);
    assert_eq!(h.mounts, dirs.strs());
    assert_eq!((h.hooks, h.ready), (1, 1));
    // The pidfd_getfd copy of the child's eventfd.
    assert_eq!(h.seccomp, Some(EVENTFD_VALUE.to_ne_bytes().to_vec()));
    let (ok, out) = finish(p);
    assert!(ok, "child: {out}");
    assert_eq!(results(&out), ["mount 0 ok", "mount 1 ok", "done"]);
    drop(rt);
    assert_eq!(fd_count(), before);
}

#[test]
fn a_blocking_handler_runs_on_the_blocking_pool() {
    let _g = serial();
    let before = fd_count();
    let rt = runtime();
    let (p, sock) = spawn_session_peer("exec-attached", &[]);
    let mut h = BlockingHandler::new(Recorder::default());
    rt.block_on(async {
        let mut parent = AsyncParent::new(sock, Flow::Exec, [])
            .unwrap()
            .with_child_process(&p)
            .unwrap();
        let report = parent.serve(&mut h).await.unwrap();
        assert!(report.ready && report.seccomp);
    });
    let h = h.into_inner().unwrap();
    assert_eq!(h.seccomp.as_deref(), Some(MEMFD_TEXT));
    let (ok, out) = finish(p);
    assert!(ok, "child: {out}");
    drop(rt);
    assert_eq!(fd_count(), before);
}

#[test]
fn async_child_against_the_blocking_parent() {
    let _g = serial();
    let before = fd_count();
    let rt = runtime();
    let dirs = TempDirs::new(2);
    let (a, b) = SyncSocket::pair().unwrap();
    let mounts = dirs.mounts();
    let parent = std::thread::spawn(move || {
        let mut parent = Parent::new(a, Flow::Init, mounts).with_deadline(Duration::from_secs(20));
        let mut h = Recorder::default();
        let report = parent.serve(&mut h);
        (report, h)
    });
    rt.block_on(async {
        let mut child = AsyncChild::new(b, Flow::Init)
            .unwrap()
            .with_deadline(Duration::from_secs(20));
        for (i, m) in dirs.mounts().iter().enumerate() {
            let src = child.mount_source(m).await.unwrap();
            let (x, y) = (
                rustix::fs::fstat(&src.fd).unwrap(),
                rustix::fs::stat(dirs.0[i].as_path()).unwrap(),
            );
            assert_eq!((x.st_dev, x.st_ino), (y.st_dev, y.st_ino));
        }
        child.hooks().await.unwrap();
        child.ready().await.unwrap();
        let mfd = rustix::fs::memfd_create("notify", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::io::write(&mfd, MEMFD_TEXT).unwrap();
        child
            .seccomp(SeccompHandoff::Attached(mfd.as_fd()))
            .await
            .unwrap();
        child.close().unwrap();
    });
    let (report, h) = parent.join().unwrap();
    let report = report.unwrap();
    assert_eq!(report.mounts, 2);
    assert!(report.hooks && report.ready && report.seccomp);
    assert_eq!(h.seccomp.as_deref(), Some(MEMFD_TEXT));
    drop(rt);
    assert_eq!(fd_count(), before);
}

/// Sleeps `nap` in `hooks`, ignoring the deadline it is given.
struct Oblivious {
    nap: Duration,
}

impl ParentHandler for Oblivious {
    fn hooks(&mut self) -> Result<(), HandlerError> {
        std::thread::sleep(self.nap);
        Ok(())
    }
}

#[test]
fn a_handler_that_overruns_is_answered_for_at_the_deadline() {
    let _g = serial();
    let before = fd_count();
    let rt = runtime();
    let limit = Duration::from_millis(300);
    let nap = Duration::from_secs(2);
    let (a, b) = SyncSocket::pair().unwrap();
    let child = std::thread::spawn(move || {
        let mut child = Child::new(b, Flow::Init).with_deadline(Duration::from_secs(10));
        let start = Instant::now();
        let r = child.hooks();
        (r, start.elapsed())
    });
    let mut h = BlockingHandler::new(Oblivious { nap });
    let (e, took) = rt.block_on(async {
        let mut parent = AsyncParent::new(a, Flow::Init, [])
            .unwrap()
            .with_deadline(limit);
        let start = Instant::now();
        let e = parent.serve(&mut h).await.unwrap_err();
        (e, start.elapsed())
    });
    assert_eq!(e.kind(), SessionErrorKind::HandlerOverran);
    assert!(took < limit + Duration::from_millis(500), "{took:?}");
    let (r, child_took) = child.join().unwrap();
    let msg = r.unwrap_err().remote_message().unwrap().to_string();
    assert!(
        msg.starts_with("Hooks failed in the parent: the handler overran"),
        "{msg}"
    );
    assert!(child_took < nap, "{child_took:?}");
    // The handler still holds its pool thread: the wrapper has no handler.
    assert!(h.into_inner().is_none());
    drop(rt); // waits for the pool thread
    assert_eq!(fd_count(), before);
}

#[test]
fn a_killed_child_ends_serve_via_the_pidfd_though_a_grandchild_holds_the_socket() {
    let _g = serial();
    let before = fd_count();
    let rt = runtime();
    let (mut p, sock) = spawn_session_peer("spawn-holder", &[]);
    let mut out = BufReader::new(p.stdout.take().unwrap());
    let gc: i32 = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "child said nothing");
        if let Some(pid) = line.trim().strip_prefix("RESULT grandchild ") {
            break pid.parse().unwrap();
        }
    };
    let gc_pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(gc).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    let child_pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_child(&p),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    let start = Instant::now();
    let e = rt.block_on(async {
        let mut parent = AsyncParent::new(sock, Flow::Exec, [])
            .unwrap()
            .with_child_process(&p)
            .unwrap()
            .with_deadline(Duration::from_secs(20));
        let killer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            rustix::process::pidfd_send_signal(&child_pidfd, rustix::process::Signal::KILL)
                .unwrap();
        });
        let e = parent
            .serve(&mut AsyncRecorder::default())
            .await
            .unwrap_err();
        killer.await.unwrap();
        e
    });
    assert!(
        matches!(
            &e,
            SessionError::Transport {
                source: TransportError::PeerDied,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.origin(), Origin::Peer);
    assert!(start.elapsed() < Duration::from_secs(10));
    rustix::process::pidfd_send_signal(&gc_pidfd, rustix::process::Signal::KILL).unwrap();
    drop(gc_pidfd);
    p.wait().unwrap();
    drop((p, out));
    drop(rt);
    assert_eq!(fd_count(), before);
}

// ---- cancellation at every await point ----

/// Polls the inner future; at its `pendings`-th Pending (the future parked
/// at an await point, 0-based) drops it and resolves to `None` instead.
/// Walking `pendings` up from 0 drops the future at each await point it
/// reaches in turn.
struct DropAfter<F: Future> {
    fut: Option<Pin<Box<F>>>,
    pendings: usize,
}

fn drop_after<F: Future>(pendings: usize, fut: F) -> DropAfter<F> {
    DropAfter {
        fut: Some(Box::pin(fut)),
        pendings,
    }
}

impl<F: Future> Future for DropAfter<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.fut.as_mut().expect("polled after completion");
        match fut.as_mut().poll(cx) {
            Poll::Ready(v) => {
                self.fut = None;
                Poll::Ready(Some(v))
            }
            Poll::Pending if self.pendings == 0 => {
                self.fut = None; // dropped at this await point
                Poll::Ready(None)
            }
            Poll::Pending => {
                // Parked at an await point; the reactor wakes it when ready.
                self.pendings -= 1;
                Poll::Pending
            }
        }
    }
}

#[test]
fn socket_futures_dropped_at_every_await_point_lose_nothing() {
    let _g = serial();
    let before = fd_count();
    let rt = runtime();
    rt.block_on(async {
        let (a, b) = SyncSocket::pair().unwrap();
        let (mut a, mut b) = (AsyncSocket::new(a).unwrap(), AsyncSocket::new(b).unwrap());
        let file = std::fs::File::open("/dev/null").unwrap();
        let reply = SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/src");
        for round in 0..20u32 {
            // A receive dropped while nothing is queued consumes nothing...
            for _ in 0..3 {
                assert!(drop_after(0, b.recv()).await.is_none());
            }
            // ...and the record sent afterwards arrives whole, fd and all.
            a.send(&reply, Some(file.as_fd())).await.unwrap();
            let got = b.recv().await.unwrap();
            assert_eq!(got.msg.mount_fd_info().unwrap().source, "/src");
            assert!(got.fd.is_some(), "round {round}");
        }
        // Fill the peer's queue, then drop sends at every await point: each
        // either sent one whole record or nothing.
        let big = SyncMessage::error("x".repeat(30_000));
        let mut sent = 0usize;
        let mut dropped = 0usize;
        for _ in 0..200 {
            match drop_after(0, a.send(&big, None)).await {
                Some(r) => {
                    r.unwrap();
                    sent += 1;
                }
                None => dropped += 1,
            }
        }
        assert!(dropped > 0, "the queue never filled");
        let mut got = 0usize;
        while let Ok(Ok(rec)) = tokio::time::timeout(Duration::from_millis(100), b.recv()).await {
            assert_eq!(rec.msg, big);
            got += 1;
        }
        assert_eq!(got, sent, "{dropped} dropped sends");
    });
    drop(rt);
    assert_eq!(fd_count(), before);
}

/// A blocking child in a thread running the whole init flow with two real
/// mount sources and an attached seccomp fd.
fn blocking_child(
    sock: SyncSocket,
    mounts: Vec<Mount>,
) -> std::thread::JoinHandle<Result<(), SessionError>> {
    std::thread::spawn(move || {
        let mut child = Child::new(sock, Flow::Init).with_deadline(Duration::from_secs(10));
        for m in &mounts {
            drop(child.mount_source(m)?);
        }
        child.hooks()?;
        child.ready()?;
        let mfd = rustix::fs::memfd_create("notify", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::io::write(&mfd, MEMFD_TEXT).unwrap();
        child.seccomp(SeccompHandoff::Attached(mfd.as_fd()))?;
        child.close()
    })
}

#[test]
fn serve_dropped_at_every_await_point_ends_the_conversation_cleanly() {
    let _g = serial();
    let before = fd_count();
    let rt = runtime();
    // The runtime's own fds (epoll, waker) exist from here on.
    let base = fd_count();
    let dirs = TempDirs::new(2);
    let mut completed = false;
    for k in 0..200 {
        let (a, b) = SyncSocket::pair().unwrap();
        let child = blocking_child(b, dirs.mounts());
        let mounts = dirs.mounts();
        let replies = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = replies.clone();
        let (outcome, later) = rt.block_on(async {
            let mut parent = AsyncParent::new(a, Flow::Init, mounts)
                .unwrap()
                .with_deadline(Duration::from_secs(10))
                .with_observer(move |t| {
                    if t.direction == procsync::state::Direction::Send {
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            let mut h = AsyncRecorder::default();
            let outcome = drop_after(k, parent.serve(&mut h)).await;
            let later = parent.serve(&mut h).await;
            (outcome, later)
        });
        let child = child.join().unwrap();
        match outcome {
            Some(r) => {
                let report = r.unwrap();
                assert_eq!(report.mounts, 2);
                assert!(report.seccomp);
                child.unwrap();
                completed = true;
            }
            None => {
                // Clearly over on both sides, never a hang.
                assert!(
                    matches!(later, Err(SessionError::Closed { by: Origin::Local })),
                    "{later:?}"
                );
                // The child can only finish if every reply had gone out (the
                // drop came while the parent waited for its close).
                let all_replied = replies.load(std::sync::atomic::Ordering::Relaxed) == 5;
                assert!(
                    child.is_err() || all_replied,
                    "k={k}: the child finished a dropped conversation"
                );
            }
        }
        assert_eq!(fd_count(), base, "k={k}");
        if completed {
            break;
        }
    }
    assert!(completed, "serve never completed");
    drop(rt);
    assert_eq!(fd_count(), before);
}

#[test]
fn child_requests_dropped_at_every_await_point_are_intact_or_over() {
    let _g = serial();
    let before = fd_count();
    let rt = runtime();
    // The runtime's own fds (epoll, waker) exist from here on.
    let base = fd_count();
    let dirs = TempDirs::new(1);
    let m = dirs.mounts().remove(0);
    let mut completed = false;
    for k in 0..100 {
        let (a, b) = SyncSocket::pair().unwrap();
        let mounts = dirs.mounts();
        let parent = std::thread::spawn(move || {
            Parent::new(a, Flow::Init, mounts)
                .with_deadline(Duration::from_secs(10))
                .serve(&mut Recorder::default())
        });
        let m = m.clone();
        completed = rt.block_on(async move {
            let mut child = AsyncChild::new(b, Flow::Init)
                .unwrap()
                .with_deadline(Duration::from_secs(10));
            match drop_after(k, child.mount_source(&m)).await {
                Some(src) => {
                    drop(src.unwrap());
                    child.hooks().await.unwrap();
                    child.ready().await.unwrap();
                    child.close().unwrap();
                    true
                }
                None if child.state() == State::Mounting => {
                    // Dropped before the request left: intact, carry on.
                    drop(child.mount_source(&m).await.unwrap());
                    child.hooks().await.unwrap();
                    child.ready().await.unwrap();
                    child.close().unwrap();
                    false
                }
                None => {
                    // Dropped while the reply was owed: over, and it says so.
                    let e = child.hooks().await.unwrap_err();
                    assert!(matches!(e, SessionError::Closed { .. }), "{e:?}");
                    false
                }
            }
        });
        let served = parent.join().unwrap();
        if completed {
            served.unwrap();
        }
        assert_eq!(fd_count(), base, "k={k}");
        if completed {
            break;
        }
    }
    assert!(completed);
    drop(rt);
    assert_eq!(fd_count(), before);
}

#[test]
fn the_async_socket_keeps_limits_and_speaks_the_runc_wire() {
    let _g = serial();
    let before = fd_count();
    let rt = runtime();
    rt.block_on(async {
        let (a, b) = SyncSocket::pair().unwrap();
        let limits = procsync::wire::Limits::with_max_record(64);
        let mut a = AsyncSocket::new(a.with_limits(limits)).unwrap();
        let e = a
            .send(&SyncMessage::error("y".repeat(100)), None)
            .await
            .unwrap_err();
        assert_eq!(e.origin(), Origin::Local);
        assert!(a.as_fd().as_raw_fd() >= 0);
        drop((a, b));
        #[cfg(feature = "runc-compat")]
        {
            use procsync::transport::Wire;
            use procsync::wire::runc::MountShape;
            let wire = Wire::Runc(MountShape::V1_2);
            let (c, d) = SyncSocket::pair().unwrap();
            let mut c = AsyncSocket::new(c.with_wire(wire)).unwrap();
            let mut d = AsyncSocket::new(d.with_wire(wire)).unwrap();
            d.send(&SyncMessage::mount_please(Mount::bind("/tmp", "/x")), None)
                .await
                .unwrap();
            assert_eq!(c.recv().await.unwrap().msg.mount().unwrap().source, "/tmp");
            let file = std::fs::File::open("/tmp").unwrap();
            let reply = SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/tmp");
            c.send(&reply, Some(file.as_fd())).await.unwrap();
            let got = d.recv().await.unwrap();
            assert_eq!(got.msg.mount_fd_info().unwrap().source, "/tmp");
            assert!(got.fd.is_some());
        }
    });
    drop(rt);
    assert_eq!(fd_count(), before);
}
