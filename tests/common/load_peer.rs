//! The child processes of `tests/load.rs`: the test binary re-executed as a
//! peer (`support::peer`), running the ignored `load_peer_entry` test.
//! Each runs many init conversations over one sync socket (a fresh state
//! machine per conversation), asking for mount fds whose source and
//! destination carry a sequence number, and checks every reply.
#![allow(dead_code)]

use std::io::Write;
use std::os::fd::AsFd;
use std::process::Child as Process;
use std::process::Command;
use std::time::{Duration, Instant};

use procsync::schema::{MessageType, Mount, MountSourceKind, SyncMessage};
use procsync::state::{Flow, Machine, Role};
use procsync::transport::{SyncSocket, TransportError};

use crate::support::{self, fd_count};

/// `<pair>:<conversations>:<mounts per conversation>`.
pub const PLAN_VAR: &str = "PROCSYNC_LOAD_PLAN";

/// How long any single wait may take before the run is declared hung.
pub const WAIT: Duration = Duration::from_secs(60);

/// The source a request of `pair` with sequence number `seq` names.
pub fn source(pair: usize, seq: u64) -> String {
    format!("/srv/pair-{pair}/{seq}")
}

/// The destination a request with sequence number `seq` names.
pub fn destination(seq: u64) -> String {
    format!("/mnt/{seq}")
}

/// The sequence number in a destination made by [`destination`].
pub fn seq_of(destination: &str) -> Option<u64> {
    destination.strip_prefix("/mnt/")?.parse().ok()
}

/// A command re-running this test binary as a load child.
pub fn load_command(pair: usize, conversations: u64, mounts: u64) -> Command {
    let mut cmd = support::peer::entry_command("load_peer_entry", "child");
    cmd.env(PLAN_VAR, format!("{pair}:{conversations}:{mounts}"));
    cmd
}

/// The entry point of a re-executed load child: prints
/// `RESULT ok ...` or `RESULT FAILED ...` and exits 0 or 1.
pub fn load_peer_main() {
    support::peer::run(|_| {
        let (code, line) = match run_child() {
            Ok(line) => (0, line),
            Err(e) => (1, format!("FAILED {e}")),
        };
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "RESULT {line}");
        let _ = o.flush();
        code
    });
}

fn run_child() -> Result<String, String> {
    let plan = std::env::var(PLAN_VAR).map_err(|e| e.to_string())?;
    let nums: Vec<u64> = plan.split(':').filter_map(|s| s.parse().ok()).collect();
    let [pair, conversations, mounts] = nums[..] else {
        return Err(format!("bad plan {plan:?}"));
    };
    let pair = pair as usize;
    // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
    let mut sock = unsafe { SyncSocket::from_env() }.map_err(|e| e.to_string())?;
    let fds_at_start = fd_count();
    let mut seq = 0u64;
    let mut first_file: Option<(u64, u64)> = None;
    let (mut sent, mut received, mut fds) = (0u64, 0u64, 0u64);
    let deadline = || Some(Instant::now() + WAIT);
    for conv in 0..conversations {
        let mut m = Machine::new(Role::Child, Flow::Init);
        let mut exchange = |m: &mut Machine, msg: SyncMessage| -> Result<_, String> {
            let ty = msg.kind().unwrap();
            m.on_send(ty).map_err(|e| e.to_string())?;
            sock.send(&msg, None).map_err(|e| e.to_string())?;
            sent += 1;
            let r = sock
                .recv_deadline(deadline())
                .map_err(|e| format!("conversation {conv}: {e}"))?;
            received += 1;
            m.on_recv(r.msg.kind().unwrap_or(MessageType::Unspecified))
                .map_err(|e| format!("conversation {conv}: {e}"))?;
            Ok(r)
        };
        for _ in 0..mounts {
            let want = source(pair, seq);
            let req = Mount::bind(want.clone(), destination(seq));
            let r = exchange(&mut m, SyncMessage::mount_please(req))?;
            let got = r.msg.mount_fd_info().map(|i| i.source.clone());
            if got.as_deref() != Some(want.as_str()) {
                return Err(format!("seq {seq}: asked for {want}, reply names {got:?}"));
            }
            let fd = r.fd.ok_or_else(|| format!("seq {seq}: no fd"))?;
            let st = rustix::fs::fstat(&fd).map_err(|e| e.to_string())?;
            let id = (st.st_dev as u64, st.st_ino as u64);
            if *first_file.get_or_insert(id) != id {
                return Err(format!("seq {seq}: fd names another file"));
            }
            let cloexec = rustix::io::fcntl_getfd(&fd)
                .map_err(|e| e.to_string())?
                .contains(rustix::io::FdFlags::CLOEXEC);
            if !cloexec {
                return Err(format!("seq {seq}: fd not close-on-exec"));
            }
            drop(fd);
            fds += 1;
            seq += 1;
        }
        exchange(&mut m, SyncMessage::hooks())?;
        exchange(&mut m, SyncMessage::ready())?;
        if m.check_close().is_err() {
            return Err(format!("conversation {conv} ended in {}", m.state()));
        }
    }
    // The end: the parent shut down its side after the last Run.
    match sock.recv_deadline(deadline()) {
        Err(TransportError::PeerClosed) => {}
        other => return Err(format!("after the last Run: {other:?}")),
    }
    let _ = sock.as_fd();
    drop(sock);
    let fds_at_end = fd_count();
    if fds_at_end + 1 != fds_at_start {
        return Err(format!(
            "fd count {fds_at_start} at start (with the socket), {fds_at_end} at end"
        ));
    }
    Ok(format!("ok sent={sent} received={received} fds={fds}"))
}

/// What one parent thread saw.
pub struct Served {
    /// Messages received and sent.
    pub messages: u64,
    /// Fds sent.
    pub fds: u64,
}

/// The parent of pair `pair`: answers every request, checking the sequence
/// number in each MountPlease, then shuts down its side.
pub fn serve(
    pair: usize,
    mut sock: SyncSocket,
    conversations: u64,
    mounts: u64,
) -> Result<Served, String> {
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

/// One load run: the children (spawned, not yet reaped), then the parents'
/// results and the wall time of the exchange (spawning excluded).
pub struct Run {
    /// The child processes, in pair order.
    pub children: Vec<Process>,
    /// Each parent thread's result, in pair order.
    pub served: Vec<Result<Served, String>>,
    /// From the first parent thread's start to the last one's end.
    pub wall: Duration,
}

/// Spawns `pairs` load children, serves each from a thread of its own and
/// waits for every parent thread.
pub fn run(pairs: usize, conversations: u64, mounts: u64) -> Run {
    let mut children = Vec::with_capacity(pairs);
    let mut socks = Vec::with_capacity(pairs);
    for pair in 0..pairs {
        let (mine, theirs) = SyncSocket::pair().unwrap();
        let mut cmd = load_command(pair, conversations, mounts);
        theirs.pass_to_child(&mut cmd).unwrap();
        children.push(cmd.spawn().unwrap());
        drop(theirs);
        socks.push(mine);
    }
    let start = Instant::now();
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
    let served = threads
        .into_iter()
        .map(|t| {
            t.join()
                .unwrap_or_else(|_| Err("parent thread panicked".into()))
        })
        .collect();
    Run {
        children,
        served,
        wall: start.elapsed(),
    }
}

/// Waits for `c` (at most 30 s, then kills it); its exit status and its
/// `RESULT` line.
pub fn finish(mut c: Process) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let status =
        support::proc::wait_bounded(&mut c, Duration::from_secs(30)).unwrap_or_else(|st| st);
    let mut out = String::new();
    c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or("no result")
        .to_string();
    (status, line)
}
