//! Scale: one tokio runtime with two worker threads serves 1,000 concurrent
//! child *processes*, each a full init conversation with real fds (two
//! mount sources, hooks, ready/run, an attached seccomp fd). Every session
//! waits at Ready until all 1,000 are there, so all children are alive and
//! mid-conversation at once. Checks: every conversation complete, every
//! child exits 0, the fd count back where it was, the thread count bounded
//! by the runtime (not by the number of children).
//!
//! No libtest harness: `main` is the test, and the same binary re-executed
//! with `PROCSYNC_SCALE_ROLE=child` is each cheap child process.
//! `PROCSYNC_SCALE_N` overrides the count. The comparison with a thread per
//! child is `benches/async_scale.rs`.

#[path = "common/scale.rs"]
mod scale;

use std::time::Instant;

fn main() {
    if std::env::var_os(scale::ROLE_VAR).is_some() {
        scale::child_main();
    }
    // `cargo test -- --list` and friends: nothing to list.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("PROCSYNC_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let nofile = scale::raise_nofile();
    assert!(
        nofile >= 4 * n as u64 + 64,
        "RLIMIT_NOFILE {nofile} is too low for {n} children"
    );
    let dirs = scale::Dirs::new("test");
    let mounts = scale::mounts(&dirs.0);
    let before = scale::fd_count();
    let t0 = Instant::now();
    let children = scale::spawn_children(n, &dirs.0);
    let spawned = t0.elapsed();
    let stats = scale::serve_async(children, &mounts, 2, true);
    println!(
        "async_scale: {n} child processes spawned in {spawned:?}, served in {:?} \
         ({} complete, {} children ok), peak threads {}",
        stats.wall, stats.served, stats.children_ok, stats.peak_threads
    );
    assert_eq!(stats.served, n, "conversations completed");
    assert_eq!(stats.children_ok, n, "children that exited 0");
    // main + 2 workers + the blocking pool (unused here) stays small.
    assert!(
        stats.peak_threads <= 8,
        "{} threads for {n} children",
        stats.peak_threads
    );
    assert_eq!(scale::fd_count(), before, "fds leaked");
    println!("async_scale: ok");
}
