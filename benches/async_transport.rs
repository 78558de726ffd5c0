//! The async socket's round trip beside the blocking one: one MountPlease
//! answered by a MountFd carrying one fd, the peer a blocking procsync
//! process pinned to the same CPU as the measuring thread. The async side
//! is `AsyncSocket` on a current-thread tokio runtime (readiness through
//! the reactor, one non-blocking attempt per record); the baseline is
//! `SyncSocket` blocking in `recvmsg`, measured in the same run. Reports
//! the medians of wall and CPU time (this thread + the peer) per round
//! trip, and the ratio (target ≤ 1.3×).
//!
//! `cargo bench --bench async_transport --features tokio`.

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::{answer_mounts, cpu_ns, median, pin, pin_from_env, request, Peer, PEER_VAR};
use procsync::transport::tokio::AsyncSocket;
use procsync::transport::SyncSocket;

fn peer() {
    pin_from_env();
    // SAFETY: first thing in this process's main; the fd is ours alone.
    let mut sock = unsafe { SyncSocket::from_env() }.expect("peer: from_env");
    answer_mounts(&mut sock);
}

/// Wall and CPU ns per round trip of `n` runs of `f` (after a warm-up).
fn timed(peer_stat: &str, n: u32, mut f: impl FnMut(u32)) -> (f64, f64) {
    f(500);
    let (c0, p0) = (cpu_ns("/proc/thread-self/schedstat"), cpu_ns(peer_stat));
    let t0 = Instant::now();
    f(n);
    let wall = t0.elapsed();
    let (c1, p1) = (cpu_ns("/proc/thread-self/schedstat"), cpu_ns(peer_stat));
    (
        wall.as_nanos() as f64 / f64::from(n),
        ((c1 - c0) + (p1 - p0)) as f64 / f64::from(n),
    )
}

fn main() {
    if std::env::var(PEER_VAR).is_ok() {
        peer();
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let cpu = rustix::thread::sched_getcpu();
    pin(cpu);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut blocking = Peer::spawn("procsync", cpu);
    let Peer {
        child: mut async_child,
        sock,
    } = Peer::spawn("procsync", cpu);
    let async_stat = format!("/proc/{}/schedstat", async_child.id());
    let mut sock = rt.block_on(async { AsyncSocket::new(sock).unwrap() });
    let req = request();
    let (rounds, n) = (9, 5_000);
    let (mut b, mut a) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let stat = blocking.schedstat();
        b.push(timed(&stat, n, |k| {
            for _ in 0..k {
                blocking.sock.send(&req, None).unwrap();
                black_box(blocking.sock.recv().unwrap().fd.unwrap());
            }
        }));
        a.push(timed(&async_stat, n, |k| {
            rt.block_on(async {
                for _ in 0..k {
                    sock.send(&req, None).await.unwrap();
                    black_box(sock.recv().await.unwrap().fd.unwrap());
                }
            })
        }));
    }
    let (bw, bc, aw, ac) = (median(&b, 0), median(&b, 1), median(&a, 0), median(&a, 1));
    println!("\nMountPlease → MountFd round trip, both peers pinned to CPU {cpu}, {rounds}×{n} (medians):");
    println!("{:<24} {:>10} {:>10}", "", "wall ns", "CPU ns");
    println!("{:<24} {bw:>10.0} {bc:>10.0}", "SyncSocket (blocking)");
    println!("{:<24} {aw:>10.0} {ac:>10.0}", "AsyncSocket (tokio)");
    println!(
        "{:<24} {:>9.2}× {:>9.2}×",
        "async / blocking",
        aw / bw,
        ac / bc
    );
    drop(sock);
    async_child.wait().unwrap();
    blocking.finish();
}
