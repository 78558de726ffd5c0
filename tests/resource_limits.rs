//! Resource limits under a hostile peer: a receiver with `RLIMIT_NOFILE`
//! lowered to 32 (and only 8 fd slots left free) and a 4 KiB record limit
//! gets flooded with fds (2, 8, 16 and 253 per record, hundreds of records
//! with fds) and with oversize records (64 KiB + 1 and 200 000 bytes, with
//! fds). It must answer each bad record with a typed error, close every fd
//! that came with it (its fd count is back at the baseline after every
//! record), never allocate more than the record limit plus a little while
//! receiving (a counting global allocator: this binary's own), and still
//! take a good record afterwards.
//!
//! The receiver is this test binary re-executed (so the limit and the
//! allocator count only it); the test process is the flooding peer.

mod support;

use std::collections::BTreeMap;
use std::io::{IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use procsync::schema::{MountSourceKind, SyncMessage};
use procsync::transport::{SyncSocket, TransportError};
use procsync::wire::{native, Limits};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use support::fd_count;

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;

/// Runs `f`; returns its result and how far live heap bytes rose above
/// where they were when it started.
fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let (r, cost) = support::alloc::measure(f);
    (r, cost.peak)
}

/// The receiver's `RLIMIT_NOFILE`.
const NOFILE: usize = 32;
/// Fd slots the receiver leaves free (it fills the rest with /dev/null).
const FREE_SLOTS: usize = 8;
/// The receiver's record limit.
const MAX_RECORD: usize = 4096;
/// Heap the receive path may use beyond the record buffer (the fd vector,
/// a decoded message's few small strings, error values).
const ALLOC_SLACK: usize = 1024;

/// What a flooding record carries.
#[derive(Clone, Copy)]
enum Body {
    /// A MountFd with HasFd set (valid with exactly one fd).
    MountFd,
    /// A Ready (no HasFd).
    Ready,
    /// `n` bytes that are not a record at all.
    Raw(usize),
    /// A length prefix declaring more than follows.
    Garbage,
    /// A MountPlease just under the limit whose bytes are all one packed
    /// repeated field: `propagation_flags` (1-byte varints, 8 bytes each
    /// decoded) or `id_mapping.uid_mappings` (2-byte empty messages, 12
    /// bytes each decoded) — the most a record can make the decoder hold.
    Dense(Dense),
}

#[derive(Clone, Copy)]
enum Dense {
    PropagationFlags,
    IdMapLines,
}

struct Flood {
    name: &'static str,
    records: usize,
    body: Body,
    fds: usize,
    /// The receiver's outcome for every record of the case.
    expect: &'static str,
    /// Heap bytes the receive path may hold at its peak, record buffer
    /// included.
    alloc_bound: usize,
}

fn floods() -> Vec<Flood> {
    let f = |name, records, body, fds, expect| Flood {
        name,
        records,
        body,
        fds,
        expect,
        alloc_bound: MAX_RECORD + ALLOC_SLACK,
    };
    // Decoding expands a dense record: 8 bytes per 1-byte varint, 12 per
    // 2-byte empty IdMap, plus Vec doubling. Bounded by a multiple of the
    // record limit (PROTOCOL.md §7), never by what the peer claims.
    let dense = |name, which, expect| Flood {
        alloc_bound: 16 * MAX_RECORD,
        ..f(name, 1, Body::Dense(which), 0, expect)
    };
    vec![
        f("2-fds", 1, Body::MountFd, 2, "decode:too-many-fds"),
        // All 8 fit in the free slots (and in the control buffer): counted, closed.
        f("8-fds", 1, Body::MountFd, 8, "decode:too-many-fds"),
        // The fd table fills after 8: the kernel installs 8, drops the rest
        // and sets MSG_CTRUNC; the 8 are closed.
        f("16-fds", 1, Body::MountFd, 16, "control-truncated"),
        f("253-fds-x50", 50, Body::MountFd, 253, "control-truncated"),
        f("ready+fd-x300", 300, Body::Ready, 1, "decode:unexpected-fd"),
        f(
            "garbage+fd-x50",
            50,
            Body::Garbage,
            1,
            "decode:length-mismatch",
        ),
        f(
            "65537-bytes+fd",
            1,
            Body::Raw(65_537),
            1,
            "truncated:65537>4096",
        ),
        f(
            "200000-bytes+fd",
            1,
            Body::Raw(200_000),
            1,
            "truncated:200000>4096",
        ),
        f(
            "200000-bytes+253-fds",
            1,
            Body::Raw(200_000),
            253,
            "truncated:200000>4096",
        ),
        dense(
            "dense-propagation-flags",
            Dense::PropagationFlags,
            "ok:MountPlease",
        ),
        dense(
            "dense-id-map-lines",
            Dense::IdMapLines,
            "decode:invalid-value",
        ),
        f("good", 1, Body::MountFd, 1, "ok:MountFd+fd"),
    ]
}

fn record(body: Body) -> Vec<u8> {
    let encode = |msg: &SyncMessage, with_fd| {
        let mut b = BytesMut::new();
        native::encode(msg, with_fd, &mut b, &Limits::default()).unwrap();
        b.to_vec()
    };
    match body {
        Body::MountFd => encode(
            &SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/src"),
            true,
        ),
        Body::Ready => encode(&SyncMessage::ready(), false),
        Body::Raw(n) => vec![0x55; n],
        Body::Garbage => vec![0x7f, 0x08, 0x02],
        Body::Dense(which) => dense_record(which),
    }
}

/// The largest record of `which` kind that fits [`MAX_RECORD`].
fn dense_record(which: Dense) -> Vec<u8> {
    let build = |n: usize| {
        let mut m = procsync::schema::Mount::bind("/a", "/b");
        match which {
            Dense::PropagationFlags => m.propagation_flags = vec![1; n],
            Dense::IdMapLines => {
                let lines = vec![procsync::schema::IdMap::default(); n];
                m = m.with_id_mapping(procsync::schema::IdMapping::ranges(lines, Vec::new()));
            }
        }
        // Not native::encode: it refuses what the validator rejects.
        let body = prost::Message::encode_to_vec(&SyncMessage::mount_please(m));
        let mut rec = Vec::new();
        prost::encoding::encode_varint(body.len() as u64, &mut rec);
        rec.extend(body);
        rec
    };
    let (mut lo, mut hi) = (1, MAX_RECORD);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if build(mid).len() <= MAX_RECORD {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    build(lo)
}

/// Not a test: the entry point of the receiver process.
#[test]
#[ignore = "entry point of the receiver process the other test spawns"]
fn limits_peer_entry() {
    support::peer::run(|_| receiver());
}

fn say(line: impl std::fmt::Display) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "RESULT {line}");
    let _ = o.flush();
}

/// The receiver: lowers its fd limit, fills all but [`FREE_SLOTS`] slots,
/// then receives every flood case and prints one line per case:
/// `<name> <outcome>x<count>[,...] alloc=<peak bytes> fds=<stable|LEAK>`.
fn receiver() -> i32 {
    let lim = rustix::process::Rlimit {
        current: Some(NOFILE as u64),
        maximum: Some(NOFILE as u64),
    };
    rustix::process::setrlimit(rustix::process::Resource::Nofile, lim).unwrap();
    // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
    let mut sock = unsafe { SyncSocket::from_env() }
        .unwrap()
        .with_limits(Limits::with_max_record(MAX_RECORD));
    let mut pads = Vec::new();
    // fd_count() counts the listing's own fd too.
    while fd_count() - 1 < NOFILE - FREE_SLOTS {
        pads.push(std::fs::File::open("/dev/null").unwrap());
    }
    let baseline = fd_count();
    say(format!("baseline {} of {NOFILE}", baseline - 1));
    sock.send_record(b"ready", None, None).unwrap();
    for case in floods() {
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        let mut max_alloc = 0;
        let mut stable = true;
        for _ in 0..case.records {
            let deadline = Some(Instant::now() + Duration::from_secs(10));
            let (r, alloc) = peak_during(|| sock.recv_deadline(deadline));
            max_alloc = max_alloc.max(alloc);
            let outcome = match &r {
                Ok(rec) => {
                    let with_fd = rec.fd.is_some() && fd_count() == baseline + 1;
                    format!(
                        "ok:{}{}",
                        rec.msg.kind().map(|t| t.name()).unwrap_or("?"),
                        if with_fd { "+fd" } else { "" }
                    )
                }
                Err(TransportError::Decode(d)) => format!("decode:{}", d.kind()),
                Err(TransportError::Truncated { size, max }) => format!("truncated:{size}>{max}"),
                Err(TransportError::ControlTruncated) => "control-truncated".to_string(),
                Err(other) => format!("{other:?}"),
            };
            drop(r);
            stable &= fd_count() == baseline;
            *outcomes.entry(outcome).or_default() += 1;
        }
        let summary: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o}x{n}")).collect();
        say(format!(
            "{} {} alloc={max_alloc} fds={}",
            case.name,
            summary.join(","),
            if stable { "stable" } else { "LEAK" }
        ));
    }
    drop(pads);
    0
}

/// Sends `bytes` as one record with `fds` (up to 253, the kernel's
/// SCM_MAX_FD), bypassing every check of the transport.
fn raw_send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(253))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(anc.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let n =
        rustix::net::sendmsg(sock, &[IoSlice::new(bytes)], &mut anc, SendFlags::NOSIGNAL).unwrap();
    assert_eq!(n, bytes.len());
}

#[test]
fn a_flooding_peer_cannot_exhaust_the_receivers_fds_or_memory() {
    let fds_before = fd_count();
    let (mut mine, theirs) = SyncSocket::pair().unwrap();
    let mut cmd = support::peer::entry_command("limits_peer_entry", "receiver");
    theirs.pass_to_child(&mut cmd).unwrap();
    let mut p = cmd.spawn().unwrap();
    drop(theirs);
    // A receiver that stops reading must not hang the flood.
    rustix::net::sockopt::set_socket_timeout(
        &mine,
        rustix::net::sockopt::Timeout::Send,
        Some(Duration::from_secs(10)),
    )
    .unwrap();

    let mut buf = Vec::new();
    let ready = mine
        .recv_record(&mut buf, 0, Some(Instant::now() + Duration::from_secs(10)))
        .unwrap();
    assert_eq!(&buf[..ready.len], b"ready");

    let devnull = std::fs::File::open("/dev/null").unwrap();
    let cases = floods();
    for case in &cases {
        let bytes = record(case.body);
        let fds = vec![devnull.as_fd(); case.fds];
        for _ in 0..case.records {
            raw_send(mine.as_fd(), &bytes, &fds);
        }
    }

    let status = support::proc::wait_bounded(&mut p, Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("the receiver hangs"));
    let mut out = String::new();
    p.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "receiver {status:?}: {out}");
    let lines: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .collect();
    assert_eq!(lines.len(), cases.len() + 1, "{out}");
    assert_eq!(
        lines[0],
        format!("baseline {} of {NOFILE}", NOFILE - FREE_SLOTS)
    );
    println!("receiver: RLIMIT_NOFILE {NOFILE}, max_record {MAX_RECORD}");
    for (case, line) in cases.iter().zip(&lines[1..]) {
        println!("  {line}");
        let (head, alloc) = line.split_once(" alloc=").unwrap();
        assert_eq!(
            head,
            format!("{} {}x{}", case.name, case.expect, case.records),
            "{line}"
        );
        let (alloc, fds) = alloc.split_once(" fds=").unwrap();
        assert_eq!(fds, "stable", "{line}");
        let alloc: usize = alloc.parse().unwrap();
        assert!(
            alloc <= case.alloc_bound,
            "{}: the receive path allocated {alloc} bytes",
            case.name
        );
    }
    drop((mine, devnull, p));
    assert_eq!(fd_count(), fds_before);
}
