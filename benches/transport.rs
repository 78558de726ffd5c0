//! One MountPlease request answered by a MountFd carrying one fd, between
//! two processes pinned to the same CPU: procsync's [`SyncSocket`] versus a
//! raw `sendmsg`/`recvmsg` loop moving the same bytes and the same fd.
//!
//! The peer is this bench binary re-executed with `PROCSYNC_BENCH_PEER`
//! set. Besides criterion's wall-clock figures, a final table reports wall
//! time and CPU time (this thread + the peer, from /proc/…/schedstat) per
//! round trip, and procsync's ratio to raw.
//!
//! Short run: `cargo bench --bench transport -- --warm-up-time 1 --measurement-time 3`.

mod common;

use std::hint::black_box;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{answer_mounts, measure, median, pin, pin_from_env, reply, request, Peer, PEER_VAR};
use criterion::Criterion;
use procsync::schema::SyncMessage;
use procsync::transport::SyncSocket;
use procsync::wire::{native, Limits};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

fn encoded(msg: &SyncMessage, fd: bool) -> Vec<u8> {
    let mut b = BytesMut::new();
    native::encode(msg, fd, &mut b, &Limits::default()).unwrap();
    b.to_vec()
}

fn raw_send(sock: impl AsFd, bytes: &[u8], fd: Option<std::os::fd::BorrowedFd<'_>>) {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        anc.push(SendAncillaryMessage::ScmRights(&fds));
    }
    rustix::net::sendmsg(sock, &[IoSlice::new(bytes)], &mut anc, SendFlags::NOSIGNAL).unwrap();
}

/// One raw recvmsg into `buf`; returns the length and the fd, if any.
fn raw_recv(sock: impl AsFd, buf: &mut [u8]) -> (usize, Option<OwnedFd>) {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let r = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(buf)],
        &mut anc,
        RecvFlags::CMSG_CLOEXEC,
    )
    .unwrap();
    let mut fd = None;
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for f in fds {
                fd = Some(f);
            }
        }
    }
    (r.bytes, fd)
}

/// The peer: answer every MountPlease with a MountFd and one fd until EOF.
fn peer(mode: &str) {
    pin_from_env();
    // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
    let mut sock = unsafe { SyncSocket::from_env() }.expect("peer: from_env");
    match mode {
        "procsync" => answer_mounts(&mut sock),
        _ => {
            let file = std::fs::File::open("/dev/null").unwrap();
            let reply = encoded(&reply(), true);
            let mut buf = vec![0u8; Limits::default().max_record()];
            loop {
                let (n, _) = raw_recv(&sock, &mut buf);
                if n == 0 {
                    break;
                }
                raw_send(&sock, &reply, Some(file.as_fd()));
            }
        }
    }
}

/// A procsync round trip: send MountPlease, receive MountFd and its fd.
fn procsync_rt(sock: &mut SyncSocket, req: &SyncMessage) {
    sock.send(req, None).unwrap();
    let r = sock.recv().unwrap();
    black_box(r.fd.expect("MountFd carries an fd"));
}

/// The same bytes and fd with bare syscalls: no codec, no checks.
fn raw_rt(sock: &SyncSocket, req: &[u8], buf: &mut [u8]) {
    raw_send(sock, req, None);
    let (n, fd) = raw_recv(sock, buf);
    black_box((n, fd.expect("an fd")));
}

/// CPU nanoseconds per round trip spent in the codec alone (in-process):
/// what procsync does on top of the raw loop besides the transport itself.
fn codec_ns(req: &SyncMessage, reply: &SyncMessage, n: u32) -> f64 {
    let limits = Limits::default();
    let mut b = BytesMut::with_capacity(256);
    let t0 = Instant::now();
    for _ in 0..n {
        b.clear();
        native::encode(black_box(req), false, &mut b, &limits).unwrap();
        black_box(native::decode(&b, 0, &limits).unwrap());
        b.clear();
        native::encode(black_box(reply), true, &mut b, &limits).unwrap();
        black_box(native::decode(&b, 1, &limits).unwrap());
    }
    t0.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    if let Ok(mode) = std::env::var(PEER_VAR) {
        peer(&mode);
        return;
    }
    let cpu = rustix::thread::sched_getcpu();
    pin(cpu);
    let mut ps = Peer::spawn("procsync", cpu);
    let mut raw = Peer::spawn("raw", cpu);
    let req = request();
    let req_bytes = encoded(&req, false);
    let mut buf = vec![0u8; Limits::default().max_record()];

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("mount_round_trip_same_cpu");
        g.bench_function("procsync", |b| b.iter(|| procsync_rt(&mut ps.sock, &req)));
        g.bench_function("raw_sendmsg_recvmsg", |b| {
            b.iter(|| raw_rt(&raw.sock, &req_bytes, &mut buf))
        });
        g.finish();
    }
    {
        // Both ends in this thread: no context switch, so the difference is
        // exactly procsync's user-space and syscall-argument overhead.
        let (mut a, mut b) = SyncSocket::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let rep = reply();
        let rep_bytes = encoded(&rep, true);
        let mut g = c.benchmark_group("mount_round_trip_one_thread");
        g.bench_function("procsync", |bch| {
            bch.iter(|| {
                a.send(&req, None).unwrap();
                black_box(b.recv().unwrap());
                b.send(&rep, Some(file.as_fd())).unwrap();
                black_box(a.recv().unwrap().fd.unwrap());
            })
        });
        g.bench_function("raw_sendmsg_recvmsg", |bch| {
            bch.iter(|| {
                raw_send(&a, &req_bytes, None);
                black_box(raw_recv(&b, &mut buf));
                raw_send(&b, &rep_bytes, Some(file.as_fd()));
                black_box(raw_recv(&a, &mut buf).1.unwrap());
            })
        });
        g.finish();
    }

    // Side-by-side figures, finely interleaved so both modes share the
    // machine's noise; median of the rounds.
    let (rounds, n) = (9, 5_000);
    let (mut p, mut r) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        p.push(measure(&mut ps, n, |s| procsync_rt(s, &req)));
        r.push(measure(&mut raw, n, |s| raw_rt(s, &req_bytes, &mut buf)));
    }
    let (pw, pc, rw, rc) = (median(&p, 0), median(&p, 1), median(&r, 0), median(&r, 1));
    println!(
        "\nMountPlease -> MountFd(+1 fd), both processes on CPU {cpu}, median of {rounds} x {n} round trips:"
    );
    println!("  {:<22} {:>10} {:>14}", "", "wall/rt", "cpu/rt (both)");
    println!(
        "  {:<22} {:>8.2}µs {:>12.2}µs",
        "procsync",
        pw / 1e3,
        pc / 1e3
    );
    println!(
        "  {:<22} {:>8.2}µs {:>12.2}µs",
        "raw sendmsg/recvmsg",
        rw / 1e3,
        rc / 1e3
    );
    println!(
        "  ratio procsync/raw: wall {:.3}x, cpu {:.3}x",
        pw / rw,
        pc / rc
    );
    let codec = codec_ns(&req, &reply(), n);
    println!(
        "  of which the codec (encode+decode+validate of both messages, both sides): {:.2}µs",
        codec / 1e3
    );

    ps.finish();
    raw.finish();
    c.final_summary();
}
