//! Pieces shared by the benchmarks: the pinned two-process round-trip rig
//! (`transport`, `runc_transport`) and runc's way of making a user namespace
//! (`userns`, `mountfd`). Each bench uses a subset.
#![allow(dead_code, unused_imports)]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use procsync::schema::{Mount, MountSourceKind, SyncMessage};
use procsync::transport::SyncSocket;

/// Set in the re-executed bench binary: which peer it plays (the tests'
/// one role variable, `support::peer::ROLE_VAR`).
pub use support::peer::ROLE_VAR as PEER_VAR;
/// Set in the re-executed bench binary: the CPU to pin itself to.
pub const CPU_VAR: &str = "PROCSYNC_BENCH_CPU";
/// The mount source of the benchmarked request (a realistic length).
pub const SOURCE: &str = "/var/lib/containers/storage/overlay/3f1c9a/merged";

/// The benchmarked request.
pub fn request() -> SyncMessage {
    SyncMessage::mount_please(Mount::bind(SOURCE, "/data").recursive())
}

/// The benchmarked reply (an fd rides with it).
pub fn reply() -> SyncMessage {
    SyncMessage::mount_fd(MountSourceKind::OpenTree, SOURCE)
}

/// The procsync peer's loop: answers every request on `sock` with
/// [`reply`] and one fd (`/dev/null`) until the other end closes.
pub fn answer_mounts(sock: &mut SyncSocket) {
    use std::os::fd::AsFd;
    let file = std::fs::File::open("/dev/null").unwrap();
    let reply = reply();
    loop {
        match sock.recv() {
            Ok(_) => sock.send(&reply, Some(file.as_fd())).unwrap(),
            Err(procsync::transport::TransportError::PeerClosed) => break,
            Err(e) => panic!("peer: {e}"),
        }
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("sched_setaffinity");
}

/// In a re-executed peer: pins it to the CPU its parent chose.
pub fn pin_from_env() {
    if let Some(cpu) = std::env::var(CPU_VAR).ok().and_then(|c| c.parse().ok()) {
        pin(cpu);
    }
}

/// Nanoseconds on CPU of a task, from /proc/…/schedstat (first field).
pub fn cpu_ns(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// This bench binary re-executed as the peer `mode`, pinned to `cpu`, and
/// our end of its sync socket.
pub struct Peer {
    pub child: Child,
    pub sock: SyncSocket,
}

impl Peer {
    pub fn spawn(mode: &str, cpu: usize) -> Peer {
        let (sock, theirs) = SyncSocket::pair().unwrap();
        let mut cmd = support::peer::command(mode);
        cmd.env(CPU_VAR, cpu.to_string()).stdout(Stdio::inherit());
        theirs.pass_to_child(&mut cmd).unwrap();
        let child = cmd.spawn().unwrap();
        drop(theirs);
        Peer { child, sock }
    }

    pub fn schedstat(&self) -> String {
        format!("/proc/{}/schedstat", self.child.id())
    }

    pub fn finish(mut self) {
        drop(self.sock);
        let st = self.child.wait().unwrap();
        assert!(st.success(), "peer failed: {st}");
    }
}

/// Wall and CPU (this thread + the peer) nanoseconds per round trip `rt`
/// over `n`, after 200 warm-up round trips.
pub fn measure(peer: &mut Peer, n: u32, mut rt: impl FnMut(&mut SyncSocket)) -> (f64, f64) {
    for _ in 0..200 {
        rt(&mut peer.sock);
    }
    let (c0, p0) = (
        cpu_ns("/proc/thread-self/schedstat"),
        cpu_ns(&peer.schedstat()),
    );
    let t0 = Instant::now();
    for _ in 0..n {
        rt(&mut peer.sock);
    }
    let wall = t0.elapsed();
    let (c1, p1) = (
        cpu_ns("/proc/thread-self/schedstat"),
        cpu_ns(&peer.schedstat()),
    );
    let cpu = (c1 - c0) + (p1 - p0);
    (
        wall.as_nanos() as f64 / f64::from(n),
        cpu as f64 / f64::from(n),
    )
}

/// The median of the wall (`i == 0`) or CPU (`i == 1`) figures.
pub fn median(v: &[(f64, f64)], i: usize) -> f64 {
    let mut x: Vec<f64> = v.iter().map(|p| if i == 0 { p.0 } else { p.1 }).collect();
    x.sort_by(f64::total_cmp);
    x[x.len() / 2]
}

/// runc's way, in Rust: fork+exec /proc/self/exe in a new user namespace,
/// traced so it stops at exec; write its maps (`uid`, `gid`: map-file text);
/// open its ns; kill and reap it.
pub fn runc_style_userns(uid: &str, gid: &str) -> OwnedFd {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only makes
    // two async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) != 0
                || libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn /proc/self/exe");
    let pid = rustix::process::Pid::from_child(&child);
    // The exec stop (SIGTRAP) of the traced child.
    let (_, st) = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::UNTRACED)
        .expect("waitpid")
        .expect("status");
    assert!(st.stopped(), "child did not stop: {st:?}");
    let dir = format!("/proc/{}", child.id());
    for (f, t) in [("uid_map", uid), ("setgroups", "deny"), ("gid_map", gid)] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("{dir}/{f}"))
            .and_then(|mut h| h.write_all(t.as_bytes()))
            .expect("write map");
    }
    let ns: OwnedFd = std::fs::File::open(format!("{dir}/ns/user"))
        .expect("open ns")
        .into();
    child.kill().expect("kill");
    child.wait().expect("reap");
    ns
}
