//! Load: 64 concurrent parent/child pairs, each child a real process (the
//! test binary re-executed), each parent a thread of this process. Every
//! pair runs many init conversations over one sync socket (a fresh state
//! machine per conversation on both sides): `MOUNTS` MountPlease → MountFd
//! round trips with a real fd each, then Hooks → HooksDone, Ready → Run.
//! Sequence numbers in the mount source and destination prove that no
//! message is lost or reordered; both sides count their fds at the end.
//! Messages/s and fds/s are printed (the figures, not a pass criterion).
//!
//! `PROCSYNC_LOAD_CONVERSATIONS` (default 40) and `PROCSYNC_LOAD_MOUNTS`
//! (default 50) scale the run: the default is 64 × 40 × 104 = 266 240
//! messages and 128 000 fds, a few seconds in a debug build on 2 cores.

#[path = "common/load_peer.rs"]
mod load_peer;

use std::io::Read;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use load_peer::*;
use procsync::schema::{MessageType, MountSourceKind, SyncMessage};
use procsync::state::{Flow, Machine, Role};
use procsync::transport::SyncSocket;

const PAIRS: usize = 64;

/// Not a test: the entry point of the child processes the load test spawns.
#[test]
#[ignore = "entry point of the child processes the load test spawns"]
fn load_peer_entry() {
    load_peer_main();
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// User + system CPU time of this process (/proc/self/stat, in clock
/// ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = stat.rsplit_once(") ").unwrap().1;
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// What one parent thread saw.
struct Served {
    messages: u64,
    fds: u64,
}

/// The parent of pair `pair`: answers every request, checking the sequence
/// number in each MountPlease, then shuts down its side.
fn serve(pair: usize, sock: SyncSocket, conversations: u64, mounts: u64) -> Result<Served, String> {
    let file = std::fs::File::open("/proc/self/exe").map_err(|e| e.to_string())?;
    let mut seq = 0u64;
    let (mut messages, mut fds) = (0u64, 0u64);
    for conv in 0..conversations {
        let mut m = Machine::new(Role::Parent, Flow::Init);
        loop {
            let r = sock
                .recv_deadline(Some(Instant::now() + WAIT))
                .map_err(|e| format!("pair {pair} conversation {conv}: {e}"))?;
            messages += 1;
            let ty = r.msg.kind().unwrap_or(MessageType::Unspecified);
            m.on_recv(ty).map_err(|e| format!("pair {pair}: {e}"))?;
            let (reply, fd) = match ty {
                MessageType::MountPlease => {
                    let req = r.msg.mount().cloned().unwrap_or_default();
                    if seq_of(&req.destination) != Some(seq) || req.source != source(pair, seq) {
                        return Err(format!(
                            "pair {pair}: expected request {seq}, got {} <- {}",
                            req.destination, req.source
                        ));
                    }
                    seq += 1;
                    fds += 1;
                    let reply = SyncMessage::mount_fd(MountSourceKind::PlainOpen, req.source);
                    (reply, Some(file.as_fd()))
                }
                MessageType::Hooks => (SyncMessage::hooks_done(), None),
                MessageType::Ready => (SyncMessage::run(), None),
                other => return Err(format!("pair {pair}: unexpected {other}")),
            };
            let rty = reply.kind().unwrap();
            m.on_send(rty).map_err(|e| format!("pair {pair}: {e}"))?;
            sock.send(&reply, fd)
                .map_err(|e| format!("pair {pair}: {e}"))?;
            messages += 1;
            if rty == MessageType::Run {
                break;
            }
        }
    }
    if seq != conversations * mounts {
        return Err(format!("pair {pair}: {seq} mount requests"));
    }
    sock.shutdown_write().map_err(|e| e.to_string())?;
    Ok(Served { messages, fds })
}

#[test]
fn sixty_four_pairs_exchange_fds_without_loss_or_reordering() {
    let conversations = env_or("PROCSYNC_LOAD_CONVERSATIONS", 40);
    let mounts = env_or("PROCSYNC_LOAD_MOUNTS", 50);
    let fds_before = fd_count();

    let mut children = Vec::with_capacity(PAIRS);
    let mut socks = Vec::with_capacity(PAIRS);
    for pair in 0..PAIRS {
        let (mine, theirs) = SyncSocket::pair().unwrap();
        let mut cmd = load_command(pair, conversations, mounts);
        theirs.pass_to_child(&mut cmd).unwrap();
        children.push(cmd.spawn().unwrap());
        drop(theirs);
        socks.push(mine);
    }

    let start = Instant::now();
    let cpu_start = cpu_seconds();
    let threads: Vec<_> = socks
        .into_iter()
        .enumerate()
        .map(|(pair, sock)| {
            std::thread::Builder::new()
                .name(format!("parent-{pair}"))
                .spawn(move || serve(pair, sock, conversations, mounts))
                .unwrap()
        })
        .collect();
    let served: Vec<Served> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    let wall = start.elapsed();
    let cpu = cpu_seconds() - cpu_start;

    let mut child_messages = 0u64;
    for (pair, mut c) in children.into_iter().enumerate() {
        let t = Instant::now();
        let status = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "child {pair} hangs");
            std::thread::sleep(Duration::from_millis(2));
        };
        let mut out = String::new();
        c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .unwrap_or("no result");
        assert!(status.success(), "child {pair}: {status:?}: {line}");
        let want_sent = conversations * (mounts + 2);
        let want = format!(
            "ok sent={want_sent} received={want_sent} fds={}",
            conversations * mounts
        );
        assert_eq!(line, want, "child {pair}");
        child_messages += 2 * want_sent;
    }

    let messages: u64 = served.iter().map(|s| s.messages).sum();
    let fds: u64 = served.iter().map(|s| s.fds).sum();
    assert_eq!(messages, child_messages);
    assert_eq!(fds, PAIRS as u64 * conversations * mounts);
    assert_eq!(
        fd_count(),
        fds_before,
        "fd count changed in the parent process"
    );

    let secs = wall.as_secs_f64();
    println!(
        "load: {PAIRS} pairs x {conversations} conversations x ({mounts} mounts + hooks + ready): \
         {messages} messages, {fds} fds in {secs:.2} s: {:.0} messages/s, {:.0} fds/s \
         (parent-side CPU {cpu:.2} s; {} profile)",
        messages as f64 / secs,
        fds as f64 / secs,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
}
