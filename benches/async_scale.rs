//! Many children at once: one tokio runtime with two worker threads
//! (`AsyncParent`, one task per child) against a thread per child (the
//! blocking `Parent`), serving the same N child processes, each a full
//! init conversation with real fds (two mount sources, hooks, ready/run,
//! an attached seccomp fd), every session held at Ready until all N are
//! there. Reports, per server, the wall time from the first serve to the
//! last child reaped (and sessions per second), the peak thread count and
//! the peak RSS of the server process. Each server runs in its own process
//! (this binary re-executed), so the RSS peaks are its own.
//!
//! `cargo bench --bench async_scale --features tokio` (N from
//! `PROCSYNC_SCALE_N`, default 1000; rounds from `PROCSYNC_SCALE_ROUNDS`,
//! default 3).

#[path = "../tests/common/scale.rs"]
mod scale;

use std::process::Command;

const SERVER_VAR: &str = "PROCSYNC_SCALE_SERVER";

fn server(kind: &str, n: usize) {
    scale::raise_nofile();
    let dirs = scale::Dirs::new(kind);
    let mounts = scale::mounts(&dirs.0);
    let children = scale::spawn_children(n, &dirs.0);
    let stats = match kind {
        "async" => scale::serve_async(children, &mounts, 2, true),
        _ => scale::serve_threads(children, &mounts, true),
    };
    assert_eq!((stats.served, stats.children_ok), (n, n), "{stats:?}");
    println!(
        "STATS {} {} {} {}",
        stats.wall.as_secs_f64(),
        n as f64 / stats.wall.as_secs_f64(),
        stats.peak_threads,
        scale::peak_rss_kib()
    );
}

fn run(kind: &str, n: usize) -> (f64, f64, usize, u64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(SERVER_VAR, kind)
        .env("PROCSYNC_SCALE_N", n.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("STATS ")).unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    (
        f[0].parse().unwrap(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::var_os(scale::ROLE_VAR).is_some() {
        scale::child_main();
    }
    let n: usize = std::env::var("PROCSYNC_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    if let Ok(kind) = std::env::var(SERVER_VAR) {
        server(&kind, n);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("PROCSYNC_SCALE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut rows = Vec::new();
    // Alternate the two servers so both see the same machine.
    let mut results: [Vec<(f64, f64, usize, u64)>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, kind) in ["async", "threads"].iter().enumerate() {
            results[i].push(run(kind, n));
        }
    }
    for (i, kind) in ["tokio, 2 workers", "thread per child"].iter().enumerate() {
        let r = &results[i];
        let wall = median(r.iter().map(|x| x.0).collect());
        let rate = median(r.iter().map(|x| x.1).collect());
        let threads = r.iter().map(|x| x.2).max().unwrap();
        let rss = median(r.iter().map(|x| x.3 as f64).collect());
        rows.push((kind.to_string(), wall, rate, threads, rss));
    }
    println!("\n{n} child processes, full init conversation each, {rounds} rounds (medians):");
    println!(
        "{:<18} {:>10} {:>14} {:>13} {:>14}",
        "server", "wall s", "sessions/s", "peak threads", "peak RSS MiB"
    );
    for (k, wall, rate, threads, rss) in &rows {
        println!(
            "{k:<18} {wall:>10.2} {rate:>14.0} {threads:>13} {:>14.1}",
            rss / 1024.0
        );
    }
}
