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
mod support;

use load_peer::*;
use support::fd_count;

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

#[test]
fn sixty_four_pairs_exchange_fds_without_loss_or_reordering() {
    let conversations = env_or("PROCSYNC_LOAD_CONVERSATIONS", 40);
    let mounts = env_or("PROCSYNC_LOAD_MOUNTS", 50);
    let fds_before = fd_count();

    let cpu_start = cpu_seconds();
    let run = load_peer::run(PAIRS, conversations, mounts);
    let cpu = cpu_seconds() - cpu_start;
    let wall = run.wall;

    let served: Vec<Served> = run.served.into_iter().map(|s| s.unwrap()).collect();
    let mut child_messages = 0u64;
    for (pair, c) in run.children.into_iter().enumerate() {
        let (status, line) = finish(c);
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
