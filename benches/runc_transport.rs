//! The same round trip on both wires of one [`SyncSocket`]: a MountPlease
//! request answered by a MountFd carrying one fd, between two processes
//! pinned to the same CPU. On the native wire that is two records; on
//! runc's wire three (the reply's fd travels in a second, named record),
//! plus JSON instead of protobuf.
//!
//! The peer is this bench binary re-executed with `PROCSYNC_BENCH_PEER`
//! set, as in `benches/transport.rs`. Besides criterion's wall-clock
//! figures, a final table reports wall time and CPU time (this thread + the
//! peer, from /proc/…/schedstat) per round trip for both wires, measured
//! interleaved, and the runc/native ratio.
//!
//! Short run: `cargo bench --features runc-compat --bench runc_transport --
//! --warm-up-time 1 --measurement-time 3`.

mod common;

use std::hint::black_box;
use std::os::fd::AsFd;
use std::time::Duration;

use common::{answer_mounts, measure, median, pin, pin_from_env, reply, request, Peer, PEER_VAR};
use criterion::Criterion;
use procsync::schema::SyncMessage;
use procsync::transport::{SyncSocket, Wire};
use procsync::wire::runc::MountShape;

fn wire_of(name: &str) -> Wire {
    match name {
        "native" => Wire::Native,
        "runc-v1.2" => Wire::Runc(MountShape::V1_2),
        "runc-v1.4" => Wire::Runc(MountShape::V1_4),
        other => panic!("unknown wire {other}"),
    }
}

/// The peer: answer every MountPlease with a MountFd and one fd until EOF.
fn peer(wire: &str) {
    pin_from_env();
    // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
    let mut sock = unsafe { SyncSocket::from_env() }
        .expect("peer: from_env")
        .with_wire(wire_of(wire));
    answer_mounts(&mut sock);
}

/// One round trip: send MountPlease, receive MountFd and its fd.
fn rt(sock: &mut SyncSocket, req: &SyncMessage) {
    sock.send(req, None).unwrap();
    let r = sock.recv().unwrap();
    black_box(r.fd.expect("MountFd carries an fd"));
}

fn main() {
    if let Ok(wire) = std::env::var(PEER_VAR) {
        peer(&wire);
        return;
    }
    let cpu = rustix::thread::sched_getcpu();
    pin(cpu);
    let wires = ["native", "runc-v1.2", "runc-v1.4"];
    let mut peers: Vec<Peer> = wires
        .iter()
        .map(|w| {
            let p = Peer::spawn(w, cpu);
            Peer {
                sock: p.sock.with_wire(wire_of(w)),
                ..p
            }
        })
        .collect();
    let req = request();

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("mount_round_trip_same_cpu");
        for (w, p) in wires.iter().zip(&mut peers) {
            g.bench_function(*w, |b| b.iter(|| rt(&mut p.sock, &req)));
        }
        g.finish();
    }
    {
        // Both ends in this thread: no context switch, so the difference is
        // the wires' own user-space and system-call cost.
        let mut g = c.benchmark_group("mount_round_trip_one_thread");
        let file = std::fs::File::open("/dev/null").unwrap();
        let rep = reply();
        for w in wires {
            let (a, b) = SyncSocket::pair().unwrap();
            let (mut a, mut b) = (a.with_wire(wire_of(w)), b.with_wire(wire_of(w)));
            g.bench_function(w, |bch| {
                bch.iter(|| {
                    a.send(&req, None).unwrap();
                    black_box(b.recv().unwrap());
                    b.send(&rep, Some(file.as_fd())).unwrap();
                    black_box(a.recv().unwrap().fd.unwrap());
                })
            });
        }
        g.finish();
    }

    // Side-by-side figures, finely interleaved so all wires share the
    // machine's noise; median of the rounds.
    let (rounds, n) = (9, 5_000);
    let mut results = vec![Vec::new(); wires.len()];
    for _ in 0..rounds {
        for (i, p) in peers.iter_mut().enumerate() {
            results[i].push(measure(p, n, |s| rt(s, &req)));
        }
    }
    println!(
        "\nMountPlease -> MountFd(+1 fd), both processes on CPU {cpu}, median of {rounds} x {n} round trips:"
    );
    println!("  {:<12} {:>10} {:>14}", "wire", "wall/rt", "cpu/rt (both)");
    let (nw, nc) = (median(&results[0], 0), median(&results[0], 1));
    for (w, r) in wires.iter().zip(&results) {
        let (wall, cpu_t) = (median(r, 0), median(r, 1));
        println!(
            "  {:<12} {:>8.2}µs {:>12.2}µs   ({:.2}x / {:.2}x native)",
            w,
            wall / 1e3,
            cpu_t / 1e3,
            wall / nw,
            cpu_t / nc
        );
    }

    for p in peers {
        p.finish();
    }
    c.final_summary();
}
