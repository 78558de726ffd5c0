//! Child processes: bounded waits (a test never hangs on a peer) and the
//! children this process has.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Waits for `child` at most `limit`. `Ok` with its status if it ended by
/// itself; otherwise kills it, reaps it and gives `Err` with the status of
/// the kill. Either way the process is reaped.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Result<ExitStatus, ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Ok(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            return Err(child.wait().expect("wait"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits for `child` (at most `limit`, then kills it) and says whether it
/// exited by itself with status 0.
pub fn reap(mut child: Child, limit: Duration) -> bool {
    wait_bounded(&mut child, limit).is_ok_and(|st| st.success())
}

/// The child processes of every thread of this process, sorted.
pub fn children() -> Vec<u32> {
    let mut v = Vec::new();
    for t in std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
    {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            v.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    v.sort_unstable();
    v
}
